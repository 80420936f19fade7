import Foundation
import SnapshotCore
import BlockStoreFS
import Testing

@testable import CatalogTestSupport

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Block stores")
struct BlockStoreTests {
    static func temporaryRoot() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("blocks-\(UUID().uuidString)").path
    }

    static func tempStore() throws -> (FileSystemBlockStore, String) {
        let directory = temporaryRoot()
        return (try FileSystemBlockStore(root: directory, batchLimit: 4), directory)
    }

    /// Distinct pseudo-random blocks of `size` bytes.
    static func blocks(_ count: Int, size: Int, seed: UInt64) -> [[UInt8]] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            (0..<size).map { _ in
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                return UInt8(truncatingIfNeeded: state)
            }
        }
    }

    /// Bytes the filesystem has allocated to a file (holes excluded).
    static func allocatedBytes(_ path: String) -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else { return -1 }
        return Int(info.st_blocks) * 512
    }

    static func files(in store: FileSystemBlockStore, suffix: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: store.packPath("")).filter { $0.hasSuffix(suffix) }.sorted()
    }

    @Test("put is idempotent, deduplicates, and a block is indexed in a pack and readable after sync")
    func putGet() async throws {
        let (store, directory) = try Self.tempStore()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let hash = Blocks.hash(bytes)
        #expect(try await store.put(hash, bytes))
        #expect(try await !store.put(hash, bytes))
        #expect(try await store.contains(hash))
        #expect(try store.location(of: hash) == nil, "not indexed before sync")
        #expect(try await store.get(hash) == bytes, "readable before sync")
        try await store.sync()
        #expect(try await !store.put(hash, bytes))
        #expect(try await store.get(hash) == bytes)
        let listed = try await store.list()
        #expect(listed.map(\.hash) == [hash])
        #expect(listed.first?.size == 5000)
        let location = try #require(try store.location(of: hash))
        #expect(location.size == 5000)
        #expect(try Self.files(in: store, suffix: ".pack") == [location.pack])
        #expect(try Self.files(in: store, suffix: ".new").isEmpty)

        // Blocks start at 4 KiB boundaries in the pack, back to back.
        let second = [UInt8](repeating: 9, count: 100)
        #expect(try await store.put(Blocks.hash(second), second))
        try await store.sync()
        let next = try #require(try store.location(of: Blocks.hash(second)))
        #expect(next.pack == location.pack && next.offset == 8192)
    }

    @Test("reads are verified: a corrupted block or a missing pack is an error, never wrong bytes")
    func verifiedReads() async throws {
        let (store, directory) = try Self.tempStore()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = [UInt8](repeating: 0xAB, count: 4096)
        let hash = Blocks.hash(bytes)
        _ = try await store.put(hash, bytes)
        try await store.sync()
        let location = try #require(try store.location(of: hash))
        let handle = try #require(FileHandle(forWritingAtPath: store.packPath(location.pack)))
        try handle.seek(toOffset: location.offset + 100)
        try handle.write(contentsOf: [0xAC])
        try handle.close()
        await expectCode(.corruptBlock) { try await store.get(hash) }
        try FileManager.default.removeItem(atPath: store.packPath(location.pack))
        await expectCode(.missingBlock) { try await store.get(hash) }
        await expectCode(.missingBlock) { try await store.get(Blocks.hash([1, 2, 3])) }

        let memory = MemoryBlockStore()
        _ = try await memory.put(hash, bytes)
        memory.corrupt(hash, with: [1, 2, 3])
        await expectCode(.corruptBlock) { try await memory.get(hash) }
    }

    @Test("remove keeps a block freshened after the cutoff and removes an older one")
    func conditionalRemove() async throws {
        let (fileStore, directory) = try Self.tempStore()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for store in [fileStore as any BlockStore, MemoryBlockStore()] {
            let bytes = [UInt8](repeating: 1, count: 100)
            let hash = Blocks.hash(bytes)
            _ = try await store.put(hash, bytes)
            try await store.sync()
            let cutoff = Date().addingTimeInterval(-60)
            #expect(try await !store.remove(hash, unlessModifiedSince: cutoff), "touched after the cutoff")
            #expect(try await store.contains(hash))
            #expect(try await store.remove(hash, unlessModifiedSince: Date().addingTimeInterval(60)))
            #expect(try await !store.contains(hash))
            #expect(try await store.put(hash, bytes), "a put after removal writes it again")
            try await store.sync()
            #expect(try await store.get(hash) == bytes)
        }
    }

    @Test("a put of an existing block freshens it, so a collection with an earlier cutoff keeps it")
    func freshen() async throws {
        let (store, directory) = try Self.tempStore()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = [UInt8](repeating: 2, count: 100)
        let hash = Blocks.hash(bytes)
        _ = try await store.put(hash, bytes)
        try await store.sync()
        try store.setModified(hash, to: Date().addingTimeInterval(-3600))
        let cutoff = Date().addingTimeInterval(-1)
        #expect(try await store.list().first.map { $0.modified < cutoff } == true)
        #expect(try await !store.put(hash, bytes))  // dedup hit: freshens
        #expect(try await store.list().first.map { $0.modified >= cutoff } == true)
        #expect(try await !store.remove(hash, unlessModifiedSince: cutoff))
        #expect(try await store.get(hash) == bytes)

        // The freshening is seen by another process's collector (a second instance on the same files).
        try store.setModified(hash, to: Date().addingTimeInterval(-3600))
        let collector = try FileSystemBlockStore(root: directory)
        #expect(try await !store.put(hash, bytes))
        #expect(try await !collector.remove(hash, unlessModifiedSince: cutoff))
    }

    @Test("removing blocks frees their space in the pack, and a pack left empty is deleted once no writer holds it")
    func removalFreesSpace() async throws {
        let directory = Self.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let data = Self.blocks(8, size: 1 << 20, seed: 1)
        let hashes = data.map(Blocks.hash)
        var pack = ""
        do {
            let writer = try FileSystemBlockStore(root: directory)
            for (hash, bytes) in zip(hashes, data) { #expect(try await writer.put(hash, bytes)) }
            try await writer.sync()
            pack = try #require(try writer.location(of: hashes[0])).pack
            // While the writer lives (and holds the pack), an emptied pack is kept.
            let before = Self.allocatedBytes(writer.packPath(pack))
            #expect(before >= 8 << 20)
            let removed = try await writer.remove(Array(hashes[0..<4]), unlessModifiedSince: .distantFuture)
            #expect(removed == Set(hashes[0..<4]))
            #expect(Self.allocatedBytes(writer.packPath(pack)) <= before - (4 << 20), "the ranges are freed")
            for (hash, bytes) in zip(hashes[4...], data[4...]) { #expect(try await writer.get(hash) == bytes) }
            for hash in hashes[0..<4] { await expectCode(.missingBlock) { try await writer.get(hash) } }
        }
        let collector = try FileSystemBlockStore(root: directory)
        #expect(FileManager.default.fileExists(atPath: collector.packPath(pack)))
        let removed = try await collector.remove(Array(hashes[4...]), unlessModifiedSince: .distantFuture)
        #expect(removed.count == 4)
        #expect(!FileManager.default.fileExists(atPath: collector.packPath(pack)), "no block left, no writer: deleted")
        #expect(try await collector.list().isEmpty)
    }

    @Test("what a crashed writer appended but never indexed is freed; a live writer's pending blocks are not")
    func crashedWriterLeftovers() async throws {
        let directory = Self.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let data = Self.blocks(6, size: 1 << 20, seed: 2)
        let hashes = data.map(Blocks.hash)
        var pack = ""
        do {
            let crashed = try FileSystemBlockStore(root: directory, batchLimit: 100)
            for i in 0..<2 { _ = try await crashed.put(hashes[i], data[i]) }
            try await crashed.sync()
            for i in 2..<4 { _ = try await crashed.put(hashes[i], data[i]) }  // appended, never indexed
            pack = try #require(try crashed.location(of: hashes[0])).pack
        }  // the instance goes away without sync, as a killed process would
        let half = "\(directory)/packs/\(UUID()).new"
        _ = FileManager.default.createFile(atPath: half, contents: Data([1]))
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-3600)], ofItemAtPath: half)

        let live = try FileSystemBlockStore(root: directory, batchLimit: 100)
        for i in 4..<6 { _ = try await live.put(hashes[i], data[i]) }  // pending in the live writer's pack
        let collector = try FileSystemBlockStore(root: directory)
        let path = collector.packPath(pack)
        let before = Self.allocatedBytes(path)
        #expect(before >= 4 << 20)
        _ = try await collector.removeStaleTemporaries(olderThan: Date().addingTimeInterval(-60))
        #expect(Self.allocatedBytes(path) <= before - (2 << 20), "the unindexed half is freed")
        #expect(!FileManager.default.fileExists(atPath: half), "a stale half-created pack is removed")
        for i in 0..<2 { #expect(try await collector.get(hashes[i]) == data[i]) }
        for i in 2..<4 { #expect(try await !collector.contains(hashes[i])) }
        // The live writer's blocks survive the collection and index normally.
        try await live.sync()
        for i in 4..<6 { #expect(try await collector.get(hashes[i]) == data[i]) }
        #expect(try await collector.list().count == 4)
    }

    @Test("two writers storing the same new block at once keep one indexed copy; both read it")
    func racingWriters() async throws {
        let directory = Self.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let a = try FileSystemBlockStore(root: directory)
        let b = try FileSystemBlockStore(root: directory)
        let bytes = Self.blocks(1, size: 1 << 20, seed: 3)[0]
        let hash = Blocks.hash(bytes)
        #expect(try await a.put(hash, bytes))
        #expect(try await b.put(hash, bytes))
        try await a.sync()
        try await b.sync()
        #expect(try await a.list().count == 1)
        #expect(try await a.get(hash) == bytes)
        #expect(try await b.get(hash) == bytes)
        let kept = try #require(try a.location(of: hash))
        let packs = try Self.files(in: a, suffix: ".pack")
        #expect(packs.count == 2)
        let loser = try #require(packs.first { $0 != kept.pack })
        // Both packs are preallocated alike; the loser's copy was punched out of it.
        #expect(
            Self.allocatedBytes(a.packPath(loser)) <= Self.allocatedBytes(a.packPath(kept.pack)) - (1 << 20),
            "the losing copy is freed")
    }

    @Test("many tasks putting at once: every block indexed once and readable (direct and buffered writes)",
        arguments: [true, false])
    func concurrentPuts(direct: Bool) async throws {
        let directory = Self.temporaryRoot()
        let store = try FileSystemBlockStore(root: directory, batchLimit: 4, directWrites: direct)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Odd sizes too: a direct write pads to 4 KiB, and the padding never shows in a read.
        let data = Self.blocks(20, size: 64 << 10, seed: 4) + Self.blocks(4, size: 5000, seed: 6)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for round in 0..<3 {
                for bytes in data {
                    group.addTask { _ = try await store.put(Blocks.hash(bytes), bytes) }
                }
                if round == 1 { group.addTask { try await store.sync() } }
            }
            try await group.waitForAll()
        }
        try await store.sync()
        #expect(try await store.list().count == 24)
        for bytes in data { #expect(try await store.get(Blocks.hash(bytes)) == bytes) }
    }

    @Test("a store of the one-file-per-block layout is moved into packs, keeping blocks and their times")
    func legacyLayout() async throws {
        let directory = Self.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let data = Self.blocks(3, size: 10_000, seed: 5)
        let old = Date(timeIntervalSince1970: 1_700_000_000)
        for bytes in data {
            let hex = Blocks.hash(bytes).hex
            try FileManager.default.createDirectory(
                atPath: "\(directory)/\(hex.prefix(2))", withIntermediateDirectories: true)
            let path = "\(directory)/\(hex.prefix(2))/\(hex)"
            _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
            try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: path)
        }
        try FileManager.default.createDirectory(atPath: "\(directory)/tmp", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: "\(directory)/tmp/\(Blocks.hash(data[0]).hex).123", contents: Data([0]))

        let store = try FileSystemBlockStore(root: directory)
        let listed = try await store.list()
        #expect(Set(listed.map(\.hash)) == Set(data.map(Blocks.hash)))
        #expect(listed.allSatisfy { abs($0.modified.timeIntervalSince(old)) < 1 }, "times kept for the collector")
        for bytes in data { #expect(try await store.get(Blocks.hash(bytes)) == bytes) }
        let left = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(left.contains("packs") && left.contains("index.sqlite"))
        #expect(!left.contains { $0.count == 2 } && !left.contains("tmp"), "old directories removed: \(left)")
    }
}
