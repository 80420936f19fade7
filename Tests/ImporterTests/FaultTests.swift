import Dispatch
import DiskImage
import Foundation
import Importer
import Logging
import S3
import SnapshotCore
import Synchronization
import Testing

/// An object store that runs `hook` once, before the first ranged GET of an image (not a sidecar).
/// The image's ranged GETs are the byte source's blocking ones, so hooks run on a pool thread.
final class HookedStore: ObjectStore {
    let base: any ObjectStore
    private let pending: Mutex<(@Sendable (String) throws -> Void)?>

    private let every: (@Sendable (String) throws -> Void)?

    init(_ base: any ObjectStore, hook: @escaping @Sendable (String) throws -> Void) {
        self.base = base
        self.pending = Mutex(hook)
        self.every = nil
    }

    /// Runs `every` before each ranged GET.
    init(_ base: any ObjectStore, every: @escaping @Sendable (String) throws -> Void) {
        self.base = base
        self.pending = Mutex(nil)
        self.every = every
    }

    /// Runs the hooks of an image GET (`ifMatch` set; a sidecar is read without).
    private func runHooks(_ key: String, ifMatch: String?) throws {
        guard ifMatch != nil else { return }
        if let every { try every(key) }
        if let hook = pending.withLock({ hook -> (@Sendable (String) throws -> Void)? in
            defer { hook = nil }
            return hook
        }) {
            try hook(key)
        }
    }

    func list(prefix: String) async throws -> [ObjectSummary] { try await base.list(prefix: prefix) }
    func head(key: String) async throws -> ObjectMetadata { try await base.head(key: key) }
    func get(key: String, range: Range<UInt64>?, ifMatch: String?) async throws -> [UInt8] {
        try runHooks(key, ifMatch: ifMatch)
        return try await base.get(key: key, range: range, ifMatch: ifMatch)
    }
    @available(*, noasync)
    func getBlocking(key: String, range: Range<UInt64>, ifMatch: String?) throws -> [UInt8] {
        try runHooks(key, ifMatch: ifMatch)
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

/// Waits for async `work` from synchronous code running outside Swift's cooperative pool (a hook that
/// the blocking byte source calls on a `BlockingExecutor` thread). Never call it on a cooperative thread:
/// blocking one while the work needs the pool could deadlock.
func waitBlocking<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
    let outcome = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        do {
            let value = try await work()
            outcome.withLock { $0 = .success(value) }
        } catch {
            outcome.withLock { $0 = .failure(error) }
        }
        done.signal()
    }
    done.wait()
    return try outcome.withLock { $0! }.get()
}

/// Faults injected into a pass run in-process against the real SeaweedFS.
@Suite("Importer under faults", .serialized, .enabled(if: E2E.isConfigured, E2E.skipReason))
struct FaultTests {
    func pass(_ store: any ObjectStore, _ e2e: E2E, bucket: String, data: String) async throws -> PassSummary {
        let logger = Logger(label: "fault")
        return try await withStore(data: data, catalogURL: nil) { service in
            let pipeline = ImportPipeline(
                store: store, catalog: CoreImportCatalog(service: service),
                settings: .init(bucket: bucket, layout: e2e.layout, maxAttempts: 5, leaseDuration: .seconds(10), workerID: "fault-test"),
                logger: logger)
            let importer = Importer(
                worker: pipeline, options: .init(concurrentImports: 1, once: true), clock: ContinuousClock(),
                logger: logger)
            return await importer.runPass()
        }
    }

    func snapshotsByKey(data: String) async throws -> [String: [SnapshotRecord]] {
        try await withStore(data: data, catalogURL: nil) { service in
            var result: [String: [SnapshotRecord]] = [:]
            for s in try await service.listSnapshots(caller: .operator) where s.state == .available {
                if case .object(_, let key, _) = s.source { result[key, default: []].append(s) }
            }
            return result
        }
    }

    @Test("the S3 server stopped mid-pass: a transient failure is reported, the next pass imports all, once")
    func serverStoppedMidPass() async throws {
        let e2e = try #require(E2E.load("s3-down"))
        let direct = try e2e.client()
        let bucket = try await e2e.makeBucket(direct)
        var expected: [String: [UInt8]] = [:]
        for i in 0..<3 {
            let key = "\(e2e.prefix)incoming/p@c/disk \(i).raw"
            let bytes = Fixtures.baseDisk(size: 1 << 20, seed: UInt8(40 + i))
            try await direct.putObject(bucket: bucket, key: key, body: bytes)
            expected[key] = bytes
        }
        let proxy = try CuttableProxy(endpoint: e2e.endpoint, work: e2e.work)
        try proxy.start()
        let viaProxy = S3ObjectStore(client: try e2e.client(endpoint: proxy.endpoint, attempts: 2), bucket: bucket)
        let data = "\(e2e.work)/data"

        // The server goes away when the first image is being downloaded.
        let hooked = HookedStore(viaProxy, hook: { _ in proxy.cut() })
        let first = try await pass(hooked, e2e, bucket: bucket, data: data)
        #expect(!first.succeeded)
        #expect(first.imported.isEmpty)
        #expect(first.retried.count == 3, "every object was left in incoming/ with a transient failure")
        #expect(first.retried.allSatisfy {
            if case .retried(let code, _, _) = $0.outcome { code == "StorageUnavailable" } else { false }
        })
        #expect(try await keys(direct, bucket, "\(e2e.prefix)incoming/").count == 3)

        try proxy.start()
        let second = try await pass(viaProxy, e2e, bucket: bucket, data: data)
        #expect(second.succeeded)
        #expect(second.imported.count == 3)
        let snapshots = try await snapshotsByKey(data: data)
        for key in expected.keys { #expect(snapshots[key]?.count == 1, "\(key) imported once") }
        #expect(try await keys(direct, bucket, "\(e2e.prefix)incoming/").isEmpty)
        proxy.cut()
    }

    @Test("an object overwritten between listing and download fails If-Match; the next pass imports the new content once")
    func overwrittenObject() async throws {
        let e2e = try #require(E2E.load("overwrite"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let key = "\(e2e.prefix)incoming/p@c/replaced+1.raw"
        let old = Fixtures.baseDisk(size: 1 << 20, seed: 60)
        let new = Fixtures.baseDisk(size: 1 << 20, seed: 61)
        try await client.putObject(bucket: bucket, key: key, body: old)
        let data = "\(e2e.work)/data"
        let store = S3ObjectStore(client: client, bucket: bucket)
        let hooked = HookedStore(store, hook: { key in
            _ = try waitBlocking { try await client.putObject(bucket: bucket, key: key, body: new) }
        })

        let first = try await pass(hooked, e2e, bucket: bucket, data: data)
        #expect(first.imported.isEmpty)
        let retried = try #require(first.retried.first)
        if case .retried(let code, _, _) = retried.outcome { #expect(code == "ObjectChanged") }
        #expect(try await keys(client, bucket, "\(e2e.prefix)incoming/") == [key])

        let second = try await pass(store, e2e, bucket: bucket, data: data)
        #expect(second.imported.count == 1)
        let third = try await pass(store, e2e, bucket: bucket, data: data)
        #expect(third.results.isEmpty)
        let snapshots = try await snapshotsByKey(data: data)
        let only = try #require(snapshots[key])
        #expect(only.count == 1)
        let bytes = try await withStore(data: data, catalogURL: nil) { try await snapshotBytes($0, only[0]) }
        #expect(bytes == new)
    }
}
