/// The catalog's tables, as numbered migrations (see `Migrations`). Never edit a released migration; append one.
///
/// The layout follows SnapshotCore's reference schema (`SQLiteCatalog.migrator`) with PostgreSQL types:
/// `timestamptz` for dates (read back rounded to whole milliseconds, as the SQLite catalog stores them),
/// `text[]` for lists, `bytea` for manifests, and CHECK constraints on every enumerated column. Extra
/// constraints that make the rules hold in the database itself, whatever the caller does:
/// - `snapshots_object_source`: at most one *available* snapshot per (bucket, key, ETag) — exactly-once import;
/// - `manifests.snapshot_id` references `snapshots` (ON DELETE CASCADE): no manifest outlives its snapshot;
/// - `imports` primary key (bucket, key, etag): one claim row per object version;
/// - `access_keys` primary key `id`; `project` set exactly when `caller_kind` is `project`.
enum CatalogSchema {
    static let migrations: [Migrations.Migration] = [
        Migrations.Migration(
            version: 1, name: "v1 snapshots, manifests, volumes, instances, templates, imports",
            sql: [
                """
                CREATE TABLE snapshots (
                    id text PRIMARY KEY,
                    owner text NOT NULL,
                    description text NOT NULL,
                    state text NOT NULL CHECK (state IN ('pending', 'available', 'error', 'deleting')),
                    visibility text NOT NULL CHECK (visibility IN ('private', 'public')),
                    shared_with text[] NOT NULL DEFAULT '{}',
                    virtual_size bigint NOT NULL CHECK (virtual_size >= 0),
                    stored_bytes bigint NOT NULL CHECK (stored_bytes >= 0),
                    format text NOT NULL,
                    bootable boolean NOT NULL,
                    source_kind text NOT NULL CHECK (source_kind IN ('object', 'file', 'volume', 'template')),
                    source_bucket text, source_key text, source_etag text,
                    source_path text, source_volume text, source_template text,
                    checksum text,
                    block_size bigint NOT NULL CHECK (block_size > 0),
                    created_at timestamptz NOT NULL,
                    writer text,
                    lease_expires_at timestamptz,
                    failure text,
                    version bigint NOT NULL
                )
                """,
                """
                CREATE UNIQUE INDEX snapshots_object_source ON snapshots (source_bucket, source_key, source_etag)
                    WHERE state = 'available' AND source_kind = 'object'
                """,
                "CREATE INDEX snapshots_state ON snapshots (state)",
                "CREATE INDEX snapshots_created ON snapshots (created_at, id)",
                """
                CREATE TABLE manifests (
                    snapshot_id text PRIMARY KEY REFERENCES snapshots (id) ON DELETE CASCADE,
                    data bytea NOT NULL
                )
                """,
                """
                CREATE TABLE volumes (
                    id text PRIMARY KEY,
                    owner text NOT NULL,
                    snapshot_id text,
                    size bigint NOT NULL CHECK (size >= 0),
                    file_name text NOT NULL,
                    attached_to text,
                    snapshot_in_progress text,
                    created_at timestamptz NOT NULL,
                    version bigint NOT NULL
                )
                """,
                """
                CREATE TABLE instances (
                    id text PRIMARY KEY,
                    owner text NOT NULL,
                    state text NOT NULL CHECK (state IN ('running', 'stopped')),
                    created_at timestamptz NOT NULL,
                    version bigint NOT NULL
                )
                """,
                """
                CREATE TABLE templates (
                    id text PRIMARY KEY,
                    owner text NOT NULL,
                    instance_id text NOT NULL,
                    snapshots text[] NOT NULL,
                    created_at timestamptz NOT NULL,
                    version bigint NOT NULL
                )
                """,
                """
                CREATE TABLE imports (
                    bucket text NOT NULL,
                    "key" text NOT NULL,
                    etag text NOT NULL,
                    owner text NOT NULL,
                    state text NOT NULL CHECK (state IN ('claimed', 'retry', 'imported', 'failed')),
                    worker text,
                    lease_expires_at timestamptz,
                    attempts bigint NOT NULL,
                    snapshot_id text,
                    error_code text,
                    error_message text,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    version bigint NOT NULL,
                    PRIMARY KEY (bucket, "key", etag)
                )
                """,
                "CREATE INDEX imports_created ON imports (created_at, bucket, \"key\", etag)",
            ]),
        Migrations.Migration(
            version: 2, name: "v2 targeted queries and block reference counts",
            sql: [
                "CREATE INDEX snapshots_owner ON snapshots (owner, created_at, id)",
                """
                CREATE INDEX snapshots_public ON snapshots (created_at, id)
                    WHERE state = 'available' AND visibility = 'public'
                """,
                """
                CREATE INDEX snapshots_shared ON snapshots (created_at, id)
                    WHERE state = 'available' AND shared_with <> '{}'
                """,
                "CREATE INDEX snapshots_state_created ON snapshots (state, created_at, id)",
                "DROP INDEX IF EXISTS snapshots_state",
                "CREATE INDEX imports_expired ON imports (lease_expires_at) WHERE state = 'claimed'",
                // How many manifests name each block (see SnapshotCore's BlockCollector); zero rows are the
                // garbage collector's work list.
                "CREATE TABLE block_refs (hash bytea PRIMARY KEY, refs bigint NOT NULL)",
                "CREATE INDEX block_refs_zero ON block_refs (hash) WHERE refs <= 0",
                // Counts for the manifests committed before this migration (40-byte entries: 8 index bytes,
                // then the 32 hash bytes; bytea positions count from 1).
                """
                INSERT INTO block_refs (hash, refs)
                SELECT h, count(*) FROM (
                    SELECT DISTINCT m.snapshot_id, substring(m.data FROM g * 40 + 9 FOR 32) AS h
                    FROM manifests m, generate_series(0, length(m.data) / 40 - 1) AS g
                ) entries GROUP BY h
                """,
                """
                CREATE TABLE gc_sweep (
                    id integer PRIMARY KEY CHECK (id = 1),
                    due_before timestamptz,
                    version bigint NOT NULL
                )
                """,
                // Orphans of writers that vanished before counts existed: one full sweep.
                """
                INSERT INTO gc_sweep (id, due_before, version)
                SELECT 1, now(), 1 WHERE EXISTS (SELECT 1 FROM snapshots)
                """,
            ]),
        Migrations.Migration(
            version: 3, name: "v3 accessKeys",
            sql: [
                // API access keys. The secret is stored as is: SigV4 verification needs it (SnapshotCore's
                // AccessKey); the database's access control protects it.
                """
                CREATE TABLE access_keys (
                    id text PRIMARY KEY,
                    secret text NOT NULL,
                    caller_kind text NOT NULL CHECK (caller_kind IN ('operator', 'project')),
                    project text CHECK ((caller_kind = 'project') = (project IS NOT NULL)),
                    created_at timestamptz NOT NULL
                )
                """,
                "CREATE INDEX access_keys_created ON access_keys (created_at, id)",
            ]),
        // Version 4 (not 3): self-contained, so it merges beside the access keys' migration whatever its number.
        Migrations.Migration(
            version: 4, name: "importTasks: import tasks of the EC2 API and the progress of every import",
            sql: [
                "ALTER TABLE imports ADD COLUMN bytes_read bigint NOT NULL DEFAULT 0",
                "ALTER TABLE imports ADD COLUMN bytes_total bigint",
                """
                CREATE TABLE import_tasks (
                    id text PRIMARY KEY,
                    owner text NOT NULL,
                    requester text NOT NULL,
                    bucket text NOT NULL,
                    "key" text NOT NULL,
                    etag text,
                    format text,
                    description text,
                    client_token text,
                    state text NOT NULL CHECK (state IN ('active', 'completed', 'deleted')),
                    status_message text,
                    bytes_read bigint NOT NULL,
                    bytes_total bigint,
                    snapshot_id text,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    worker text,
                    lease_expires_at timestamptz,
                    attempts bigint NOT NULL,
                    version bigint NOT NULL
                )
                """,
                """
                CREATE UNIQUE INDEX import_tasks_client_token ON import_tasks (requester, client_token)
                    WHERE client_token IS NOT NULL
                """,
                "CREATE INDEX import_tasks_owner ON import_tasks (owner, id)",
                "CREATE INDEX import_tasks_state ON import_tasks (state, id)",
            ]),
        // Self-contained like 4: the import ID as a column, and the indexes of the history's keyset pages.
        Migrations.Migration(
            version: 5, name: "v5 import history pages",
            sql: [
                "ALTER TABLE imports ADD COLUMN import_id text",
                // ImportKey.id: `imp-` and the first 16 hex digits of SHA-256(bucket 0x00 key 0x00 etag).
                """
                UPDATE imports SET import_id = 'imp-' || left(encode(sha256(convert_to(bucket, 'UTF8') || '\\x00'::bytea
                    || convert_to("key", 'UTF8') || '\\x00'::bytea || convert_to(etag, 'UTF8')), 'hex'), 16)
                """,
                "CREATE INDEX imports_history ON imports (created_at, import_id)",
                "CREATE INDEX imports_state_history ON imports (state, created_at, import_id)",
                "CREATE INDEX imports_owner_history ON imports (owner, created_at, import_id)",
                "CREATE INDEX imports_id ON imports (import_id)",
            ]),
        // CreateVolume's ClientTokens, kept with the volume they made (inserted in its transaction).
        Migrations.Migration(
            version: 6, name: "v6 volume client tokens",
            sql: [
                """
                CREATE TABLE volume_tokens (
                    requester text NOT NULL,
                    client_token text NOT NULL,
                    snapshot_id text NOT NULL,
                    size bigint,
                    volume_id text NOT NULL,
                    created_at timestamptz NOT NULL,
                    PRIMARY KEY (requester, client_token)
                )
                """
            ]),
    ]
}
