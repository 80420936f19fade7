import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

@testable import SnapshotPostgres

/// PostgreSQL-specific parts of issue 11: the migration that derives reference counts from existing
/// manifests, and the plans of the targeted queries (served by indexes, not by whole-table scans).
@Suite("PostgreSQL catalog at scale", .enabled(if: PostgresTestDatabase.isConfigured, PostgresTestDatabase.skipReason))
struct PostgresScaleTests {
    typealias F = PostgresFixtures

    @Test("migration 2 derives the reference counts of existing manifests (distinct blocks per manifest)")
    func backfill() async throws {
        try await PostgresTestDatabase.withCatalog { catalog in
            let a = F.snapshot(state: .available)
            var b = F.snapshot(state: .available)
            b.source = .file(path: "/other")
            let shared = BlockHash(bytes: [UInt8](repeating: 0xAB, count: 32))!
            let own = BlockHash(bytes: [UInt8](repeating: 0x01, count: 32))!
            let ma = try Manifest(entries: [
                .init(index: 0, hash: shared), .init(index: 5, hash: own), .init(index: 9, hash: shared),
            ])
            let mb = try Manifest(entries: [.init(index: 1, hash: shared)])
            try await catalog.apply([
                .insertSnapshot(a), .insertManifest(a.id, ma), .insertSnapshot(b), .insertManifest(b.id, mb),
            ])
            let counted = try await catalog.blockReferences([shared, own])
            #expect(counted == [shared: 2, own: 1])
            // As before the migration: no counts; then its statement again.
            try await catalog.scalarForTesting("DELETE FROM block_refs")
            let statement = try #require(
                CatalogSchema.migrations.first { $0.version == 2 }?.sql.first { $0.contains("INSERT INTO block_refs") })
            try await catalog.scalarForTesting(statement)
            #expect(try await catalog.blockReferences([shared, own]) == counted)
        }
    }

    @Test("the hot-path queries use indexes")
    func plans() async throws {
        try await PostgresTestDatabase.withCatalog { catalog in
            _ = try await catalog.oldestPendingSnapshot()  // migrates
            for query in [
                "SELECT min(created_at) FROM snapshots WHERE state = 'pending'",
                "SELECT id FROM snapshots WHERE owner = 'a@b' AND state <> 'deleting' ORDER BY created_at, id LIMIT 5",
                "SELECT id FROM snapshots WHERE state = 'available' AND visibility = 'public' ORDER BY created_at, id LIMIT 5",
                "SELECT hash FROM block_refs WHERE refs <= 0 ORDER BY hash LIMIT 5",
            ] {
                // EXPLAIN's rows are text; with sequential scans disabled, a plan without an index shows "Seq Scan".
                let plan = try await catalog.explainForTesting(query)
                #expect(!plan.contains("Seq Scan"), "\(query): \(plan)")
            }
        }
    }
}
