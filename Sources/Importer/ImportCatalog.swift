public import DiskImage
public import Foundation
public import SnapshotCore

/// What a claim attempt found (see ``ImportCatalog/claim(_:owner:worker:leaseDuration:)``).
public enum ClaimOutcome: Sendable {
    /// This worker now holds the lease.
    case claimed(ImportClaim)
    /// The object (same key and ETag) already has a committed snapshot; `committedAt` is when its import row
    /// was marked imported (by the committing worker's clock), when known.
    case imported(SnapshotID, committedAt: Date? = nil)
    /// The object was rejected for good earlier.
    case failed(code: String, message: String)
    /// Another worker holds a live lease.
    case busy(worker: String?)
}

/// A snapshot being written by one import: blocks in (any order, concurrently), then commit or abort.
public protocol SnapshotWriting: Sendable {
    var id: SnapshotID { get }
    var blockSize: Int { get }
    var virtualSize: UInt64 { get }
    /// Stores block `index` (hashing it); all-zero blocks cost nothing. Safe to call concurrently.
    func writeBlock(index: UInt64, bytes: ArraySlice<UInt8>) async throws
    /// Makes the snapshot available (and, for a claimed import, marks the import done in the same
    /// catalog transaction). - Throws: `leaseLost` when another worker took the claim over.
    func commit() async throws -> SnapshotRecord
    /// Drops the pending snapshot (best effort; recovery collects what is left after a crash).
    func abort() async
    /// Extends the pending snapshot's lease. Only the import's one lease owner calls it (the writer never
    /// renews by itself). - Throws: `leaseLost`.
    func renewLease() async throws
}

/// The snapshot-core side of an import: the seam between the importer and SnapshotCore.
///
/// ``CoreImportCatalog`` implements it over SnapshotCore's service; tests may use it directly.
public protocol ImportCatalog: Sendable {
    /// Housekeeping before a pass: pending snapshots and claims whose lease expired are released.
    func recoverAbandoned() async throws

    /// Claims (bucket, key, ETag) for `worker` with a lease, exactly once across processes/hosts.
    func claim(_ key: ImportKey, owner: String, worker: String, leaseDuration: Duration) async throws -> ClaimOutcome

    /// Extends the lease. - Throws: when the claim was lost (another worker took it over).
    func renew(_ claim: ImportClaim, leaseDuration: Duration) async throws -> ImportClaim

    /// Ends an unsuccessful attempt: `permanent` marks the import failed for good (the object goes
    /// to failed/), otherwise it becomes claimable again by the next pass.
    func fail(_ claim: ImportClaim, code: String, message: String, permanent: Bool) async throws

    /// Ends an attempt that was interrupted (shutdown, a signal), not failed: the object becomes claimable
    /// again and the attempt does not count towards `max_attempts`; its pending snapshot is dropped.
    func release(_ claim: ImportClaim, reason: String) async throws

    /// Records how far the attempt holding `claim` has read its object, on the import row (a single
    /// cheap write; the pipeline calls it at most a few times a second). Failures are the caller's to ignore.
    func recordProgress(_ claim: ImportClaim, bytesRead: UInt64, bytesTotal: UInt64?) async throws

    /// Starts a pending snapshot. `claim` is nil for a manual import of a local file.
    func beginSnapshot(
        claim: ImportClaim?, owner: ProjectRef, description: String, source: SnapshotSource, format: String,
        bootable: Bool, virtualSize: UInt64
    ) async throws -> any SnapshotWriting

    /// Applies sidecar sharing after commit, with the owner's rights (the core's rules apply).
    /// `confirmBootable` is the explicit confirmation publishing a bootable snapshot needs.
    func share(_ id: SnapshotID, owner: ProjectRef, with projects: [ProjectRef], makePublic: Bool) async throws
        -> SnapshotRecord

    /// A committed snapshot (for receipts of imports finished by an earlier pass).
    func snapshot(_ id: SnapshotID) async throws -> SnapshotRecord?

    /// The snapshot document (`snapshot show --json`), used as the `.snapshot.json` receipt.
    func document(_ snapshot: SnapshotRecord) -> [UInt8]
}

extension ImportCatalog {
    /// Catalogs that keep no progress (test doubles) ignore it.
    public func recordProgress(_ claim: ImportClaim, bytesRead: UInt64, bytesTotal: UInt64?) async throws {}
}
