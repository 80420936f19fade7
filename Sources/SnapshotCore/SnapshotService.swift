public import Foundation
public import Logging

/// Tunables of ``SnapshotService``.
public struct SnapshotServiceOptions: Sendable {
    /// Block size for new snapshots (see ``Blocks/defaultSize`` for the choice).
    public var blockSize: Int
    /// Longest description, in characters.
    public var maxDescriptionLength: Int
    /// Lease of a snapshot writer that was not given one; renewed automatically while it writes.
    public var writerLease: TimeInterval
    /// Garbage collection keeps unreferenced blocks touched less than this before the oldest live
    /// writer began (or before now): covers clock skew between hosts and coarse file timestamps.
    public var gcSafetyMargin: TimeInterval
    /// How often a batch that lost a race is re-read and retried before `.conflict` reaches the caller.
    public var maxConflictRetries: Int

    public init(
        blockSize: Int = Blocks.defaultSize, maxDescriptionLength: Int = 255, writerLease: TimeInterval = 300,
        gcSafetyMargin: TimeInterval = 30, maxConflictRetries: Int = 50
    ) {
        self.blockSize = blockSize
        self.maxDescriptionLength = maxDescriptionLength
        self.writerLease = writerLease
        self.gcSafetyMargin = gcSafetyMargin
        self.maxConflictRetries = maxConflictRetries
    }
}

/// What a new snapshot is made of (``SnapshotService/beginSnapshot(_:caller:now:)``).
public struct NewSnapshot: Sendable {
    public var owner: ProjectRef
    public var description: String
    /// `.object` (importer) or `.file` (manual import); volumes and templates have their own calls.
    public var source: SnapshotSource
    public var format: String
    public var bootable: Bool
    public var virtualSize: UInt64
    /// The import claim this snapshot completes: the commit marks it imported in the same transaction.
    public var claim: ImportClaim?
    /// The writer's token (defaults to the claim's worker, else a random UUID).
    public var writer: String?
    /// Lease length (defaults to ``SnapshotServiceOptions/writerLease``).
    public var lease: TimeInterval?

    public init(
        owner: ProjectRef, description: String = "", source: SnapshotSource, format: String, bootable: Bool = false,
        virtualSize: UInt64, claim: ImportClaim? = nil, writer: String? = nil, lease: TimeInterval? = nil
    ) {
        self.owner = owner
        self.description = description
        self.source = source
        self.format = format
        self.bootable = bootable
        self.virtualSize = virtualSize
        self.claim = claim
        self.writer = writer
        self.lease = lease
    }
}

/// What garbage collection did.
public struct CollectionReport: Sendable, Equatable {
    public var scanned = 0
    public var removed = 0
    public var removedBytes = 0
    /// Unreferenced but kept: touched after the cutoff (a live writer may need them).
    public var kept = 0
    public init() {}
}

/// What recovery did.
public struct RecoveryReport: Sendable, Equatable {
    /// Pending snapshots whose writer's lease expired, now `error`.
    public var failedSnapshots: [SnapshotID] = []
    /// Deletions interrupted by a crash, now finished.
    public var finishedDeletions: [SnapshotID] = []
    public init() {}
}

/// The rules of snapshots, volumes, instances, templates and imports, over any ``Catalog`` and
/// ``BlockStore`` (issue 4, "Rules").
///
/// - Only the owner (or the operator) changes a description, sharing or visibility, or deletes.
/// - A project sees its own snapshots, those shared with it and public ones (available only);
///   anything else is `NotFound`, never `AccessDenied`, so IDs do not leak. Volumes, instances and
///   templates are never shared: others' are `NotFound`.
/// - A snapshot of a volume is refused while the volume is attached to a running instance, and the
///   instance cannot start while one is being taken; a template of a running instance is refused.
/// - A snapshot a template was made of is `InUse` for deletion.
/// - Publishing a bootable snapshot needs `confirmBootable`.
/// - Sharing with the owner's own project or a malformed name is refused.
///
/// Every mutation reads rows, checks the rules, and applies one conditional batch; a lost race is
/// re-read and retried (see ``Catalog``).
public struct SnapshotService: Sendable {
    public let catalog: any Catalog
    public let blocks: any BlockStore
    /// Where volume files live (`<data>/volumes`).
    public let volumesDirectory: String
    public let options: SnapshotServiceOptions
    let logger: Logger

    public init(
        catalog: any Catalog, blocks: any BlockStore, volumesDirectory: String,
        options: SnapshotServiceOptions = SnapshotServiceOptions(), logger: Logger
    ) throws {
        self.catalog = catalog
        self.blocks = blocks
        self.volumesDirectory = volumesDirectory
        self.options = options
        self.logger = logger
        do {
            try FileManager.default.createDirectory(atPath: volumesDirectory, withIntermediateDirectories: true)
        } catch {
            throw SnapshotError(.storage, "cannot create the volume directory \(volumesDirectory)", underlying: error)
        }
    }

    // MARK: - Shared helpers

    /// Runs `body` again while it throws `.conflict`, up to the configured number of times.
    func retrying<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await body()
            } catch let error as SnapshotError where error.code == .conflict && attempt < options.maxConflictRetries {
                attempt += 1
                logger.debug(
                    "retrying after a catalog conflict", metadata: ["operation": "\(what)", "attempt": "\(attempt)"])
                try await Task.sleep(nanoseconds: UInt64.random(in: 1_000_000...(5_000_000 * UInt64(min(attempt, 10)))))
            }
        }
    }

    /// Whole milliseconds (what every catalog stores).
    static func stamp(_ date: Date) -> Date {
        Date(timeIntervalSince1970: (date.timeIntervalSince1970 * 1000).rounded(.down) / 1000)
    }

    func checkDescription(_ text: String) throws {
        guard text.count <= options.maxDescriptionLength else {
            throw SnapshotError(
                .invalidArgument,
                "description is \(text.count) characters long; at most \(options.maxDescriptionLength) are allowed")
        }
        guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw SnapshotError(.invalidArgument, "description may not contain control characters (newlines, tabs …)")
        }
    }

    /// Whether `caller` may see `snapshot` (see the type's rules).
    public static func canSee(_ snapshot: SnapshotRecord, _ caller: Caller) -> Bool {
        switch caller {
        case .operator: return true
        case .project(let project):
            if snapshot.owner == project { return true }
            guard snapshot.state == .available else { return false }
            return snapshot.visibility == .public || snapshot.sharedWith.contains(project)
        }
    }

    static func isOwner(_ owner: ProjectRef, _ caller: Caller) -> Bool {
        switch caller {
        case .operator: true
        case .project(let project): project == owner
        }
    }

    func visibleSnapshot(_ id: SnapshotID, _ caller: Caller) async throws -> SnapshotRecord {
        guard let snapshot = try await catalog.snapshot(id), Self.canSee(snapshot, caller) else {
            throw SnapshotError.notFound("snapshot \(id)")
        }
        return snapshot
    }

    func ownedSnapshot(_ id: SnapshotID, _ caller: Caller, _ action: String) async throws -> SnapshotRecord {
        let snapshot = try await visibleSnapshot(id, caller)
        guard Self.isOwner(snapshot.owner, caller) else {
            throw SnapshotError(.accessDenied, "only the owner \(snapshot.owner) may \(action) snapshot \(id)")
        }
        return snapshot
    }

    func ownedVolume(_ id: VolumeID, _ caller: Caller) async throws -> VolumeRecord {
        guard let volume = try await catalog.volume(id), Self.isOwner(volume.owner, caller) else {
            throw SnapshotError.notFound("volume \(id)")
        }
        return volume
    }

    func ownedInstance(_ id: InstanceID, _ caller: Caller) async throws -> InstanceRecord {
        guard let instance = try await catalog.instance(id), Self.isOwner(instance.owner, caller) else {
            throw SnapshotError.notFound("instance \(id)")
        }
        return instance
    }

    // MARK: - Snapshots

    /// Snapshots the caller may see, oldest first (the operator sees all, including pending ones).
    public func listSnapshots(caller: Caller) async throws -> [SnapshotRecord] {
        try await catalog.snapshots().filter { Self.canSee($0, caller) && $0.state != .deleting }
    }

    /// One snapshot. - Throws: `.notFound` when absent or invisible to the caller.
    public func snapshot(_ id: SnapshotID, caller: Caller) async throws -> SnapshotRecord {
        try await visibleSnapshot(id, caller)
    }

    /// Changes the description (owner only; at most `maxDescriptionLength` characters, no control characters).
    public func setDescription(_ id: SnapshotID, _ text: String, caller: Caller) async throws -> SnapshotRecord {
        try checkDescription(text)
        return try await updateOwnedSnapshot(id, caller, "change the description of") { snapshot in
            snapshot.description = text
        }
    }

    /// Grants `project` use of the snapshot (owner only; the snapshot must be available).
    /// - Throws: `.invalidProject` for a malformed name, `.invalidArgument` for the owner's own project.
    public func share(_ id: SnapshotID, with project: String, caller: Caller) async throws -> SnapshotRecord {
        let grantee = try ProjectRef(parsing: project)
        return try await updateOwnedSnapshot(id, caller, "share") { snapshot in
            guard grantee != snapshot.owner else {
                throw SnapshotError(.invalidArgument, "\(grantee) owns snapshot \(id); it cannot be shared with itself")
            }
            try Self.requireAvailable(snapshot, "shared")
            if !snapshot.sharedWith.contains(grantee) {
                snapshot.sharedWith = (snapshot.sharedWith + [grantee]).sorted()
            }
        }
    }

    /// Revokes a grant (owner only; revoking a grant that does not exist changes nothing).
    public func unshare(_ id: SnapshotID, with project: String, caller: Caller) async throws -> SnapshotRecord {
        let grantee = try ProjectRef(parsing: project)
        return try await updateOwnedSnapshot(id, caller, "unshare") { snapshot in
            snapshot.sharedWith.removeAll { $0 == grantee }
        }
    }

    /// Makes the snapshot public (owner only). A bootable snapshot needs `confirmBootable`: its quality
    /// and security (no preset administrator password) must have been checked by a person.
    public func publish(_ id: SnapshotID, confirmBootable: Bool, caller: Caller) async throws -> SnapshotRecord {
        try await updateOwnedSnapshot(id, caller, "publish") { snapshot in
            try Self.requireAvailable(snapshot, "published")
            if snapshot.bootable && !confirmBootable {
                throw SnapshotError(
                    .confirmationRequired,
                    "snapshot \(id) is bootable: check that it holds no preset administrator password, then "
                        + "publish it with --confirm-bootable")
            }
            snapshot.visibility = .public
        }
    }

    /// Makes the snapshot private again (owner only).
    public func unpublish(_ id: SnapshotID, caller: Caller) async throws -> SnapshotRecord {
        try await updateOwnedSnapshot(id, caller, "unpublish") { snapshot in
            snapshot.visibility = .private
        }
    }

    static func requireAvailable(_ snapshot: SnapshotRecord, _ what: String) throws {
        guard snapshot.state == .available else {
            throw SnapshotError(
                .invalidState,
                "snapshot \(snapshot.id) is \(snapshot.state.rawValue); only an available one can be \(what)")
        }
    }

    private func updateOwnedSnapshot(
        _ id: SnapshotID, _ caller: Caller, _ action: String, _ change: (inout SnapshotRecord) throws -> Void
    ) async throws -> SnapshotRecord {
        try await retrying(action) {
            let current = try await ownedSnapshot(id, caller, action)
            guard current.state != .deleting else { throw SnapshotError.notFound("snapshot \(id)") }
            var updated = current
            try change(&updated)
            if updated == current { return current }
            try await catalog.apply([.updateSnapshot(updated)])
            updated.version += 1
            return updated
        }
    }

    /// Deletes a snapshot (owner only) and frees the blocks no other snapshot uses.
    ///
    /// Allowed while volumes made from it exist (a volume is an independent copy); refused (`InUse`)
    /// while a template references it, and (`InvalidState`) while it is being written.
    /// - Parameter now: the current time (see ``collectGarbage(now:)``).
    /// - Returns: what the block collection did.
    @discardableResult
    public func deleteSnapshot(_ id: SnapshotID, caller: Caller, now: Date = Date()) async throws -> CollectionReport {
        let marked = try await retrying("delete") { () -> SnapshotRecord in
            var snapshot = try await ownedSnapshot(id, caller, "delete")
            if case .template(let templateID) = snapshot.source, try await catalog.template(templateID) != nil {
                throw SnapshotError(.inUse, "snapshot \(id) is part of template \(templateID)")
            }
            switch snapshot.state {
            case .pending:
                throw SnapshotError(.invalidState, "snapshot \(id) is still being written")
            case .deleting:
                return snapshot
            case .available, .error:
                snapshot.state = .deleting
                try await catalog.apply([.updateSnapshot(snapshot)])
                snapshot.version += 1
                return snapshot
            }
        }
        return try await finishDeletion(marked, now: now)
    }

    private func finishDeletion(_ snapshot: SnapshotRecord, now: Date) async throws -> CollectionReport {
        // Candidates: this manifest's blocks no other manifest names. Pending writers are protected
        // by the cutoff (see BlockStore), read BEFORE the other manifests.
        let cutoff = try await collectionCutoff(now: now)
        var report = CollectionReport()
        if let manifest = try await catalog.manifest(snapshot.id) {
            var candidates = Set(manifest.entries.map(\.hash))
            for (other, otherManifest) in try await catalog.manifests() where other != snapshot.id {
                for entry in otherManifest.entries { candidates.remove(entry.hash) }
                if candidates.isEmpty { break }
            }
            report = try await remove(candidates, cutoff: cutoff)
        }
        try await retrying("delete") {
            guard let current = try await catalog.snapshot(snapshot.id) else { return }
            try await catalog.apply([.deleteSnapshot(current.id, version: current.version)])
        }
        logger.info(
            "snapshot deleted",
            metadata: [
                "snapshot": "\(snapshot.id)", "project": "\(snapshot.owner)", "blocksFreed": "\(report.removed)",
            ])
        return report
    }

    // MARK: - Garbage collection and recovery

    /// `min(now, oldest pending snapshot's createdAt) - gcSafetyMargin` (see ``BlockStore``).
    func collectionCutoff(now: Date) async throws -> Date {
        let oldest = try await catalog.snapshots().filter { $0.state == .pending }.map(\.createdAt).min()
        return min(now, oldest ?? now).addingTimeInterval(-options.gcSafetyMargin)
    }

    /// Removes unreferenced blocks in batches (a store makes each batch durable at once).
    /// - Parameter sizes: the candidates' sizes, for the report's byte count, when known.
    private func remove(
        _ candidates: some Sequence<BlockHash>, sizes: [BlockHash: Int] = [:], cutoff: Date
    ) async throws -> CollectionReport {
        var report = CollectionReport()
        var batch: [BlockHash] = []
        func flush() async throws {
            let removed = try await blocks.remove(batch, unlessModifiedSince: cutoff)
            report.scanned += batch.count
            report.removed += removed.count
            report.kept += batch.count - removed.count
            report.removedBytes += removed.reduce(0) { $0 + (sizes[$1] ?? 0) }
            batch.removeAll(keepingCapacity: true)
        }
        for hash in candidates {
            batch.append(hash)
            if batch.count == 512 { try await flush() }
        }
        if !batch.isEmpty { try await flush() }
        return report
    }

    /// Removes every stored block no manifest names, except those a live writer may need
    /// (touched after the cutoff), and stale temporary files. Safe while imports run.
    /// - Parameter now: the current time. Tests may pass a later time only when no writer can begin
    ///   during the call: a writer that begins after the pending snapshots were read is protected by
    ///   its puts being later than `now`.
    public func collectGarbage(now: Date = Date()) async throws -> CollectionReport {
        let cutoff = try await collectionCutoff(now: now)
        var referenced = Set<BlockHash>()
        for (_, manifest) in try await catalog.manifests() {
            for entry in manifest.entries { referenced.insert(entry.hash) }
        }
        let stored = try await blocks.list()
        var sizes: [BlockHash: Int] = [:]
        for block in stored where !referenced.contains(block.hash) { sizes[block.hash] = block.size }
        var report = try await remove(sizes.keys, sizes: sizes, cutoff: cutoff)
        report.scanned = stored.count
        _ = try await blocks.removeStaleTemporaries(olderThan: cutoff)
        logger.info(
            "garbage collected", metadata: ["removed": "\(report.removed)", "bytes": "\(report.removedBytes)"])
        return report
    }

    /// Turns pending snapshots whose writer's lease expired into `error` (releasing their volumes),
    /// and finishes deletions a crash interrupted. Run it at the start of every pass.
    public func recover(now: Date = Date()) async throws -> RecoveryReport {
        var report = RecoveryReport()
        for snapshot in try await catalog.snapshots() {
            switch snapshot.state {
            case .pending:
                guard let lease = snapshot.leaseExpiresAt, lease < now else { continue }
                let failed = try await retrying("recover") { () -> Bool in
                    guard var current = try await catalog.snapshot(snapshot.id), current.state == .pending,
                        let lease = current.leaseExpiresAt, lease < now
                    else { return false }
                    current.state = .error
                    current.failure = "the writer \(current.writer ?? "?") vanished (lease expired)"
                    current.writer = nil
                    current.leaseExpiresAt = nil
                    var writes: [CatalogWrite] = [.updateSnapshot(current)]
                    writes += try await releaseVolumes(of: current.id, source: current.source)
                    try await catalog.apply(writes)
                    return true
                }
                if failed {
                    report.failedSnapshots.append(snapshot.id)
                    logger.warning("pending snapshot recovered to error", metadata: ["snapshot": "\(snapshot.id)"])
                }
            case .deleting:
                if now.timeIntervalSince(snapshot.createdAt) >= 0 {
                    _ = try await finishDeletion(snapshot, now: now)
                    report.finishedDeletions.append(snapshot.id)
                }
            case .available, .error:
                continue
            }
        }
        // Volume files a crashed `volume create` left half-written.
        let stale = now.addingTimeInterval(-3600)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: volumesDirectory)) ?? []
        where name.hasPrefix(".tmp-") {
            let path = "\(volumesDirectory)/\(name)"
            if let info = try? POSIX.stat(path), info.modified < stale { _ = try? POSIX.unlink(path) }
        }
        return report
    }

    /// Writes clearing `snapshotInProgress` on the volumes a pending snapshot holds.
    func releaseVolumes(of id: SnapshotID, source: SnapshotSource) async throws -> [CatalogWrite] {
        let candidates: [VolumeRecord]
        switch source {
        case .volume(let volumeID): candidates = [try await catalog.volume(volumeID)].compactMap { $0 }
        case .template: candidates = try await catalog.volumes()
        default: return []
        }
        return candidates.filter { $0.snapshotInProgress == id }.map { volume in
            var volume = volume
            volume.snapshotInProgress = nil
            return .updateVolume(volume)
        }
    }

    // MARK: - Writers

    /// Starts a new snapshot in state `pending` and returns its writer (see ``SnapshotWriter``).
    ///
    /// - Parameters:
    ///   - request: the owner, source and properties; with a `claim`, the claim must still be held.
    ///   - caller: the operator or the owner project.
    /// - Throws: `.invalidArgument` (description, size, source kind), `.accessDenied` (another
    ///   project's owner), `.leaseLost` (the claim was taken over).
    public func beginSnapshot(_ request: NewSnapshot, caller: Caller, now: Date = Date()) async throws -> SnapshotWriter
    {
        guard Self.isOwner(request.owner, caller) else {
            throw SnapshotError(.accessDenied, "\(caller) cannot create snapshots for \(request.owner)")
        }
        try checkDescription(request.description)
        guard request.virtualSize > 0 else {
            throw SnapshotError(.invalidArgument, "a snapshot needs a non-empty disk")
        }
        switch request.source {
        case .object(let bucket, let key, let etag):
            if let claim = request.claim, claim.key != ImportKey(bucket: bucket, key: key, etag: etag) {
                throw SnapshotError(.invalidArgument, "the claim is for \(claim.key), not this object")
            }
        case .file:
            guard request.claim == nil else { throw SnapshotError(.invalidArgument, "a claim is for objects only") }
        case .volume, .template:
            throw SnapshotError(.invalidArgument, "use snapshotVolume or createTemplate for volume snapshots")
        }
        let token = request.writer ?? request.claim?.worker ?? UUID().uuidString
        let lease = request.lease ?? options.writerLease
        let record = try await retrying("begin snapshot") { () -> SnapshotRecord in
            let stamp = Self.stamp(now)
            var record = SnapshotRecord(
                id: .random(), owner: request.owner, description: request.description, state: .pending,
                visibility: .private, sharedWith: [], virtualSize: request.virtualSize, storedBytes: 0,
                format: request.format, bootable: request.bootable, source: request.source, checksum: nil,
                blockSize: options.blockSize, createdAt: stamp, writer: token,
                leaseExpiresAt: Self.stamp(now.addingTimeInterval(lease)), failure: nil, version: 1)
            var writes: [CatalogWrite] = [.insertSnapshot(record)]
            if let claim = request.claim {
                var row = try await heldImport(claim)
                row.snapshotID = record.id
                row.updatedAt = stamp
                writes.append(.updateImport(row))
            }
            try await catalog.apply(writes)
            record.version = 1
            return record
        }
        logger.info(
            "snapshot begun",
            metadata: ["snapshot": "\(record.id)", "project": "\(record.owner)", "source": "\(record.source)"])
        return SnapshotWriter(service: self, record: record, claim: request.claim, lease: lease)
    }

    /// Commits one or more writers and extra writes atomically (templates commit several).
    func commit(
        _ writers: [SnapshotWriter], extra: @escaping () async throws -> [CatalogWrite], now: Date
    ) async throws -> [SnapshotRecord] {
        try await blocks.sync()
        var prepared: [(SnapshotWriter, Manifest, String, UInt64)] = []
        for writer in writers {
            let (manifest, checksum, stored) = try writer.finish()
            prepared.append((writer, manifest, checksum, stored))
        }
        return try await retrying("commit") {
            var writes: [CatalogWrite] = []
            var committed: [SnapshotRecord] = []
            for (writer, manifest, checksum, stored) in prepared {
                guard var current = try await catalog.snapshot(writer.id), current.state == .pending,
                    current.writer == writer.token
                else {
                    throw SnapshotError(
                        .leaseLost, "snapshot \(writer.id) is no longer held by this writer (lease expired, recovered)")
                }
                if writer.claim == nil, case .object = current.source,
                    let other = try await catalog.snapshots().first(where: {
                        $0.state == .available && $0.source == current.source
                    })
                {
                    // Without a claim nothing else serializes imports of one object; the unique index is
                    // the last guard, this is the clear message.
                    throw SnapshotError(.invalidState, "\(current.source) is already snapshot \(other.id)")
                }
                current.state = .available
                current.checksum = checksum
                current.storedBytes = stored
                current.writer = nil
                current.leaseExpiresAt = nil
                writes.append(.updateSnapshot(current))
                writes.append(.insertManifest(current.id, manifest))
                writes += try await releaseVolumes(of: current.id, source: current.source)
                if let claim = writer.claim {
                    var row = try await heldImport(claim)
                    row.state = .imported
                    row.snapshotID = current.id
                    row.worker = nil
                    row.leaseExpiresAt = nil
                    row.errorCode = nil
                    row.errorMessage = nil
                    row.updatedAt = Self.stamp(now)
                    writes.append(.updateImport(row))
                }
                current.version += 1
                committed.append(current)
            }
            writes += try await extra()
            try await catalog.apply(writes)
            for record in committed {
                logger.info(
                    "snapshot committed",
                    metadata: [
                        "snapshot": "\(record.id)", "project": "\(record.owner)",
                        "checksum": "\(record.checksum ?? "")",
                    ])
            }
            return committed
        }
    }

    /// Removes a pending snapshot of this writer (nothing of it is ever visible) and releases its volume.
    func abort(_ writer: SnapshotWriter, reason: String) async {
        do {
            try await retrying("abort") {
                guard let current = try await catalog.snapshot(writer.id), current.state == .pending,
                    current.writer == writer.token
                else { return }
                var writes: [CatalogWrite] = try await releaseVolumes(of: current.id, source: current.source)
                writes.append(.deleteSnapshot(current.id, version: current.version))
                try await catalog.apply(writes)
            }
            logger.info("snapshot aborted", metadata: ["snapshot": "\(writer.id)", "reason": "\(reason)"])
        } catch {
            // Recovery turns it into `error` when its lease expires.
            logger.warning("snapshot abort failed", metadata: ["snapshot": "\(writer.id)", "error": "\(error)"])
        }
    }

    /// Extends a writer's lease (and its import claim's), or throws `.leaseLost`.
    func renew(_ writer: SnapshotWriter, lease: TimeInterval, now: Date) async throws {
        try await retrying("renew") {
            guard var current = try await catalog.snapshot(writer.id), current.state == .pending,
                current.writer == writer.token
            else { throw SnapshotError(.leaseLost, "snapshot \(writer.id) is no longer held by this writer") }
            current.leaseExpiresAt = Self.stamp(now.addingTimeInterval(lease))
            var writes: [CatalogWrite] = [.updateSnapshot(current)]
            if let claim = writer.claim {
                var row = try await heldImport(claim)
                row.leaseExpiresAt = current.leaseExpiresAt
                row.updatedAt = Self.stamp(now)
                writes.append(.updateImport(row))
            }
            try await catalog.apply(writes)
        }
    }

    /// Runs `body` while one child task renews `writers`' leases every third of a lease: the lease
    /// owner of writers that no import claim covers (a volume snapshot, a template, a local-file
    /// import). A failed renewal ends the renewals; the writer then learns of the loss at commit.
    public func whileRenewing<T: Sendable>(
        _ writers: [SnapshotWriter], _ body: () async throws -> T
    ) async throws -> T {
        guard let lease = writers.map(\.lease).min(), lease > 0 else { return try await body() }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while true {
                    try await Task.sleep(for: .seconds(lease / 3))
                    for writer in writers { try await writer.renewLease() }
                }
            }
            defer { group.cancelAll() }
            return try await body()
        }
    }
}
