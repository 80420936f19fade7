import DiskImage
import Foundation
import Importer
import Logging
import SnapshotCore
import Testing

/// An import whose claim another worker takes over (its lease expired, e.g. a long GC pause or a
/// partition) must not make its snapshot visible: the writer does not renew anything itself and learns
/// of the loss at commit (issue 10: one lease owner per import).
@Suite("Import lease loss")
final class LeaseLossTests {
    let data = NSTemporaryDirectory() + "lease-\(UInt32.random(in: 0...UInt32.max))"
    deinit { try? FileManager.default.removeItem(atPath: data) }

    /// The core catalog, except that just before the commit another worker takes the claim over, as a
    /// worker does once a lease has expired.
    struct TakeoverBeforeCommit: ImportCatalog {
        let base: CoreImportCatalog
        let service: SnapshotService

        struct Writer: SnapshotWriting {
            let base: any SnapshotWriting
            let takeover: @Sendable () async throws -> Void
            var id: SnapshotID { base.id }
            var blockSize: Int { base.blockSize }
            var virtualSize: UInt64 { base.virtualSize }
            func writeBlock(index: UInt64, bytes: ArraySlice<UInt8>) async throws {
                try await base.writeBlock(index: index, bytes: bytes)
            }
            func commit() async throws -> SnapshotRecord {
                try await takeover()
                return try await base.commit()
            }
            func abort() async { await base.abort() }
            func renewLease() async throws { try await base.renewLease() }
        }

        func recoverAbandoned() async throws { try await base.recoverAbandoned() }
        func claim(_ key: ImportKey, owner: String, worker: String, leaseDuration: Duration) async throws
            -> ClaimOutcome
        { try await base.claim(key, owner: owner, worker: worker, leaseDuration: leaseDuration) }
        func renew(_ claim: ImportClaim, leaseDuration: Duration) async throws -> ImportClaim {
            try await base.renew(claim, leaseDuration: leaseDuration)
        }
        func fail(_ claim: ImportClaim, code: String, message: String, permanent: Bool) async throws {
            try await base.fail(claim, code: code, message: message, permanent: permanent)
        }
        func beginSnapshot(
            claim: ImportClaim?, owner: ProjectRef, description: String, source: SnapshotSource, format: String,
            bootable: Bool, virtualSize: UInt64
        ) async throws -> any SnapshotWriting {
            let writer = try await base.beginSnapshot(
                claim: claim, owner: owner, description: description, source: source, format: format,
                bootable: bootable, virtualSize: virtualSize)
            let service = service
            return Writer(base: writer) {
                guard let claim else { return }
                // An hour later, the lease has long expired: the thief's claim wins.
                let stolen = try await service.claimImport(
                    bucket: claim.key.bucket, key: claim.key.key, etag: claim.key.etag, owner: owner.description,
                    worker: "thief", leaseSeconds: 60, now: Date().addingTimeInterval(3600))
                #expect(stolen != nil, "the expired claim is taken over")
            }
        }
        func share(_ id: SnapshotID, owner: ProjectRef, with projects: [ProjectRef], makePublic: Bool) async throws
            -> SnapshotRecord
        { try await base.share(id, owner: owner, with: projects, makePublic: makePublic) }
        func snapshot(_ id: SnapshotID) async throws -> SnapshotRecord? { try await base.snapshot(id) }
        func document(_ snapshot: SnapshotRecord) -> [UInt8] { base.document(snapshot) }
    }

    @Test("a claim lost during the import fails the commit with LeaseLost; no snapshot becomes visible")
    func leaseLostAtCommit() async throws {
        let store = MemoryObjectStore()
        store.store("incoming/p@c/x.raw", Fixtures.baseDisk(size: 256 << 10, seed: 3))
        let logger = Logger(label: "lease")
        let summary = try await withStore(data: data, catalogURL: nil) { service in
            let catalog = TakeoverBeforeCommit(base: CoreImportCatalog(service: service), service: service)
            let pipeline = ImportPipeline(
                store: store, catalog: catalog, settings: .init(bucket: "b", maxAttempts: 3, workerID: "unit"),
                logger: logger)
            return await Importer(worker: pipeline, options: .init(once: true), clock: ContinuousClock(), logger: logger)
                .runPass()
        }
        guard case .retried(let code, _, _) = summary.results.first?.outcome else {
            Issue.record("expected a retried import, got \(summary.results)")
            return
        }
        #expect(code == "LeaseLost")
        #expect(store.keys == ["incoming/p@c/x.raw"], "the object stays for the worker that holds the claim now")
        let snapshots = try await withStore(data: data, catalogURL: nil) { try await $0.listSnapshots(caller: .operator) }
        #expect(snapshots.filter { $0.state == .available }.isEmpty, "nothing half-visible: \(snapshots)")
        #expect(snapshots.isEmpty, "the pending snapshot was aborted, not left behind: \(snapshots)")
    }
}
