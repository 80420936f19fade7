import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

@testable import SnapshotPostgres

/// The PostgreSQL catalog at storage level: schema, migrations, round trips, conditional writes, and races
/// between several catalog instances (separate connection pools, as on separate hosts).
@Suite("PostgreSQL catalog", .enabled(if: PostgresTestDatabase.isConfigured, PostgresTestDatabase.skipReason))
struct PostgresCatalogTests {
    typealias F = PostgresFixtures

    // MARK: Migrations

    @Test("many workers starting at once migrate exactly once (advisory lock)")
    func concurrentMigrations() async throws {
        try await PostgresTestDatabase.withCatalogs(hosts: 6, migrate: false) { catalogs in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for catalog in catalogs { group.addTask { try await catalog.migrate() } }
                try await group.waitForAll()
            }
            let applied = try await catalogs[0].scalarForTesting("SELECT count(*) FROM catalog_migrations")
            #expect(applied == Int64(CatalogSchema.migrations.count))
            // Every instance works on the shared tables.
            for catalog in catalogs { #expect(try await catalog.snapshots().isEmpty) }
        }
    }

    @Test("migrating again is a no-op and keeps the rows")
    func idempotentMigrations() async throws {
        try await PostgresTestDatabase.withCatalogs(hosts: 2) { catalogs in
            let snapshot = F.snapshot()
            try await catalogs[0].apply([.insertSnapshot(snapshot)])
            try await catalogs[1].migrate()
            try await Migrations.apply(client: catalogs[1].client, schema: catalogs[1].configuration.schema, logger: PostgresTestDatabase.logger)
            #expect(try await catalogs[1].snapshot(snapshot.id) == snapshot)
        }
    }

    @Test("a schema migrated by a newer build is refused")
    func schemaTooNew() async throws {
        try await PostgresTestDatabase.withCatalogs(hosts: 2) { catalogs in
            try await catalogs[0].scalarForTesting("INSERT INTO catalog_migrations (version, name) VALUES (9999, 'future')")
            await #expect(throws: PostgresCatalogError(.schemaTooNew, "")) {
                try await Migrations.apply(client: catalogs[1].client, schema: catalogs[1].configuration.schema, logger: PostgresTestDatabase.logger)
            }
        }
    }

    @Test("an unreachable server is a catalog error, not a hang")
    func unreachable() async throws {
        var configuration = try PostgresCatalogConfiguration(url: "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
        configuration.schema = "test_unreachable"
        let catalog = PostgresCatalog(configuration: configuration, logger: PostgresTestDatabase.logger)
        let started = ContinuousClock.now
        await #expect(throws: PostgresCatalogError(.connectionFailed, "")) {
            try await withPostgresCatalog(catalog) { _ in }
        }
        // Not a timing benchmark: without the probe the pool retries for over a minute; a loaded CI box
        // may be slow, so the bound only separates "fails" from "hangs".
        #expect(ContinuousClock.now - started < .seconds(50))
    }

    @Test("a database that does not exist fails at once with the server's reason")
    func unknownDatabase() async throws {
        var configuration = try PostgresCatalogConfiguration(url: try #require(PostgresTestDatabase.url))
        configuration.database = "no_such_database_\(UInt32.random(in: 0...UInt32.max))"
        let catalog = PostgresCatalog(configuration: configuration, logger: PostgresTestDatabase.logger)
        let started = ContinuousClock.now
        do {
            try await withPostgresCatalog(catalog) { _ in }
            Issue.record("expected a connection failure")
        } catch let error as PostgresCatalogError {
            #expect(error.code == .connectionFailed)
            #expect(String(describing: error).contains("3D000"))
        }
        // Not a timing benchmark: without the probe the pool retries for over a minute; a loaded CI box
        // may be slow, so the bound only separates "fails" from "hangs".
        #expect(ContinuousClock.now - started < .seconds(50))
    }

    @Test("open(url:logger:) is a drop-in catalog: usable at once, close() stops its pool")
    func openAndClose() async throws {
        let base = try #require(PostgresTestDatabase.url)
        let schema = PostgresTestDatabase.freshSchemaName()
        let url = base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
        let catalog = try await PostgresCatalog.open(url: url, logger: PostgresTestDatabase.logger)
        let snapshot = F.snapshot()
        try await catalog.apply([.insertSnapshot(snapshot)])
        try await catalog.close()
        try await withPostgresCatalog(url: url, logger: PostgresTestDatabase.logger) { other in
            #expect(try await other.snapshot(snapshot.id) == snapshot)
            try await other.dropSchemaForTesting()
        }
    }

    @Test("sslmode reaches the connection: require fails against the test server (no TLS), prefer falls back")
    func sslmodeWired() async throws {
        let base = try #require(PostgresTestDatabase.url)
        let separator = base.contains("?") ? "&" : "?"
        let schema = PostgresTestDatabase.freshSchemaName()
        await #expect(throws: PostgresCatalogError(.connectionFailed, "")) {
            try await withPostgresCatalog(url: base + separator + "sslmode=require&schema=\(schema)", logger: PostgresTestDatabase.logger) { _ in }
        }
        try await withPostgresCatalog(url: base + separator + "sslmode=prefer&schema=\(schema)", logger: PostgresTestDatabase.logger) {
            catalog in
            #expect(try await catalog.snapshots().isEmpty)
            try await catalog.dropSchemaForTesting()
        }
    }

    @Test("databaseTime() is the server clock, in whole milliseconds")
    func databaseTime() async throws {
        try await PostgresTestDatabase.withCatalog { catalog in
            let before = Date().addingTimeInterval(-5)
            let time = try await catalog.databaseTime()
            #expect(time > before && time < Date().addingTimeInterval(5))
            #expect((time.timeIntervalSince1970 * 1000).rounded() == time.timeIntervalSince1970 * 1000)
        }
    }

    // MARK: Round trips

    @Test("every record type reads back equal, in every source kind")
    func roundTrip() async throws {
        try await PostgresTestDatabase.withCatalog { catalog in
            let sources: [SnapshotSource] = [
                .object(bucket: F.objectKey.bucket, key: F.objectKey.key, etag: F.objectKey.etag),
                .file(path: "/data/é ü.raw"), .volume(.random()), .template(.random()),
            ]
            var snapshots: [SnapshotRecord] = []
            for (i, source) in sources.enumerated() {
                snapshots.append(F.snapshot(source: source, createdAt: F.now.addingTimeInterval(Double(i))))
            }
            var available = F.snapshot(state: .available, createdAt: F.now.addingTimeInterval(10))
            available.sharedWith = []
            available.visibility = .public
            snapshots.append(available)
            let manifest = F.manifest(5)
            let volume = F.volume(snapshot: available.id)
            let instance = F.instance(state: .running)
            let template = TemplateRecord(
                id: .random(), owner: F.owner, instanceID: instance.id, snapshots: [snapshots[3].id, available.id],
                createdAt: F.now, version: 1)
            let claim = F.importRecord(F.objectKey, worker: "host-a", lease: F.now.addingTimeInterval(60))
            try await catalog.apply(
                snapshots.map { .insertSnapshot($0) } + [
                    .insertManifest(available.id, manifest), .insertVolume(volume), .insertInstance(instance),
                    .insertTemplate(template), .insertImport(claim),
                ])
            #expect(try await catalog.snapshots() == snapshots)
            for snapshot in snapshots { #expect(try await catalog.snapshot(snapshot.id) == snapshot) }
            #expect(try await catalog.manifest(available.id) == manifest)
            #expect(try await catalog.manifest(snapshots[0].id) == nil)
            #expect(try await catalog.manifests() == [available.id: manifest])
            #expect(try await catalog.volume(volume.id) == volume)
            #expect(try await catalog.volumes() == [volume])
            #expect(try await catalog.instance(instance.id) == instance)
            #expect(try await catalog.instances() == [instance])
            #expect(try await catalog.template(template.id) == template)
            #expect(try await catalog.templates() == [template])
            #expect(try await catalog.importRecord(F.objectKey) == claim)
            #expect(try await catalog.imports() == [claim])
            #expect(try await catalog.snapshot(.random()) == nil)
            #expect(try await catalog.importRecord(ImportKey(bucket: "images", key: F.objectKey.key, etag: "other")) == nil)
        }
    }

    @Test("an update stores every field and bumps the version; a stale version is a conflict")
    func conditionalUpdate() async throws {
        try await PostgresTestDatabase.withCatalog { catalog in
            var snapshot = F.snapshot()
            try await catalog.apply([.insertSnapshot(snapshot)])
            snapshot.state = .available
            snapshot.checksum = String(repeating: "0f", count: 32)
            snapshot.writer = nil
            snapshot.leaseExpiresAt = nil
            snapshot.sharedWith = [F.other, try ProjectRef(parsing: "x@y")]
            snapshot.description = "changed"
            try await catalog.apply([.updateSnapshot(snapshot)])
            var expected = snapshot
            expected.version = 2
            #expect(try await catalog.snapshot(snapshot.id) == expected)
            // `snapshot` still names version 1: stale.
            snapshot.description = "lost update"
            await #expect(throws: SnapshotError(.conflict, "")) { try await catalog.apply([.updateSnapshot(snapshot)]) }
            await #expect(throws: SnapshotError(.conflict, "")) {
                try await catalog.apply([.deleteSnapshot(snapshot.id, version: 1)])
            }
            await #expect(throws: SnapshotError(.conflict, "")) {
                try await catalog.apply([.expectSnapshot(snapshot.id, version: 1)])
            }
            try await catalog.apply([.expectSnapshot(snapshot.id, version: 2)])
            #expect(try await catalog.snapshot(snapshot.id) == expected)
        }
    }

    @Test("a batch is all or nothing: a failing write undoes the inserts before it")
    func atomicBatch() async throws {
        try await PostgresTestDatabase.withCatalog { catalog in
            let existing = F.volume()
            try await catalog.apply([.insertVolume(existing)])
            let fresh = F.snapshot()
            let instance = F.instance()
            await #expect(throws: SnapshotError(.conflict, "")) {
                try await catalog.apply([
                    .insertSnapshot(fresh), .insertInstance(instance), .expectVolume(existing.id, version: 7),
                ])
            }
            #expect(try await catalog.snapshot(fresh.id) == nil)
            #expect(try await catalog.instance(instance.id) == nil)
            // A missing row is a conflict too.
            await #expect(throws: SnapshotError(.conflict, "")) {
                try await catalog.apply([.insertSnapshot(fresh), .updateVolume(F.volume())])
            }
            #expect(try await catalog.snapshots().isEmpty)
        }
    }

    @Test("duplicate IDs and duplicate import keys are conflicts")
    func duplicates() async throws {
        try await PostgresTestDatabase.withCatalog { catalog in
            let snapshot = F.snapshot()
            let volume = F.volume()
            let instance = F.instance()
            let claim = F.importRecord(F.objectKey, worker: "a", lease: F.now)
            try await catalog.apply([
                .insertSnapshot(snapshot), .insertVolume(volume), .insertInstance(instance), .insertImport(claim),
            ])
            for write: CatalogWrite in [
                .insertSnapshot(F.snapshot(snapshot.id)), .insertVolume(F.volume(volume.id)),
                .insertInstance(F.instance(instance.id)), .insertImport(F.importRecord(F.objectKey, worker: "b", lease: F.now)),
                .insertManifest(.random(), F.manifest()),  // no such snapshot
            ] {
                await #expect(throws: SnapshotError(.conflict, "")) { try await catalog.apply([write]) }
            }
            try await catalog.apply([.insertManifest(snapshot.id, F.manifest())])
            await #expect(throws: SnapshotError(.conflict, "")) {
                try await catalog.apply([.insertManifest(snapshot.id, F.manifest(2, seed: 9))])
            }
            #expect(try await catalog.manifest(snapshot.id) == F.manifest())
        }
    }

    @Test("at most one available snapshot per (bucket, key, ETag)")
    func oneAvailableSnapshotPerObject() async throws {
        try await PostgresTestDatabase.withCatalog { catalog in
            let source = SnapshotSource.object(bucket: "b", key: "k", etag: "e")
            let first = F.snapshot(source: source, state: .available)
            var second = F.snapshot(source: source, state: .pending)
            try await catalog.apply([.insertSnapshot(first), .insertSnapshot(second)])
            second.state = .available
            await #expect(throws: SnapshotError(.conflict, "")) { try await catalog.apply([.updateSnapshot(second)]) }
            // Another ETag of the same key is another object version.
            let third = F.snapshot(source: .object(bucket: "b", key: "k", etag: "e2"), state: .available)
            try await catalog.apply([.insertSnapshot(third)])
        }
    }

    @Test("deleting a snapshot deletes its manifest")
    func deleteCascades() async throws {
        try await PostgresTestDatabase.withCatalog { catalog in
            let snapshot = F.snapshot(state: .available)
            try await catalog.apply([.insertSnapshot(snapshot), .insertManifest(snapshot.id, F.manifest())])
            try await catalog.apply([.deleteSnapshot(snapshot.id, version: 1)])
            #expect(try await catalog.snapshot(snapshot.id) == nil)
            #expect(try await catalog.manifests().isEmpty)
        }
    }

    // MARK: Many hosts

    @Test("two hosts racing to claim one object: exactly one insert wins")
    func racingClaimInsert() async throws {
        try await PostgresTestDatabase.withCatalogs(hosts: 2) { catalogs in
            for round in 0..<10 {
                let key = ImportKey(bucket: "images", key: "incoming/web@acme/\(round).img", etag: "\"e\(round)\"")
                let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for worker in 0..<8 {
                        let catalog = catalogs[worker % 2]
                        group.addTask {
                            do {
                                try await catalog.apply([
                                    .insertImport(F.importRecord(key, worker: "w\(worker)", lease: F.now.addingTimeInterval(60)))
                                ])
                                return true
                            } catch let error as SnapshotError where error.code == .conflict {
                                return false
                            }
                        }
                    }
                    return try await group.reduce(into: [Bool]()) { $0.append($1) }
                }
                #expect(outcomes.filter { $0 }.count == 1)
            }
        }
    }

    @Test("two hosts taking over one expired claim from the same version: exactly one wins")
    func racingClaimTakeover() async throws {
        try await PostgresTestDatabase.withCatalogs(hosts: 2) { catalogs in
            let expired = F.importRecord(F.objectKey, worker: "dead", lease: F.now.addingTimeInterval(-1))
            try await catalogs[0].apply([.insertImport(expired)])
            let winners = try await withThrowingTaskGroup(of: String?.self) { group in
                for worker in 0..<8 {
                    let catalog = catalogs[worker % 2]
                    group.addTask {
                        var takeover = expired
                        takeover.worker = "w\(worker)"
                        takeover.attempts += 1
                        takeover.leaseExpiresAt = F.now.addingTimeInterval(300)
                        do {
                            try await catalog.apply([.updateImport(takeover)])
                            return "w\(worker)"
                        } catch let error as SnapshotError where error.code == .conflict {
                            return nil
                        }
                    }
                }
                return try await group.reduce(into: [String]()) { if let w = $1 { $0.append(w) } }
            }
            #expect(winners.count == 1)
            let stored = try #require(try await catalogs[1].importRecord(F.objectKey))
            #expect(stored.worker == winners.first)
            #expect(stored.version == 2)
            #expect(stored.attempts == 2)
        }
    }

    @Test("two hosts inserting the same snapshot ID: one wins, the other gets a conflict to retry")
    func racingIDs() async throws {
        try await PostgresTestDatabase.withCatalogs(hosts: 2) { catalogs in
            // A deliberately tiny ID space (16 IDs) forces collisions; each task retries with a new random ID
            // on conflict, as the service does. 16 tasks must end with 16 distinct rows.
            let space = (0..<16).map { SnapshotID(unchecked: "snap-0000000" + String($0, radix: 16)) }
            let inserted = try await withThrowingTaskGroup(of: (SnapshotID, Int).self) { group in
                for task in 0..<16 {
                    let catalog = catalogs[task % 2]
                    group.addTask {
                        var collisions = 0
                        while true {
                            let id = space.randomElement()!
                            do {
                                try await catalog.apply([.insertSnapshot(F.snapshot(id))])
                                return (id, collisions)
                            } catch let error as SnapshotError where error.code == .conflict {
                                collisions += 1
                            }
                        }
                    }
                }
                return try await group.reduce(into: [(SnapshotID, Int)]()) { $0.append($1) }
            }
            #expect(Set(inserted.map(\.0)).count == 16)
            #expect(inserted.map(\.1).reduce(0, +) > 0)
            #expect(try await catalogs[0].snapshots().count == 16)
        }
    }

    @Test("batches updating two rows in opposite orders on two hosts: exactly one wins, never a catalog error")
    func deadlockRetried() async throws {
        try await PostgresTestDatabase.withCatalogs(hosts: 2) { catalogs in
            let a = F.volume()
            let b = F.volume()
            try await catalogs[0].apply([.insertVolume(a), .insertVolume(b)])
            for _ in 0..<3 {
                let currentA = try #require(try await catalogs[0].volume(a.id))
                let currentB = try #require(try await catalogs[0].volume(b.id))
                let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for (host, order) in [[currentA, currentB], [currentB, currentA]].enumerated() {
                        group.addTask {
                            do {
                                // Opposite lock orders may deadlock (40P01): the loser is re-run and sees a conflict.
                                try await catalogs[host].apply(
                                    [.expectVolume(order[0].id, version: order[0].version), .updateVolume(order[0])]
                                        + [.updateVolume(order[1])])
                                return true
                            } catch let error as SnapshotError where error.code == .conflict {
                                return false
                            }
                        }
                    }
                    return try await group.reduce(into: [Bool]()) { $0.append($1) }
                }
                #expect(outcomes.filter { $0 }.count == 1)
            }
        }
    }
}
