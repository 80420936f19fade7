import BlockStoreFS
import DiskImage
import Foundation
import Importer
import Logging
import SnapshotCore
import SnapshotSQLite
import Synchronization
import Testing

/// A block store whose puts fail from the `failAt`-th on (counting from 1), over a real store.
final class FailingPutStore: BlockStore {
    let base: any BlockStore
    let failAt: Int
    private let counts = Mutex((started: 0, afterFailure: 0, syncs: 0))

    init(_ base: any BlockStore, failAt: Int) {
        self.base = base
        self.failAt = failAt
    }

    /// Puts started, puts started after the first failure, syncs.
    var statistics: (started: Int, afterFailure: Int, syncs: Int) { counts.withLock { $0 } }

    func put(_ hash: BlockHash, _ bytes: ArraySlice<UInt8>) async throws -> Bool {
        let number = counts.withLock { counts in
            counts.started += 1
            if counts.started > failAt { counts.afterFailure += 1 }
            return counts.started
        }
        if number >= failAt { throw SnapshotError(.storage, "write of block \(hash.hex.prefix(8)) failed (injected)") }
        return try await base.put(hash, bytes)
    }
    func get(_ hash: BlockHash) async throws -> [UInt8] { try await base.get(hash) }
    func contains(_ hash: BlockHash) async throws -> Bool { try await base.contains(hash) }
    func sync() async throws {
        counts.withLock { $0.syncs += 1 }
        try await base.sync()
    }
    func list() async throws -> [StoredBlock] { try await base.list() }
    func remove(_ hashes: [BlockHash], unlessModifiedSince cutoff: Date) async throws -> Set<BlockHash> {
        try await base.remove(hashes, unlessModifiedSince: cutoff)
    }
}

/// The durability order of an import (issue 17): the blocks' data is `fdatasync`ed and their index
/// committed before the catalog commit makes the snapshot available; a failure there fails the import
/// with nothing committed. Local: an embedded SQLite catalog and the real file-system block store.
@Suite("Import durability order")
struct DurabilityTests {
    static let blockCount = 48

    /// A raw disk of whole 1 MiB blocks of distinct pseudo-random bytes, with a zero block every fourth.
    static func disk() -> [UInt8] {
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        var bytes = [UInt8](repeating: 0, count: blockCount << 20)
        bytes.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for block in 0..<blockCount where block % 4 != 3 {
                for i in (block << 17)..<((block + 1) << 17) {
                    state ^= state << 13
                    state ^= state >> 7
                    state ^= state << 17
                    words[i] = state
                }
            }
        }
        return bytes
    }

    struct Setup {
        let service: SnapshotService
        let store: FileSystemBlockStore
        let directory: String
    }

    static func setup(
        blocks: ((FileSystemBlockStore) -> any BlockStore)? = nil,
        dataSync: @escaping @Sendable (Int32, String) throws -> Void
    ) throws -> Setup {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("durability-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let store = try FileSystemBlockStore(root: "\(directory)/blocks", dataSync: dataSync)
        let service = try SnapshotService(
            catalog: try SQLiteCatalog(path: "\(directory)/catalog.sqlite"), blocks: blocks?(store) ?? store,
            volumesDirectory: "\(directory)/volumes", logger: Logger(label: "durability"))
        return Setup(service: service, store: store, directory: directory)
    }

    static func importDisk(_ service: SnapshotService, _ bytes: [UInt8]) async throws -> SnapshotRecord {
        var logger = Logger(label: "durability")
        return try await ImageImporter(catalog: CoreImportCatalog(service: service)).importImage(
            source: MemoryByteSource(bytes), claim: nil, owner: try ProjectRef(parsing: "durability@acme"),
            description: "durability", claimedFormat: .raw, snapshotSource: .file(path: "/disk.raw"),
            logger: &logger, progress: { _, _ in })
    }

    @Test("an fdatasync failure fails the import: no snapshot committed, no block indexed")
    func failingDataSync() async throws {
        let calls = Atomic<Int>(0)
        let setup = try Self.setup { _, path in
            calls.add(1, ordering: .relaxed)
            throw SnapshotError(.storage, "cannot sync \(path): Input/output error (injected)")
        }
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        do {
            _ = try await Self.importDisk(setup.service, Self.disk())
            Issue.record("the import succeeded although its data could not be synced")
        } catch let error as SnapshotError {
            #expect(error.code == .storage)
            #expect(error.message.contains("injected"))
        }
        #expect(calls.load(ordering: .relaxed) >= 1, "the pack was synced (and failed) before any commit")
        let snapshots = try await setup.service.listSnapshots(caller: .operator)
        #expect(snapshots.filter { $0.state == .available }.isEmpty, "nothing committed")
        #expect(snapshots.isEmpty, "the pending snapshot was aborted")
        #expect(try await setup.store.list().isEmpty, "no block of the failed import is indexed")
        try? await setup.service.catalog.close()
    }

    @Test("every fdatasync runs while the snapshot is still pending; once committed, every block is indexed")
    func syncBeforeCommit() async throws {
        let seen = Mutex<[[SnapshotState]]>([])
        let service = Mutex<SnapshotService?>(nil)
        let setup = try Self.setup { fd, path in
            try POSIX.fdatasync(fd, path: path)
            // Called on a blocking-executor thread: the catalog is asked from there, synchronously.
            if let current = service.withLock({ $0 }) {
                let states = try waitBlocking { try await current.listSnapshots(caller: .operator).map(\.state) }
                seen.withLock { $0.append(states) }
            }
        }
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        service.withLock { $0 = setup.service }
        let bytes = Self.disk()
        let record = try await Self.importDisk(setup.service, bytes)
        #expect(record.state == .available)
        let observed = seen.withLock { $0 }
        #expect(!observed.isEmpty, "the import synced its pack")
        #expect(observed.allSatisfy { $0 == [.pending] }, "a sync ran after the commit: \(observed)")
        let manifest = try #require(try await setup.service.catalog.manifest(record.id))
        #expect(manifest.entries.count == Self.blockCount - Self.blockCount / 4)
        for entry in manifest.entries {
            #expect(try setup.store.location(of: entry.hash) != nil, "block \(entry.index) is not indexed")
            let start = Int(entry.index) << 20
            #expect(try await setup.store.get(entry.hash) == Array(bytes[start..<start + (1 << 20)]))
        }
        try? await setup.service.catalog.close()
    }

    @Test("a failing block write cancels the writes still queued: nothing synced, indexed or committed")
    func failingWriteCancelsTheRest() async throws {
        let failing = Mutex<FailingPutStore?>(nil)
        let setup = try Self.setup(
            blocks: { store in
                let wrapped = FailingPutStore(store, failAt: 5)
                failing.withLock { $0 = wrapped }
                return wrapped
            }, dataSync: { try POSIX.fdatasync($0, path: $1) })
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        let store = try #require(failing.withLock { $0 })
        await #expect(throws: SnapshotError.self) { _ = try await Self.importDisk(setup.service, Self.disk()) }
        let statistics = store.statistics
        let dataBlocks = Self.blockCount - Self.blockCount / 4
        // Writers already holding a block may still start its put; the rest of the disk is never written.
        #expect(statistics.afterFailure <= ImageImporter.blockWriters, "\(statistics)")
        #expect(statistics.started < dataBlocks, "\(statistics)")
        #expect(statistics.syncs == 0, "no sync, no commit")
        #expect(try await setup.service.listSnapshots(caller: .operator).isEmpty)
        #expect(try await setup.store.list().isEmpty)
        try? await setup.service.catalog.close()
    }
}
