import DiskImage
import Foundation
public import SnapshotCore

/// ``ImportCatalog`` over SnapshotCore's `SnapshotService` (SQLite or PostgreSQL catalog, any block
/// store): claims, leases, pending snapshots, commits and sharing all go through the core's rules.
public struct CoreImportCatalog: ImportCatalog {
    public let service: SnapshotService

    public init(service: SnapshotService) {
        self.service = service
    }

    public func recoverAbandoned() async throws {
        _ = try await service.recover()
    }

    public func claim(_ key: ImportKey, owner: String, worker: String, leaseDuration: Duration) async throws
        -> ClaimOutcome
    {
        // One statement, whether the claim is won or lost: a lost one answers the row in the way.
        let row: ImportRecord
        switch try await service.claimImportOrRead(
            bucket: key.bucket, key: key.key, etag: key.etag, owner: owner, worker: worker,
            leaseSeconds: leaseDuration.seconds)
        {
        case .claimed(let claim): return .claimed(claim)
        case .notClaimed(nil): return .busy(worker: nil)
        case .notClaimed(let found?): row = found
        }
        switch row.state {
        case .imported:
            guard let id = row.snapshotID else { return .busy(worker: row.worker) }
            return .imported(id, committedAt: row.updatedAt)
        case .failed:
            return .failed(code: row.errorCode ?? "Failed", message: row.errorMessage ?? "")
        case .claimed, .retry:
            return .busy(worker: row.worker)
        }
    }

    public func renew(_ claim: ImportClaim, leaseDuration: Duration) async throws -> ImportClaim {
        try await service.renewLease(claim, leaseSeconds: leaseDuration.seconds)
    }

    public func fail(_ claim: ImportClaim, code: String, message: String, permanent: Bool) async throws {
        try await service.failImport(claim, code: code, message: message, permanent: permanent)
    }

    public func release(_ claim: ImportClaim, reason: String) async throws {
        try await service.failImport(
            claim, code: ImporterError.Code.cancelled.name, message: reason, permanent: false, countsAsAttempt: false)
    }

    public func recordProgress(_ claim: ImportClaim, bytesRead: UInt64, bytesTotal: UInt64?) async throws {
        try await service.claims.recordImportProgress(claim, bytesRead: bytesRead, bytesTotal: bytesTotal)
    }

    public func beginSnapshot(
        claim: ImportClaim?, owner: ProjectRef, description: String, source: SnapshotSource, format: String,
        bootable: Bool, virtualSize: UInt64
    ) async throws -> any SnapshotWriting {
        let request = NewSnapshot(
            owner: owner, description: description, source: source, format: format, bootable: bootable,
            virtualSize: virtualSize, claim: claim, writer: claim?.worker,
            // The pending snapshot lives as long as the claim: a killed worker's snapshot is then
            // recovered by the pass that takes the claim over, not minutes later.
            lease: claim.map { max(1, $0.leaseExpiresAt.timeIntervalSinceNow) })
        let writer = try await service.beginSnapshot(request, caller: .operator)
        return CoreSnapshotWriter(writer: writer)
    }

    public func share(_ id: SnapshotID, owner: ProjectRef, with projects: [ProjectRef], makePublic: Bool) async throws
        -> SnapshotRecord
    {
        var record = try await service.snapshot(id, caller: .project(owner))
        for project in projects where !record.sharedWith.contains(project) {
            record = try await service.share(id, with: project.description, caller: .project(owner))
        }
        if makePublic && record.visibility != .public {
            // The sidecar's `public: true` is the operator's written confirmation (see Sidecar).
            record = try await service.publish(id, confirmBootable: true, caller: .project(owner))
        }
        return record
    }

    public func snapshot(_ id: SnapshotID) async throws -> SnapshotRecord? {
        try await service.catalog.snapshot(id)
    }

    public func document(_ snapshot: SnapshotRecord) -> [UInt8] {
        SnapshotDocument.encoded(snapshot)
    }
}

/// The importer's view of a core ``SnapshotWriter``.
struct CoreSnapshotWriter: SnapshotWriting {
    let writer: SnapshotWriter

    var id: SnapshotID { writer.id }
    var blockSize: Int { writer.blockSize }
    var virtualSize: UInt64 { writer.virtualSize }

    func writeBlock(index: UInt64, bytes: ArraySlice<UInt8>) async throws {
        try await writer.writeBlock(index: index, bytes: bytes)
    }

    func commit() async throws -> SnapshotRecord { try await writer.commit() }

    func renewLease() async throws { try await writer.renewLease() }

    func abort() async { await writer.abort(reason: "import abandoned") }
}

extension Duration {
    /// Seconds as a `TimeInterval`.
    var seconds: TimeInterval {
        let (s, atto) = components
        return TimeInterval(s) + TimeInterval(atto) / 1e18
    }
}
