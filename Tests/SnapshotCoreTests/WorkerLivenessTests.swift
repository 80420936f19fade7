@testable import CatalogTestSupport
import Foundation
import SnapshotCore
import SnapshotStores
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Instant takeover (issue 13): a claim or pending snapshot whose worker is provably dead is taken over or
/// recovered at once, under a lease that still runs; a live or unknown worker keeps it until the lease ends.
@Suite("Worker liveness and instant takeover (contract, every catalog)")
struct WorkerLivenessContractTests {
    static let owner = ProjectRef.make("web@acme")
    static let object = (bucket: "b", key: "incoming/web@acme/disk.raw", etag: "e1")

    /// Three workers on one in-memory liveness: `dead` (to be killed), `live`, and `me` (the taker).
    struct Workers {
        let liveness = MemoryWorkerLiveness()
        let dead = WorkerID(name: "host-a", pid: 101)
        let live = WorkerID(name: "host-b", pid: 102)
        let me = WorkerID(name: "host-c", pid: 103)

        init() async throws {
            for id in [dead, live, me] { try await liveness.register(id) }
        }

        func service(_ base: SnapshotService, _ id: WorkerID) -> SnapshotService {
            base.forWorker(LiveWorker(id: id, liveness: liveness))
        }
    }

    func claim(_ service: SnapshotService, _ worker: WorkerID) async throws -> ImportClaim? {
        try await service.claimImport(
            bucket: Self.object.bucket, key: Self.object.key, etag: Self.object.etag, owner: "web@acme",
            worker: worker.attemptToken(), leaseSeconds: 600)
    }

    func beginImport(_ service: SnapshotService, _ claim: ImportClaim) async throws -> SnapshotWriter {
        try await service.beginSnapshot(
            NewSnapshot(
                owner: Self.owner,
                source: .object(bucket: Self.object.bucket, key: Self.object.key, etag: Self.object.etag),
                format: "raw", virtualSize: 8192, claim: claim, writer: claim.worker, lease: 600),
            caller: .operator)
    }

    @Test(
        "a dead worker's unexpired claim is taken over at once (its pending snapshot dropped); a live one is not",
        arguments: CatalogFactory.all)
    func takeover(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let workers = try await Workers()
            let victim = workers.service(h.service, workers.dead)
            let held = try #require(try await claim(victim, workers.dead))
            let writer = try await beginImport(victim, held)
            try await writer.write(offset: 0, bytes: Disks.make(blocks: 2))
            let taker = workers.service(h.service, workers.me)

            #expect(try await claim(taker, workers.me) == nil, "its worker lives: the lease holds")
            #expect(try await taker.recover().releasedImports.isEmpty)
            workers.liveness.kill(workers.dead)
            #expect(try await claim(h.service, workers.me) == nil, "a service without liveness waits for the lease")

            let taken = try #require(try await claim(taker, workers.me), "taken over under a 600 s lease")
            #expect(taken.attempts == 2, "the crashed attempt counts, as a claim on an expired lease does")
            let row = try #require(try await h.service.catalog.importRecord(taken.key))
            #expect(row.state == .claimed && row.worker == taken.worker && row.snapshotID == nil)
            #expect(try await h.service.catalog.snapshot(writer.id) == nil, "nothing of the dead attempt stays visible")
            #expect(try await h.service.catalog.sweepRequest() != nil, "the blocks it put are swept")
            await expectCode(.leaseLost, "the dead writer can never commit") { try await writer.commit() }

            // The new holder lives: a third worker cannot take it.
            #expect(try await claim(workers.service(h.service, workers.live), workers.live) == nil)
            // And finishing works.
            let again = try await beginImport(taker, taken)
            try await again.write(offset: 0, bytes: Disks.make(blocks: 2))
            let committed = try await again.commit()
            #expect(committed.state == .available)
            #expect(try await h.service.catalog.importRecord(taken.key)?.state == .imported)
        }
    }

    @Test("two workers taking over one dead claim at once: exactly one gets it", arguments: CatalogFactory.all)
    func racingTakeover(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let workers = try await Workers()
            _ = try #require(try await claim(workers.service(h.service, workers.dead), workers.dead))
            workers.liveness.kill(workers.dead)
            async let one = claim(workers.service(h.service, workers.me), workers.me)
            async let two = claim(workers.service(h.service, workers.live), workers.live)
            let winners = [try await one, try await two].compactMap { $0 }
            #expect(winners.count == 1)
            #expect(
                try await h.service.catalog.importRecord(try #require(winners.first).key)?.worker
                    == winners.first?.worker)
        }
    }

    @Test(
        "recovery at once: a dead worker's import is released for the next pass, its file import turns error",
        arguments: CatalogFactory.all)
    func recoveryOfDeadWorker(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let workers = try await Workers()
            let victim = workers.service(h.service, workers.dead)
            let held = try #require(try await claim(victim, workers.dead))
            let objectWriter = try await beginImport(victim, held)
            // A manual import of a local file: its writer token names the worker (no claim).
            let fileWriter = try await victim.beginSnapshot(
                NewSnapshot(owner: Self.owner, source: .file(path: "/x.raw"), format: "raw", virtualSize: 4096),
                caller: .operator)
            let fileRecord = try #require(try await h.service.catalog.snapshot(fileWriter.id))
            #expect(WorkerID(token: try #require(fileRecord.writer)) == workers.dead)
            // A writer of unknown form (no worker identity) is never proven dead.
            let anonymous = try await h.service.beginSnapshot(
                NewSnapshot(owner: Self.owner, source: .file(path: "/y.raw"), format: "raw", virtualSize: 4096),
                caller: .operator)

            let taker = workers.service(h.service, workers.me)
            #expect(try await taker.recover() == RecoveryReport(), "alive: nothing to recover")
            workers.liveness.kill(workers.dead)
            let report = try await taker.recover()
            #expect(report.releasedImports == [objectWriter.id])
            #expect(report.failedSnapshots == [fileWriter.id])
            #expect(try await h.service.catalog.snapshot(objectWriter.id) == nil)
            let failed = try #require(try await h.service.catalog.snapshot(fileWriter.id))
            #expect(failed.state == .error)
            #expect(failed.failure?.contains("proof of life was free") == true, "\(failed.failure ?? "nil")")
            #expect(try await h.service.catalog.snapshot(anonymous.id)?.state == .pending)
            let row = try #require(try await h.service.catalog.importRecord(held.key))
            #expect(row.state == .retry && row.errorCode == "WorkerDied" && row.worker == nil)
            // The next claim is an ordinary one.
            #expect(try await claim(taker, workers.me)?.attempts == 2)
        }
    }
}

/// The per-host proof: an `flock` per worker in the store, held by a real process.
@Suite("File-lock liveness")
struct FileLockLivenessTests {
    func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("locks-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("a worker registered in this process is alive to another instance; released, it leaves no file")
    func registerAndRelease() async throws {
        let folder = try directory()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let mine = FileLockLiveness(directory: folder)
        let other = FileLockLiveness(directory: folder)
        let id = WorkerID(name: "h", pid: getpid())
        try await mine.register(id)
        #expect(FileManager.default.fileExists(atPath: mine.path(of: id)))
        #expect(await other.isProvablyDead(id) == false, "the lock is held (per open file, even in this process)")
        #expect(await mine.isProvablyDead(id) == false)
        await mine.release(id)
        #expect(!FileManager.default.fileExists(atPath: mine.path(of: id)))
        #expect(await other.isProvablyDead(id) == false, "no file: unknown (another host or store), not dead")
    }

    @Test("a worker process killed with SIGKILL is provably dead at once, for each of its claims")
    func killedProcess() async throws {
        let folder = try directory()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let liveness = FileLockLiveness(directory: folder)
        let id = WorkerID(name: "h", pid: 4242)
        let path = liveness.path(of: id)
        // A real process holds the worker's lock, as a worker does: one python3 process takes LOCK_EX on the
        // file and sleeps (flock(1) would leave a child holding it).
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        holder.arguments = [
            "python3", "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                + "print('locked', flush=True); time.sleep(60)",
            path,
        ]
        let output = Pipe()
        holder.standardOutput = output
        try holder.run()
        defer { if holder.isRunning { kill(holder.processIdentifier, SIGKILL) } }
        let said = output.fileHandleForReading.readData(ofLength: 6)  // "locked": it holds the lock now
        #expect(String(decoding: said, as: UTF8.self) == "locked")
        #expect(await liveness.isProvablyDead(id) == false, "held by a live process")
        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        #expect(await liveness.isProvablyDead(id), "the kernel released the lock of the killed process")
        #expect(await liveness.isProvablyDead(id), "proven again for the dead worker's next claim")
        #expect(FileManager.default.fileExists(atPath: path), "the free file stays as the proof")
    }

    @Test("worker IDs: name, pid and a 16-digit nonce; tokens read back; other texts are not workers")
    func identities() {
        let id = WorkerID(name: "host/one", pid: 7)
        #expect(id.rawValue.hasPrefix("host_one:7:"))
        #expect(WorkerID(rawValue: id.rawValue) == id)
        #expect(WorkerID(token: id.attemptToken()) == id)
        #expect(WorkerID(name: "h", pid: 7) != WorkerID(name: "h", pid: 7), "the nonce tells reused pids apart")
        #expect(WorkerID(token: UUID().uuidString) == nil)
        #expect(WorkerID(token: "host:12:abcd") == nil, "older tokens (host:pid:random) are not workers")
        #expect(WorkerID(token: "w1/abc") == nil)
    }
}
