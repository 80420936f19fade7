// SigV4 module: see architecture.md.
