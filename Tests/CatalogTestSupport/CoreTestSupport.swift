import Foundation
import Logging
import SnapshotCore
import SnapshotSQLite
import BlockStoreFS
import Testing

@testable import SnapshotPostgres

/// A catalog the contract suites run against. Every contract test takes one as its argument, so the
/// same rules are proven for SQLite and (when `SNAPIMPORT_TEST_POSTGRES_URL` is set) PostgreSQL.
struct CatalogFactory: Sendable, CustomTestStringConvertible {
    let name: String
    /// Opens a fresh, empty catalog (SQLite: a file in `directory`; PostgreSQL: a fresh schema),
    /// runs `body`, closes it.
    let open: @Sendable (_ directory: String, _ body: @Sendable (any Catalog) async throws -> Void) async throws -> Void

    var testDescription: String { name }

    static let sqlite = CatalogFactory(name: "SQLite") { directory, body in
        let catalog = try SQLiteCatalog(path: directory + "/catalog.sqlite")
        try await body(catalog)
        try await catalog.close()
    }

    static let postgres = CatalogFactory(name: "PostgreSQL") { _, body in
        try await PostgresTestDatabase.withCatalog { catalog in try await body(catalog) }
    }

    static let memory = CatalogFactory(name: "memory") { _, body in
        try await body(MemoryCatalog())
    }

    /// SQLite and the in-memory reference always; PostgreSQL when the test server is configured.
    static let all: [CatalogFactory] =
        PostgresTestDatabase.isConfigured ? [.sqlite, .memory, .postgres] : [.sqlite, .memory]
}

/// A service over a fresh catalog, a filesystem block store and a volume directory in a temp dir.
struct Harness: Sendable {
    let service: SnapshotService
    let store: FileSystemBlockStore
    let directory: String

    static let blockSize = 4096
    static let logger: Logger = {
        var logger = Logger(label: "test.core")
        logger.logLevel = .critical
        return logger
    }()

    static func with(
        _ factory: CatalogFactory, options: SnapshotServiceOptions = SnapshotServiceOptions(blockSize: blockSize),
        _ body: @Sendable (Harness) async throws -> Void
    ) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("core-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await factory.open(directory) { catalog in
            let store = try FileSystemBlockStore(root: directory + "/blocks")
            let service = try SnapshotService(
                catalog: catalog, blocks: store, volumesDirectory: directory + "/volumes", options: options,
                logger: logger)
            try await body(Harness(service: service, store: store, directory: directory))
        }
    }

    /// Writes `disk` as a new available snapshot (a manual file import).
    @discardableResult
    func snapshot(
        owner: ProjectRef, disk: [UInt8], bootable: Bool = false, description: String = "test disk"
    ) async throws -> SnapshotRecord {
        let writer = try await service.beginSnapshot(
            NewSnapshot(
                owner: owner, description: description, source: .file(path: "/images/disk.raw"), format: "raw",
                bootable: bootable, virtualSize: UInt64(disk.count)),
            caller: .operator)
        try await writer.write(offset: 0, bytes: disk)
        return try await writer.commit()
    }

    /// Every block named by every manifest is present and verifies.
    func verifyAllManifests() async throws -> Int {
        var checked = 0
        for (_, manifest) in try await service.catalog.manifests() {
            for entry in manifest.entries {
                _ = try await store.get(entry.hash)
                checked += 1
            }
        }
        return checked
    }

    func fileBytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
}

enum Disks {
    /// A disk of `blocks` test-size blocks (plus `tail` bytes): data blocks seeded by `seed`, every 3rd
    /// block zero, blocks 1 and 4 identical (so the disk deduplicates within itself).
    static func make(blocks: Int, tail: Int = 0, seed: UInt64 = 1) -> [UInt8] {
        var generator = SplitMix(seed: seed)
        var disk = [UInt8](repeating: 0, count: blocks * Harness.blockSize + tail)
        for block in 0..<blocks where block % 3 != 0 {
            for i in 0..<Harness.blockSize {
                disk[block * Harness.blockSize + i] = UInt8(truncatingIfNeeded: generator.next())
            }
        }
        if blocks > 4 {
            let bs = Harness.blockSize
            disk.replaceSubrange(4 * bs..<5 * bs, with: disk[1 * bs..<2 * bs])
        }
        for i in (blocks * Harness.blockSize)..<disk.count { disk[i] = UInt8(truncatingIfNeeded: generator.next()) | 1 }
        return disk
    }
}

/// A small deterministic generator for fixtures.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Expects `body` to throw a `SnapshotError` with `code`.
func expectCode<T>(
    _ code: SnapshotError.Code, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> T
) async {
    do {
        _ = try await body()
        Issue.record("expected \(code), got success. \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    } catch let error as SnapshotError {
        #expect(error.code == code, "\(comment.map { "\($0)" } ?? ""): \(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

extension ProjectRef {
    static func make(_ text: String) -> ProjectRef {
        // Test constants are valid by construction.
        try! ProjectRef(parsing: text)
    }
}
