import DiskImage
import Foundation
import Importer
import Logging
import SnapshotCore
import Synchronization
import Testing

/// The pipeline over an in-memory bucket and a real (temporary) SQLite store: the policies that
/// need no S3 server.
@Suite("Import pipeline policies")
final class PipelineTests {
    let data = NSTemporaryDirectory() + "pipeline-\(UInt32.random(in: 0...UInt32.max))"
    let bucket = "b"

    // Swift Testing makes one instance per test: its store goes with it.
    deinit { try? FileManager.default.removeItem(atPath: data) }

    func pass(_ store: MemoryObjectStore, maxAttempts: Int = 3) async throws -> PassSummary {
        let logger = Logger(label: "pipeline")
        return try await withStore(data: data, catalogURL: nil) { service in
            let pipeline = ImportPipeline(
                store: store, catalog: CoreImportCatalog(service: service),
                settings: .init(bucket: bucket, maxAttempts: maxAttempts, workerID: "unit"), logger: logger)
            return await Importer(
                worker: pipeline, options: .init(once: true), clock: ContinuousClock(), logger: logger
            ).runPass()
        }
    }

    func snapshots() async throws -> [SnapshotRecord] {
        try await withStore(data: data, catalogURL: nil) { try await $0.listSnapshots(caller: .operator) }
    }

    func report(_ store: MemoryObjectStore, _ key: String) throws -> [String: Any] {
        try jsonObject(String(decoding: try #require(store.body(key)), as: UTF8.self))
    }

    let disk = Fixtures.baseDisk(size: 256 << 10, seed: 9)

    @Test("a transient failure leaves the object in incoming/; after max_attempts passes it goes to failed/")
    func boundedRetries() async throws {
        let store = MemoryObjectStore()
        store.store("incoming/p@c/x.raw", disk)
        store.failing("get incoming/p@c/x.raw", with: ImporterError(.storageUnavailable, "503 SlowDown"))
        for attempt in 1...2 {
            let summary = try await pass(store)
            #expect(summary.retried.count == 1, "attempt \(attempt)")
            #expect(store.keys == ["incoming/p@c/x.raw"])
        }
        let last = try await pass(store)
        #expect(last.rejected.count == 1)
        #expect(store.keys == ["failed/p@c/x.raw", "failed/p@c/x.raw.error.json"])
        #expect(try report(store, "failed/p@c/x.raw.error.json")["code"] as? String == "StorageUnavailable")
        #expect(try await snapshots().isEmpty)
    }

    @Test("a crash between commit and move is finished by the next pass without a second snapshot")
    func repairInterruptedMove() async throws {
        let store = MemoryObjectStore()
        store.store("incoming/p@c/x.raw", disk)
        store.failing("copy incoming/p@c/x.raw", with: ImporterError(.storageUnavailable, "connection reset"))
        let first = try await pass(store)
        #expect(first.imported.count == 1)
        #expect(store.keys == ["incoming/p@c/x.raw"], "the source stays until its copy succeeded")
        store.failing("copy incoming/p@c/x.raw", with: nil)
        let second = try await pass(store)
        guard case .alreadyImported(let id) = second.results.first?.outcome else {
            Issue.record("expected alreadyImported, got \(second.results)")
            return
        }
        #expect(first.imported.first?.outcome == .imported(snapshotID: id))
        #expect(store.keys == ["processed/p@c/x.raw", "processed/p@c/x.raw.snapshot.json"])
        #expect(try await snapshots().count == 1)
        #expect(try report(store, "processed/p@c/x.raw.snapshot.json")["id"] as? String == id)
    }

    @Test("rejections: FormatMismatch against the sidecar, InvalidSidecar, InvalidProject; sidecars move along")
    func rejections() async throws {
        let store = MemoryObjectStore()
        store.store("incoming/p@c/claimed-vmdk.raw", disk)
        store.store("incoming/p@c/claimed-vmdk.raw.json", Array(#"{"format":"vmdk"}"#.utf8))
        store.store("incoming/p@c/typo.raw", disk)
        store.store("incoming/p@c/typo.raw.json", Array(#"{"sharewith":["q@c"]}"#.utf8))
        store.store("incoming/NoProject/x.raw", disk)
        let summary = try await pass(store)
        #expect(summary.rejected.count == 3)
        #expect(try report(store, "failed/p@c/claimed-vmdk.raw.error.json")["code"] as? String == "FormatMismatch")
        #expect(try report(store, "failed/p@c/typo.raw.error.json")["code"] as? String == "InvalidSidecar")
        #expect(try report(store, "failed/NoProject/x.raw.error.json")["code"] as? String == "InvalidProject")
        #expect(store.keys.contains("failed/p@c/typo.raw.json"))
        #expect(!store.keys.contains { $0.hasPrefix("incoming/") })
    }

    @Test("description from x-amz-meta-description; sidecar sharing and public (its confirmation) applied")
    func metadataAndSharing() async throws {
        let store = MemoryObjectStore()
        store.store("incoming/p@c/meta.raw", disk, metadata: ["description": "from metadata"])
        store.store("incoming/p@c/public.raw", disk)
        store.store(
            "incoming/p@c/public.raw.json", Array(#"{"shareWith":["q@c"],"public":true,"description":"pub"}"#.utf8))
        let summary = try await pass(store)
        #expect(summary.imported.count == 2)
        let all = try await snapshots()
        #expect(all.contains { $0.description == "from metadata" })
        let published = try #require(all.first { $0.description == "pub" })
        #expect(published.bootable)
        #expect(published.visibility == .public)
        #expect(published.sharedWith.map(\.description) == ["q@c"])
    }

    @Test("a replaced object (new ETag) is imported again as a new snapshot")
    func newETagNewSnapshot() async throws {
        let store = MemoryObjectStore()
        store.store("incoming/p@c/x.raw", disk)
        _ = try await pass(store)
        store.store("incoming/p@c/x.raw", Fixtures.baseDisk(size: 256 << 10, seed: 10))
        let again = try await pass(store)
        #expect(again.imported.count == 1)
        #expect(try await snapshots().count == 2)
    }

    @Test("an import abandoned mid-way (shutdown) releases its claim and drops its pending snapshot")
    func abandoned() async throws {
        let memory = MemoryObjectStore()
        memory.store("incoming/p@c/x.raw", disk)
        let importTask = Mutex<Task<ImportResult, Never>?>(nil)
        let gets = Mutex(0)
        // Cancel the import's task (as a shutdown does) at the 20th ranged GET: well inside the extent
        // loop (4 KiB chunks, 64 in all, no read-ahead: every chunk is one GET of the reader's).
        let store = HookedStore(memory, every: { _ in
            if gets.withLock({ $0 += 1; return $0 }) == 20 { importTask.withLock { $0 }?.cancel() }
        })
        let logger = Logger(label: "pipeline")
        let (result, pendingDuringRun) = try await withStore(data: data, catalogURL: nil) { service in
            let pipeline = ImportPipeline(
                store: store, catalog: CoreImportCatalog(service: service),
                settings: .init(bucket: bucket, workerID: "unit", chunkSize: 4096, cachedChunks: 2, readAhead: 0),
                logger: logger)
            let candidate = try #require(try await pipeline.listCandidates().first)
            // The import starts only once its task is stored, so the hook always finds it to cancel.
            let (stored, markStored) = AsyncStream<Void>.makeStream()
            let task = Task {
                for await _ in stored {}
                return await pipeline.importObject(candidate)
            }
            importTask.withLock { $0 = task }
            markStored.finish()
            let result = await task.value
            let pending = try await service.listSnapshots(caller: .operator).filter { $0.state == .pending }.count
            return (result, pending)
        }
        guard case .retried(let code, _, _) = result.outcome else {
            Issue.record("expected a retry, got \(result.outcome)")
            return
        }
        #expect(code == "Cancelled")
        #expect(pendingDuringRun == 0)
        #expect(memory.keys == ["incoming/p@c/x.raw"])
        let row = try await withStore(data: data, catalogURL: nil) {
            try await $0.importRecord(bucket: bucket, key: "incoming/p@c/x.raw", etag: result.etag)
        }
        #expect(row?.state == .retry)
        #expect(row?.worker == nil)
        #expect(row?.attempts == 0, "an interrupted attempt is given back: restarts never use up max_attempts")
        // The next pass imports it.
        #expect(try await pass(memory).imported.count == 1)
    }
}

/// A bucket that notes, at every read of an image's bytes, which imports the pipeline announces in flight.
final class InFlightObservingStore: ObjectStore {
    let base: MemoryObjectStore
    let inFlight: InFlightImports
    let seen = Mutex<[(key: String, total: UInt64?)]>([])

    init(_ base: MemoryObjectStore, inFlight: InFlightImports) {
        self.base = base
        self.inFlight = inFlight
    }

    private func note() {
        let entries = inFlight.entries.map { (key: $0.key, total: $0.progress.bytesTotal) }
        seen.withLock { $0 += entries }
    }

    func list(prefix: String) async throws -> [ObjectSummary] { try await base.list(prefix: prefix) }
    func head(key: String) async throws -> ObjectMetadata { try await base.head(key: key) }
    func get(key: String, range: Range<UInt64>?, ifMatch: String?) async throws -> [UInt8] {
        note()
        return try await base.get(key: key, range: range, ifMatch: ifMatch)
    }
    func getBlocking(key: String, range: Range<UInt64>, ifMatch: String?) throws -> [UInt8] {
        note()
        return try base.getBlocking(key: key, range: range, ifMatch: ifMatch)
    }
    func put(key: String, body: [UInt8], contentType: String) async throws {
        try await base.put(key: key, body: body, contentType: contentType)
    }
    func copy(from sourceKey: String, to destinationKey: String, ifMatch: String?) async throws {
        try await base.copy(from: sourceKey, to: destinationKey, ifMatch: ifMatch)
    }
    func delete(key: String) async throws { try await base.delete(key: key) }
}

extension PipelineTests {
    @Test("imports in flight are announced with their progress while they run, and withdrawn when they end")
    func inFlightAnnounced() async throws {
        let base = MemoryObjectStore()
        base.store("incoming/p@c/x.raw", disk)
        let inFlight = InFlightImports()
        let store = InFlightObservingStore(base, inFlight: inFlight)
        let logger = Logger(label: "pipeline")
        let summary = try await withStore(data: data, catalogURL: nil) { service in
            let pipeline = ImportPipeline(
                store: store, catalog: CoreImportCatalog(service: service),
                settings: .init(bucket: bucket, workerID: "unit"), logger: logger, inFlight: inFlight)
            return await Importer(worker: pipeline, options: .init(once: true), clock: ContinuousClock(), logger: logger)
                .runPass()
        }
        #expect(summary.imported.count == 1)
        let seen = store.seen.withLock { $0 }
        #expect(!seen.isEmpty, "the image was read while announced")
        #expect(seen.allSatisfy { $0.key == "incoming/p@c/x.raw" && $0.total == UInt64(disk.count) }, "\(seen)")
        #expect(inFlight.entries.isEmpty, "withdrawn once the import ended")
    }
}
