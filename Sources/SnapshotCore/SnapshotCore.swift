// SnapshotCore module: see architecture.md.
