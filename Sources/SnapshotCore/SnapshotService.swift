public import Foundation
public import Logging

/// The snapshot core's front door: one value that opens every aggregate over one catalog and block
/// store, and answers the whole API (the CLI, the importer, later the EC2 API call it).
///
/// The rules live in the aggregates, each small and over the shared ``Ledger``:
/// - ``Snapshots``: visibility, descriptions, sharing, public/private, deletion;
/// - ``PendingSnapshots``: begin, commit, abort, lease renewal and recovery of snapshots being written
///   (what a ``SnapshotWriter`` works through);
/// - ``BlockCollector``: garbage collection of blocks;
/// - ``Volumes``: volumes, instances and templates;
/// - ``ImportClaims``: exactly-once import claims with leases;
/// - ``AccessKeys``: the API's access keys.
/// The methods below only forward to them.
public struct SnapshotService: Sendable {
    public let ledger: Ledger
    public let snapshots: Snapshots
    public let pending: PendingSnapshots
    public let collector: BlockCollector
    public let volumes: Volumes
    public let claims: ImportClaims
    public let accessKeys: AccessKeys

    public var catalog: any Catalog { ledger.catalog }
    public var blocks: any BlockStore { ledger.blocks }
    public var options: SnapshotServiceOptions { ledger.options }
    /// Where volume files live (`<data>/volumes`).
    public var volumesDirectory: String { volumes.volumesDirectory }

    public init(
        catalog: any Catalog, blocks: any BlockStore, volumesDirectory: String,
        options: SnapshotServiceOptions = SnapshotServiceOptions(), logger: Logger
    ) throws {
        do {
            try FileManager.default.createDirectory(atPath: volumesDirectory, withIntermediateDirectories: true)
        } catch {
            throw SnapshotError(.storage, "cannot create the volume directory \(volumesDirectory)", underlying: error)
        }
        self.init(
            ledger: Ledger(catalog: catalog, blocks: blocks, options: options, logger: logger),
            volumesDirectory: volumesDirectory)
    }

    private init(ledger: Ledger, volumesDirectory: String) {
        self.ledger = ledger
        collector = BlockCollector(ledger: ledger)
        snapshots = Snapshots(ledger: ledger, collector: collector)
        pending = PendingSnapshots(ledger: ledger, collector: collector, volumesDirectory: volumesDirectory)
        volumes = Volumes(ledger: ledger, pending: pending, volumesDirectory: volumesDirectory)
        claims = ImportClaims(ledger: ledger)
        accessKeys = AccessKeys(ledger: ledger)
    }

    /// The same service acting as the worker process `worker`: claims and pending snapshots carry its
    /// identity, and a claim or pending snapshot whose worker ``WorkerLiveness`` proves dead is taken over
    /// (or recovered) at once instead of after its lease. The caller has registered `worker` already.
    public func forWorker(_ worker: LiveWorker) -> SnapshotService {
        SnapshotService(
            ledger: Ledger(
                catalog: ledger.catalog, blocks: ledger.blocks, options: ledger.options, logger: ledger.logger,
                worker: worker),
            volumesDirectory: volumesDirectory)
    }

    /// Whether `caller` may see `snapshot` (see ``Snapshots``).
    public static func canSee(_ snapshot: SnapshotRecord, _ caller: Caller) -> Bool {
        Snapshots.canSee(snapshot, caller)
    }

    public func listSnapshots(caller: Caller) async throws -> [SnapshotRecord] {
        try await snapshots.listSnapshots(caller: caller)
    }

    public func listSnapshots(caller: Caller, after cursor: SnapshotCursor?, limit: Int) async throws -> SnapshotPage {
        try await snapshots.listSnapshots(caller: caller, after: cursor, limit: limit)
    }

    /// One page of the snapshots `caller` sees that `query` selects, oldest first (see
    /// ``Snapshots/snapshots(matching:caller:after:limit:)``): what DescribeSnapshots and the console's
    /// filter box call.
    public func snapshots(matching query: SnapshotQuery, caller: Caller, after cursor: SnapshotCursor?, limit: Int)
        async throws -> SnapshotPage
    {
        try await snapshots.snapshots(matching: query, caller: caller, after: cursor, limit: limit)
    }

    public func snapshot(_ id: SnapshotID, caller: Caller) async throws -> SnapshotRecord {
        try await snapshots.snapshot(id, caller: caller)
    }

    public func setDescription(_ id: SnapshotID, _ text: String, caller: Caller) async throws -> SnapshotRecord {
        try await snapshots.setDescription(id, text, caller: caller)
    }

    public func share(_ id: SnapshotID, with project: String, caller: Caller) async throws -> SnapshotRecord {
        try await snapshots.share(id, with: project, caller: caller)
    }

    public func unshare(_ id: SnapshotID, with project: String, caller: Caller) async throws -> SnapshotRecord {
        try await snapshots.unshare(id, with: project, caller: caller)
    }

    public func publish(_ id: SnapshotID, confirmBootable: Bool, caller: Caller) async throws -> SnapshotRecord {
        try await snapshots.publish(id, confirmBootable: confirmBootable, caller: caller)
    }

    public func unpublish(_ id: SnapshotID, caller: Caller) async throws -> SnapshotRecord {
        try await snapshots.unpublish(id, caller: caller)
    }

    @discardableResult
    public func deleteSnapshot(_ id: SnapshotID, caller: Caller, now: Date = Date()) async throws -> CollectionReport {
        try await snapshots.deleteSnapshot(id, caller: caller, now: now)
    }

    public func beginSnapshot(_ request: NewSnapshot, caller: Caller, now: Date = Date()) async throws -> SnapshotWriter {
        try await pending.beginSnapshot(request, caller: caller, now: now)
    }

    public func whileRenewing<T: Sendable>(
        _ writers: [SnapshotWriter], _ body: () async throws -> T
    ) async throws -> T {
        try await pending.whileRenewing(writers, body)
    }

    public func recover(now: Date = Date()) async throws -> RecoveryReport {
        try await pending.recover(now: now)
    }

    public func collectGarbage(now: Date = Date()) async throws -> CollectionReport {
        try await collector.collectGarbage(now: now)
    }

    public func collectReleasedBlocks(now: Date = Date()) async throws -> CollectionReport {
        try await collector.collectReleasedBlocks(now: now)
    }

    public func volumePath(_ volume: VolumeRecord) -> String {
        volumes.volumePath(volume)
    }

    public func createVolume(
        from snapshotID: SnapshotID, caller: Caller, output: String? = nil, clientToken: VolumeRequestToken? = nil,
        now: Date = Date()
    ) async throws -> VolumeRecord {
        try await volumes.createVolume(
            from: snapshotID, caller: caller, output: output, clientToken: clientToken, now: now)
    }

    public func listVolumes(caller: Caller) async throws -> [VolumeRecord] {
        try await volumes.listVolumes(caller: caller)
    }

    public func volume(_ id: VolumeID, caller: Caller) async throws -> VolumeRecord {
        try await volumes.volume(id, caller: caller)
    }

    public func attachVolume(_ id: VolumeID, to instanceID: InstanceID, caller: Caller) async throws -> VolumeRecord {
        try await volumes.attachVolume(id, to: instanceID, caller: caller)
    }

    public func detachVolume(_ id: VolumeID, caller: Caller) async throws -> VolumeRecord {
        try await volumes.detachVolume(id, caller: caller)
    }

    public func deleteVolume(_ id: VolumeID, caller: Caller) async throws {
        try await volumes.deleteVolume(id, caller: caller)
    }

    public func snapshotVolume(
        _ id: VolumeID, description: String = "", caller: Caller, now: Date = Date()) async throws -> SnapshotRecord {
        try await volumes.snapshotVolume(id, description: description, caller: caller, now: now)
    }

    public func createInstance(owner: ProjectRef, caller: Caller, now: Date = Date()) async throws -> InstanceRecord {
        try await volumes.createInstance(owner: owner, caller: caller, now: now)
    }

    public func listInstances(caller: Caller) async throws -> [InstanceRecord] {
        try await volumes.listInstances(caller: caller)
    }

    public func instance(_ id: InstanceID, caller: Caller) async throws -> InstanceRecord {
        try await volumes.instance(id, caller: caller)
    }

    public func attachedVolumes(_ id: InstanceID) async throws -> [VolumeRecord] {
        try await volumes.attachedVolumes(id)
    }

    public func startInstance(_ id: InstanceID, caller: Caller) async throws -> InstanceRecord {
        try await volumes.startInstance(id, caller: caller)
    }

    public func stopInstance(_ id: InstanceID, caller: Caller) async throws -> InstanceRecord {
        try await volumes.stopInstance(id, caller: caller)
    }

    public func createTemplate(instance instanceID: InstanceID, caller: Caller, now: Date = Date()) async throws
        -> (template: TemplateRecord, snapshots: [SnapshotRecord]) {
        try await volumes.createTemplate(instance: instanceID, caller: caller, now: now)
    }

    public func deleteTemplate(_ id: TemplateID, caller: Caller) async throws {
        try await volumes.deleteTemplate(id, caller: caller)
    }

    public func listTemplates(caller: Caller) async throws -> [TemplateRecord] {
        try await volumes.listTemplates(caller: caller)
    }

    public func claimImport(
        bucket: String, key: String, etag: String, owner: String, worker: String, leaseSeconds: TimeInterval,
        now: Date = Date()) async throws -> ImportClaim? {
        try await claims.claimImport(bucket: bucket, key: key, etag: etag, owner: owner, worker: worker, leaseSeconds: leaseSeconds, now: now)
    }

    /// See ``ImportClaims/claimImportOrRead(bucket:key:etag:owner:worker:leaseSeconds:now:)``.
    public func claimImportOrRead(
        bucket: String, key: String, etag: String, owner: String, worker: String, leaseSeconds: TimeInterval,
        now: Date = Date()
    ) async throws -> ImportClaims.ClaimAttempt {
        try await claims.claimImportOrRead(
            bucket: bucket, key: key, etag: etag, owner: owner, worker: worker, leaseSeconds: leaseSeconds, now: now)
    }

    public func renewLease(_ claim: ImportClaim, leaseSeconds: TimeInterval, now: Date = Date()) async throws
        -> ImportClaim {
        try await claims.renewLease(claim, leaseSeconds: leaseSeconds, now: now)
    }

    public func failImport(
        _ claim: ImportClaim, code: String, message: String, permanent: Bool, countsAsAttempt: Bool = true,
        now: Date = Date()
    ) async throws {
        try await claims.failImport(
            claim, code: code, message: message, permanent: permanent, countsAsAttempt: countsAsAttempt, now: now)
    }

    public func listImports() async throws -> [ImportRecord] {
        try await claims.listImports()
    }

    public func importRecord(bucket: String, key: String, etag: String) async throws -> ImportRecord? {
        try await claims.importRecord(bucket: bucket, key: key, etag: etag)
    }

    /// See ``ImportClaims/listImports(_:after:limit:)``.
    public func listImports(_ filter: ImportFilter, after cursor: ImportCursor?, limit: Int) async throws -> ImportPage {
        try await claims.listImports(filter, after: cursor, limit: limit)
    }

    /// See ``ImportClaims/listImports(_:after:)``.
    public func listImports(_ filter: ImportFilter, after cursor: ImportCursor? = nil) async throws -> [ImportRecord] {
        try await claims.listImports(filter, after: cursor)
    }

    /// See ``ImportClaims/importRecord(id:)``.
    public func importRecord(id: String) async throws -> ImportRecord? {
        try await claims.importRecord(id: id)
    }

    /// See ``ImportClaims/latestImport(bucket:key:)``.
    public func latestImport(bucket: String, key: String) async throws -> ImportRecord? {
        try await claims.latestImport(bucket: bucket, key: key)
    }
}
