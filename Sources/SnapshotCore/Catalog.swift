public import Foundation

/// The catalog: the system of record for snapshots, volumes, instances, templates and imports.
///
/// It is a *storage* interface: rows read one at a time or listed, and atomic batches of conditional
/// writes. Every rule (ownership, visibility, states, references) lives once in ``SnapshotService``,
/// above it, so the SQLite catalog (``SQLiteCatalog``) and the PostgreSQL catalog (module
/// `SnapshotPostgres`) enforce exactly the same rules.
///
/// ## Concurrency model: optimistic, row-versioned
/// Every row carries a `version`. The service reads the rows a decision depends on, checks its rules,
/// and then calls ``apply(_:)`` with a batch that (a) names the version of every row the decision
/// read (`update…`, `delete…`, `expect…`) and (b) inserts new rows. The catalog applies the whole
/// batch in ONE transaction, or nothing: when any named row's version differs (or the row is gone),
/// or an insert hits a primary key or unique constraint, it rolls back and throws
/// `SnapshotError(.conflict)`. The service then re-reads and retries (with fresh random IDs).
/// This makes every racing rule atomic across processes and hosts:
/// - unique IDs: primary keys; a collision is a conflict, retried with a new random ID;
/// - delete vs template reference: a template's snapshots are committed in the same batch as the
///   template row, and a delete names the snapshot's version;
/// - exactly-once import: the import row (primary key bucket+key+etag) is claimed by a conditional
///   insert/update, and the snapshot commit updates the snapshot row *and* the import row (both
///   versioned) in one batch; a partial unique index on the object source of available snapshots
///   makes a second available snapshot of one (bucket, key, etag) impossible even for a buggy caller;
/// - snapshot of a volume vs instance start: the volume row carries `snapshotInProgress`, instance
///   start names the versions of its volumes.
///
/// ## Implementing a catalog
/// - ``apply(_:)`` is one transaction; in PostgreSQL run it at READ COMMITTED with every update and
///   delete conditional (`… WHERE id = $1 AND version = $2`, check the affected row count; for
///   `expect…` use `SELECT … FOR UPDATE` and compare the version) and map unique violations
///   (SQLSTATE 23505) and failed conditions to `.conflict`. Inserts store `version = 1`; an update
///   stores the record's fields with `version = record.version + 1`.
/// - Reads need not share a transaction; each returns committed data.
/// - Dates are stored with at least millisecond precision (the service writes whole milliseconds).
/// - `deleteSnapshot` also deletes the snapshot's manifest.
/// - Tables (reference schema, see `SQLiteCatalog.migrator`): `snapshots` (the fields of
///   ``SnapshotRecord``; `source` as columns `source_kind`, `source_bucket`, `source_key`, `source_etag`,
///   `source_path`, `source_volume`, `source_template`; `shared_with` as a JSON array of strings);
///   unique index on (`source_bucket`, `source_key`, `source_etag`) WHERE `state = 'available'`;
///   `manifests` (`snapshot_id` primary key, `data` blob = ``Manifest/encoded()``); `volumes`;
///   `instances`; `templates` (`snapshots` as a JSON array); `imports` (primary key
///   `bucket`, `key`, `etag`; `bytes_read`, `bytes_total`; `import_id` = ``ImportKey/id``, written by every
///   insert, with indexes for the history's pages and lookups); `import_tasks` (``ImportTaskRecord``, primary key
///   `id`, unique (`requester`, `client_token`), indexes on (`owner`, `id`) and (`state`, `id`));
///   `volume_tokens` (``VolumeTokenRecord``, primary key (`requester`, `client_token`));
///   `block_refs` (`hash` primary key, `refs`: how many manifests name the
///   block, maintained by `insertManifest` and `deleteSnapshot` in their transaction; a partial index
///   on the zero rows); `gc_sweep` (one row: the pending sweep request and its version); `access_keys`
///   (`id` primary key, `secret` in plain text — the server needs it to compute signatures —,
///   `caller_kind` `operator`|`project`, `project`, `created_at`).
/// - Every query of the "Targeted queries" group is served by an index (see the schemas): none reads a
///   whole table, so a pass, a delete or a page of a listing costs the same at a million snapshots.
public protocol Catalog: Sendable {
    func snapshot(_ id: SnapshotID) async throws -> SnapshotRecord?
    /// Every snapshot, in any state, ordered by `createdAt` then `id`.
    func snapshots() async throws -> [SnapshotRecord]
    /// The manifest of an available snapshot (nil for pending/error ones).
    func manifest(_ id: SnapshotID) async throws -> Manifest?
    /// Every manifest (checks and tests; no hot path reads them all).
    func manifests() async throws -> [SnapshotID: Manifest]

    func volume(_ id: VolumeID) async throws -> VolumeRecord?
    /// Ordered by `createdAt` then `id`.
    func volumes() async throws -> [VolumeRecord]

    func instance(_ id: InstanceID) async throws -> InstanceRecord?
    /// Ordered by `createdAt` then `id`.
    func instances() async throws -> [InstanceRecord]

    func template(_ id: TemplateID) async throws -> TemplateRecord?
    /// Ordered by `createdAt` then `id`.
    func templates() async throws -> [TemplateRecord]

    func importRecord(_ key: ImportKey) async throws -> ImportRecord?
    /// Ordered by `createdAt`, then bucket, key, etag.
    func imports() async throws -> [ImportRecord]

    /// The API access key with this ID (secret included), nil when unknown.
    func accessKey(_ id: String) async throws -> AccessKey?
    /// Every access key, ordered by `createdAt` then `id`.
    func accessKeys() async throws -> [AccessKey]

    // MARK: Targeted queries (issue 11): nothing on a hot path reads a whole table.

    /// The snapshots `caller` may see (``Snapshots``' rules: the operator sees every one; a project its
    /// own, those shared with it and public ones, the last two only when available), never `deleting`
    /// ones, that `query` selects (evaluated by the catalog: ``SnapshotQuery/matches(_:caller:)`` is the
    /// reference), ordered by `createdAt` then `id`, starting after `cursor`, at most `limit` (keyset
    /// pagination: each page costs the same however deep it is). Filter patterns are translated with
    /// their escaping (``WildcardPattern/like``, ``WildcardPattern/glob``), never spliced into SQL.
    func snapshots(matching query: SnapshotQuery, visibleTo caller: Caller, after cursor: SnapshotCursor?, limit: Int)
        async throws -> [SnapshotRecord]
    /// The snapshots in `state`, ordered by `createdAt` then `id`, after `cursor`, at most `limit`.
    func snapshots(in state: SnapshotState, after cursor: SnapshotCursor?, limit: Int) async throws
        -> [SnapshotRecord]
    /// The `createdAt` of the oldest pending snapshot (the garbage collector's cutoff), nil when none.
    func oldestPendingSnapshot() async throws -> Date?
    /// The available snapshot made from this object version, if any (at most one: a unique index).
    func availableSnapshot(of object: ImportKey) async throws -> SnapshotRecord?
    /// Claims (state `claimed`) whose lease ended before `now`, oldest lease first, at most `limit`.
    func expiredClaims(before now: Date, limit: Int) async throws -> [ImportRecord]
    /// A page of the import history matching `filter`, ordered by `createdAt` then import ID (``ImportKey/id``),
    /// after `cursor`, at most `limit` (keyset pagination over an index per filter: (`created_at`, `import_id`),
    /// (`state`, …), (`owner`, …)).
    func imports(_ filter: ImportFilter, after cursor: ImportCursor?, limit: Int) async throws -> [ImportRecord]
    /// The imports whose ID (``ImportKey/id``, stored as column `import_id`, indexed) is `id`: one, or none
    /// (two object versions would share an ID only if 64 bits of their SHA-256 collided).
    func imports(id: String) async throws -> [ImportRecord]
    /// The imports of one object, every ETag, latest `updatedAt` first (the primary key's prefix).
    func imports(bucket: String, key: String) async throws -> [ImportRecord]

    /// Claims an object version in ONE conditional statement: inserts the row (`claimed`, attempts 1),
    /// or takes it over when it is `retry`, or `claimed` with a lease that ended at or before `now`
    /// (or held by this same `worker`): state `claimed`, the worker and lease, `attempts + 1`,
    /// `snapshotID` cleared, progress reset (`bytesRead` 0, `bytesTotal` nil), `updatedAt = now`, version + 1. A lost race costs that one statement.
    /// - Returns: the row as claimed, or nil when it is not claimable (imported, failed, leased).
    func claimImport(_ key: ImportKey, owner: String, worker: String, leaseExpiresAt: Date, now: Date) async throws
        -> ImportRecord?

    /// ``claimImport(_:owner:worker:leaseExpiresAt:now:)`` that also answers, when the object is not
    /// claimable, the row that stands in the way (imported, failed, or leased and by whom), so that a
    /// lost claim costs the one statement. The default makes the claim and then reads the row; an engine
    /// that can answer both at once does. The row may be nil when it could not be read in the same
    /// statement (a racing first insert not yet visible to it): the caller reads it then.
    func claimImportOrRead(_ key: ImportKey, owner: String, worker: String, leaseExpiresAt: Date, now: Date)
        async throws -> ImportClaimAttempt

    /// Records how far an import attempt has read its object: sets `bytesRead` and `bytesTotal` of the row
    /// where its worker is `worker`, or none (the attempt just ended: its last figure), in one statement that
    /// leaves every other field and the version alone. The importer calls it at most a few times a second.
    /// - Returns: whether a row was updated (false when another worker has taken the import over).
    @discardableResult
    func recordImportProgress(_ key: ImportKey, worker: String, bytesRead: Int64, bytesTotal: Int64?) async throws
        -> Bool

    // MARK: Import tasks (issue 15), each query served by an index.

    func importTask(_ id: ImportTaskID) async throws -> ImportTaskRecord?
    /// The task `requester` started with this `ClientToken` (unique per requester), if any.
    func importTask(requester: Caller, clientToken: String) async throws -> ImportTaskRecord?
    /// The tasks of `owner` (every task when nil), ascending by ID (= by creation), after `cursor`, at most
    /// `limit`.
    func importTasks(ownedBy owner: ProjectRef?, after cursor: ImportTaskID?, limit: Int) async throws
        -> [ImportTaskRecord]
    /// The tasks in `state`, ascending by ID, after `cursor`, at most `limit` (the runner's work list).
    func importTasks(in state: ImportTaskState, after cursor: ImportTaskID?, limit: Int) async throws
        -> [ImportTaskRecord]

    /// The CreateVolume `ClientToken` record `requester` made with this token, if any (the primary key).
    func volumeToken(requester: Caller, clientToken: String) async throws -> VolumeTokenRecord?

    /// The reference counts of these blocks: how many manifests name each. A block with no count row
    /// is absent from the result (never referenced, or forgotten after collection).
    func blockReferences(_ hashes: [BlockHash]) async throws -> [BlockHash: Int]
    /// Blocks whose count is zero (released by a delete, or registered by an aborted writer), ascending
    /// by hash after `cursor`, at most `limit`: what garbage collection visits.
    func unreferencedBlocks(after cursor: BlockHash?, limit: Int) async throws -> [BlockHash]
    /// The pending request for a full sweep of the block store (see ``CatalogWrite/requestSweep(before:)``).
    func sweepRequest() async throws -> SweepRequest?

    /// Applies every write atomically, or none. - Throws: `SnapshotError(.conflict)` when a named
    /// version differs, a named row is missing, or an insert violates a key or unique constraint;
    /// `.catalog` for database failures.
    func apply(_ writes: [CatalogWrite]) async throws

    /// Releases connections. Further calls are invalid.
    func close() async throws
}

/// What one claim statement found (``Catalog/claimImportOrRead(_:owner:worker:leaseExpiresAt:now:)``).
public enum ImportClaimAttempt: Sendable, Equatable {
    /// The row as claimed.
    case claimed(ImportRecord)
    /// Not claimable: the row as it stood (nil when the statement could not see it).
    case notClaimable(ImportRecord?)
}

extension Catalog {
    public func claimImportOrRead(_ key: ImportKey, owner: String, worker: String, leaseExpiresAt: Date, now: Date)
        async throws -> ImportClaimAttempt
    {
        if let row = try await claimImport(key, owner: owner, worker: worker, leaseExpiresAt: leaseExpiresAt, now: now) {
            return .claimed(row)
        }
        return .notClaimable(try await importRecord(key))
    }

    /// The snapshots `caller` may see, unfiltered (see ``snapshots(matching:visibleTo:after:limit:)``).
    public func snapshots(visibleTo caller: Caller, after cursor: SnapshotCursor?, limit: Int) async throws
        -> [SnapshotRecord]
    {
        try await snapshots(matching: SnapshotQuery(), visibleTo: caller, after: cursor, limit: limit)
    }
}

/// One write of an atomic batch (see ``Catalog``). "Version" is the version the caller read.
public enum CatalogWrite: Sendable {
    /// Insert with version 1; conflict if the ID exists.
    case insertSnapshot(SnapshotRecord)
    /// Replace every field where the stored version is `record.version`; store version + 1.
    case updateSnapshot(SnapshotRecord)
    /// Delete the row (and its manifest) where the stored version is `version`.
    case deleteSnapshot(SnapshotID, version: Int64)
    /// Only a precondition: the row exists with this version.
    case expectSnapshot(SnapshotID, version: Int64)
    /// Insert the manifest of a snapshot; conflict if one exists. Adds one to the reference count of
    /// every distinct block it names (creating counts), in the same transaction; `deleteSnapshot`
    /// subtracts them again (a count that reaches zero stays, at zero, for garbage collection).
    case insertManifest(SnapshotID, Manifest)
    /// Give these blocks a count of zero where they have none (an aborted writer's new blocks, so
    /// garbage collection visits them).
    case registerBlocks([BlockHash])
    /// Delete the count rows of these blocks that are still zero (after collection removed them).
    case forgetBlocks([BlockHash])
    /// Ask for a full sweep of the block store covering blocks put before `before` (a writer vanished
    /// without registering what it put); a pending request keeps the later of the two dates.
    case requestSweep(before: Date)
    /// Clear the sweep request read at this version; conflict when it changed meanwhile.
    case completeSweep(version: Int64)

    case insertVolume(VolumeRecord)
    case updateVolume(VolumeRecord)
    case deleteVolume(VolumeID, version: Int64)
    case expectVolume(VolumeID, version: Int64)

    case insertInstance(InstanceRecord)
    case updateInstance(InstanceRecord)
    case expectInstance(InstanceID, version: Int64)

    case insertTemplate(TemplateRecord)
    /// Delete the template where the stored version is `version` (its snapshots stay, deletable again).
    case deleteTemplate(TemplateID, version: Int64)

    /// Insert an API access key; conflict if the ID exists. Keys are never updated.
    case insertAccessKey(AccessKey)
    /// Delete the access key with this ID; conflict if there is none.
    case deleteAccessKey(String)

    /// Insert with version 1; conflict if (bucket, key, etag) exists.
    case insertImport(ImportRecord)
    /// Replace where the stored version is `record.version`; store version + 1. `bytesRead`/`bytesTotal` are
    /// left as stored (see ``Catalog/recordImportProgress(_:worker:bytesRead:bytesTotal:)``).
    case updateImport(ImportRecord)

    /// Insert with version 1; conflict if the ID, or the (requester, client token) pair, exists.
    case insertImportTask(ImportTaskRecord)
    /// Replace where the stored version is `record.version`; store version + 1.
    case updateImportTask(ImportTaskRecord)

    /// Insert a CreateVolume `ClientToken` record (batched with its `insertVolume`); conflict if the
    /// (requester, client token) pair exists. Never updated.
    case insertVolumeToken(VolumeTokenRecord)
}

/// Where a page of snapshots ends: the (`createdAt`, `id`) of its last row. Its ``token`` is what
/// `DescribeSnapshots` hands out as `NextToken`.
public struct SnapshotCursor: Hashable, Sendable {
    public var createdAt: Date
    public var id: SnapshotID

    public init(createdAt: Date, id: SnapshotID) {
        self.createdAt = createdAt
        self.id = id
    }

    /// The cursor after `record`.
    public init(after record: SnapshotRecord) {
        self.init(createdAt: record.createdAt, id: record.id)
    }

    /// `<milliseconds since 1970>.<snapshot id>`.
    public var token: String { "\(Int64((createdAt.timeIntervalSince1970 * 1000).rounded())).\(id.rawValue)" }

    /// Parses a ``token``. - Returns: nil when malformed.
    public init?(token: String) {
        let parts = token.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let millis = Int64(parts[0]), let id = SnapshotID(rawValue: String(parts[1])) else {
            return nil
        }
        self.init(createdAt: Date(timeIntervalSince1970: Double(millis) / 1000), id: id)
    }
}

/// Which imports a page of the history holds (both conditions when both are set).
public struct ImportFilter: Hashable, Sendable, CustomStringConvertible {
    public var state: ImportState?
    /// The owner text of the import (its key's project, verbatim).
    public var owner: String?

    public init(state: ImportState? = nil, owner: String? = nil) {
        self.state = state
        self.owner = owner
    }

    public var description: String { "state \(state?.rawValue ?? "any"), owner \(owner ?? "any")" }
}

/// Where a page of the import history ends: the (`createdAt`, import ID) of its last row. Its ``token`` is
/// what `imports list --after` takes, shaped like a ``SnapshotCursor`` token.
public struct ImportCursor: Hashable, Sendable {
    public var createdAt: Date
    /// An import ID: `imp-` and 16 lower-case hexadecimal digits.
    public var id: String

    public init(createdAt: Date, id: String) {
        self.createdAt = createdAt
        self.id = id
    }

    /// The cursor after `record`.
    public init(after record: ImportRecord) {
        self.init(createdAt: record.createdAt, id: record.key.id)
    }

    /// `<milliseconds since 1970>.<import id>`.
    public var token: String { "\(Int64((createdAt.timeIntervalSince1970 * 1000).rounded())).\(id)" }

    /// Parses a ``token``. - Returns: nil when malformed.
    public init?(token: String) {
        let parts = token.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let millis = Int64(parts[0]), Self.isImportID(parts[1]) else { return nil }
        self.init(createdAt: Date(timeIntervalSince1970: Double(millis) / 1000), id: String(parts[1]))
    }

    /// Whether `text` is an import ID: `imp-` and 16 lower-case hexadecimal digits.
    public static func isImportID(_ text: some StringProtocol) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.count == 20 && text.hasPrefix("imp-")
            && bytes.dropFirst(4).allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}

/// A request for a full sweep of the block store: every stored block with no reference count, touched
/// before the collection's cutoff, is removed. Recovery files one when it turns a vanished writer's
/// snapshot into `error` (the blocks that writer put are named nowhere).
public struct SweepRequest: Hashable, Sendable {
    /// The sweep is done once a collection ran with a cutoff after this.
    public var before: Date
    public var version: Int64

    public init(before: Date, version: Int64) {
        self.before = before
        self.version = version
    }
}

// MARK: - Block hashes and manifests

/// The SHA-256 of one block, held as four big-endian words (cheap to hash and compare in GC sets).
public struct BlockHash: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// From the 32 bytes of a digest. - Returns: nil unless exactly 32 bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        var words: [UInt64] = [0, 0, 0, 0]
        for (i, b) in bytes.enumerated() { words[i / 8] = words[i / 8] << 8 | UInt64(b) }
        (w0, w1, w2, w3) = (words[0], words[1], words[2], words[3])
    }

    /// From 64 lower-case hexadecimal digits.
    public init?(hex: String) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for i in stride(from: 0, to: 64, by: 2) {
            guard let hi = Self.nibble(utf8[i]), let lo = Self.nibble(utf8[i + 1]) else { return nil }
            bytes.append(hi << 4 | lo)
        }
        self.init(bytes: bytes)
    }

    /// The 32 digest bytes.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for w in [w0, w1, w2, w3] {
            for shift in stride(from: 56, through: 0, by: -8) {
                out.append(UInt8(truncatingIfNeeded: w >> UInt64(shift)))
            }
        }
        return out
    }

    /// 64 lower-case hexadecimal digits.
    public var hex: String {
        [w0, w1, w2, w3].map { w in
            let s = String(w, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }.joined()
    }

    public var description: String { hex }

    public static func < (a: BlockHash, b: BlockHash) -> Bool { (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3) }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }
}

/// The block list of a committed snapshot: the index and hash of every NON-ZERO block, ascending.
///
/// Blocks absent from the manifest are all zeros. Block `i` covers bytes
/// `[i * blockSize, min((i + 1) * blockSize, virtualSize))` — the last block may be short and is
/// hashed and stored at its real length.
///
/// Encoding (``encoded()``): for each entry, the index as 8 bytes big-endian then the 32 hash
/// bytes; nothing else (40 bytes per non-zero block: 0.004 % of the data at 1 MiB blocks).
public struct Manifest: Hashable, Sendable {
    public struct Entry: Hashable, Sendable {
        public var index: UInt64
        public var hash: BlockHash
        public init(index: UInt64, hash: BlockHash) {
            self.index = index
            self.hash = hash
        }
    }

    /// Ascending by index, no duplicates.
    public private(set) var entries: [Entry]

    /// - Throws: `.invalidArgument` when indexes are not strictly ascending.
    public init(entries: [Entry]) throws {
        for i in entries.indices.dropFirst() where entries[i - 1].index >= entries[i].index {
            throw SnapshotError(.invalidArgument, "manifest indexes must be strictly ascending")
        }
        self.entries = entries
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(entries.count * 40)
        for entry in entries {
            for shift in stride(from: 56, through: 0, by: -8) {
                out.append(UInt8(truncatingIfNeeded: entry.index >> UInt64(shift)))
            }
            out.append(contentsOf: entry.hash.bytes)
        }
        return out
    }

    /// - Throws: `.catalog` when the data is not a whole number of well-ordered entries.
    public init(decoding data: some Collection<UInt8>) throws {
        let bytes = Array(data)
        guard bytes.count % 40 == 0 else {
            throw SnapshotError(.catalog, "manifest of \(bytes.count) bytes is not a multiple of 40")
        }
        var entries: [Entry] = []
        entries.reserveCapacity(bytes.count / 40)
        var at = 0
        while at < bytes.count {
            var index: UInt64 = 0
            for b in bytes[at..<at + 8] { index = index << 8 | UInt64(b) }
            guard let hash = BlockHash(bytes: bytes[at + 8..<at + 40]) else {
                throw SnapshotError(.catalog, "manifest entry is malformed")
            }
            entries.append(Entry(index: index, hash: hash))
            at += 40
        }
        do {
            try self.init(entries: entries)
        } catch {
            throw SnapshotError(.catalog, "manifest indexes are not ascending")
        }
    }
}
