public import Foundation
import Logging
import PostgresNIO
public import SnapshotCore
import Synchronization

/// The `Catalog` protocol on PostgreSQL.
///
/// Reads are single autocommit statements (each sees committed data). ``apply(_:)`` is one READ COMMITTED
/// transaction in which every update and delete is conditional on the version the caller read
/// (`… WHERE id = $1 AND version = $2 RETURNING 1`: under READ COMMITTED a row changed by a concurrent
/// transaction is re-checked against the WHERE clause after that transaction commits, so a lost race affects
/// zero rows), every `expect…` takes the row lock (`SELECT version … FOR UPDATE`) so the precondition holds
/// until COMMIT, and inserts rely on primary keys and the unique indexes. Any failed condition or integrity
/// violation (SQLSTATE class 23) rolls the whole batch back and is reported as `SnapshotError(.conflict)`; a
/// deadlock (40P01) re-runs the batch. Other failures are `SnapshotError(.catalog)`.
extension PostgresCatalog: Catalog {
    // MARK: Reads

    public func snapshot(_ id: SnapshotID) async throws -> SnapshotRecord? {
        try await read("snapshot \(id)", "SELECT \(unescaped: Self.snapshotColumns) FROM snapshots WHERE id = \(id.rawValue)", Self.snapshot(from:)).first
    }

    public func snapshots() async throws -> [SnapshotRecord] {
        try await read("snapshots", "SELECT \(unescaped: Self.snapshotColumns) FROM snapshots ORDER BY created_at, id", Self.snapshot(from:))
    }

    public func manifest(_ id: SnapshotID) async throws -> Manifest? {
        try await read("manifest of \(id)", "SELECT snapshot_id, data FROM manifests WHERE snapshot_id = \(id.rawValue)") {
            try Self.manifest(from: $0).1
        }.first
    }

    public func manifests() async throws -> [SnapshotID: Manifest] {
        let pairs = try await read("manifests", "SELECT snapshot_id, data FROM manifests", Self.manifest(from:))
        return Dictionary(pairs, uniquingKeysWith: { first, _ in first })
    }

    public func volume(_ id: VolumeID) async throws -> VolumeRecord? {
        try await read("volume \(id)", "SELECT \(unescaped: Self.volumeColumns) FROM volumes WHERE id = \(id.rawValue)", Self.volume(from:)).first
    }

    public func volumes() async throws -> [VolumeRecord] {
        try await read("volumes", "SELECT \(unescaped: Self.volumeColumns) FROM volumes ORDER BY created_at, id", Self.volume(from:))
    }

    public func instance(_ id: InstanceID) async throws -> InstanceRecord? {
        try await read("instance \(id)", "SELECT \(unescaped: Self.instanceColumns) FROM instances WHERE id = \(id.rawValue)", Self.instance(from:)).first
    }

    public func instances() async throws -> [InstanceRecord] {
        try await read("instances", "SELECT \(unescaped: Self.instanceColumns) FROM instances ORDER BY created_at, id", Self.instance(from:))
    }

    public func template(_ id: TemplateID) async throws -> TemplateRecord? {
        try await read("template \(id)", "SELECT \(unescaped: Self.templateColumns) FROM templates WHERE id = \(id.rawValue)", Self.template(from:)).first
    }

    public func templates() async throws -> [TemplateRecord] {
        try await read("templates", "SELECT \(unescaped: Self.templateColumns) FROM templates ORDER BY created_at, id", Self.template(from:))
    }

    public func importRecord(_ key: ImportKey) async throws -> ImportRecord? {
        try await read(
            "import \(key)",
            """
            SELECT \(unescaped: Self.importColumns) FROM imports
            WHERE bucket = \(key.bucket) AND "key" = \(key.key) AND etag = \(key.etag)
            """, Self.importRecord(from:)
        ).first
    }

    public func imports() async throws -> [ImportRecord] {
        try await read(
            "imports", "SELECT \(unescaped: Self.importColumns) FROM imports ORDER BY created_at, bucket, \"key\", etag",
            Self.importRecord(from:))
    }

    public func imports(_ filter: ImportFilter, after cursor: ImportCursor?, limit: Int) async throws -> [ImportRecord] {
        // Without a cursor, a key below every row: each variant is one range scan of its index.
        let at = Self.millis(cursor?.createdAt ?? .distantPast)
        let id = cursor?.id ?? ""
        let query: PostgresQuery
        switch (filter.state?.rawValue, filter.owner) {
        case (nil, nil):
            query = """
                SELECT \(unescaped: Self.importColumns) FROM imports WHERE (created_at, import_id) > (\(at), \(id))
                ORDER BY created_at, import_id LIMIT \(limit)
                """
        case (let state?, nil):
            query = """
                SELECT \(unescaped: Self.importColumns) FROM imports
                WHERE state = \(state) AND (created_at, import_id) > (\(at), \(id))
                ORDER BY created_at, import_id LIMIT \(limit)
                """
        case (nil, let owner?):
            query = """
                SELECT \(unescaped: Self.importColumns) FROM imports
                WHERE owner = \(owner) AND (created_at, import_id) > (\(at), \(id))
                ORDER BY created_at, import_id LIMIT \(limit)
                """
        case (let state?, let owner?):
            query = """
                SELECT \(unescaped: Self.importColumns) FROM imports
                WHERE owner = \(owner) AND state = \(state) AND (created_at, import_id) > (\(at), \(id))
                ORDER BY created_at, import_id LIMIT \(limit)
                """
        }
        return try await read("imports (\(filter))", query, Self.importRecord(from:))
    }

    public func imports(id: String) async throws -> [ImportRecord] {
        try await read(
            "import \(id)", "SELECT \(unescaped: Self.importColumns) FROM imports WHERE import_id = \(id)",
            Self.importRecord(from:))
    }

    public func imports(bucket: String, key: String) async throws -> [ImportRecord] {
        try await read(
            "imports of s3://\(bucket)/\(key)",
            """
            SELECT \(unescaped: Self.importColumns) FROM imports WHERE bucket = \(bucket) AND "key" = \(key)
            ORDER BY updated_at DESC, etag DESC
            """, Self.importRecord(from:))
    }

    public func accessKey(_ id: String) async throws -> AccessKey? {
        try await read(
            "access key \(id)", "SELECT \(unescaped: Self.accessKeyColumns) FROM access_keys WHERE id = \(id)",
            Self.accessKey(from:)
        ).first
    }

    public func accessKeys() async throws -> [AccessKey] {
        try await read(
            "access keys", "SELECT \(unescaped: Self.accessKeyColumns) FROM access_keys ORDER BY created_at, id",
            Self.accessKey(from:))
    }

    // MARK: Targeted queries

    public func snapshots(
        matching query: SnapshotQuery, visibleTo caller: Caller, after cursor: SnapshotCursor?, limit: Int
    ) async throws -> [SnapshotRecord] {
        let at = cursor?.createdAt ?? Self.beforeEverything
        let id = cursor?.id.rawValue ?? ""
        var sql = SnapshotSQL()
        let columns = Self.snapshotColumns
        /// One keyset-limited branch: `visible` (its own bound values), the page position and the query.
        func branch(_ visible: (inout SnapshotSQL) -> String) -> String {
            let condition = visible(&sql)
            let position = "(created_at, id) > (\(sql.bind(at)), \(sql.bind(id)))"
            let selected = sql.selection(query, caller)
            return """
                SELECT \(columns) FROM snapshots WHERE \(condition) AND \(position) AND \(selected)
                ORDER BY created_at, id LIMIT \(limit)
                """
        }
        let text: String
        switch caller {
        case .operator:
            text = branch { _ in "state <> 'deleting'" }
        case .project(let project):
            // Three index-backed branches (own, public, shared), each keyset-limited and filtered, then merged.
            let p = project.description
            let own = branch { "owner = \($0.bind(p)) AND state <> 'deleting'" }
            let published = branch { _ in "state = 'available' AND visibility = 'public'" }
            let shared = branch { "state = 'available' AND shared_with <> '{}' AND \($0.bind(p)) = ANY (shared_with)" }
            text = """
                SELECT \(columns) FROM ((\(own)) UNION (\(published)) UNION (\(shared))) visible
                ORDER BY created_at, id LIMIT \(limit)
                """
        }
        return try await read(
            "snapshots visible to \(caller)", PostgresQuery(unsafeSQL: text, binds: sql.binds), Self.snapshot(from:))
    }

    public func snapshots(in state: SnapshotState, after cursor: SnapshotCursor?, limit: Int) async throws
        -> [SnapshotRecord]
    {
        let at = cursor?.createdAt ?? Self.beforeEverything
        let id = cursor?.id.rawValue ?? ""
        return try await read(
            "\(state.rawValue) snapshots",
            """
            SELECT \(unescaped: Self.snapshotColumns) FROM snapshots
            WHERE state = \(state.rawValue) AND (created_at, id) > (\(at), \(id))
            ORDER BY created_at, id LIMIT \(limit)
            """, Self.snapshot(from:))
    }

    public func oldestPendingSnapshot() async throws -> Date? {
        try await read("the oldest pending snapshot", "SELECT min(created_at) FROM snapshots WHERE state = 'pending'") {
            try $0[0].decode(Date?.self).map(Self.millis)
        }.first ?? nil
    }

    public func availableSnapshot(of object: ImportKey) async throws -> SnapshotRecord? {
        try await read(
            "the snapshot of \(object)",
            """
            SELECT \(unescaped: Self.snapshotColumns) FROM snapshots
            WHERE source_bucket = \(object.bucket) AND source_key = \(object.key) AND source_etag = \(object.etag)
                AND state = 'available' AND source_kind = 'object'
            """, Self.snapshot(from:)
        ).first
    }

    public func expiredClaims(before now: Date, limit: Int) async throws -> [ImportRecord] {
        try await read(
            "expired claims",
            """
            SELECT \(unescaped: Self.importColumns) FROM imports
            WHERE state = 'claimed' AND lease_expires_at < \(Self.millis(now))
            ORDER BY lease_expires_at, bucket, "key", etag LIMIT \(limit)
            """, Self.importRecord(from:))
    }

    public func claimImport(_ key: ImportKey, owner: String, worker: String, leaseExpiresAt: Date, now: Date)
        async throws -> ImportRecord?
    {
        // INSERT … ON CONFLICT DO UPDATE … WHERE is atomic: a racing claimer waits for the row lock, then
        // re-evaluates the WHERE against the committed row and returns nothing.
        let lease = Self.millis(leaseExpiresAt)
        let now = Self.millis(now)
        return try await read(
            "claim of \(key)",
            """
            INSERT INTO imports AS i (bucket, "key", etag, owner, state, worker, lease_expires_at, attempts,
                created_at, updated_at, version, import_id)
            VALUES (\(key.bucket), \(key.key), \(key.etag), \(owner), 'claimed', \(worker), \(lease), 1, \(now),
                \(now), 1, \(key.id))
            \(unescaped: Self.reclaimOnConflict)
            RETURNING \(unescaped: Self.importColumns)
            """, Self.importRecord(from:)
        ).first
    }

    /// The claim's upsert on an existing row (the imports table aliased `i`): it is taken over only when it
    /// waits for a retry, or is claimed with no lease, an expired one, or by this same worker.
    private static let reclaimOnConflict = """
        ON CONFLICT (bucket, "key", etag) DO UPDATE SET state = 'claimed', worker = EXCLUDED.worker,
            lease_expires_at = EXCLUDED.lease_expires_at, attempts = i.attempts + 1, snapshot_id = NULL,
            bytes_read = 0, bytes_total = NULL, updated_at = EXCLUDED.updated_at, version = i.version + 1
        WHERE i.state = 'retry' OR (i.state = 'claimed' AND (i.lease_expires_at IS NULL
            OR i.lease_expires_at <= EXCLUDED.updated_at OR i.worker = EXCLUDED.worker))
        """

    public func claimImportOrRead(
        _ key: ImportKey, owner: String, worker: String, leaseExpiresAt: Date, now: Date
    ) async throws -> ImportClaimAttempt {
        // ONE statement: the row as it stands (`existing`), the claim of `claimImport` unless that row is
        // plainly not claimable (imported, failed, or leased by another worker until after `now`), and the
        // answer. Skipping the upsert for such a row matters when workers share a listing: most of a
        // worker's lost claims meet rows another worker finished, and an ON CONFLICT DO UPDATE that finds
        // its WHERE false still locks the row (a WAL record, and a wait behind the other worker's open
        // transaction on it). Where the pre-check lets the upsert through, the upsert's WHERE decides
        // against the latest committed row, as `claimImport`'s does, so the pre-check can only turn a claim
        // into "not claimable", never the reverse; imported and failed are final states.
        // The SELECTs see the statement's snapshot: a row inserted by a claimer that committed after this
        // statement began (its insert was waited for) is not seen, and the answer is then "not claimable,
        // row unknown" (the caller reads it).
        let lease = Self.millis(leaseExpiresAt)
        let now = Self.millis(now)
        let rows = try await read(
            "claim of \(key)",
            """
            WITH existing AS (
                SELECT \(unescaped: Self.importColumns) FROM imports
                WHERE bucket = \(key.bucket) AND "key" = \(key.key) AND etag = \(key.etag)
            ),
            claimed AS (
                INSERT INTO imports AS i (bucket, "key", etag, owner, state, worker, lease_expires_at, attempts,
                    created_at, updated_at, version, import_id)
                SELECT \(key.bucket), \(key.key), \(key.etag), \(owner), 'claimed', \(worker), \(lease), 1, \(now),
                    \(now), 1, \(key.id)
                WHERE NOT EXISTS (
                    SELECT 1 FROM existing e WHERE e.state IN ('imported', 'failed') OR (e.state = 'claimed'
                        AND e.lease_expires_at > \(now) AND e.worker IS DISTINCT FROM \(worker)))
                \(unescaped: Self.reclaimOnConflict)
                RETURNING \(unescaped: Self.importColumns)
            )
            SELECT true AS claimed_now, \(unescaped: Self.importColumns) FROM claimed
            UNION ALL
            SELECT false AS claimed_now, \(unescaped: Self.importColumns) FROM existing
            WHERE NOT EXISTS (SELECT 1 FROM claimed)
            """
        ) { row in (try row["claimed_now"].decode(Bool.self), try Self.importRecord(from: row)) }
        guard let (claimedNow, record) = rows.first else { return .notClaimable(nil) }
        return claimedNow ? .claimed(record) : .notClaimable(record)
    }

    public func recordImportProgress(_ key: ImportKey, worker: String, bytesRead: Int64, bytesTotal: Int64?)
        async throws -> Bool
    {
        let changed = try await read(
            "progress of \(key)",
            """
            UPDATE imports SET bytes_read = \(bytesRead), bytes_total = \(bytesTotal)
            WHERE bucket = \(key.bucket) AND "key" = \(key.key) AND etag = \(key.etag)
                AND (worker IS NULL OR worker = \(worker))
            RETURNING 1
            """
        ) { _ in 1 }
        return changed.count == 1
    }

    public func importTask(_ id: ImportTaskID) async throws -> ImportTaskRecord? {
        try await read(
            "import task \(id)",
            "SELECT \(unescaped: Self.importTaskColumns) FROM import_tasks WHERE id = \(id.rawValue)",
            Self.importTask(from:)
        ).first
    }

    public func volumeToken(requester: Caller, clientToken: String) async throws -> VolumeTokenRecord? {
        try await read(
            "volume of a client token",
            """
            SELECT requester, client_token, snapshot_id, size, volume_id, created_at FROM volume_tokens
            WHERE requester = \(requester.storedText) AND client_token = \(clientToken)
            """, Self.volumeToken(from:)
        ).first
    }

    public func importTask(requester: Caller, clientToken: String) async throws -> ImportTaskRecord? {
        try await read(
            "import task of a client token",
            """
            SELECT \(unescaped: Self.importTaskColumns) FROM import_tasks
            WHERE requester = \(requester.storedText) AND client_token = \(clientToken)
            """, Self.importTask(from:)
        ).first
    }

    public func importTasks(ownedBy owner: ProjectRef?, after cursor: ImportTaskID?, limit: Int) async throws
        -> [ImportTaskRecord]
    {
        let after = cursor?.rawValue ?? ""
        guard let owner else {
            return try await read(
                "import tasks",
                """
                SELECT \(unescaped: Self.importTaskColumns) FROM import_tasks WHERE id > \(after)
                ORDER BY id LIMIT \(limit)
                """, Self.importTask(from:))
        }
        return try await read(
            "import tasks of \(owner)",
            """
            SELECT \(unescaped: Self.importTaskColumns) FROM import_tasks
            WHERE owner = \(owner.description) AND id > \(after) ORDER BY id LIMIT \(limit)
            """, Self.importTask(from:))
    }

    public func importTasks(in state: ImportTaskState, after cursor: ImportTaskID?, limit: Int) async throws
        -> [ImportTaskRecord]
    {
        let after = cursor?.rawValue ?? ""
        return try await read(
            "\(state.rawValue) import tasks",
            """
            SELECT \(unescaped: Self.importTaskColumns) FROM import_tasks
            WHERE state = \(state.rawValue) AND id > \(after) ORDER BY id LIMIT \(limit)
            """, Self.importTask(from:))
    }

    public func blockReferences(_ hashes: [BlockHash]) async throws -> [BlockHash: Int] {
        guard !hashes.isEmpty else { return [:] }
        let pairs = try await read(
            "block references",
            """
            SELECT encode(hash, 'hex'), refs FROM block_refs
            WHERE hash = ANY (SELECT decode(h, 'hex') FROM unnest(\(hashes.map(\.hex))::text[]) AS h)
            """
        ) { row -> (BlockHash, Int) in
            guard let hash = BlockHash(hex: try row[0].decode(String.self)) else {
                throw SnapshotError(.catalog, "malformed block hash in the catalog")
            }
            return (hash, try row[1].decode(Int.self))
        }
        return Dictionary(pairs, uniquingKeysWith: { first, _ in first })
    }

    public func unreferencedBlocks(after cursor: BlockHash?, limit: Int) async throws -> [BlockHash] {
        try await read(
            "unreferenced blocks",
            """
            SELECT encode(hash, 'hex') FROM block_refs
            WHERE refs <= 0 AND hash > decode(\(cursor?.hex ?? ""), 'hex') ORDER BY hash LIMIT \(limit)
            """
        ) { row in
            guard let hash = BlockHash(hex: try row[0].decode(String.self)) else {
                throw SnapshotError(.catalog, "malformed block hash in the catalog")
            }
            return hash
        }
    }

    public func sweepRequest() async throws -> SweepRequest? {
        try await read(
            "the sweep request", "SELECT due_before, version FROM gc_sweep WHERE id = 1 AND due_before IS NOT NULL"
        ) { row in
            SweepRequest(before: Self.millis(try row[0].decode(Date.self)), version: try row[1].decode(Int64.self))
        }.first
    }

    /// Before every stored date: the cursor of a first page.
    static let beforeEverything = Date(timeIntervalSince1970: -62_135_596_800)  // 0001-01-01

    /// For a catalog made by ``PostgresCatalog/open(url:logger:)``: stops its pool and waits for every
    /// connection to close. Otherwise nothing: the pool lives as long as the caller's ``PostgresCatalog/run()``
    /// runs (cancel that task, or leave ``withPostgresCatalog(url:logger:_:)``).
    public func close() async throws {
        guard let task = ownedRun.withLock({ task -> Task<Void, Never>? in defer { task = nil }; return task }) else {
            return
        }
        task.cancel()
        await task.value
    }

    // MARK: Writes

    public func apply(_ writes: [CatalogWrite]) async throws {
        guard !writes.isEmpty else { return }
        do {
            try await transaction(.readCommitted) { connection in
                for write in writes {
                    try await Self.apply(write, connection, logger)
                }
            }
        } catch let error as SnapshotError {
            throw error
        } catch let error where error.postgresSQLState?.hasPrefix("23") == true {
            // Integrity constraint violation: a duplicate ID, a second available snapshot of one object
            // version, a manifest without its snapshot…
            let constraint = error.postgresConstraint.map { " (\($0))" } ?? ""
            throw SnapshotError(.conflict, "a catalog constraint refused the write\(constraint)")
        } catch let error as PostgresCatalogError where error.code == .retriesExhausted {
            throw SnapshotError(.conflict, "the catalog write kept conflicting with concurrent writers")
        } catch {
            throw Self.catalogError("catalog write failed", error)
        }
    }

    private static func apply(_ write: CatalogWrite, _ db: PostgresConnection, _ logger: Logger) async throws {
        switch write {
        case .insertSnapshot(let s):
            let v = SnapshotValues(s)
            try await db.rows(
                """
                INSERT INTO snapshots (id, owner, description, state, visibility, shared_with, virtual_size,
                    stored_bytes, format, bootable, source_kind, source_bucket, source_key, source_etag,
                    source_path, source_volume, source_template, checksum, block_size, created_at, writer,
                    lease_expires_at, failure, version)
                VALUES (\(s.id.rawValue), \(s.owner.description), \(s.description), \(s.state.rawValue),
                    \(s.visibility.rawValue), \(v.sharedWith), \(v.virtualSize), \(v.storedBytes), \(s.format),
                    \(s.bootable), \(v.kind), \(v.bucket), \(v.key), \(v.etag), \(v.path), \(v.volume), \(v.template),
                    \(s.checksum), \(s.blockSize), \(millis(s.createdAt)), \(s.writer), \(s.leaseExpiresAt.map(millis)),
                    \(s.failure.map(diagnostic)), 1)
                """, logger: logger)
        case .updateSnapshot(let s):
            let v = SnapshotValues(s)
            let changed = try await db.rows(
                """
                UPDATE snapshots SET owner = \(s.owner.description), description = \(s.description),
                    state = \(s.state.rawValue), visibility = \(s.visibility.rawValue), shared_with = \(v.sharedWith),
                    virtual_size = \(v.virtualSize), stored_bytes = \(v.storedBytes), format = \(s.format),
                    bootable = \(s.bootable), source_kind = \(v.kind), source_bucket = \(v.bucket),
                    source_key = \(v.key), source_etag = \(v.etag), source_path = \(v.path),
                    source_volume = \(v.volume), source_template = \(v.template), checksum = \(s.checksum),
                    block_size = \(s.blockSize), created_at = \(millis(s.createdAt)), writer = \(s.writer),
                    lease_expires_at = \(s.leaseExpiresAt.map(millis)), failure = \(s.failure.map(diagnostic)),
                    version = version + 1
                WHERE id = \(s.id.rawValue) AND version = \(s.version)
                RETURNING 1
                """, logger: logger)
            try expectChange(changed, "snapshot \(s.id)")
        case .deleteSnapshot(let id, let version):
            // The manifest goes with it (ON DELETE CASCADE), in the same transaction; its blocks' counts drop.
            let manifest = try await db.rows(
                "SELECT data FROM manifests WHERE snapshot_id = \(id.rawValue)", logger: logger
            ).first.map { try Manifest(decoding: try $0.decode(Data.self)) }
            let changed = try await db.rows(
                "DELETE FROM snapshots WHERE id = \(id.rawValue) AND version = \(version) RETURNING 1", logger: logger)
            try expectChange(changed, "snapshot \(id)")
            if let manifest {
                try await db.rows(
                    """
                    UPDATE block_refs SET refs = refs - 1
                    WHERE hash = ANY (SELECT decode(h, 'hex') FROM unnest(\(distinctHexes(manifest))::text[]) AS h)
                    """, logger: logger)
            }
        case .expectSnapshot(let id, let version):
            try await expectRow(db, logger, "snapshot \(id)", "SELECT version FROM snapshots WHERE id = \(id.rawValue) FOR UPDATE", version)
        case .insertManifest(let id, let manifest):
            try await db.rows(
                "INSERT INTO manifests (snapshot_id, data) VALUES (\(id.rawValue), \(Data(manifest.encoded())))",
                logger: logger)
            // In hash order, so that concurrent commits sharing blocks lock their count rows in one order.
            try await db.rows(
                """
                INSERT INTO block_refs (hash, refs)
                SELECT decode(h, 'hex'), 1 FROM unnest(\(distinctHexes(manifest))::text[]) AS h ORDER BY 1
                ON CONFLICT (hash) DO UPDATE SET refs = block_refs.refs + 1
                """, logger: logger)
        case .registerBlocks(let hashes):
            try await db.rows(
                """
                INSERT INTO block_refs (hash, refs)
                SELECT decode(h, 'hex'), 0 FROM unnest(\(hashes.map(\.hex))::text[]) AS h ORDER BY 1
                ON CONFLICT (hash) DO NOTHING
                """, logger: logger)
        case .forgetBlocks(let hashes):
            try await db.rows(
                """
                DELETE FROM block_refs
                WHERE refs <= 0 AND hash = ANY (SELECT decode(h, 'hex') FROM unnest(\(hashes.map(\.hex))::text[]) AS h)
                """, logger: logger)
        case .requestSweep(let before):
            try await db.rows(
                """
                INSERT INTO gc_sweep AS g (id, due_before, version) VALUES (1, \(millis(before)), 1)
                ON CONFLICT (id) DO UPDATE SET version = g.version + 1,
                    due_before = GREATEST(g.due_before, EXCLUDED.due_before)
                """, logger: logger)
        case .completeSweep(let version):
            let changed = try await db.rows(
                """
                UPDATE gc_sweep SET due_before = NULL, version = version + 1
                WHERE id = 1 AND version = \(version) RETURNING 1
                """, logger: logger)
            try expectChange(changed, "the sweep request")

        case .insertVolume(let v):
            try await db.rows(
                """
                INSERT INTO volumes (id, owner, snapshot_id, size, file_name, attached_to, snapshot_in_progress,
                    created_at, version)
                VALUES (\(v.id.rawValue), \(v.owner.description), \(v.snapshotID?.rawValue), \(Int64(clamping: v.size)),
                    \(v.fileName), \(v.attachedTo?.rawValue), \(v.snapshotInProgress?.rawValue), \(millis(v.createdAt)), 1)
                """, logger: logger)
        case .updateVolume(let v):
            let changed = try await db.rows(
                """
                UPDATE volumes SET owner = \(v.owner.description), snapshot_id = \(v.snapshotID?.rawValue),
                    size = \(Int64(clamping: v.size)), file_name = \(v.fileName), attached_to = \(v.attachedTo?.rawValue),
                    snapshot_in_progress = \(v.snapshotInProgress?.rawValue), created_at = \(millis(v.createdAt)),
                    version = version + 1
                WHERE id = \(v.id.rawValue) AND version = \(v.version)
                RETURNING 1
                """, logger: logger)
            try expectChange(changed, "volume \(v.id)")
        case .deleteVolume(let id, let version):
            let changed = try await db.rows(
                "DELETE FROM volumes WHERE id = \(id.rawValue) AND version = \(version) RETURNING 1", logger: logger)
            try expectChange(changed, "volume \(id)")
        case .expectVolume(let id, let version):
            try await expectRow(db, logger, "volume \(id)", "SELECT version FROM volumes WHERE id = \(id.rawValue) FOR UPDATE", version)

        case .insertInstance(let i):
            try await db.rows(
                """
                INSERT INTO instances (id, owner, state, created_at, version)
                VALUES (\(i.id.rawValue), \(i.owner.description), \(i.state.rawValue), \(millis(i.createdAt)), 1)
                """, logger: logger)
        case .updateInstance(let i):
            let changed = try await db.rows(
                """
                UPDATE instances SET owner = \(i.owner.description), state = \(i.state.rawValue),
                    created_at = \(millis(i.createdAt)), version = version + 1
                WHERE id = \(i.id.rawValue) AND version = \(i.version)
                RETURNING 1
                """, logger: logger)
            try expectChange(changed, "instance \(i.id)")
        case .expectInstance(let id, let version):
            try await expectRow(db, logger, "instance \(id)", "SELECT version FROM instances WHERE id = \(id.rawValue) FOR UPDATE", version)

        case .deleteTemplate(let id, let version):
            let changed = try await db.rows(
                "DELETE FROM templates WHERE id = \(id.rawValue) AND version = \(version) RETURNING 1", logger: logger)
            try expectChange(changed, "template \(id)")

        case .insertTemplate(let t):
            try await db.rows(
                """
                INSERT INTO templates (id, owner, instance_id, snapshots, created_at, version)
                VALUES (\(t.id.rawValue), \(t.owner.description), \(t.instanceID.rawValue),
                    \(t.snapshots.map(\.rawValue)), \(millis(t.createdAt)), 1)
                """, logger: logger)

        case .insertAccessKey(let k):
            var project: String?
            if case .project(let p) = k.caller { project = p.description }
            let kind = project == nil ? "operator" : "project"
            try await db.rows(
                """
                INSERT INTO access_keys (id, secret, caller_kind, project, created_at)
                VALUES (\(k.id), \(k.secret), \(kind), \(project), \(millis(k.createdAt)))
                """, logger: logger)
        case .deleteAccessKey(let id):
            let changed = try await db.rows("DELETE FROM access_keys WHERE id = \(id) RETURNING 1", logger: logger)
            try expectChange(changed, "access key \(id)")

        case .insertImport(let r):
            try await db.rows(
                """
                INSERT INTO imports (bucket, "key", etag, owner, state, worker, lease_expires_at, attempts, snapshot_id,
                    error_code, error_message, created_at, updated_at, version, import_id)
                VALUES (\(r.key.bucket), \(r.key.key), \(r.key.etag), \(r.owner), \(r.state.rawValue), \(r.worker),
                    \(r.leaseExpiresAt.map(millis)), \(r.attempts), \(r.snapshotID?.rawValue), \(r.errorCode),
                    \(r.errorMessage.map(diagnostic)), \(millis(r.createdAt)), \(millis(r.updatedAt)), 1, \(r.key.id))
                """, logger: logger)
        case .updateImport(let r):
            let changed = try await db.rows(
                """
                UPDATE imports SET owner = \(r.owner), state = \(r.state.rawValue), worker = \(r.worker),
                    lease_expires_at = \(r.leaseExpiresAt.map(millis)), attempts = \(r.attempts),
                    snapshot_id = \(r.snapshotID?.rawValue), error_code = \(r.errorCode),
                    error_message = \(r.errorMessage.map(diagnostic)), created_at = \(millis(r.createdAt)),
                    updated_at = \(millis(r.updatedAt)), version = version + 1
                WHERE bucket = \(r.key.bucket) AND "key" = \(r.key.key) AND etag = \(r.key.etag)
                    AND version = \(r.version)
                RETURNING 1
                """, logger: logger)
            try expectChange(changed, "import \(r.key)")
        case .insertImportTask(let t):
            try await db.rows(
                """
                INSERT INTO import_tasks (id, owner, requester, bucket, "key", etag, format, description, client_token,
                    state, status_message, bytes_read, bytes_total, snapshot_id, created_at, updated_at, worker,
                    lease_expires_at, attempts, version)
                VALUES (\(t.id.rawValue), \(t.owner.description), \(t.requester.storedText), \(t.bucket), \(t.key),
                    \(t.etag), \(t.format), \(t.description), \(t.clientToken), \(t.state.rawValue),
                    \(t.statusMessage.map(diagnostic)), \(t.bytesRead), \(t.bytesTotal), \(t.snapshotID?.rawValue),
                    \(millis(t.createdAt)), \(millis(t.updatedAt)), \(t.worker), \(t.leaseExpiresAt.map(millis)),
                    \(t.attempts), 1)
                """, logger: logger)
        case .updateImportTask(let t):
            let changed = try await db.rows(
                """
                UPDATE import_tasks SET owner = \(t.owner.description), requester = \(t.requester.storedText),
                    bucket = \(t.bucket), "key" = \(t.key), etag = \(t.etag), format = \(t.format),
                    description = \(t.description), client_token = \(t.clientToken), state = \(t.state.rawValue),
                    status_message = \(t.statusMessage.map(diagnostic)), bytes_read = \(t.bytesRead),
                    bytes_total = \(t.bytesTotal), snapshot_id = \(t.snapshotID?.rawValue),
                    created_at = \(millis(t.createdAt)), updated_at = \(millis(t.updatedAt)), worker = \(t.worker),
                    lease_expires_at = \(t.leaseExpiresAt.map(millis)), attempts = \(t.attempts),
                    version = version + 1
                WHERE id = \(t.id.rawValue) AND version = \(t.version)
                RETURNING 1
                """, logger: logger)
            try expectChange(changed, "import task \(t.id)")
        case .insertVolumeToken(let t):
            try await db.rows(
                """
                INSERT INTO volume_tokens (requester, client_token, snapshot_id, size, volume_id, created_at)
                VALUES (\(t.requester.storedText), \(t.clientToken), \(t.snapshotID.rawValue),
                    \(t.size.map(Int64.init)), \(t.volumeID.rawValue), \(millis(t.createdAt)))
                """, logger: logger)
        }
    }

    /// The distinct blocks a manifest names, as hexadecimal text, ascending (a count is per manifest).
    private static func distinctHexes(_ manifest: Manifest) -> [String] {
        Set(manifest.entries.map(\.hash)).sorted().map(\.hex)
    }

    private static func expectChange(_ rows: [PostgresRow], _ what: String) throws {
        guard rows.count == 1 else { throw SnapshotError(.conflict, "\(what) changed or vanished meanwhile") }
    }

    private static func expectRow(
        _ db: PostgresConnection, _ logger: Logger, _ what: String, _ query: PostgresQuery, _ version: Int64
    ) async throws {
        let found = try await db.rows(query, logger: logger).first.map { try $0.decode(Int64.self) }
        guard found == version else { throw SnapshotError(.conflict, "\(what) changed or vanished meanwhile") }
    }

    // MARK: Errors and reads

    /// A `.catalog` error whose underlying error tells SQLSTATE and server message (never bind values).
    static func catalogError(_ message: String, _ error: any Error) -> SnapshotError {
        if let error = error as? SnapshotError { return error }
        if let error = error as? PostgresCatalogError { return SnapshotError(.catalog, message, underlying: error) }
        let code: PostgresCatalogError.Code = error.postgresSQLState == nil ? .connectionFailed : .database
        return SnapshotError(.catalog, message, underlying: PostgresCatalogError(code, message, underlying: error))
    }

    private func read<T>(
        _ what: String, _ query: PostgresQuery, _ transform: (PostgresRandomAccessRow) throws -> T
    ) async throws -> [T] {
        let rows: [PostgresRow]
        do {
            rows = try await execute(query)
        } catch {
            throw Self.catalogError("reading \(what) from the catalog failed", error)
        }
        do {
            return try rows.map { try transform($0.makeRandomAccess()) }
        } catch let error as SnapshotError {
            throw error
        } catch {
            throw SnapshotError(
                .catalog, "reading \(what): a catalog row has an unexpected type",
                underlying: PostgresCatalogError(.corruptRow, "undecodable column", underlying: error))
        }
    }

    // MARK: Row mapping

    /// Dates are kept to whole milliseconds, like the SQLite catalog (`Date(timeIntervalSince1970: ms / 1000)`),
    /// so a record reads back equal to what the service wrote.
    static func millis(_ date: Date) -> Date {
        Date(timeIntervalSince1970: (date.timeIntervalSince1970 * 1000).rounded() / 1000)
    }

    /// Free-text diagnostics (an import's error message, a snapshot's failure) may quote bytes of an untrusted
    /// image; PostgreSQL `text` cannot hold U+0000, which would make recording the failure itself fail (and the
    /// import be retried forever). NULs become U+FFFD; nothing else changes.
    static func diagnostic(_ text: String) -> String {
        guard text.unicodeScalars.contains("\u{0}") else { return text }
        return String(String.UnicodeScalarView(text.unicodeScalars.map { $0 == "\u{0}" ? "\u{FFFD}" : $0 }))
    }

    static let snapshotColumns = """
        id, owner, description, state, visibility, shared_with, virtual_size, stored_bytes, format, bootable,
        source_kind, source_bucket, source_key, source_etag, source_path, source_volume, source_template, checksum,
        block_size, created_at, writer, lease_expires_at, failure, version
        """

    /// The snapshot columns whose Swift value needs converting.
    private struct SnapshotValues {
        var sharedWith: [String]
        var virtualSize: Int64
        var storedBytes: Int64
        var kind: String
        var bucket: String?, key: String?, etag: String?, path: String?, volume: String?, template: String?

        init(_ s: SnapshotRecord) {
            sharedWith = s.sharedWith.map(\.description)
            virtualSize = Int64(clamping: s.virtualSize)
            storedBytes = Int64(clamping: s.storedBytes)
            switch s.source {
            case .object(let b, let k, let e): (kind, bucket, key, etag) = ("object", b, k, e)
            case .file(let p): (kind, path) = ("file", p)
            case .volume(let v): (kind, volume) = ("volume", v.rawValue)
            case .template(let t): (kind, template) = ("template", t.rawValue)
            }
        }
    }

    static func snapshot(from row: PostgresRandomAccessRow) throws -> SnapshotRecord {
        let kind = try row["source_kind"].decode(String.self)
        func required(_ column: String) throws -> String {
            guard let value = try row[column].decode(String?.self) else {
                throw SnapshotError(.catalog, "snapshot source of kind \(kind) lacks \(column) in the catalog")
            }
            return value
        }
        let source: SnapshotSource
        switch kind {
        case "object":
            source = .object(bucket: try required("source_bucket"), key: try required("source_key"), etag: try required("source_etag"))
        case "file": source = .file(path: try required("source_path"))
        case "volume": source = .volume(try VolumeID(parsing: try required("source_volume")))
        case "template": source = .template(try TemplateID(parsing: try required("source_template")))
        default: throw SnapshotError(.catalog, "unknown source kind \(kind) in the catalog")
        }
        guard let state = SnapshotState(rawValue: try row["state"].decode(String.self)),
            let visibility = Visibility(rawValue: try row["visibility"].decode(String.self))
        else { throw SnapshotError(.catalog, "unknown snapshot state or visibility in the catalog") }
        return SnapshotRecord(
            id: try SnapshotID(parsing: try row["id"].decode(String.self)),
            owner: try ProjectRef(parsing: try row["owner"].decode(String.self)),
            description: try row["description"].decode(String.self), state: state, visibility: visibility,
            sharedWith: try row["shared_with"].decode([String].self).map(ProjectRef.init(parsing:)),
            virtualSize: UInt64(max(0, try row["virtual_size"].decode(Int64.self))),
            storedBytes: UInt64(max(0, try row["stored_bytes"].decode(Int64.self))),
            format: try row["format"].decode(String.self), bootable: try row["bootable"].decode(Bool.self),
            source: source, checksum: try row["checksum"].decode(String?.self),
            blockSize: try row["block_size"].decode(Int.self),
            createdAt: millis(try row["created_at"].decode(Date.self)), writer: try row["writer"].decode(String?.self),
            leaseExpiresAt: try row["lease_expires_at"].decode(Date?.self).map(millis),
            failure: try row["failure"].decode(String?.self), version: try row["version"].decode(Int64.self))
    }

    static func manifest(from row: PostgresRandomAccessRow) throws -> (SnapshotID, Manifest) {
        let id = try SnapshotID(parsing: try row["snapshot_id"].decode(String.self))
        return (id, try Manifest(decoding: try row["data"].decode(Data.self)))
    }

    static let volumeColumns =
        "id, owner, snapshot_id, size, file_name, attached_to, snapshot_in_progress, created_at, version"

    static func volume(from row: PostgresRandomAccessRow) throws -> VolumeRecord {
        VolumeRecord(
            id: try VolumeID(parsing: try row["id"].decode(String.self)),
            owner: try ProjectRef(parsing: try row["owner"].decode(String.self)),
            snapshotID: try row["snapshot_id"].decode(String?.self).map(SnapshotID.init(parsing:)),
            size: UInt64(max(0, try row["size"].decode(Int64.self))), fileName: try row["file_name"].decode(String.self),
            attachedTo: try row["attached_to"].decode(String?.self).map(InstanceID.init(parsing:)),
            snapshotInProgress: try row["snapshot_in_progress"].decode(String?.self).map(SnapshotID.init(parsing:)),
            createdAt: millis(try row["created_at"].decode(Date.self)), version: try row["version"].decode(Int64.self))
    }

    static let instanceColumns = "id, owner, state, created_at, version"

    static func instance(from row: PostgresRandomAccessRow) throws -> InstanceRecord {
        guard let state = InstanceState(rawValue: try row["state"].decode(String.self)) else {
            throw SnapshotError(.catalog, "unknown instance state in the catalog")
        }
        return InstanceRecord(
            id: try InstanceID(parsing: try row["id"].decode(String.self)),
            owner: try ProjectRef(parsing: try row["owner"].decode(String.self)), state: state,
            createdAt: millis(try row["created_at"].decode(Date.self)), version: try row["version"].decode(Int64.self))
    }

    static let templateColumns = "id, owner, instance_id, snapshots, created_at, version"

    static func template(from row: PostgresRandomAccessRow) throws -> TemplateRecord {
        TemplateRecord(
            id: try TemplateID(parsing: try row["id"].decode(String.self)),
            owner: try ProjectRef(parsing: try row["owner"].decode(String.self)),
            instanceID: try InstanceID(parsing: try row["instance_id"].decode(String.self)),
            snapshots: try row["snapshots"].decode([String].self).map(SnapshotID.init(parsing:)),
            createdAt: millis(try row["created_at"].decode(Date.self)), version: try row["version"].decode(Int64.self))
    }

    static let accessKeyColumns = "id, secret, caller_kind, project, created_at"

    static func accessKey(from row: PostgresRandomAccessRow) throws -> AccessKey {
        let kind = try row["caller_kind"].decode(String.self)
        let caller: Caller
        switch kind {
        case "operator": caller = .operator
        case "project":
            guard let project = try row["project"].decode(String?.self) else {
                throw SnapshotError(.catalog, "a project access key without its project in the catalog")
            }
            caller = .project(try ProjectRef(parsing: project))
        default: throw SnapshotError(.catalog, "unknown access key caller kind \(kind) in the catalog")
        }
        return AccessKey(
            id: try row["id"].decode(String.self), secret: try row["secret"].decode(String.self), caller: caller,
            createdAt: millis(try row["created_at"].decode(Date.self)))
    }

    static let importColumns = """
        bucket, "key", etag, owner, state, worker, lease_expires_at, attempts, snapshot_id, error_code, error_message,
        created_at, updated_at, version, bytes_read, bytes_total
        """

    static let importTaskColumns = """
        id, owner, requester, bucket, "key", etag, format, description, client_token, state, status_message,
        bytes_read, bytes_total, snapshot_id, created_at, updated_at, worker, lease_expires_at, attempts, version
        """

    static func volumeToken(from row: PostgresRandomAccessRow) throws -> VolumeTokenRecord {
        VolumeTokenRecord(
            requester: try Caller(storedText: try row["requester"].decode(String.self)),
            clientToken: try row["client_token"].decode(String.self),
            snapshotID: try SnapshotID(parsing: try row["snapshot_id"].decode(String.self)),
            size: try row["size"].decode(Int64?.self).map { Int($0) },
            volumeID: try VolumeID(parsing: try row["volume_id"].decode(String.self)),
            createdAt: millis(try row["created_at"].decode(Date.self)))
    }

    static func importTask(from row: PostgresRandomAccessRow) throws -> ImportTaskRecord {
        let text = try row["id"].decode(String.self)
        guard let id = ImportTaskID(text), let state = ImportTaskState(rawValue: try row["state"].decode(String.self))
        else { throw SnapshotError(.catalog, "malformed import task ID or state in the catalog") }
        return ImportTaskRecord(
            id: id, owner: try ProjectRef(parsing: try row["owner"].decode(String.self)),
            requester: try Caller(storedText: try row["requester"].decode(String.self)),
            bucket: try row["bucket"].decode(String.self), key: try row["key"].decode(String.self),
            etag: try row["etag"].decode(String?.self), format: try row["format"].decode(String?.self),
            description: try row["description"].decode(String?.self),
            clientToken: try row["client_token"].decode(String?.self), state: state,
            statusMessage: try row["status_message"].decode(String?.self),
            bytesRead: try row["bytes_read"].decode(Int64.self), bytesTotal: try row["bytes_total"].decode(Int64?.self),
            snapshotID: try row["snapshot_id"].decode(String?.self).map(SnapshotID.init(parsing:)),
            createdAt: millis(try row["created_at"].decode(Date.self)),
            updatedAt: millis(try row["updated_at"].decode(Date.self)), worker: try row["worker"].decode(String?.self),
            leaseExpiresAt: try row["lease_expires_at"].decode(Date?.self).map(millis),
            attempts: try row["attempts"].decode(Int.self), version: try row["version"].decode(Int64.self))
    }

    static func importRecord(from row: PostgresRandomAccessRow) throws -> ImportRecord {
        guard let state = ImportState(rawValue: try row["state"].decode(String.self)) else {
            throw SnapshotError(.catalog, "unknown import state in the catalog")
        }
        return ImportRecord(
            key: ImportKey(
                bucket: try row["bucket"].decode(String.self), key: try row["key"].decode(String.self),
                etag: try row["etag"].decode(String.self)),
            owner: try row["owner"].decode(String.self), state: state, worker: try row["worker"].decode(String?.self),
            leaseExpiresAt: try row["lease_expires_at"].decode(Date?.self).map(millis),
            attempts: try row["attempts"].decode(Int.self),
            snapshotID: try row["snapshot_id"].decode(String?.self).map(SnapshotID.init(parsing:)),
            errorCode: try row["error_code"].decode(String?.self), errorMessage: try row["error_message"].decode(String?.self),
            createdAt: millis(try row["created_at"].decode(Date.self)), updatedAt: millis(try row["updated_at"].decode(Date.self)),
            version: try row["version"].decode(Int64.self), bytesRead: try row["bytes_read"].decode(Int64.self),
            bytesTotal: try row["bytes_total"].decode(Int64?.self))
    }
}

/// Builds the WHERE clause of a ``SnapshotQuery`` for PostgreSQL: every value (IDs, projects, patterns)
/// is a bound parameter; patterns become `LIKE … ESCAPE '\'` with their special characters escaped.
struct SnapshotSQL {
    var binds = PostgresBindings()

    /// Binds `value` and returns its placeholder.
    mutating func bind(_ value: String) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    mutating func bind(_ value: Date) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    mutating func selection(_ query: SnapshotQuery, _ caller: Caller) -> String {
        var parts: [String] = []
        if let ids = query.ids { parts.append(oneOf("id", ids.map(\.rawValue))) }
        if let owners = query.owners { parts.append(oneOf("owner", owners.map(\.description))) }
        if let states = query.states { parts.append(oneOf("state", states.map(\.rawValue))) }
        if let restorers = query.restorableBy {
            var any: [String] = []
            for restorer in restorers {
                switch restorer {
                case .everyone:
                    any.append("visibility = 'public'")
                case .explicitly(let project):
                    let p = bind(project.description)
                    any.append("(owner = \(p) OR \(p) = ANY (shared_with))")
                case .project(let project):
                    let p = bind(project.description)
                    let readable: String
                    switch caller {
                    case .operator: readable = "TRUE"
                    case .project(let me) where me == project: readable = "TRUE"
                    case .project(let me): readable = "owner = \(bind(me.description))"
                    }
                    any.append("(visibility = 'public' OR owner = \(p) OR (\(p) = ANY (shared_with) AND \(readable)))")
                }
            }
            parts.append(any.isEmpty ? "FALSE" : "(" + any.joined(separator: " OR ") + ")")
        }
        for filter in query.filters {
            let column: String
            switch filter.field {
            case .description: column = "description"
            case .snapshotID: column = "id"
            case .ownerID: column = "owner"
            case .volumeID:
                column = "(CASE WHEN source_kind = 'volume' THEN source_volume ELSE \(bind(SnapshotQuery.noVolume)) END)"
            }
            let any = filter.patterns.map { pattern in
                if let exact = pattern.exactText { return "\(column) = \(bind(exact))" }
                return "\(column) LIKE \(bind(pattern.like)) ESCAPE '\\'"
            }
            parts.append(any.isEmpty ? "FALSE" : "(" + any.joined(separator: " OR ") + ")")
        }
        return parts.isEmpty ? "TRUE" : parts.joined(separator: " AND ")
    }

    private mutating func oneOf(_ column: String, _ values: [String]) -> String {
        values.isEmpty ? "FALSE" : "\(column) IN (" + values.map { bind($0) }.joined(separator: ", ") + ")"
    }
}
