import Foundation
import Logging
import SnapshotCore
import Testing

@testable import SnapshotPostgres

/// Access to the test PostgreSQL server (`SNAPIMPORT_TEST_POSTGRES_URL`, set by scripts/test).
///
/// Every test gets a fresh schema `test_<random>` (tables created by the catalog's own migrations) that is
/// dropped afterwards, so tests never see each other's rows and can run in parallel.
enum PostgresTestDatabase {
    static let url = ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_POSTGRES_URL"]
    static let isConfigured: Bool = {
        if url == nil {
            print("PostgreSQL catalog tests skipped: SNAPIMPORT_TEST_POSTGRES_URL is unset (scripts/test sets it)")
        }
        return url != nil
    }()
    static let skipReason: Comment = "SNAPIMPORT_TEST_POSTGRES_URL is unset (scripts/test sets it)"

    static let logger: Logger = {
        var logger = Logger(label: "test.postgres")
        logger.logLevel = .warning
        return logger
    }()

    /// A new random schema name.
    static func freshSchemaName() -> String {
        "test_" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
    }

    /// Makes a catalog on `schema` with its own connection pool (one "host").
    static func makeCatalog(schema: String) throws -> PostgresCatalog {
        guard let url else { throw PostgresCatalogError(.invalidURL, "SNAPIMPORT_TEST_POSTGRES_URL is unset") }
        var configuration = try PostgresCatalogConfiguration(url: url)
        configuration.schema = schema
        configuration.maximumConnections = 4
        return PostgresCatalog(configuration: configuration, logger: logger)
    }

    /// Runs `body` with `hosts` catalog instances (separate pools, as on separate hosts) on one fresh schema,
    /// every pool running, tables NOT yet created (each instance migrates on first use); drops the schema after.
    static func withCatalogs<R: Sendable>(
        hosts: Int = 1, migrate: Bool = true, _ body: ([PostgresCatalog]) async throws -> R
    ) async throws -> R {
        let schema = freshSchemaName()
        let catalogs = try (0..<hosts).map { _ in try makeCatalog(schema: schema) }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for catalog in catalogs { group.addTask { try await catalog.run() } }
            defer { group.cancelAll() }
            do {
                if migrate { try await catalogs[0].migrate() }
                let result = try await body(catalogs)
                try await catalogs[0].dropSchemaForTesting()
                return result
            } catch {
                try? await catalogs[0].dropSchemaForTesting()
                throw error
            }
        }
    }

    /// One catalog on a fresh schema.
    static func withCatalog<R: Sendable>(_ body: (PostgresCatalog) async throws -> R) async throws -> R {
        try await withCatalogs(hosts: 1) { try await body($0[0]) }
    }
}

/// Records for storage-level tests.
enum PostgresFixtures {
    static let owner = try! ProjectRef(parsing: "web@acme")
    static let other = try! ProjectRef(parsing: "db@globex")
    /// Whole milliseconds, as the service writes them.
    static let now = Date(timeIntervalSince1970: 1_790_000_000.123)

    static func snapshot(
        _ id: SnapshotID = .random(), source: SnapshotSource = .file(path: "/tmp/disk.raw"),
        state: SnapshotState = .pending, createdAt: Date = now
    ) -> SnapshotRecord {
        SnapshotRecord(
            id: id, owner: owner, description: "a \"quoted\" description ' ; --", state: state, visibility: .private,
            sharedWith: [other], virtualSize: 1 << 40, storedBytes: 3 << 20, format: "qcow2", bootable: true,
            source: source, checksum: state == .available ? String(repeating: "ab", count: 32) : nil,
            blockSize: 1 << 20, createdAt: createdAt, writer: state == .pending ? "worker-1" : nil,
            leaseExpiresAt: state == .pending ? now.addingTimeInterval(300) : nil, failure: nil, version: 1)
    }

    static func manifest(_ count: Int = 3, seed: UInt8 = 1) -> Manifest {
        try! Manifest(
            entries: (0..<count).map { i in
                Manifest.Entry(index: UInt64(i * 2), hash: BlockHash(bytes: [UInt8](repeating: seed &+ UInt8(i), count: 32))!)
            })
    }

    static func volume(_ id: VolumeID = .random(), snapshot: SnapshotID? = nil) -> VolumeRecord {
        VolumeRecord(
            id: id, owner: owner, snapshotID: snapshot, size: 5 << 30, fileName: "\(id).raw", attachedTo: nil,
            snapshotInProgress: nil, createdAt: now, version: 1)
    }

    static func instance(_ id: InstanceID = .random(), state: InstanceState = .stopped) -> InstanceRecord {
        InstanceRecord(id: id, owner: owner, state: state, createdAt: now, version: 1)
    }

    static func importRecord(_ key: ImportKey, worker: String, lease: Date) -> ImportRecord {
        ImportRecord(
            key: key, owner: owner.description, state: .claimed, worker: worker, leaseExpiresAt: lease, attempts: 1,
            snapshotID: nil, errorCode: nil, errorMessage: nil, createdAt: now, updatedAt: now, version: 1)
    }

    static let objectKey = ImportKey(bucket: "images", key: "incoming/web@acme/disk ?#.qcow2", etag: "\"0123abcd\"")
}

extension Error {
    /// The SnapshotCore error code, if this is a `SnapshotError`.
    var pgSnapshotCode: SnapshotError.Code? { (self as? SnapshotError)?.code }
}
