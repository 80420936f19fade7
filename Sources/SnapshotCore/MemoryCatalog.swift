public import Foundation
import Synchronization

/// An in-memory ``Catalog`` for tests and tools: the same conditional-write semantics as the SQLite and
/// PostgreSQL catalogs (versions, unique keys, the one-available-snapshot-per-object rule, manifests that
/// need their snapshot, block reference counts), every batch applied to a copy of the state and swapped in
/// whole, so a failed batch changes nothing. The contract suites run against it too.
public final class MemoryCatalog: Catalog {
    private struct State {
        var snapshots: [SnapshotID: SnapshotRecord] = [:]
        var manifests: [SnapshotID: Manifest] = [:]
        var volumes: [VolumeID: VolumeRecord] = [:]
        var instances: [InstanceID: InstanceRecord] = [:]
        var templates: [TemplateID: TemplateRecord] = [:]
        var imports: [ImportKey: ImportRecord] = [:]
        var accessKeys: [String: AccessKey] = [:]
        var tasks: [ImportTaskID: ImportTaskRecord] = [:]
        var volumeTokens: [VolumeTokenKey: VolumeTokenRecord] = [:]
        var references: [BlockHash: Int] = [:]
        var sweep: (before: Date?, version: Int64)?
    }

    // The only mutable state, behind a Mutex; every call holds it for one read or one whole batch.
    private let state = Mutex(State())

    public init() {}

    // MARK: Reads

    public func snapshot(_ id: SnapshotID) async throws -> SnapshotRecord? { state.withLock { $0.snapshots[id] } }

    public func snapshots() async throws -> [SnapshotRecord] {
        state.withLock { $0.snapshots.values.sorted(by: Self.byCreation) }
    }

    public func manifest(_ id: SnapshotID) async throws -> Manifest? { state.withLock { $0.manifests[id] } }

    public func manifests() async throws -> [SnapshotID: Manifest] { state.withLock { $0.manifests } }

    public func volume(_ id: VolumeID) async throws -> VolumeRecord? { state.withLock { $0.volumes[id] } }

    public func volumes() async throws -> [VolumeRecord] {
        state.withLock { $0.volumes.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) } }
    }

    public func instance(_ id: InstanceID) async throws -> InstanceRecord? { state.withLock { $0.instances[id] } }

    public func instances() async throws -> [InstanceRecord] {
        state.withLock { $0.instances.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) } }
    }

    public func template(_ id: TemplateID) async throws -> TemplateRecord? { state.withLock { $0.templates[id] } }

    public func templates() async throws -> [TemplateRecord] {
        state.withLock { $0.templates.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) } }
    }

    public func importRecord(_ key: ImportKey) async throws -> ImportRecord? { state.withLock { $0.imports[key] } }

    public func imports() async throws -> [ImportRecord] {
        state.withLock {
            $0.imports.values.sorted {
                ($0.createdAt, $0.key.bucket, $0.key.key, $0.key.etag)
                    < ($1.createdAt, $1.key.bucket, $1.key.key, $1.key.etag)
            }
        }
    }

    public func imports(_ filter: ImportFilter, after cursor: ImportCursor?, limit: Int) async throws -> [ImportRecord] {
        let rows = state.withLock { state in
            state.imports.values.filter { row in
                (filter.state == nil || row.state == filter.state) && (filter.owner == nil || row.owner == filter.owner)
                    && cursor.map { (row.createdAt, row.key.id) > ($0.createdAt, $0.id) } ?? true
            }
        }
        return Array(rows.sorted { ($0.createdAt, $0.key.id) < ($1.createdAt, $1.key.id) }.prefix(limit))
    }

    public func imports(id: String) async throws -> [ImportRecord] {
        state.withLock { $0.imports.values.filter { $0.key.id == id } }
    }

    public func imports(bucket: String, key: String) async throws -> [ImportRecord] {
        state.withLock { state in
            state.imports.values.filter { $0.key.bucket == bucket && $0.key.key == key }
                .sorted { ($0.updatedAt, $0.key.etag) > ($1.updatedAt, $1.key.etag) }
        }
    }

    public func accessKey(_ id: String) async throws -> AccessKey? { state.withLock { $0.accessKeys[id] } }

    public func accessKeys() async throws -> [AccessKey] {
        state.withLock { $0.accessKeys.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) } }
    }

    // MARK: Targeted queries (linear scans: this catalog is for tests, not for scale)

    public func snapshots(
        matching query: SnapshotQuery, visibleTo caller: Caller, after cursor: SnapshotCursor?, limit: Int
    ) async throws -> [SnapshotRecord] {
        page(after: cursor, limit: limit) {
            $0.state != .deleting && Snapshots.canSee($0, caller) && query.matches($0, caller: caller)
        }
    }

    public func snapshots(in state: SnapshotState, after cursor: SnapshotCursor?, limit: Int) async throws
        -> [SnapshotRecord]
    {
        page(after: cursor, limit: limit) { $0.state == state }
    }

    private func page(after cursor: SnapshotCursor?, limit: Int, _ include: (SnapshotRecord) -> Bool)
        -> [SnapshotRecord]
    {
        let rows = state.withLock { Array($0.snapshots.values) }
        return Array(
            rows.filter { row in
                include(row) && cursor.map { (row.createdAt, row.id) > ($0.createdAt, $0.id) } ?? true
            }.sorted(by: Self.byCreation).prefix(max(0, limit)))
    }

    public func oldestPendingSnapshot() async throws -> Date? {
        state.withLock { $0.snapshots.values.filter { $0.state == .pending }.map(\.createdAt).min() }
    }

    public func availableSnapshot(of object: ImportKey) async throws -> SnapshotRecord? {
        let source = SnapshotSource.object(bucket: object.bucket, key: object.key, etag: object.etag)
        return state.withLock { $0.snapshots.values.first { $0.state == .available && $0.source == source } }
    }

    public func expiredClaims(before now: Date, limit: Int) async throws -> [ImportRecord] {
        state.withLock { state in
            let expired = state.imports.values.filter { row in
                row.state == .claimed && row.leaseExpiresAt.map { $0 < now } == true
            }
            return Array(expired.sorted { ($0.leaseExpiresAt ?? now) < ($1.leaseExpiresAt ?? now) }.prefix(limit))
        }
    }

    public func claimImport(_ key: ImportKey, owner: String, worker: String, leaseExpiresAt: Date, now: Date)
        async throws -> ImportRecord?
    {
        state.withLock { state in
            guard var row = state.imports[key] else {
                let row = ImportRecord(
                    key: key, owner: owner, state: .claimed, worker: worker, leaseExpiresAt: leaseExpiresAt,
                    attempts: 1, snapshotID: nil, errorCode: nil, errorMessage: nil, createdAt: now, updatedAt: now,
                    version: 1)
                state.imports[key] = row
                return row
            }
            let claimable: Bool
            switch row.state {
            case .retry: claimable = true
            case .claimed: claimable = row.leaseExpiresAt.map { $0 <= now } ?? true || row.worker == worker
            case .imported, .failed: claimable = false
            }
            guard claimable else { return nil }
            row.state = .claimed
            row.worker = worker
            row.leaseExpiresAt = leaseExpiresAt
            row.attempts += 1
            row.snapshotID = nil
            row.updatedAt = now
            row.bytesRead = 0
            row.bytesTotal = nil
            row.version += 1
            state.imports[key] = row
            return row
        }
    }

    public func recordImportProgress(_ key: ImportKey, worker: String, bytesRead: Int64, bytesTotal: Int64?)
        async throws -> Bool
    {
        state.withLock { state in
            guard var row = state.imports[key], row.worker == nil || row.worker == worker else { return false }
            row.bytesRead = bytesRead
            row.bytesTotal = bytesTotal
            state.imports[key] = row
            return true
        }
    }

    public func importTask(_ id: ImportTaskID) async throws -> ImportTaskRecord? { state.withLock { $0.tasks[id] } }

    public func volumeToken(requester: Caller, clientToken: String) async throws -> VolumeTokenRecord? {
        state.withLock { $0.volumeTokens[VolumeTokenKey(requester: requester, clientToken: clientToken)] }
    }

    public func importTask(requester: Caller, clientToken: String) async throws -> ImportTaskRecord? {
        state.withLock { $0.tasks.values.first { $0.requester == requester && $0.clientToken == clientToken } }
    }

    public func importTasks(ownedBy owner: ProjectRef?, after cursor: ImportTaskID?, limit: Int) async throws
        -> [ImportTaskRecord]
    {
        taskPage(after: cursor, limit: limit) { owner == nil || $0.owner == owner }
    }

    public func importTasks(in taskState: ImportTaskState, after cursor: ImportTaskID?, limit: Int) async throws
        -> [ImportTaskRecord]
    {
        taskPage(after: cursor, limit: limit) { $0.state == taskState }
    }

    private func taskPage(after cursor: ImportTaskID?, limit: Int, _ include: (ImportTaskRecord) -> Bool)
        -> [ImportTaskRecord]
    {
        let rows = state.withLock { Array($0.tasks.values) }
        return Array(
            rows.filter { row in include(row) && (cursor.map { row.id > $0 } ?? true) }.sorted { $0.id < $1.id }
                .prefix(max(0, limit)))
    }

    public func blockReferences(_ hashes: [BlockHash]) async throws -> [BlockHash: Int] {
        state.withLock { state in
            var result: [BlockHash: Int] = [:]
            for hash in hashes { result[hash] = state.references[hash] }
            return result
        }
    }

    public func unreferencedBlocks(after cursor: BlockHash?, limit: Int) async throws -> [BlockHash] {
        state.withLock { state in
            let zero = state.references.compactMap { hash, count -> BlockHash? in
                guard count <= 0, cursor.map({ hash > $0 }) ?? true else { return nil }
                return hash
            }
            return Array(zero.sorted().prefix(limit))
        }
    }

    public func sweepRequest() async throws -> SweepRequest? {
        state.withLock { state in
            guard let sweep = state.sweep, let before = sweep.before else { return nil }
            return SweepRequest(before: before, version: sweep.version)
        }
    }

    public func close() async throws {}

    // MARK: Writes

    public func apply(_ writes: [CatalogWrite]) async throws {
        try state.withLock { state in
            var next = state
            for write in writes { try Self.apply(write, &next) }
            state = next
        }
    }

    private static func apply(_ write: CatalogWrite, _ s: inout State) throws {
        switch write {
        case .insertSnapshot(let record):
            guard s.snapshots[record.id] == nil else { throw SnapshotError.conflict("snapshot \(record.id) exists") }
            var record = record
            record.version = 1
            try checkUniqueSource(record, s)
            s.snapshots[record.id] = record
        case .updateSnapshot(let record):
            try expect(s.snapshots[record.id]?.version, record.version, "snapshot \(record.id)")
            var record = record
            record.version += 1
            try checkUniqueSource(record, s)
            s.snapshots[record.id] = record
        case .deleteSnapshot(let id, let version):
            try expect(s.snapshots[id]?.version, version, "snapshot \(id)")
            s.snapshots[id] = nil
            if let manifest = s.manifests.removeValue(forKey: id) {
                for hash in Set(manifest.entries.map(\.hash)) { s.references[hash, default: 0] -= 1 }
            }
        case .expectSnapshot(let id, let version):
            try expect(s.snapshots[id]?.version, version, "snapshot \(id)")
        case .insertManifest(let id, let manifest):
            guard s.snapshots[id] != nil, s.manifests[id] == nil else {
                throw SnapshotError.conflict("the manifest of \(id) exists or its snapshot does not")
            }
            s.manifests[id] = manifest
            for hash in Set(manifest.entries.map(\.hash)) { s.references[hash, default: 0] += 1 }
        case .registerBlocks(let hashes):
            for hash in hashes where s.references[hash] == nil { s.references[hash] = 0 }
        case .forgetBlocks(let hashes):
            for hash in hashes where (s.references[hash] ?? 1) <= 0 { s.references[hash] = nil }
        case .requestSweep(let before):
            let current = s.sweep
            s.sweep = (max(current?.before ?? before, before), (current?.version ?? 0) + 1)
        case .completeSweep(let version):
            try expect(s.sweep?.version, version, "the sweep request")
            s.sweep = (nil, version + 1)

        case .insertVolume(let record):
            guard s.volumes[record.id] == nil else { throw SnapshotError.conflict("volume \(record.id) exists") }
            var record = record
            record.version = 1
            s.volumes[record.id] = record
        case .updateVolume(let record):
            try expect(s.volumes[record.id]?.version, record.version, "volume \(record.id)")
            var record = record
            record.version += 1
            s.volumes[record.id] = record
        case .deleteVolume(let id, let version):
            try expect(s.volumes[id]?.version, version, "volume \(id)")
            s.volumes[id] = nil
        case .expectVolume(let id, let version):
            try expect(s.volumes[id]?.version, version, "volume \(id)")

        case .insertInstance(let record):
            guard s.instances[record.id] == nil else { throw SnapshotError.conflict("instance \(record.id) exists") }
            var record = record
            record.version = 1
            s.instances[record.id] = record
        case .updateInstance(let record):
            try expect(s.instances[record.id]?.version, record.version, "instance \(record.id)")
            var record = record
            record.version += 1
            s.instances[record.id] = record
        case .expectInstance(let id, let version):
            try expect(s.instances[id]?.version, version, "instance \(id)")

        case .insertTemplate(let record):
            guard s.templates[record.id] == nil else { throw SnapshotError.conflict("template \(record.id) exists") }
            var record = record
            record.version = 1
            s.templates[record.id] = record
        case .deleteTemplate(let id, let version):
            try expect(s.templates[id]?.version, version, "template \(id)")
            s.templates[id] = nil

        case .insertAccessKey(let key):
            guard s.accessKeys[key.id] == nil else { throw SnapshotError.conflict("access key \(key.id) exists") }
            s.accessKeys[key.id] = key
        case .deleteAccessKey(let id):
            guard s.accessKeys.removeValue(forKey: id) != nil else {
                throw SnapshotError.conflict("access key \(id) vanished meanwhile")
            }

        case .insertImport(let record):
            guard s.imports[record.key] == nil else { throw SnapshotError.conflict("import \(record.key) exists") }
            var record = record
            record.version = 1
            s.imports[record.key] = record
        case .updateImport(let record):
            try expect(s.imports[record.key]?.version, record.version, "import \(record.key)")
            var record = record
            record.version += 1
            // Progress is written only by recordImportProgress (and reset by a claim).
            record.bytesRead = s.imports[record.key]?.bytesRead ?? 0
            record.bytesTotal = s.imports[record.key]?.bytesTotal
            s.imports[record.key] = record

        case .insertImportTask(let record):
            guard s.tasks[record.id] == nil else { throw SnapshotError.conflict("import task \(record.id) exists") }
            if let token = record.clientToken, Self.tokenInUse(token, by: record, s) {
                throw SnapshotError.conflict("client token \(token) is in use")
            }
            var record = record
            record.version = 1
            s.tasks[record.id] = record
        case .updateImportTask(let record):
            try expect(s.tasks[record.id]?.version, record.version, "import task \(record.id)")
            if let token = record.clientToken, Self.tokenInUse(token, by: record, s) {
                throw SnapshotError.conflict("client token \(token) is in use")
            }
            var record = record
            record.version += 1
            s.tasks[record.id] = record

        case .insertVolumeToken(let record):
            let key = VolumeTokenKey(requester: record.requester, clientToken: record.clientToken)
            guard s.volumeTokens[key] == nil else {
                throw SnapshotError.conflict("client token \(record.clientToken) is in use")
            }
            s.volumeTokens[key] = record
        }
    }

    /// The primary key of a volume token.
    private struct VolumeTokenKey: Hashable {
        var requester: Caller
        var clientToken: String
    }

    /// Whether another task of the same requester holds `token` (the other catalogs' unique index).
    private static func tokenInUse(_ token: String, by record: ImportTaskRecord, _ s: State) -> Bool {
        s.tasks.values.contains { (other: ImportTaskRecord) -> Bool in
            other.id != record.id && other.requester == record.requester && other.clientToken == token
        }
    }

    private static func expect(_ found: Int64?, _ version: Int64, _ what: String) throws {
        guard found == version else { throw SnapshotError.conflict("\(what) changed or vanished meanwhile") }
    }

    /// At most one available snapshot per object version (the other catalogs' partial unique index).
    private static func checkUniqueSource(_ record: SnapshotRecord, _ s: State) throws {
        guard record.state == .available, case .object = record.source else { return }
        if s.snapshots.values.contains(where: {
            $0.id != record.id && $0.state == .available && $0.source == record.source
        }) {
            throw SnapshotError.conflict("\(record.source) already has an available snapshot")
        }
    }

    private static func byCreation(_ a: SnapshotRecord, _ b: SnapshotRecord) -> Bool {
        (a.createdAt, a.id) < (b.createdAt, b.id)
    }
}
