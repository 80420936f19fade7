public import Foundation
import Logging

/// Snapshots being written: begun `pending` under a writer's lease, committed (with their manifest, and
/// their import claim marked imported, in one transaction) or aborted; recovery turns those whose
/// writer vanished into `error`. ``SnapshotWriter`` works through this type only.
public struct PendingSnapshots: LedgerBacked {
    let ledger: Ledger
    let collector: BlockCollector
    /// Where volume files live (recovery removes half-written ones).
    let volumesDirectory: String

    /// How many pending or deleting snapshots recovery reads at once.
    static let recoveryPage = 500

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
        // A worker's writers carry its identity, so that its death can be proven (WorkerLiveness).
        let token =
            request.writer ?? request.claim?.worker ?? ledger.worker?.id.attemptToken() ?? UUID().uuidString
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
            metadata: ["snapshot": "\(record.id)", "project": "\(record.owner)", "source": record.source.logValue])
        return SnapshotWriter(pending: self, record: record, claim: request.claim, lease: lease)
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
                if writer.claim == nil, case .object(let bucket, let key, let etag) = current.source,
                    let other = try await catalog.availableSnapshot(of: ImportKey(bucket: bucket, key: key, etag: etag))
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
    /// The blocks its puts created get a zero reference count in the same transaction, so the next
    /// collection visits them (see ``BlockCollector``).
    func abort(_ writer: SnapshotWriter, reason: String) async {
        do {
            let created = writer.createdBlocks
            try await retrying("abort") {
                var writes: [CatalogWrite] = created.isEmpty ? [] : [.registerBlocks(created)]
                if let current = try await catalog.snapshot(writer.id), current.state == .pending,
                    current.writer == writer.token
                {
                    writes += try await releaseVolumes(of: current.id, source: current.source)
                    writes.append(.deleteSnapshot(current.id, version: current.version))
                }
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

    /// Recovers what crashed work left: pending snapshots whose writer vanished — its lease ended, or
    /// (for a service made ``SnapshotService/forWorker(_:)``) its worker is provably dead although the
    /// lease still runs — interrupted deletions, and half-written volume files.
    ///
    /// A vanished import's pending snapshot (its claim still held by the same writer) is removed and the
    /// claim released for the next pass (`retry`, code `WorkerDied`): nothing of it stays visible and the
    /// object is imported again. Any other vanished writer's snapshot turns `error` with a `failure` saying
    /// why. Both ask for a sweep of the blocks the writer put.
    public func recover(now: Date = Date()) async throws -> RecoveryReport {
        var report = RecoveryReport()
        var deaths: [String: Bool] = [:]
        // Only the pending and deleting snapshots are read (an index on state), page by page.
        var cursor: SnapshotCursor?
        while true {
            let page = try await catalog.snapshots(in: .pending, after: cursor, limit: Self.recoveryPage)
            for snapshot in page {
                guard let lease = snapshot.leaseExpiresAt, let writer = snapshot.writer else { continue }
                var why = "lease expired"
                if lease >= now {
                    guard let me = ledger.worker else { continue }
                    if deaths[writer] == nil { deaths[writer] = await me.provesDeath(ofHolder: writer) }
                    guard deaths[writer] == true else { continue }
                    why = "its worker's proof of life was free: the process ended"
                }
                let outcome = try await retrying("recover") { () -> RecoveryOutcome? in
                    guard var current = try await catalog.snapshot(snapshot.id), current.state == .pending,
                        current.writer == writer, current.leaseExpiresAt == lease
                    else { return nil }
                    let failure = "the writer \(writer) vanished (\(why))"
                    // The blocks the vanished writer put are named nowhere: ask for a full sweep that
                    // covers everything it could have put before it vanished.
                    var writes: [CatalogWrite] = [.requestSweep(before: min(lease, now))]
                    writes += try await releaseVolumes(of: current.id, source: current.source)
                    if case .object(let bucket, let key, let etag) = current.source,
                        var row = try await catalog.importRecord(ImportKey(bucket: bucket, key: key, etag: etag)),
                        row.state == .claimed, row.worker == writer, row.snapshotID == current.id
                    {
                        row.state = .retry
                        row.worker = nil
                        row.leaseExpiresAt = nil
                        row.snapshotID = nil
                        row.errorCode = "WorkerDied"
                        row.errorMessage = failure
                        row.updatedAt = Self.stamp(now)
                        writes += [.deleteSnapshot(current.id, version: current.version), .updateImport(row)]
                        try await catalog.apply(writes)
                        return .released
                    }
                    current.state = .error
                    current.failure = failure
                    current.writer = nil
                    current.leaseExpiresAt = nil
                    writes.insert(.updateSnapshot(current), at: 0)
                    try await catalog.apply(writes)
                    return .failed
                }
                switch outcome {
                case .failed:
                    report.failedSnapshots.append(snapshot.id)
                    logger.warning(
                        "pending snapshot recovered to error", metadata: ["snapshot": "\(snapshot.id)", "why": "\(why)"])
                case .released:
                    report.releasedImports.append(snapshot.id)
                    logger.notice(
                        "a vanished import's pending snapshot was removed and its object released for the next pass",
                        metadata: ["snapshot": "\(snapshot.id)", "writer": "\(writer)", "why": "\(why)"])
                case nil:
                    break
                }
            }
            guard page.count == Self.recoveryPage, let last = page.last else { break }
            cursor = SnapshotCursor(after: last)
        }
        cursor = nil
        while true {
            let page = try await catalog.snapshots(in: .deleting, after: cursor, limit: Self.recoveryPage)
            for snapshot in page where now.timeIntervalSince(snapshot.createdAt) >= 0 {
                _ = try await collector.finishDeletion(snapshot, now: now)
                report.finishedDeletions.append(snapshot.id)
            }
            guard page.count == Self.recoveryPage, let last = page.last else { break }
            cursor = SnapshotCursor(after: last)
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
}

/// What recovery did with one vanished writer's pending snapshot.
private enum RecoveryOutcome {
    /// Turned `error`.
    case failed
    /// Removed, its import claim released.
    case released
}

extension SnapshotSource {
    /// The source as a log field: a nested object with the fields of its JSON form (`kind`, `bucket`,
    /// `key`, `etag` …), never a Swift description such as `object(bucket: …)`.
    var logValue: Logger.MetadataValue {
        switch self {
        case .object(let bucket, let key, let etag):
            .dictionary(["kind": "object", "bucket": .string(bucket), "key": .string(key), "etag": .string(etag)])
        case .file(let path): .dictionary(["kind": "file", "path": .string(path)])
        case .volume(let id): .dictionary(["kind": "volume", "volumeId": .string(id.rawValue)])
        case .template(let id): .dictionary(["kind": "template", "templateId": .string(id.rawValue)])
        }
    }
}
