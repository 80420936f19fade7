import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

@testable import SnapshotPostgres

/// Many workers on many hosts sharing one PostgreSQL catalog: each "host" is a `SnapshotService` over its own
/// `PostgresCatalog` (its own connection pool); the block store is shared, as an S3 prefix would be.
@Suite("PostgreSQL catalog, many hosts", .enabled(if: PostgresTestDatabase.isConfigured, PostgresTestDatabase.skipReason))
struct PostgresMultiHostTests {
    typealias F = PostgresFixtures

    /// `hosts` services on one fresh schema, sharing one in-memory block store.
    func withHosts<R: Sendable>(_ hosts: Int, _ body: ([SnapshotService]) async throws -> R) async throws -> R {
        let blocks = MemoryBlockStore()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pg-hosts-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try await PostgresTestDatabase.withCatalogs(hosts: hosts) { catalogs in
            let services = try catalogs.map {
                try SnapshotService(
                    catalog: $0, blocks: blocks, volumesDirectory: directory, logger: PostgresTestDatabase.logger)
            }
            return try await body(services)
        }
    }

    static let key = F.objectKey

    func claim(_ service: SnapshotService, worker: String, lease: TimeInterval = 60, now: Date = F.now) async throws -> ImportClaim? {
        try await service.claimImport(
            bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag, owner: F.owner.description, worker: worker,
            leaseSeconds: lease, now: now)
    }

    @Test("16 workers on two hosts race to claim one object: exactly one gets it")
    func claimRace() async throws {
        try await withHosts(2) { hosts in
            let claims = try await withThrowingTaskGroup(of: ImportClaim?.self) { group in
                for worker in 0..<16 {
                    let host = hosts[worker % 2]
                    group.addTask { try await claim(host, worker: "host\(worker % 2):w\(worker)") }
                }
                return try await group.reduce(into: [ImportClaim]()) { if let c = $1 { $0.append(c) } }
            }
            #expect(claims.count == 1)
            let row = try #require(try await hosts[0].importRecord(bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag))
            #expect(row.state == .claimed)
            #expect(row.worker == claims.first?.worker)
            #expect(row.attempts == 1)
        }
    }

    @Test("an expired lease lets another host take over; the old holder then loses its claim")
    func leaseExpiryTakeover() async throws {
        try await withHosts(2) { hosts in
            let a = try #require(try await claim(hosts[0], worker: "host-a", lease: 10))
            // Within the lease, host B is refused.
            #expect(try await claim(hosts[1], worker: "host-b", now: F.now.addingTimeInterval(5)) == nil)
            // After it, host B takes over.
            let later = F.now.addingTimeInterval(11)
            let b = try #require(try await claim(hosts[1], worker: "host-b", now: later))
            #expect(b.attempts == 2)
            await #expect(throws: SnapshotError(.leaseLost, "")) {
                _ = try await hosts[0].renewLease(a, leaseSeconds: 60, now: later)
            }
            await #expect(throws: SnapshotError(.leaseLost, "")) {
                try await hosts[0].failImport(a, code: "CorruptImage", message: "late", permanent: true, now: later)
            }
            // B still holds it and can renew.
            _ = try await hosts[1].renewLease(b, leaseSeconds: 60, now: later)
            let row = try #require(try await hosts[0].importRecord(bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag))
            #expect(row.worker == "host-b")
            #expect(row.state == .claimed)
        }
    }

    @Test("exactly once: a writer whose claim was taken over cannot commit; one available snapshot per object")
    func exactlyOnceImport() async throws {
        try await withHosts(2) { hosts in
            let source = SnapshotSource.object(bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag)
            let block = [UInt8](repeating: 0x5A, count: 4096)
            func begin(_ host: SnapshotService, _ claim: ImportClaim, _ now: Date) async throws -> SnapshotWriter {
                try await host.beginSnapshot(
                    NewSnapshot(owner: F.owner, source: source, format: "raw", virtualSize: 8192, claim: claim, lease: 10),
                    caller: .operator, now: now)
            }
            // The writer renews its lease against the real clock while writing, so this timeline starts now.
            let now = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 * 1000).rounded() / 1000)
            let a = try #require(try await claim(hosts[0], worker: "host-a", lease: 10, now: now))
            let writerA = try await begin(hosts[0], a, now)
            try await writerA.writeBlock(index: 0, bytes: block + block)
            // Host A stalls past its lease; host B takes over and imports.
            let later = now.addingTimeInterval(20)
            let b = try #require(try await claim(hosts[1], worker: "host-b", lease: 60, now: later))
            let writerB = try await begin(hosts[1], b, later)
            try await writerB.writeBlock(index: 0, bytes: block + block)
            // Both commit at once: A must lose.
            async let committedB = writerB.commit(now: later)
            async let committedA: SnapshotRecord? = {
                do { return try await writerA.commit(now: later) } catch let e as SnapshotError where e.code == .leaseLost {
                    return nil
                }
            }()
            let (recordA, recordB) = try await (committedA, committedB)
            #expect(recordA == nil)
            #expect(recordB.state == .available)
            let available = try await hosts[0].catalog.snapshots().filter { $0.state == .available && $0.source == source }
            #expect(available.map(\.id) == [recordB.id])
            let row = try #require(try await hosts[1].importRecord(bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag))
            #expect(row.state == .imported)
            #expect(row.snapshotID == recordB.id)
            // Nobody can claim it again.
            #expect(try await claim(hosts[0], worker: "host-c", now: later.addingTimeInterval(3600)) == nil)
        }
    }

    @Test("throughput: 400 claims by 16 workers on two hosts, every object claimed exactly once (prints ops/s)")
    func claimThroughput() async throws {
        try await withHosts(2) { hosts in
            let objects = 200
            let started = ContinuousClock.now
            let won = try await withThrowingTaskGroup(of: Int.self) { group in
                for worker in 0..<16 {
                    let host = hosts[worker % 2]
                    group.addTask {
                        var count = 0
                        // Two workers try every object: 400 claim attempts in all.
                        for object in stride(from: worker % 8, to: objects, by: 8) {
                            if try await host.claimImport(
                                bucket: "images", key: "incoming/web@acme/\(object)", etag: "e", owner: "web@acme",
                                worker: "w\(worker)", leaseSeconds: 60, now: F.now) != nil
                            {
                                count += 1
                            }
                        }
                        return count
                    }
                }
                return try await group.reduce(0, +)
            }
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print("PostgreSQL catalog: \(2 * objects) claim attempts in \(elapsed) (\(Int(Double(2 * objects) / seconds)) /s)")
            #expect(won == objects)
            #expect(try await hosts[0].listImports().count == objects)
        }
    }

    @Test("a failure message quoting a NUL byte from an image is recorded (PostgreSQL text cannot hold U+0000)")
    func nulInFailureMessage() async throws {
        try await withHosts(1) { hosts in
            let claim = try #require(try await claim(hosts[0], worker: "w"))
            try await hosts[0].failImport(claim, code: "CorruptImage", message: "bad magic \u{0}QFI", permanent: true)
            let row = try #require(try await hosts[0].importRecord(bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag))
            #expect(row.state == .failed)
            #expect(row.errorMessage == "bad magic \u{FFFD}QFI")
        }
    }

    @Test("concurrent snapshot ID allocation on two hosts: every snapshot gets its own ID")
    func concurrentIDs() async throws {
        try await withHosts(2) { hosts in
            let ids = try await withThrowingTaskGroup(of: SnapshotID.self) { group in
                for task in 0..<24 {
                    let host = hosts[task % 2]
                    group.addTask {
                        let writer = try await host.beginSnapshot(
                            NewSnapshot(owner: F.owner, source: .file(path: "/tmp/\(task).raw"), format: "raw", virtualSize: 4096),
                            caller: .operator, now: F.now)
                        try await writer.writeBlock(index: 0, bytes: [UInt8](repeating: UInt8(task + 1), count: 4096))
                        return try await writer.commit(now: F.now).id
                    }
                }
                return try await group.reduce(into: [SnapshotID]()) { $0.append($1) }
            }
            #expect(Set(ids).count == 24)
            let stored = try await hosts[1].catalog.snapshots()
            #expect(stored.count == 24)
            #expect(stored.allSatisfy { $0.state == .available })
            #expect(try await hosts[0].catalog.manifests().count == 24)
        }
    }
}
