// SnapshotPostgres module: see architecture.md.
