// Importer module: see architecture.md.
