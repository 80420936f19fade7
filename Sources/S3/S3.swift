// S3 module: see architecture.md.
