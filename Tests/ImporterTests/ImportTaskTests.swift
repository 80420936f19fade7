import DiskImage
import Foundation
import Importer
import Logging
import S3
import ServiceLifecycle
import SnapshotCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// An object store whose every ranged GET takes `delay` longer (a slow link), so a test can act in the
/// middle of an import. Everything else is the real SeaweedFS store.
struct SlowStore: ObjectStore {
    let base: any ObjectStore
    let delay: Duration
    /// Every ranged GET fails as a server in trouble would (a transient failure).
    var failReads = false

    func list(prefix: String) async throws -> [ObjectSummary] { try await base.list(prefix: prefix) }
    func head(key: String) async throws -> ObjectMetadata { try await base.head(key: key) }
    func get(key: String, range: Range<UInt64>?, ifMatch: String?) async throws -> [UInt8] {
        try await Task.sleep(for: delay)
        return try await base.get(key: key, range: range, ifMatch: ifMatch)
    }
    @available(*, noasync)
    func getBlocking(key: String, range: Range<UInt64>, ifMatch: String?) throws -> [UInt8] {
        // On a pool thread already (the byte source's synchronous read): block it like a slow socket would.
        let (seconds, attoseconds) = delay.components
        usleep(UInt32(seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
        if failReads { throw ImporterError(.storageUnavailable, "GET \(key): 503 SlowDown") }
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

/// The core import catalog, counting the progress writes (and the figures written).
final class CountingImportCatalog: ImportCatalog {
    let base: CoreImportCatalog
    let writes = Mutex<[(UInt64, UInt64?)]>([])

    init(base: CoreImportCatalog) { self.base = base }

    var progressWrites: [(UInt64, UInt64?)] { writes.withLock { $0 } }

    func recoverAbandoned() async throws { try await base.recoverAbandoned() }
    func claim(_ key: ImportKey, owner: String, worker: String, leaseDuration: Duration) async throws -> ClaimOutcome {
        try await base.claim(key, owner: owner, worker: worker, leaseDuration: leaseDuration)
    }
    func renew(_ claim: ImportClaim, leaseDuration: Duration) async throws -> ImportClaim {
        try await base.renew(claim, leaseDuration: leaseDuration)
    }
    func fail(_ claim: ImportClaim, code: String, message: String, permanent: Bool) async throws {
        try await base.fail(claim, code: code, message: message, permanent: permanent)
    }
    func release(_ claim: ImportClaim, reason: String) async throws { try await base.release(claim, reason: reason) }
    func recordProgress(_ claim: ImportClaim, bytesRead: UInt64, bytesTotal: UInt64?) async throws {
        writes.withLock { $0.append((bytesRead, bytesTotal)) }
        try await base.recordProgress(claim, bytesRead: bytesRead, bytesTotal: bytesTotal)
    }
    func beginSnapshot(
        claim: ImportClaim?, owner: ProjectRef, description: String, source: SnapshotSource, format: String,
        bootable: Bool, virtualSize: UInt64
    ) async throws -> any SnapshotWriting {
        try await base.beginSnapshot(
            claim: claim, owner: owner, description: description, source: source, format: format, bootable: bootable,
            virtualSize: virtualSize)
    }
    func share(_ id: SnapshotID, owner: ProjectRef, with projects: [ProjectRef], makePublic: Bool) async throws
        -> SnapshotRecord
    {
        try await base.share(id, owner: owner, with: projects, makePublic: makePublic)
    }
    func snapshot(_ id: SnapshotID) async throws -> SnapshotRecord? { try await base.snapshot(id) }
    func document(_ snapshot: SnapshotRecord) -> [UInt8] { base.document(snapshot) }
}

/// Import tasks run by the real runner against SeaweedFS, the SQLite store and qemu-img as the oracle.
@Suite("Import tasks end to end", .serialized, .enabled(if: E2E.isConfigured, E2E.skipReason))
struct ImportTaskTests {
    static let web = try! ProjectRef(parsing: "web@acme")
    static let db = try! ProjectRef(parsing: "db@globex")
    static let logger: Logger = {
        var logger = Logger(label: "tasks")
        logger.logLevel = .critical
        return logger
    }()

    /// One test's world: the bucket, a store directory, and the runner's settings.
    struct World: Sendable {
        let e2e: E2E
        let client: S3Client
        let bucket: String
        let data: String

        static func make(_ name: String) async throws -> World {
            let e2e = try #require(E2E.load(name))
            let client = try e2e.client()
            return World(e2e: e2e, client: client, bucket: try await e2e.makeBucket(client), data: "\(e2e.work)/data")
        }

        func put(_ key: String, _ path: String) async throws -> UInt64 {
            let body = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            try await client.putObject(bucket: bucket, key: key, body: body)
            return UInt64(body.count)
        }

        func pipeline(_ bucket: String, catalog: any ImportCatalog, delay: Duration, failReads: Bool = false)
            -> ImportPipeline
        {
            let s3 = S3ObjectStore(client: client, bucket: bucket)
            let store: any ObjectStore =
                delay == .zero && !failReads ? s3 : SlowStore(base: s3, delay: delay, failReads: failReads)
            return ImportPipeline(
                store: store, catalog: catalog,
                settings: .init(
                    bucket: bucket, layout: e2e.layout, leaseDuration: .seconds(6), workerID: "task-test",
                    chunkSize: 1 << 20, cachedChunks: 4, readAhead: 1),
                logger: ImportTaskTests.logger)
        }

        func makeRunner(
            _ tasks: ImportTasks, _ catalog: any ImportCatalog, delay: Duration = .zero, grace: Duration = .zero,
            failReads: Bool = false
        ) -> ImportTaskRunner {
            ImportTaskRunner(
                tasks: tasks,
                pipeline: { bucket in pipeline(bucket, catalog: catalog, delay: delay, failReads: failReads) },
                options: .init(
                    pollInterval: .milliseconds(200), leaseDuration: .seconds(3), watchInterval: .milliseconds(100),
                    maxAttempts: 2, retryDelay: .milliseconds(100), busyDelay: .milliseconds(300),
                    shutdownGracePeriod: grace, recoveryInterval: .milliseconds(500), workerID: "runner"),
                logger: ImportTaskTests.logger)
        }

        /// Opens the store, starts a runner beside `body`, stops it (cancelled) after.
        func withRunner<R: Sendable>(
            delay: Duration = .zero, failReads: Bool = false,
            _ body: @Sendable (ImportTasks, SnapshotService) async throws -> R
        ) async throws -> R {
            try await withStore(data: data, catalogURL: nil) { service in
                let tasks = ImportTasks(catalog: service.catalog, settings: .init(bucket: bucket, layout: e2e.layout))
                let runner = makeRunner(tasks, CoreImportCatalog(service: service), delay: delay, failReads: failReads)
                return try await withThrowingTaskGroup(of: R?.self) { group in
                    group.addTask {
                        try await runner.run()
                        return nil
                    }
                    let result = try await body(tasks, service)
                    group.cancelAll()
                    while try await group.next() != nil {}
                    return result
                }
            }
        }
    }

    /// Polls until the task is no longer active (or `until` holds), at most `seconds`.
    static func wait(
        _ tasks: ImportTasks, _ id: ImportTaskID, seconds: Double = 60,
        until: (ImportTaskRecord) -> Bool = { $0.state != .active }
    ) async throws -> ImportTaskRecord {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while true {
            let task = try await tasks.task(id, caller: .operator)
            if until(task) || ContinuousClock.now > deadline { return task }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    @Test(
        "a task imports its object once: completed, its snapshot equal to qemu-img's reading, the object left in place")
    func completes() async throws {
        let world = try await World.make("task-complete")
        let fixtures = try Fixtures.everyFormat(world.e2e, directory: world.e2e.work + "/f", seed: 5)
        let qcow2 = try #require(fixtures.first { $0.name == "disk.qcow2" })
        let key = "\(world.e2e.prefix)user disks/disk +1.qcow2"
        let size = try await world.put(key, qcow2.path)
        let reference = try Fixtures.reference(world.e2e, qcow2)
        try await world.withRunner { tasks, service in
            let request = ImportTaskRequest(
                bucket: world.bucket, key: key, format: "QCOW2", description: "from a task", clientToken: "t-1")
            let started = try await tasks.start(request, caller: .project(Self.web))
            #expect(started.state == .active)
            #expect(started.id.rawValue.hasPrefix("import-snap-"))
            let done = try await Self.wait(tasks, started.id)
            #expect(done.state == .completed, "\(done.statusMessage ?? "")")
            #expect(done.statusMessage == nil)
            #expect(done.bytesTotal == Int64(size), "diskImageSize is the object's size")
            #expect(done.progressPercent == 100)
            let id = try #require(done.snapshotID)
            let snapshot = try await service.snapshot(id, caller: .project(Self.web))
            #expect(snapshot.owner == Self.web && snapshot.state == .available && snapshot.format == "qcow2")
            #expect(snapshot.description == "from a task")
            #expect(try await snapshotBytes(service, snapshot) == reference)
            // The same ClientToken: the same task. Another task on the same object: the same snapshot.
            #expect(try await tasks.start(request, caller: .project(Self.web)).id == started.id)
            let second = try await tasks.start(.init(bucket: world.bucket, key: key), caller: .project(Self.web))
            let secondDone = try await Self.wait(tasks, second.id)
            #expect(secondDone.state == .completed && secondDone.snapshotID == id)
            #expect(
                try await service.listSnapshots(caller: .operator).count == 1, "exactly once per (bucket, key, ETag)")
            // EC2's importer does not touch the user's object.
            #expect(try await keys(world.client, world.bucket, key) == [key])
            // The import row carries the progress: every byte of the object read.
            let row = try #require(try await service.listImports().first)
            #expect(row.state == .imported && row.bytesTotal == Int64(size) && row.bytesRead == Int64(size))
        }
    }

    @Test("a hostile image, a format that disagrees, a missing object: deleted with ClientError and the stable code")
    func rejected() async throws {
        let world = try await World.make("task-reject")
        let hostile = try Fixtures.hostile(world.e2e, directory: world.e2e.work)
        let hostileKey = "\(world.e2e.prefix)u/hostile.qcow2"
        _ = try await world.put(hostileKey, hostile.path)
        let raw = "\(world.e2e.work)/plain.raw"
        try Data(Fixtures.baseDisk(size: 1 << 20, seed: 3)).write(to: URL(fileURLWithPath: raw))
        let rawKey = "\(world.e2e.prefix)u/plain.raw"
        _ = try await world.put(rawKey, raw)
        try await world.withRunner { tasks, service in
            let caller = Caller.project(Self.web)
            let a = try await tasks.start(.init(bucket: world.bucket, key: hostileKey), caller: caller)
            let b = try await tasks.start(.init(bucket: world.bucket, key: rawKey, format: "VMDK"), caller: caller)
            let c = try await tasks.start(.init(bucket: world.bucket, key: rawKey + ".absent"), caller: caller)
            for (id, code) in [(a.id, "BackingFileNotAllowed"), (b.id, "FormatMismatch"), (c.id, "NotFound")] {
                let done = try await Self.wait(tasks, id)
                #expect(done.state == .deleted)
                let message = try #require(done.statusMessage)
                #expect(message.hasPrefix("ClientError: \(code): "), "\(message)")
                #expect(message.count > "ClientError: \(code): ".count + 5, "the message says what is wrong")
                #expect(done.snapshotID == nil)
            }
            #expect(try await service.catalog.snapshots(in: .pending, after: nil, limit: 10).isEmpty)
            #expect(try await service.listSnapshots(caller: .operator).isEmpty)
        }
    }

    @Test("S3 failing transiently: retried with backoff, then deleted with ServerError and the code; nothing pending")
    func serverError() async throws {
        let world = try await World.make("task-5xx")
        let raw = "\(world.e2e.work)/s.raw"
        try Data(Fixtures.baseDisk(size: 2 << 20, seed: 17)).write(to: URL(fileURLWithPath: raw))
        let key = "\(world.e2e.prefix)u/s.raw"
        _ = try await world.put(key, raw)
        try await world.withRunner(failReads: true) { tasks, service in
            let task = try await tasks.start(.init(bucket: world.bucket, key: key), caller: .project(Self.web))
            let done = try await Self.wait(tasks, task.id)
            #expect(done.state == .deleted)
            let message = try #require(done.statusMessage)
            #expect(message.hasPrefix("ServerError: StorageUnavailable: "), "\(message)")
            #expect(message.hasSuffix("(gave up after 2 attempts)"), "\(message)")
            #expect(done.attempts == 1, "the first failure was recorded, the second ended it")
            let row = try #require(try await service.listImports().first)
            #expect(row.attempts == 2 && row.state == .retry, "each attempt claimed the object; it stays retryable")
            #expect(try await service.catalog.snapshots(in: .pending, after: nil, limit: 10).isEmpty)
        }
    }

    @Test("cancel mid-import: the task ends deleted at once and the import stops with no pending snapshot left")
    func cancelMidImport() async throws {
        let world = try await World.make("task-cancel")
        let raw = "\(world.e2e.work)/big.raw"
        try Data(Fixtures.baseDisk(size: 24 << 20, seed: 7)).write(to: URL(fileURLWithPath: raw))
        let key = "\(world.e2e.prefix)u/big.raw"
        _ = try await world.put(key, raw)
        try await world.withRunner(delay: .milliseconds(250)) { tasks, service in
            let task = try await tasks.start(.init(bucket: world.bucket, key: key), caller: .project(Self.web))
            // Progress shows while it runs (bytes read so far of the object's size).
            let running = try await Self.wait(tasks, task.id, seconds: 30) { $0.bytesRead > 0 }
            #expect(running.state == .active && running.bytesTotal == 24 << 20)
            #expect((running.progressPercent ?? 0) < 100)
            let cancelled = try await tasks.cancel(task.id, caller: .project(Self.web))
            #expect(cancelled.state == .deleted && cancelled.statusMessage == "Cancelled by the user")
            // Within a moment the runner stops the import: its claim released, its pending snapshot gone.
            let deadline = ContinuousClock.now + .seconds(20)
            var clean = false
            while ContinuousClock.now < deadline, !clean {
                let pending = try await service.catalog.snapshots(in: .pending, after: nil, limit: 10)
                let row = try await service.listImports().first
                clean = pending.isEmpty && row != nil && row?.state != .claimed
                if !clean { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(clean, "no pending snapshot and no claim held after a cancel")
            #expect(try await service.listSnapshots(caller: .operator).isEmpty)
            let after = try await tasks.task(task.id, caller: .operator)
            #expect(after.state == .deleted && after.snapshotID == nil)
            await #expect(throws: SnapshotError.self) { try await tasks.cancel(task.id, caller: .project(Self.web)) }
        }
    }

    @Test("restarts: a task left held by a vanished runner is taken over and completes; a shut-down task resumes")
    func restart() async throws {
        let world = try await World.make("task-restart")
        let raw = "\(world.e2e.work)/d.raw"
        let disk = Fixtures.baseDisk(size: 6 << 20, seed: 11)
        try Data(disk).write(to: URL(fileURLWithPath: raw))
        let keyA = "\(world.e2e.prefix)u/a.raw"
        let keyB = "\(world.e2e.prefix)u/b.raw"
        _ = try await world.put(keyA, raw)
        _ = try await world.put(keyB, raw)
        // B: started, then the runner shuts down gracefully in the middle (no grace): it stays active, unheld.
        let b: ImportTaskID = try await withStore(data: world.data, catalogURL: nil) { service in
            let tasks = ImportTasks(catalog: service.catalog, settings: .init(bucket: world.bucket))
            let runner = world.makeRunner(tasks, CoreImportCatalog(service: service), delay: .milliseconds(300))
            let group = ServiceGroup(configuration: .init(services: [.init(service: runner)], logger: Self.logger))
            return try await withThrowingTaskGroup(of: Void.self) { running in
                running.addTask { try await group.run() }
                let b = try await tasks.start(.init(bucket: world.bucket, key: keyB), caller: .project(Self.web))
                _ = try await Self.wait(tasks, b.id, seconds: 30) { $0.bytesRead > 0 }
                await group.triggerGracefulShutdown()
                try await running.waitForAll()
                let after = try await tasks.task(b.id, caller: .operator)
                #expect(after.state == .active && after.worker == nil && after.statusMessage == "pending")
                #expect(try await service.catalog.snapshots(in: .pending, after: nil, limit: 10).isEmpty)
                return b.id
            }
        }
        // A: recorded as held by a runner that died mid-import (its lease has ended; the object's claim too).
        let vanished: ImportTaskRecord = try await withStore(data: world.data, catalogURL: nil) { service in
            let head = try await S3ObjectStore(client: world.client, bucket: world.bucket).head(key: keyA)
            let past = Date().addingTimeInterval(-120)
            var task = ImportTaskRecord(
                id: .make(at: past), owner: Self.web, requester: .project(Self.web), bucket: world.bucket, key: keyA,
                etag: head.etag, statusMessage: "downloading/converting", bytesRead: 1 << 20,
                bytesTotal: Int64(head.size), createdAt: past, updatedAt: past, worker: "gone:1:ab",
                leaseExpiresAt: past.addingTimeInterval(60))
            try await service.catalog.apply([.insertImportTask(task)])
            _ = try await service.claimImport(
                bucket: world.bucket, key: keyA, etag: head.etag, owner: "web@acme", worker: "gone:1:ab",
                leaseSeconds: 60, now: past)
            task.version = 1
            return task
        }
        // The next start takes A over and resumes B: both complete, with one snapshot each.
        try await world.withRunner { tasks, service in
            let a = try await Self.wait(tasks, vanished.id)
            #expect(a.state == .completed, "\(a.statusMessage ?? "")")
            let resumed = try await Self.wait(tasks, b)
            #expect(resumed.state == .completed, "\(resumed.statusMessage ?? "")")
            for task in [a, resumed] {
                let snapshot = try await service.snapshot(try #require(task.snapshotID), caller: .operator)
                #expect(try await snapshotBytes(service, snapshot) == disk)
            }
            #expect(try await service.catalog.snapshots(in: .pending, after: nil, limit: 10).isEmpty)
        }
    }

    @Test("progress is written a few times a second at most, and reaches the object's size (import s3://)")
    func progressIsThrottled() async throws {
        let world = try await World.make("task-progress")
        let raw = "\(world.e2e.work)/p.raw"
        try Data(Fixtures.baseDisk(size: 12 << 20, seed: 13)).write(to: URL(fileURLWithPath: raw))
        let key = "\(world.e2e.prefix)u/p.raw"
        let size = try await world.put(key, raw)
        try await withStore(data: world.data, catalogURL: nil) { service in
            let counting = CountingImportCatalog(base: CoreImportCatalog(service: service))
            let pipeline = world.pipeline(world.bucket, catalog: counting, delay: .milliseconds(200))
            let started = ContinuousClock.now
            let result = try await pipeline.importObjectManually(
                key: key, owner: Self.web, description: nil, claimedFormat: nil, progress: { _, _ in })
            let seconds = Double((ContinuousClock.now - started).components.seconds) + 1
            guard case .imported = result else {
                Issue.record("expected a new snapshot")
                return
            }
            let writes = counting.progressWrites
            #expect(writes.count >= 2, "progress written while reading, then the last figure")
            #expect(Double(writes.count) <= seconds * 2 + 2, "\(writes.count) writes in \(seconds) s")
            #expect(writes.map(\.0) == writes.map(\.0).sorted(), "bytes read only grow")
            #expect(writes.last?.0 == size && writes.last?.1 == size)
            let row = try #require(try await service.listImports().first)
            #expect(row.bytesRead == Int64(size) && row.bytesTotal == Int64(size) && row.state == .imported)
        }
    }
}
