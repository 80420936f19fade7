import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

@testable import SnapshotPostgres

/// The all-hosts proof of life: a session advisory lock per worker on a connection of its own.
@Suite(
    "PostgreSQL worker liveness (advisory locks)",
    .enabled(if: PostgresTestDatabase.isConfigured, PostgresTestDatabase.skipReason))
struct PostgresWorkerLivenessTests {
    /// Whether a session other than the caller's holds the advisory lock `key` (from `pg_locks`).
    func heldInPgLocks(_ catalog: PostgresCatalog, _ key: Int64) async throws -> Int64 {
        // A bigint advisory key is stored as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
        let high = key >> 32
        let low = key & 0xFFFF_FFFF
        return try await catalog.scalarForTesting(
            """
            SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
            AND classid::bigint = \(high & 0xFFFF_FFFF) AND objid::bigint = \(low)
            """) ?? -1
    }

    @Test("a worker registered on one host is alive to another; when its session ends it is provably dead")
    func sessionEndProvesDeath() async throws {
        try await PostgresTestDatabase.withCatalogs(hosts: 2) { catalogs in
            let hostA = PostgresWorkerLiveness(catalog: catalogs[0])
            let hostB = PostgresWorkerLiveness(catalog: catalogs[1])
            let worker = WorkerID(name: "host-a", pid: 77)
            try await hostA.register(worker)
            let key = hostA.key(of: worker)
            #expect(hostB.key(of: worker) == key)
            #expect(try await heldInPgLocks(catalogs[1], key) == 1, "the lock is visible in pg_locks")
            #expect(await hostB.isProvablyDead(worker) == false)
            #expect(await hostA.isProvablyDead(worker) == false, "never dead to itself")
            #expect(try await heldInPgLocks(catalogs[1], key) == 1, "testing did not take or keep the lock")

            // The worker's connection dies as a killed process's would: the server ends its session.
            let terminated = try await catalogs[1].scalarForTesting(
                """
                SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
                AND classid::bigint = \((key >> 32) & 0xFFFF_FFFF) AND objid::bigint = \(key & 0xFFFF_FFFF)
                """)
            #expect(terminated == 1)
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(10)
            var dead = false
            while !dead, clock.now < deadline {
                dead = await hostB.isProvablyDead(worker)
                if !dead { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(dead, "the session's advisory lock was released with it")
            #expect(try await heldInPgLocks(catalogs[1], key) == 0, "the test gave the lock back at once")
            await hostA.release(worker)
        }
    }

    @Test("release gives the lock up; workers of another schema never collide")
    func releaseAndSchemas() async throws {
        try await PostgresTestDatabase.withCatalogs(hosts: 2) { catalogs in
            let hostA = PostgresWorkerLiveness(catalog: catalogs[0])
            let worker = WorkerID(name: "h", pid: 1)
            try await hostA.register(worker)
            let elsewhere = try PostgresTestDatabase.makeCatalog(schema: PostgresTestDatabase.freshSchemaName())
            #expect(PostgresWorkerLiveness(catalog: elsewhere).key(of: worker) != hostA.key(of: worker))
            await hostA.release(worker)
            #expect(await PostgresWorkerLiveness(catalog: catalogs[1]).isProvablyDead(worker))
        }
    }

    @Test("with the PostgreSQL proof, a host takes over a dead host's claim under a running lease")
    func takeoverAcrossHosts() async throws {
        let blocks = MemoryBlockStore()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pg-live-\(UUID().uuidString)")
            .path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await PostgresTestDatabase.withCatalogs(hosts: 2) { catalogs in
            let ids = [WorkerID(name: "host-a", pid: 10), WorkerID(name: "host-b", pid: 10)]
            var services: [SnapshotService] = []
            var proofs: [PostgresWorkerLiveness] = []
            for (catalog, id) in zip(catalogs, ids) {
                let proof = PostgresWorkerLiveness(catalog: catalog)
                try await proof.register(id)
                proofs.append(proof)
                let base = try SnapshotService(
                    catalog: catalog, blocks: blocks, volumesDirectory: directory, logger: PostgresTestDatabase.logger)
                services.append(base.forWorker(LiveWorker(id: id, liveness: proof)))
            }
            let key = PostgresFixtures.objectKey
            func claim(_ host: Int) async throws -> ImportClaim? {
                try await services[host].claimImport(
                    bucket: key.bucket, key: key.key, etag: key.etag, owner: "web@acme",
                    worker: ids[host].attemptToken(), leaseSeconds: 600)
            }
            do {
                let first = try #require(try await claim(0))
                #expect(try await claim(1) == nil, "host A lives")
                await proofs[0].release(ids[0])  // host A's session ends
                // The server drops a closed session's locks as its backend exits: a few milliseconds.
                let clock = ContinuousClock()
                let started = clock.now
                var taken: ImportClaim?
                while taken == nil, clock.now - started < .seconds(10) {
                    taken = try await claim(1)
                    if taken == nil { try await Task.sleep(for: .milliseconds(20)) }
                }
                let claim = try #require(taken, "taken over at once, 600 s lease notwithstanding")
                #expect(claim.worker != first.worker)
                #expect(clock.now - started < .seconds(2))
            } catch {
                for (proof, id) in zip(proofs, ids) { await proof.release(id) }
                throw error
            }
            for (proof, id) in zip(proofs, ids) { await proof.release(id) }
        }
    }
}
