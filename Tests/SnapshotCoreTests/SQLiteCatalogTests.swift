import Foundation
import SnapshotCore
import SnapshotSQLite
import SnapshotStores
import BlockStoreFS
import Synchronization
import Testing

@testable import CatalogTestSupport

/// SQLite-specific: one file shared by several connections (as by two `snapimport run` processes on one host).
@Suite("SQLite catalog")
struct SQLiteCatalogTests {
    static func withDirectory(_ body: (String) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sqlite-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await body(directory)
    }

    @Test("two catalogs on one file (two processes): claims race to exactly one winner, writes never fail busy")
    func twoConnections() async throws {
        try await Self.withDirectory { directory in
            let path = directory + "/catalog.sqlite"
            let a = try SQLiteCatalog(path: path)
            let b = try SQLiteCatalog(path: path)  // migrations are idempotent
            let store = try FileSystemBlockStore(root: directory + "/blocks")
            let services = try [a, b].map {
                try SnapshotService(
                    catalog: $0, blocks: store, volumesDirectory: directory + "/volumes",
                    options: SnapshotServiceOptions(blockSize: 4096), logger: Harness.logger)
            }
            for object in 0..<10 {
                let winners = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for worker in 0..<8 {
                        let service = services[worker % 2]
                        group.addTask {
                            try await service.claimImport(
                                bucket: "b", key: "incoming/a@b/\(object)", etag: "e", owner: "a@b",
                                worker: "w\(worker)",
                                leaseSeconds: 60) != nil
                        }
                    }
                    return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
                }
                #expect(winners == 1)
            }
            // Both connections write snapshots concurrently.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<16 {
                    let service = services[i % 2]
                    group.addTask {
                        let writer = try await service.beginSnapshot(
                            NewSnapshot(
                                owner: .make("a@b"), source: .file(path: "/\(i)"), format: "raw", virtualSize: 8192),
                            caller: .operator)
                        try await writer.writeBlock(index: 0, bytes: [UInt8](repeating: UInt8(i + 1), count: 4096))
                        _ = try await writer.commit()
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await a.snapshots().count == 16)
            #expect(try await b.snapshots().filter { $0.state == .available }.count == 16)
            #expect(Set(try await a.snapshots().map(\.id)).count == 16)
            try await a.close()
            try await b.close()
        }
    }

    @Test("many processes opening one brand-new catalog at once all succeed: racing migrations are retried, not fatal")
    func racingFirstOpen() async throws {
        // Every migration (CREATE TABLE, ALTER TABLE ADD COLUMN, …) can lose this race, each with its own
        // SQLite message; each opener has its own connections, as separate processes do.
        try await Self.withDirectory { directory in
            for round in 0..<12 {
                let path = directory + "/catalog-\(round).sqlite"
                // Threads, not tasks: six openers really at once even on two cores.
                let failures = Mutex<[String]>([])
                let threads = (0..<6).map { _ in
                    Thread {
                        do { _ = try SQLiteCatalog(path: path) } catch { failures.withLock { $0.append("\(error)") } }
                    }
                }
                threads.forEach { $0.start() }
                while threads.contains(where: { !$0.isFinished }) { try await Task.sleep(for: .milliseconds(5)) }
                let opened = failures.withLock { $0 }.map { Result<Void, any Error>.failure(SnapshotError(.catalog, $0)) }
                for case .failure(let error) in opened {
                    Issue.record("round \(round): \(error)")
                }
                let catalog = try SQLiteCatalog(path: path)
                #expect(try await catalog.snapshots().isEmpty)
                try await catalog.close()
            }
        }
    }

    @Test("the catalog survives reopening: rows, manifests and versions persist")
    func reopen() async throws {
        try await Self.withDirectory { directory in
            let disk = Disks.make(blocks: 4)
            var id: SnapshotID?
            do {
                let service = try LocalStore.open(path: directory, blockSize: 4096, logger: Harness.logger)
                let writer = try await service.beginSnapshot(
                    NewSnapshot(
                        owner: .make("a@b"), source: .file(path: "/x"), format: "raw", virtualSize: UInt64(disk.count)),
                    caller: .operator)
                try await writer.write(offset: 0, bytes: disk)
                id = try await writer.commit().id
                try await service.catalog.close()
            }
            let service = try LocalStore.open(path: directory, blockSize: 4096, logger: Harness.logger)
            let snapshot = try await service.snapshot(try #require(id), caller: .project(.make("a@b")))
            #expect(snapshot.state == .available)
            let volume = try await service.createVolume(from: snapshot.id, caller: .operator)
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: service.volumePath(volume)))) == disk)
            await expectCode(.invalidArgument) {
                try LocalStore.open(path: directory, blockSize: 1000, logger: Harness.logger)
            }
        }
    }
    /// The permission bits of a file.
    static func mode(_ path: String) throws -> Int {
        try #require((try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue)
    }

    @Test("the catalog file and its WAL are mode 0600 (they hold access-key secrets); an older, wider file is narrowed")
    func fileMode() async throws {
        try await Self.withDirectory { directory in
            let path = directory + "/catalog.sqlite"
            let catalog = try SQLiteCatalog(path: path)
            let service = try SnapshotService(
                catalog: catalog, blocks: MemoryBlockStore(), volumesDirectory: directory + "/volumes",
                logger: Harness.logger)
            let key = try await service.createAccessKey(for: .operator)
            for file in [path, path + "-wal", path + "-shm"] where FileManager.default.fileExists(atPath: file) {
                #expect(try Self.mode(file) == 0o600, "\(file)")
            }
            #expect(FileManager.default.fileExists(atPath: path + "-wal"))
            try await catalog.close()

            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
            let reopened = try SQLiteCatalog(path: path)
            #expect(try Self.mode(path) == 0o600)
            #expect(try await reopened.accessKey(key.id) == key, "the key survives reopening")
            try await reopened.close()
        }
    }
}
