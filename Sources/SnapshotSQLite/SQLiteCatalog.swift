public import Foundation
import BlockingIO
package import GRDB
public import SnapshotCore

/// The default catalog: one SQLite file in the data directory, through GRDB.
///
/// WAL journal (readers never block the writer), a busy timeout so that several processes on one
/// host (two `snapimport run` at once) wait for each other's short write transactions instead of
/// failing, IMMEDIATE write transactions (GRDB's default for pools) so a batch never deadlocks on a
/// lock upgrade, and versioned migrations. Every ``apply(_:)`` batch is one transaction; conditional
/// writes and constraints make the racing rules atomic (see ``Catalog``).
public final class SQLiteCatalog: Catalog {
    // A DatabasePool is itself Sendable; this class only holds immutable references.
    private let pool: DatabasePool

    /// Opens (creating when needed) the catalog file and runs the migrations.
    /// - Parameters:
    ///   - path: the database file, e.g. `<data>/catalog.sqlite`.
    ///   - busyTimeout: how long a write waits for another process's transaction.
    public init(path: String, busyTimeout: TimeInterval = 30) throws {
        var config = Configuration()
        config.busyMode = .timeout(busyTimeout)
        config.foreignKeysEnabled = true
        config.label = "snapimport.catalog"
        do {
            try Self.restrictMode(path)
            pool = try DatabasePool.openMigrated(path: path, configuration: config, migrator: Self.migrator)
            try Self.restrictMode(path)
        } catch {
            throw SnapshotError(.catalog, "cannot open the catalog \(path)", underlying: error)
        }
    }

    /// The catalog holds the API's access-key secrets in plain text (the server needs them to compute
    /// signatures), so the file is readable by its owner only: created mode 0600 before SQLite opens it
    /// (SQLite gives the `-wal` and `-shm` files the database file's mode), and an older catalog's files
    /// are narrowed to 0600 when opened.
    static func restrictMode(_ path: String) throws {
        let files = FileManager.default
        // An empty file is an empty SQLite database. O_EXCL, not `FileManager.createFile`: that one writes
        // a temporary file and renames it over the path, which would replace a database another process
        // created and began writing a moment ago (its connections keep the old inode: lost writes and
        // "database disk image is malformed"). With O_EXCL a racing creator simply finds the file there.
        createExclusively(path, mode: 0o600)
        for file in [path, path + "-wal", path + "-shm"] where files.fileExists(atPath: file) {
            let mode = (try files.attributesOfItem(atPath: file)[.posixPermissions] as? NSNumber)?.intValue
            if mode.map({ $0 & 0o077 != 0 }) ?? true {
                try files.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file)
            }
        }
    }

    /// The schema; append migrations, never edit a shipped one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE snapshots (
                        id TEXT PRIMARY KEY NOT NULL,
                        owner TEXT NOT NULL,
                        description TEXT NOT NULL,
                        state TEXT NOT NULL,
                        visibility TEXT NOT NULL,
                        shared_with TEXT NOT NULL,
                        virtual_size INTEGER NOT NULL,
                        stored_bytes INTEGER NOT NULL,
                        format TEXT NOT NULL,
                        bootable INTEGER NOT NULL,
                        source_kind TEXT NOT NULL,
                        source_bucket TEXT, source_key TEXT, source_etag TEXT,
                        source_path TEXT, source_volume TEXT, source_template TEXT,
                        checksum TEXT,
                        block_size INTEGER NOT NULL,
                        created_at INTEGER NOT NULL,
                        writer TEXT,
                        lease_expires_at INTEGER,
                        failure TEXT,
                        version INTEGER NOT NULL
                    );
                    CREATE UNIQUE INDEX snapshots_object_source ON snapshots(source_bucket, source_key, source_etag)
                        WHERE state = 'available' AND source_kind = 'object';
                    CREATE INDEX snapshots_state ON snapshots(state);
                    CREATE TABLE manifests (
                        snapshot_id TEXT PRIMARY KEY NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
                        data BLOB NOT NULL
                    );
                    CREATE TABLE volumes (
                        id TEXT PRIMARY KEY NOT NULL,
                        owner TEXT NOT NULL,
                        snapshot_id TEXT,
                        size INTEGER NOT NULL,
                        file_name TEXT NOT NULL,
                        attached_to TEXT,
                        snapshot_in_progress TEXT,
                        created_at INTEGER NOT NULL,
                        version INTEGER NOT NULL
                    );
                    CREATE TABLE instances (
                        id TEXT PRIMARY KEY NOT NULL,
                        owner TEXT NOT NULL,
                        state TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        version INTEGER NOT NULL
                    );
                    CREATE TABLE templates (
                        id TEXT PRIMARY KEY NOT NULL,
                        owner TEXT NOT NULL,
                        instance_id TEXT NOT NULL,
                        snapshots TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        version INTEGER NOT NULL
                    );
                    CREATE TABLE imports (
                        bucket TEXT NOT NULL,
                        key TEXT NOT NULL,
                        etag TEXT NOT NULL,
                        owner TEXT NOT NULL,
                        state TEXT NOT NULL,
                        worker TEXT,
                        lease_expires_at INTEGER,
                        attempts INTEGER NOT NULL,
                        snapshot_id TEXT,
                        error_code TEXT,
                        error_message TEXT,
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL,
                        version INTEGER NOT NULL,
                        PRIMARY KEY (bucket, key, etag)
                    );
                    """)
        }
        migrator.registerMigration("v2 targeted queries and block reference counts") { db in
            try db.execute(
                sql: """
                    CREATE INDEX snapshots_created ON snapshots(created_at, id);
                    CREATE INDEX snapshots_owner ON snapshots(owner, created_at, id);
                    CREATE INDEX snapshots_public ON snapshots(created_at, id)
                        WHERE state = 'available' AND visibility = 'public';
                    CREATE INDEX snapshots_shared ON snapshots(created_at, id)
                        WHERE state = 'available' AND shared_with <> '[]';
                    CREATE INDEX snapshots_state_created ON snapshots(state, created_at, id);
                    DROP INDEX snapshots_state;
                    CREATE INDEX imports_expired ON imports(lease_expires_at) WHERE state = 'claimed';
                    CREATE TABLE block_refs (hash BLOB PRIMARY KEY NOT NULL, refs INTEGER NOT NULL) WITHOUT ROWID;
                    CREATE INDEX block_refs_zero ON block_refs(hash) WHERE refs <= 0;
                    CREATE TABLE gc_sweep (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        due_before INTEGER,
                        version INTEGER NOT NULL
                    );
                    """)
            // Counts for the manifests committed before this migration.
            let rows = try Row.fetchCursor(db, sql: "SELECT data FROM manifests")
            while let row = try rows.next() {
                let data: Data = row["data"]
                try addReferences(Manifest(decoding: data), db)
            }
            // Orphans of writers that vanished before counts existed: one full sweep.
            if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM snapshots)") == true {
                try db.execute(
                    sql: "INSERT INTO gc_sweep (id, due_before, version) VALUES (1, ?, 1)",
                    arguments: [millis(Date())])
            }
        }
        migrator.registerMigration("v3 accessKeys") { db in
            // API access keys. The secret is stored as is: SigV4 verification needs it (see AccessKey);
            // the file's mode (0600) protects it.
            try db.execute(
                sql: """
                    CREATE TABLE access_keys (
                        id TEXT PRIMARY KEY NOT NULL,
                        secret TEXT NOT NULL,
                        caller_kind TEXT NOT NULL CHECK (caller_kind IN ('operator', 'project')),
                        project TEXT CHECK ((caller_kind = 'project') = (project IS NOT NULL)),
                        created_at INTEGER NOT NULL
                    );
                    CREATE INDEX access_keys_created ON access_keys(created_at, id);
                    """)
        }
        migrator.registerMigration("importTasks") { db in
            // Self-contained: the import tasks of the EC2 API and the progress of every import.
            try db.execute(
                sql: """
                    ALTER TABLE imports ADD COLUMN bytes_read INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE imports ADD COLUMN bytes_total INTEGER;
                    CREATE TABLE import_tasks (
                        id TEXT PRIMARY KEY NOT NULL,
                        owner TEXT NOT NULL,
                        requester TEXT NOT NULL,
                        bucket TEXT NOT NULL,
                        key TEXT NOT NULL,
                        etag TEXT,
                        format TEXT,
                        description TEXT,
                        client_token TEXT,
                        state TEXT NOT NULL,
                        status_message TEXT,
                        bytes_read INTEGER NOT NULL,
                        bytes_total INTEGER,
                        snapshot_id TEXT,
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL,
                        worker TEXT,
                        lease_expires_at INTEGER,
                        attempts INTEGER NOT NULL,
                        version INTEGER NOT NULL
                    );
                    CREATE UNIQUE INDEX import_tasks_client_token ON import_tasks(requester, client_token)
                        WHERE client_token IS NOT NULL;
                    CREATE INDEX import_tasks_owner ON import_tasks(owner, id);
                    CREATE INDEX import_tasks_state ON import_tasks(state, id);
                    """)
        }
        migrator.registerMigration("v5 import history pages") { db in
            // The import ID (`imp-…`, a hash of bucket, key and ETag) as a column, so that `imports show ID` and
            // the history's keyset pages (by created_at, import_id) are index lookups.
            try db.execute(sql: "ALTER TABLE imports ADD COLUMN import_id TEXT")
            for row in try Row.fetchAll(db, sql: "SELECT bucket, key, etag FROM imports") {
                let key = ImportKey(bucket: row["bucket"], key: row["key"], etag: row["etag"])
                try db.execute(
                    sql: "UPDATE imports SET import_id = ? WHERE bucket = ? AND key = ? AND etag = ?",
                    arguments: [key.id, key.bucket, key.key, key.etag])
            }
            try db.execute(
                sql: """
                    CREATE INDEX imports_history ON imports(created_at, import_id);
                    CREATE INDEX imports_state_history ON imports(state, created_at, import_id);
                    CREATE INDEX imports_owner_history ON imports(owner, created_at, import_id);
                    CREATE INDEX imports_id ON imports(import_id);
                    """)
        }
        migrator.registerMigration("v6 volume client tokens") { db in
            // CreateVolume's ClientTokens, kept with the volume they made (inserted in its batch).
            try db.execute(
                sql: """
                    CREATE TABLE volume_tokens (
                        requester TEXT NOT NULL,
                        client_token TEXT NOT NULL,
                        snapshot_id TEXT NOT NULL,
                        size INTEGER,
                        volume_id TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        PRIMARY KEY (requester, client_token)
                    );
                    """)
        }
        return migrator
    }

    // MARK: Reads

    public func snapshot(_ id: SnapshotID) async throws -> SnapshotRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM snapshots WHERE id = ?", arguments: [id.rawValue])
                .map(Self.snapshot(from:))
        }
    }

    public func snapshots() async throws -> [SnapshotRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM snapshots ORDER BY created_at, id").map(Self.snapshot(from:))
        }
    }

    public func manifest(_ id: SnapshotID) async throws -> Manifest? {
        try await read { db in
            guard
                let data = try Data.fetchOne(
                    db, sql: "SELECT data FROM manifests WHERE snapshot_id = ?", arguments: [id.rawValue])
            else { return nil }
            return try Manifest(decoding: data)
        }
    }

    public func manifests() async throws -> [SnapshotID: Manifest] {
        try await read { db in
            var result: [SnapshotID: Manifest] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT snapshot_id, data FROM manifests") {
                let id = try SnapshotID(parsing: row["snapshot_id"])
                let data: Data = row["data"]
                result[id] = try Manifest(decoding: data)
            }
            return result
        }
    }

    public func volume(_ id: VolumeID) async throws -> VolumeRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM volumes WHERE id = ?", arguments: [id.rawValue])
                .map(Self.volume(from:))
        }
    }

    public func volumes() async throws -> [VolumeRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM volumes ORDER BY created_at, id").map(Self.volume(from:))
        }
    }

    public func instance(_ id: InstanceID) async throws -> InstanceRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM instances WHERE id = ?", arguments: [id.rawValue])
                .map(Self.instance(from:))
        }
    }

    public func instances() async throws -> [InstanceRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM instances ORDER BY created_at, id").map(Self.instance(from:))
        }
    }

    public func template(_ id: TemplateID) async throws -> TemplateRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM templates WHERE id = ?", arguments: [id.rawValue])
                .map(Self.template(from:))
        }
    }

    public func templates() async throws -> [TemplateRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM templates ORDER BY created_at, id").map(Self.template(from:))
        }
    }

    public func importRecord(_ key: ImportKey) async throws -> ImportRecord? {
        try await read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM imports WHERE bucket = ? AND key = ? AND etag = ?",
                arguments: [key.bucket, key.key, key.etag]
            ).map(Self.importRecord(from:))
        }
    }

    public func imports() async throws -> [ImportRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM imports ORDER BY created_at, bucket, key, etag")
                .map(Self.importRecord(from:))
        }
    }

    public func imports(_ filter: ImportFilter, after cursor: ImportCursor?, limit: Int) async throws -> [ImportRecord] {
        var conditions: [String] = []
        var arguments: [(any DatabaseValueConvertible)?] = []
        if let owner = filter.owner {
            conditions.append("owner = ?")
            arguments.append(owner)
        }
        if let state = filter.state {
            conditions.append("state = ?")
            arguments.append(state.rawValue)
        }
        if let cursor {
            conditions.append("(created_at, import_id) > (?, ?)")
            arguments += [Self.millis(cursor.createdAt), cursor.id]
        }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let sql = "SELECT * FROM imports \(whereClause) ORDER BY created_at, import_id LIMIT ?"
        let bound = StatementArguments(arguments + [limit])
        return try await read { db in
            try Row.fetchAll(db, sql: sql, arguments: bound).map(Self.importRecord(from:))
        }
    }

    public func imports(id: String) async throws -> [ImportRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM imports WHERE import_id = ?", arguments: [id])
                .map(Self.importRecord(from:))
        }
    }

    public func imports(bucket: String, key: String) async throws -> [ImportRecord] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM imports WHERE bucket = ? AND key = ? ORDER BY updated_at DESC, etag DESC",
                arguments: [bucket, key]
            ).map(Self.importRecord(from:))
        }
    }

    public func accessKey(_ id: String) async throws -> AccessKey? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM access_keys WHERE id = ?", arguments: [id]).map(Self.accessKey(from:))
        }
    }

    public func accessKeys() async throws -> [AccessKey] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM access_keys ORDER BY created_at, id").map(Self.accessKey(from:))
        }
    }

    // MARK: Targeted queries

    public func snapshots(
        matching query: SnapshotQuery, visibleTo caller: Caller, after cursor: SnapshotCursor?, limit: Int
    ) async throws -> [SnapshotRecord] {
        let (at, id) = (cursor.map { Self.millis($0.createdAt) } ?? Int64.min, cursor?.id.rawValue ?? "")
        var arguments: [(any DatabaseValueConvertible)?] = []
        /// One keyset-limited branch: `visible` (with its values), the page position and the query.
        func branch(_ visible: String, _ values: [(any DatabaseValueConvertible)?]) -> String {
            let selection = Self.selection(query, caller)
            arguments += values + [at, id] + selection.arguments + [limit]
            return """
                SELECT * FROM snapshots WHERE \(visible) AND (created_at, id) > (?, ?) AND \(selection.sql)
                ORDER BY created_at, id LIMIT ?
                """
        }
        let sql: String
        switch caller {
        case .operator:
            sql = branch("state <> 'deleting'", [])
        case .project(let project):
            // Three index-backed branches (own, public, shared), each keyset-limited and filtered, then merged.
            let p = project.description
            let own = branch("owner = ? AND state <> 'deleting'", [p])
            let published = branch("state = 'available' AND visibility = 'public'", [])
            let shared = branch(
                """
                state = 'available' AND shared_with <> '[]'
                    AND EXISTS (SELECT 1 FROM json_each(snapshots.shared_with) WHERE value = ?)
                """, [p])
            sql = """
                SELECT * FROM (
                    SELECT * FROM (\(own)) UNION SELECT * FROM (\(published)) UNION SELECT * FROM (\(shared))
                ) ORDER BY created_at, id LIMIT ?
                """
            arguments.append(limit)
        }
        let statementArguments = StatementArguments(arguments)
        return try await read { db in
            try Row.fetchAll(db, sql: sql, arguments: statementArguments).map(Self.snapshot(from:))
        }
    }

    /// The WHERE clause of `query` and its values: IDs, projects and patterns are bound, never spliced;
    /// patterns become case-sensitive `GLOB`s with their special characters bracketed (an exact value `=`).
    static func selection(_ query: SnapshotQuery, _ caller: Caller) -> (
        sql: String, arguments: [(any DatabaseValueConvertible)?]
    ) {
        var parts: [String] = []
        var arguments: [(any DatabaseValueConvertible)?] = []
        func oneOf(_ column: String, _ values: [String]) {
            guard !values.isEmpty else { return parts.append("0") }
            parts.append("\(column) IN (" + Array(repeating: "?", count: values.count).joined(separator: ", ") + ")")
            arguments += values.map { $0 }
        }
        let granted = "EXISTS (SELECT 1 FROM json_each(snapshots.shared_with) WHERE value = ?)"
        if let ids = query.ids { oneOf("id", ids.map(\.rawValue)) }
        if let owners = query.owners { oneOf("owner", owners.map(\.description)) }
        if let states = query.states { oneOf("state", states.map(\.rawValue)) }
        if let restorers = query.restorableBy {
            var any: [String] = []
            for restorer in restorers {
                switch restorer {
                case .everyone:
                    any.append("visibility = 'public'")
                case .explicitly(let project):
                    any.append("(owner = ? OR \(granted))")
                    arguments += [project.description, project.description]
                case .project(let project):
                    arguments += [project.description, project.description]
                    let readable: String
                    switch caller {
                    case .operator: readable = "1"
                    case .project(let me) where me == project: readable = "1"
                    case .project(let me):
                        readable = "owner = ?"
                        arguments.append(me.description)
                    }
                    any.append("(visibility = 'public' OR owner = ? OR (\(granted) AND \(readable)))")
                }
            }
            parts.append(any.isEmpty ? "0" : "(" + any.joined(separator: " OR ") + ")")
        }
        for filter in query.filters {
            let column: String
            switch filter.field {
            case .description: column = "description"
            case .snapshotID: column = "id"
            case .ownerID: column = "owner"
            case .volumeID: column = "(CASE WHEN source_kind = 'volume' THEN source_volume ELSE ? END)"
            }
            var any: [String] = []
            for pattern in filter.patterns {
                if filter.field == .volumeID { arguments.append(SnapshotQuery.noVolume) }
                if let exact = pattern.exactText {
                    any.append("\(column) = ?")
                    arguments.append(exact)
                } else {
                    any.append("\(column) GLOB ?")
                    arguments.append(pattern.glob)
                }
            }
            parts.append(any.isEmpty ? "0" : "(" + any.joined(separator: " OR ") + ")")
        }
        return (parts.isEmpty ? "1" : parts.joined(separator: " AND "), arguments)
    }

    public func snapshots(in state: SnapshotState, after cursor: SnapshotCursor?, limit: Int) async throws
        -> [SnapshotRecord]
    {
        let (at, id) = (cursor.map { Self.millis($0.createdAt) } ?? Int64.min, cursor?.id.rawValue ?? "")
        return try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM snapshots WHERE state = ? AND (created_at, id) > (?, ?)
                    ORDER BY created_at, id LIMIT ?
                    """, arguments: [state.rawValue, at, id, limit]
            ).map(Self.snapshot(from:))
        }
    }

    public func oldestPendingSnapshot() async throws -> Date? {
        try await read { db in
            try Int64.fetchOne(db, sql: "SELECT MIN(created_at) FROM snapshots WHERE state = 'pending'")
                .map(Self.date)
        }
    }

    public func availableSnapshot(of object: ImportKey) async throws -> SnapshotRecord? {
        try await read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT * FROM snapshots WHERE source_bucket = ? AND source_key = ? AND source_etag = ?
                        AND state = 'available' AND source_kind = 'object'
                    """, arguments: [object.bucket, object.key, object.etag]
            ).map(Self.snapshot(from:))
        }
    }

    public func expiredClaims(before now: Date, limit: Int) async throws -> [ImportRecord] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM imports WHERE state = 'claimed' AND lease_expires_at < ?
                    ORDER BY lease_expires_at, bucket, key, etag LIMIT ?
                    """, arguments: [Self.millis(now), limit]
            ).map(Self.importRecord(from:))
        }
    }

    public func claimImport(_ key: ImportKey, owner: String, worker: String, leaseExpiresAt: Date, now: Date)
        async throws -> ImportRecord?
    {
        guard case .claimed(let row) = try await claimImportOrRead(
            key, owner: owner, worker: worker, leaseExpiresAt: leaseExpiresAt, now: now)
        else { return nil }
        return row
    }

    /// The conditional upsert and, when it changed nothing, the read of the row, in one write transaction.
    public func claimImportOrRead(_ key: ImportKey, owner: String, worker: String, leaseExpiresAt: Date, now: Date)
        async throws -> ImportClaimAttempt
    {
        do {
            return try await BlockingExecutor.shared.run { [pool] in
                try pool.write { db in
                    if let claimed = try Row.fetchOne(
                        db,
                        sql: """
                            INSERT INTO imports (bucket, key, etag, owner, state, worker, lease_expires_at, attempts,
                                created_at, updated_at, version, import_id)
                            VALUES (:bucket, :key, :etag, :owner, 'claimed', :worker, :lease, 1, :now, :now, 1, :id)
                            ON CONFLICT (bucket, key, etag) DO UPDATE SET state = 'claimed', worker = :worker,
                                lease_expires_at = :lease, attempts = attempts + 1, snapshot_id = NULL,
                                bytes_read = 0, bytes_total = NULL, updated_at = :now, version = version + 1
                            WHERE state = 'retry' OR (state = 'claimed'
                                AND (lease_expires_at IS NULL OR lease_expires_at <= :now OR worker = :worker))
                            RETURNING *
                            """,
                        arguments: [
                            "bucket": key.bucket, "key": key.key, "etag": key.etag, "owner": owner, "worker": worker,
                            "lease": Self.millis(leaseExpiresAt), "now": Self.millis(now), "id": key.id,
                        ]
                    ) {
                        return ImportClaimAttempt.claimed(try Self.importRecord(from: claimed))
                    }
                    let row = try Row.fetchOne(
                        db, sql: "SELECT * FROM imports WHERE bucket = ? AND key = ? AND etag = ?",
                        arguments: [key.bucket, key.key, key.etag])
                    return ImportClaimAttempt.notClaimable(try row.map(Self.importRecord(from:)))
                }
            }
        } catch let error as SnapshotError {
            throw error
        } catch {
            throw SnapshotError(.catalog, "claiming \(key) failed", underlying: error)
        }
    }

    public func recordImportProgress(_ key: ImportKey, worker: String, bytesRead: Int64, bytesTotal: Int64?)
        async throws -> Bool
    {
        do {
            return try await BlockingExecutor.shared.run { [pool] in
                try pool.write { db in
                    try db.execute(
                        sql: """
                            UPDATE imports SET bytes_read = ?, bytes_total = ?
                            WHERE bucket = ? AND key = ? AND etag = ? AND (worker IS NULL OR worker = ?)
                            """, arguments: [bytesRead, bytesTotal, key.bucket, key.key, key.etag, worker])
                    return db.changesCount == 1
                }
            }
        } catch {
            throw SnapshotError(.catalog, "recording the progress of \(key) failed", underlying: error)
        }
    }

    public func importTask(_ id: ImportTaskID) async throws -> ImportTaskRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM import_tasks WHERE id = ?", arguments: [id.rawValue])
                .map(Self.importTask(from:))
        }
    }

    public func volumeToken(requester: Caller, clientToken: String) async throws -> VolumeTokenRecord? {
        try await read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM volume_tokens WHERE requester = ? AND client_token = ?",
                arguments: [requester.storedText, clientToken]
            ).map(Self.volumeToken(from:))
        }
    }

    public func importTask(requester: Caller, clientToken: String) async throws -> ImportTaskRecord? {
        try await read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM import_tasks WHERE requester = ? AND client_token = ?",
                arguments: [requester.storedText, clientToken]
            ).map(Self.importTask(from:))
        }
    }

    public func importTasks(ownedBy owner: ProjectRef?, after cursor: ImportTaskID?, limit: Int) async throws
        -> [ImportTaskRecord]
    {
        let after = cursor?.rawValue ?? ""
        return try await read { db in
            if let owner {
                return try Row.fetchAll(
                    db, sql: "SELECT * FROM import_tasks WHERE owner = ? AND id > ? ORDER BY id LIMIT ?",
                    arguments: [owner.description, after, limit]
                ).map(Self.importTask(from:))
            }
            return try Row.fetchAll(
                db, sql: "SELECT * FROM import_tasks WHERE id > ? ORDER BY id LIMIT ?", arguments: [after, limit]
            ).map(Self.importTask(from:))
        }
    }

    public func importTasks(in state: ImportTaskState, after cursor: ImportTaskID?, limit: Int) async throws
        -> [ImportTaskRecord]
    {
        let after = cursor?.rawValue ?? ""
        return try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM import_tasks WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
                arguments: [state.rawValue, after, limit]
            ).map(Self.importTask(from:))
        }
    }

    public func blockReferences(_ hashes: [BlockHash]) async throws -> [BlockHash: Int] {
        guard !hashes.isEmpty else { return [:] }
        return try await read { db in
            let marks = Array(repeating: "?", count: hashes.count).joined(separator: ",")
            var result: [BlockHash: Int] = [:]
            let rows = try Row.fetchCursor(
                db, sql: "SELECT hash, refs FROM block_refs WHERE hash IN (\(marks))",
                arguments: StatementArguments(hashes.map { Data($0.bytes) }))
            while let row = try rows.next() {
                let data: Data = row["hash"]
                guard let hash = BlockHash(bytes: data) else { throw SnapshotError(.catalog, "malformed block hash") }
                result[hash] = row["refs"]
            }
            return result
        }
    }

    public func unreferencedBlocks(after cursor: BlockHash?, limit: Int) async throws -> [BlockHash] {
        try await read { db in
            try Data.fetchAll(
                db, sql: "SELECT hash FROM block_refs WHERE refs <= 0 AND hash > ? ORDER BY hash LIMIT ?",
                arguments: [Data(cursor?.bytes ?? []), limit]
            ).map { data in
                guard let hash = BlockHash(bytes: data) else { throw SnapshotError(.catalog, "malformed block hash") }
                return hash
            }
        }
    }

    public func sweepRequest() async throws -> SweepRequest? {
        try await read { db in
            try Row.fetchOne(
                db, sql: "SELECT due_before, version FROM gc_sweep WHERE id = 1 AND due_before IS NOT NULL")
                .map { row in SweepRequest(before: Self.date(row["due_before"]), version: row["version"]) }
        }
    }

    public func close() async throws {
        do { try pool.close() } catch { throw SnapshotError(.catalog, "cannot close the catalog", underlying: error) }
    }

    // MARK: Writes

    public func apply(_ writes: [CatalogWrite]) async throws {
        do {
            // GRDB's synchronous API on the blocking executor (its async API would hop to GRDB's own
            // dispatch queues: a second place where blocking work runs).
            try await BlockingExecutor.shared.run { [pool] in
                try pool.write { db in
                    for write in writes { try Self.apply(write, db) }
                }
            }
        } catch let error as SnapshotError {
            throw error
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw SnapshotError.conflict("a catalog constraint refused the write (\(error.message ?? "constraint"))")
        } catch {
            throw SnapshotError(.catalog, "catalog write failed", underlying: error)
        }
    }

    private static func apply(_ write: CatalogWrite, _ db: Database) throws {
        switch write {
        case .insertSnapshot(let s):
            try db.execute(
                sql: """
                    INSERT INTO snapshots (id, owner, description, state, visibility, shared_with, virtual_size,
                        stored_bytes, format, bootable, source_kind, source_bucket, source_key, source_etag,
                        source_path, source_volume, source_template, checksum, block_size, created_at, writer,
                        lease_expires_at, failure, version)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                    """,
                arguments: StatementArguments([s.id.rawValue as (any DatabaseValueConvertible)?] + snapshotValues(s)))
        case .updateSnapshot(let s):
            try db.execute(
                sql: """
                    UPDATE snapshots SET owner = ?, description = ?, state = ?, visibility = ?, shared_with = ?,
                        virtual_size = ?, stored_bytes = ?, format = ?, bootable = ?, source_kind = ?,
                        source_bucket = ?, source_key = ?, source_etag = ?, source_path = ?, source_volume = ?,
                        source_template = ?, checksum = ?, block_size = ?, created_at = ?, writer = ?,
                        lease_expires_at = ?, failure = ?, version = version + 1
                    WHERE id = ? AND version = ?
                    """,
                arguments: StatementArguments(snapshotValues(s) + [s.id.rawValue, s.version]))
            try expectChange(db, "snapshot \(s.id)")
        case .deleteSnapshot(let id, let version):
            let data = try Data.fetchOne(
                db, sql: "SELECT data FROM manifests WHERE snapshot_id = ?", arguments: [id.rawValue])
            try db.execute(sql: "DELETE FROM manifests WHERE snapshot_id = ?", arguments: [id.rawValue])
            try db.execute(
                sql: "DELETE FROM snapshots WHERE id = ? AND version = ?", arguments: [id.rawValue, version])
            try expectChange(db, "snapshot \(id)")
            if let data {
                let statement = try db.cachedStatement(sql: "UPDATE block_refs SET refs = refs - 1 WHERE hash = ?")
                for hash in Self.distinctHashes(try Manifest(decoding: data)) {
                    try statement.execute(arguments: [Data(hash.bytes)])
                }
            }
        case .expectSnapshot(let id, let version):
            try expectRow(db, "snapshots", id.rawValue, version)
        case .insertManifest(let id, let manifest):
            try db.execute(
                sql: "INSERT INTO manifests (snapshot_id, data) VALUES (?, ?)",
                arguments: [id.rawValue, Data(manifest.encoded())])
            try addReferences(manifest, db)
        case .registerBlocks(let hashes):
            let statement = try db.cachedStatement(
                sql: "INSERT INTO block_refs (hash, refs) VALUES (?, 0) ON CONFLICT (hash) DO NOTHING")
            for hash in hashes { try statement.execute(arguments: [Data(hash.bytes)]) }
        case .forgetBlocks(let hashes):
            let statement = try db.cachedStatement(sql: "DELETE FROM block_refs WHERE hash = ? AND refs <= 0")
            for hash in hashes { try statement.execute(arguments: [Data(hash.bytes)]) }
        case .requestSweep(let before):
            try db.execute(
                sql: """
                    INSERT INTO gc_sweep (id, due_before, version) VALUES (1, ?, 1)
                    ON CONFLICT (id) DO UPDATE SET version = version + 1,
                        due_before = CASE WHEN due_before IS NULL OR due_before < excluded.due_before
                            THEN excluded.due_before ELSE due_before END
                    """, arguments: [millis(before)])
        case .completeSweep(let version):
            try db.execute(
                sql: "UPDATE gc_sweep SET due_before = NULL, version = version + 1 WHERE id = 1 AND version = ?",
                arguments: [version])
            try expectChange(db, "the sweep request")
        case .insertVolume(let v):
            try db.execute(
                sql: """
                    INSERT INTO volumes (owner, snapshot_id, size, file_name, attached_to, snapshot_in_progress,
                        created_at, id, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)
                    """, arguments: StatementArguments(volumeValues(v) + [v.id.rawValue]))
        case .updateVolume(let v):
            try db.execute(
                sql: """
                    UPDATE volumes SET owner = ?, snapshot_id = ?, size = ?, file_name = ?, attached_to = ?,
                        snapshot_in_progress = ?, created_at = ?, version = version + 1
                    WHERE id = ? AND version = ?
                    """, arguments: StatementArguments(volumeValues(v) + [v.id.rawValue, v.version]))
            try expectChange(db, "volume \(v.id)")
        case .deleteVolume(let id, let version):
            try db.execute(sql: "DELETE FROM volumes WHERE id = ? AND version = ?", arguments: [id.rawValue, version])
            try expectChange(db, "volume \(id)")
        case .expectVolume(let id, let version):
            try expectRow(db, "volumes", id.rawValue, version)
        case .insertInstance(let i):
            try db.execute(
                sql: "INSERT INTO instances (owner, state, created_at, id, version) VALUES (?, ?, ?, ?, 1)",
                arguments: [i.owner.description, i.state.rawValue, millis(i.createdAt), i.id.rawValue])
        case .updateInstance(let i):
            try db.execute(
                sql: """
                    UPDATE instances SET owner = ?, state = ?, created_at = ?, version = version + 1
                    WHERE id = ? AND version = ?
                    """,
                arguments: [i.owner.description, i.state.rawValue, millis(i.createdAt), i.id.rawValue, i.version])
            try expectChange(db, "instance \(i.id)")
        case .expectInstance(let id, let version):
            try expectRow(db, "instances", id.rawValue, version)
        case .deleteTemplate(let id, let version):
            try db.execute(sql: "DELETE FROM templates WHERE id = ? AND version = ?", arguments: [id.rawValue, version])
            try expectChange(db, "template \(id)")
        case .insertTemplate(let t):
            try db.execute(
                sql: """
                    INSERT INTO templates (id, owner, instance_id, snapshots, created_at, version)
                    VALUES (?, ?, ?, ?, ?, 1)
                    """,
                arguments: [
                    t.id.rawValue, t.owner.description, t.instanceID.rawValue,
                    try jsonArray(t.snapshots.map(\.rawValue)),
                    millis(t.createdAt),
                ])
        case .insertAccessKey(let k):
            var project: String?
            if case .project(let p) = k.caller { project = p.description }
            try db.execute(
                sql: "INSERT INTO access_keys (id, secret, caller_kind, project, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [k.id, k.secret, project == nil ? "operator" : "project", project, millis(k.createdAt)])
        case .deleteAccessKey(let id):
            try db.execute(sql: "DELETE FROM access_keys WHERE id = ?", arguments: [id])
            try expectChange(db, "access key \(id)")
        case .insertImport(let r):
            try db.execute(
                sql: """
                    INSERT INTO imports (owner, state, worker, lease_expires_at, attempts, snapshot_id, error_code,
                        error_message, created_at, updated_at, bucket, key, etag, import_id, version)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                    """,
                arguments: StatementArguments(importValues(r) + [r.key.bucket, r.key.key, r.key.etag, r.key.id]))
        case .updateImport(let r):
            try db.execute(
                sql: """
                    UPDATE imports SET owner = ?, state = ?, worker = ?, lease_expires_at = ?, attempts = ?,
                        snapshot_id = ?, error_code = ?, error_message = ?, created_at = ?, updated_at = ?,
                        version = version + 1
                    WHERE bucket = ? AND key = ? AND etag = ? AND version = ?
                    """,
                arguments: StatementArguments(importValues(r) + [r.key.bucket, r.key.key, r.key.etag, r.version]))
            try expectChange(db, "import \(r.key)")
        case .insertImportTask(let t):
            try db.execute(
                sql: """
                    INSERT INTO import_tasks (owner, requester, bucket, key, etag, format, description, client_token,
                        state, status_message, bytes_read, bytes_total, snapshot_id, created_at, updated_at, worker,
                        lease_expires_at, attempts, id, version)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                    """, arguments: StatementArguments(importTaskValues(t) + [t.id.rawValue]))
        case .updateImportTask(let t):
            try db.execute(
                sql: """
                    UPDATE import_tasks SET owner = ?, requester = ?, bucket = ?, key = ?, etag = ?, format = ?,
                        description = ?, client_token = ?, state = ?, status_message = ?, bytes_read = ?,
                        bytes_total = ?, snapshot_id = ?, created_at = ?, updated_at = ?, worker = ?,
                        lease_expires_at = ?, attempts = ?, version = version + 1
                    WHERE id = ? AND version = ?
                    """, arguments: StatementArguments(importTaskValues(t) + [t.id.rawValue, t.version]))
            try expectChange(db, "import task \(t.id)")
        case .insertVolumeToken(let t):
            try db.execute(
                sql: """
                    INSERT INTO volume_tokens (requester, client_token, snapshot_id, size, volume_id, created_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    t.requester.storedText, t.clientToken, t.snapshotID.rawValue, t.size, t.volumeID.rawValue,
                    millis(t.createdAt),
                ])
        }
    }

    /// The distinct blocks a manifest names (a count is per manifest, not per entry), ascending.
    private static func distinctHashes(_ manifest: Manifest) -> [BlockHash] {
        Set(manifest.entries.map(\.hash)).sorted()
    }

    /// +1 on the count of every distinct block of `manifest` (creating counts).
    private static func addReferences(_ manifest: Manifest, _ db: Database) throws {
        let statement = try db.cachedStatement(
            sql: "INSERT INTO block_refs (hash, refs) VALUES (?, 1) ON CONFLICT (hash) DO UPDATE SET refs = refs + 1")
        for hash in distinctHashes(manifest) { try statement.execute(arguments: [Data(hash.bytes)]) }
    }

    private static func expectChange(_ db: Database, _ what: String) throws {
        guard db.changesCount == 1 else { throw SnapshotError.conflict("\(what) changed or vanished meanwhile") }
    }

    private static func expectRow(_ db: Database, _ table: String, _ id: String, _ version: Int64) throws {
        let found = try Int64.fetchOne(db, sql: "SELECT version FROM \(table) WHERE id = ?", arguments: [id])
        guard found == version else { throw SnapshotError.conflict("\(table) row \(id) changed or vanished meanwhile") }
    }

    // MARK: Row mapping

    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await BlockingExecutor.shared.run { [pool] in try pool.read(body) }
        } catch let error as SnapshotError {
            throw error
        } catch {
            throw SnapshotError(.catalog, "catalog read failed", underlying: error)
        }
    }

    private static func millis(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    private static func date(_ millis: Int64) -> Date { Date(timeIntervalSince1970: Double(millis) / 1000) }

    private static func jsonArray(_ strings: [String]) throws -> String {
        String(decoding: try JSONEncoder().encode(strings), as: UTF8.self)
    }

    private static func strings(_ json: String) throws -> [String] {
        do {
            return try JSONDecoder().decode([String].self, from: Data(json.utf8))
        } catch {
            throw SnapshotError(.catalog, "malformed JSON array in the catalog", underlying: error)
        }
    }

    /// Every column but `id` and `version`, in the order of the INSERT/UPDATE statements.
    private static func snapshotValues(_ s: SnapshotRecord) -> [(any DatabaseValueConvertible)?] {
        var bucket: String?, key: String?, etag: String?, path: String?, volume: String?, template: String?
        let kind: String
        switch s.source {
        case .object(let b, let k, let e): (kind, bucket, key, etag) = ("object", b, k, e)
        case .file(let p): (kind, path) = ("file", p)
        case .volume(let v): (kind, volume) = ("volume", v.rawValue)
        case .template(let t): (kind, template) = ("template", t.rawValue)
        }
        let shared = (try? jsonArray(s.sharedWith.map(\.description))) ?? "[]"
        return [
            s.owner.description, s.description, s.state.rawValue, s.visibility.rawValue, shared,
            Int64(clamping: s.virtualSize), Int64(clamping: s.storedBytes), s.format, s.bootable, kind,
            bucket, key, etag, path, volume, template, s.checksum, s.blockSize, millis(s.createdAt), s.writer,
            s.leaseExpiresAt.map(millis), s.failure,
        ]
    }

    private static func snapshot(from row: Row) throws -> SnapshotRecord {
        let source: SnapshotSource
        let kind: String = row["source_kind"]
        switch kind {
        case "object":
            source = .object(bucket: row["source_bucket"], key: row["source_key"], etag: row["source_etag"])
        case "file": source = .file(path: row["source_path"])
        case "volume": source = .volume(try VolumeID(parsing: row["source_volume"]))
        case "template": source = .template(try TemplateID(parsing: row["source_template"]))
        default: throw SnapshotError(.catalog, "unknown source kind \(kind) in the catalog")
        }
        guard let state = SnapshotState(rawValue: row["state"]),
            let visibility = Visibility(rawValue: row["visibility"])
        else { throw SnapshotError(.catalog, "unknown snapshot state or visibility in the catalog") }
        let virtualSize: Int64 = row["virtual_size"]
        let storedBytes: Int64 = row["stored_bytes"]
        let lease: Int64? = row["lease_expires_at"]
        return SnapshotRecord(
            id: try SnapshotID(parsing: row["id"]), owner: try ProjectRef(parsing: row["owner"]),
            description: row["description"], state: state, visibility: visibility,
            sharedWith: try strings(row["shared_with"]).map(ProjectRef.init(parsing:)),
            virtualSize: UInt64(max(0, virtualSize)), storedBytes: UInt64(max(0, storedBytes)), format: row["format"],
            bootable: row["bootable"], source: source, checksum: row["checksum"], blockSize: row["block_size"],
            createdAt: date(row["created_at"]), writer: row["writer"], leaseExpiresAt: lease.map(date),
            failure: row["failure"], version: row["version"])
    }

    private static func volumeValues(_ v: VolumeRecord) -> [(any DatabaseValueConvertible)?] {
        [
            v.owner.description, v.snapshotID?.rawValue, Int64(clamping: v.size), v.fileName, v.attachedTo?.rawValue,
            v.snapshotInProgress?.rawValue, millis(v.createdAt),
        ]
    }

    private static func volume(from row: Row) throws -> VolumeRecord {
        let snapshotID: String? = row["snapshot_id"]
        let attached: String? = row["attached_to"]
        let progress: String? = row["snapshot_in_progress"]
        let size: Int64 = row["size"]
        return VolumeRecord(
            id: try VolumeID(parsing: row["id"]), owner: try ProjectRef(parsing: row["owner"]),
            snapshotID: try snapshotID.map(SnapshotID.init(parsing:)), size: UInt64(max(0, size)),
            fileName: row["file_name"], attachedTo: try attached.map(InstanceID.init(parsing:)),
            snapshotInProgress: try progress.map(SnapshotID.init(parsing:)), createdAt: date(row["created_at"]),
            version: row["version"])
    }

    private static func instance(from row: Row) throws -> InstanceRecord {
        guard let state = InstanceState(rawValue: row["state"]) else {
            throw SnapshotError(.catalog, "unknown instance state in the catalog")
        }
        return InstanceRecord(
            id: try InstanceID(parsing: row["id"]), owner: try ProjectRef(parsing: row["owner"]), state: state,
            createdAt: date(row["created_at"]), version: row["version"])
    }

    private static func template(from row: Row) throws -> TemplateRecord {
        TemplateRecord(
            id: try TemplateID(parsing: row["id"]), owner: try ProjectRef(parsing: row["owner"]),
            instanceID: try InstanceID(parsing: row["instance_id"]),
            snapshots: try strings(row["snapshots"]).map(SnapshotID.init(parsing:)),
            createdAt: date(row["created_at"]), version: row["version"])
    }

    private static func accessKey(from row: Row) throws -> AccessKey {
        let kind: String = row["caller_kind"]
        let caller: Caller
        switch kind {
        case "operator": caller = .operator
        case "project": caller = .project(try ProjectRef(parsing: row["project"]))
        default: throw SnapshotError(.catalog, "unknown access key caller kind \(kind) in the catalog")
        }
        return AccessKey(id: row["id"], secret: row["secret"], caller: caller, createdAt: date(row["created_at"]))
    }

    private static func importValues(_ r: ImportRecord) -> [(any DatabaseValueConvertible)?] {
        [
            r.owner, r.state.rawValue, r.worker, r.leaseExpiresAt.map(millis), r.attempts, r.snapshotID?.rawValue,
            r.errorCode, r.errorMessage, millis(r.createdAt), millis(r.updatedAt),
        ]
    }

    private static func importTaskValues(_ t: ImportTaskRecord) -> [(any DatabaseValueConvertible)?] {
        [
            t.owner.description, t.requester.storedText, t.bucket, t.key, t.etag, t.format, t.description,
            t.clientToken, t.state.rawValue, t.statusMessage, t.bytesRead, t.bytesTotal, t.snapshotID?.rawValue,
            millis(t.createdAt), millis(t.updatedAt), t.worker, t.leaseExpiresAt.map(millis), t.attempts,
        ]
    }

    private static func volumeToken(from row: Row) throws -> VolumeTokenRecord {
        VolumeTokenRecord(
            requester: try Caller(storedText: row["requester"]), clientToken: row["client_token"],
            snapshotID: try SnapshotID(parsing: row["snapshot_id"]), size: row["size"],
            volumeID: try VolumeID(parsing: row["volume_id"]), createdAt: date(row["created_at"]))
    }

    private static func importTask(from row: Row) throws -> ImportTaskRecord {
        guard let id = ImportTaskID(row["id"]), let state = ImportTaskState(rawValue: row["state"]) else {
            throw SnapshotError(.catalog, "malformed import task ID or state in the catalog")
        }
        let snapshotID: String? = row["snapshot_id"]
        let lease: Int64? = row["lease_expires_at"]
        return ImportTaskRecord(
            id: id, owner: try ProjectRef(parsing: row["owner"]), requester: try Caller(storedText: row["requester"]),
            bucket: row["bucket"], key: row["key"], etag: row["etag"], format: row["format"],
            description: row["description"], clientToken: row["client_token"], state: state,
            statusMessage: row["status_message"], bytesRead: row["bytes_read"], bytesTotal: row["bytes_total"],
            snapshotID: try snapshotID.map(SnapshotID.init(parsing:)), createdAt: date(row["created_at"]),
            updatedAt: date(row["updated_at"]), worker: row["worker"], leaseExpiresAt: lease.map(date),
            attempts: row["attempts"], version: row["version"])
    }

    private static func importRecord(from row: Row) throws -> ImportRecord {
        guard let state = ImportState(rawValue: row["state"]) else {
            throw SnapshotError(.catalog, "unknown import state in the catalog")
        }
        let lease: Int64? = row["lease_expires_at"]
        let snapshotID: String? = row["snapshot_id"]
        return ImportRecord(
            key: ImportKey(bucket: row["bucket"], key: row["key"], etag: row["etag"]), owner: row["owner"],
            state: state, worker: row["worker"], leaseExpiresAt: lease.map(date), attempts: row["attempts"],
            snapshotID: try snapshotID.map(SnapshotID.init(parsing:)), errorCode: row["error_code"],
            errorMessage: row["error_message"], createdAt: date(row["created_at"]), updatedAt: date(row["updated_at"]),
            version: row["version"], bytesRead: row["bytes_read"], bytesTotal: row["bytes_total"])
    }
}

extension DatabasePool {
    /// Opens a pool and migrates it. Several processes opening the same file at once race in two
    /// places, both retried briefly:
    /// - SQLITE_BUSY on the first `PRAGMA journal_mode = WAL` (SQLite does not hand it to the busy
    ///   handler);
    /// - two migrators that both read the migration table before either applied a migration. GRDB runs
    ///   each migration in its own transaction, so the loser's fails ("table already exists",
    ///   "duplicate column name", …) and rolls back. Which message depends on the migration, so the race
    ///   is recognised by its effect instead: a migration failed and, meanwhile, someone else recorded
    ///   more migrations. On retry the loser finds them applied and goes on with the rest.
    /// An error with no such progress is a real one and is thrown. Used by the catalog and the block
    /// store's index.
    package static func openMigrated(
        path: String, configuration: Configuration, migrator: DatabaseMigrator
    ) throws -> DatabasePool {
        var attempt = 0
        while true {
            var pool: DatabasePool?
            var appliedBefore: Set<String> = []
            do {
                pool = try DatabasePool(path: path, configuration: configuration)
                appliedBefore = try pool!.read { try migrator.appliedIdentifiers($0) }
                try migrator.migrate(pool!)
                return pool!
            } catch let error as DatabaseError where attempt < 40 {
                let migratedMeanwhile = pool.map { pool in
                    let now = try? pool.read { try migrator.appliedIdentifiers($0) }
                    return now.map { !$0.isSubset(of: appliedBefore) } ?? false
                } ?? false
                guard error.resultCode == .SQLITE_BUSY || migratedMeanwhile else { throw error }
                attempt += 1
                // Opening is synchronous (once per store); the wait between tries blocks like the open does.
                BlockingExecutor.sleepBlocking(.milliseconds(Int.random(in: 20...100)))
            }
        }
    }
}

/// Creates an empty file unless one exists (O_EXCL: never replaces a file another process created).
private func createExclusively(_ path: String, mode: mode_t) {
    let descriptor = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode)
    if descriptor >= 0 { close(descriptor) }
}
