import Foundation
import SnapshotCore
import Testing

@Suite("Block stores")
struct BlockStoreTests {
    static func tempStore() throws -> (FileSystemBlockStore, String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("blocks-\(UUID().uuidString)")
            .path
        return (try FileSystemBlockStore(root: directory, batchLimit: 4), directory)
    }

    @Test("put is idempotent, deduplicates, and a block is durable and readable after sync")
    func putGet() async throws {
        let (store, directory) = try Self.tempStore()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let hash = Blocks.hash(bytes)
        #expect(try await store.put(hash, bytes))
        #expect(try await !store.put(hash, bytes))
        #expect(try await store.contains(hash))
        try await store.sync()
        #expect(try await !store.put(hash, bytes))
        #expect(try await store.get(hash) == bytes)
        let listed = try await store.list()
        #expect(listed.map(\.hash) == [hash])
        #expect(listed.first?.size == 5000)
        let path = "\(directory)/\(hash.hex.prefix(2))/\(hash.hex)"
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/tmp").isEmpty)
    }

    @Test("reads are verified: a corrupted or missing block file is an error, never wrong bytes")
    func verifiedReads() async throws {
        let (store, directory) = try Self.tempStore()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = [UInt8](repeating: 0xAB, count: 4096)
        let hash = Blocks.hash(bytes)
        _ = try await store.put(hash, bytes)
        try await store.sync()
        let path = "\(directory)/\(hash.hex.prefix(2))/\(hash.hex)"
        try Data([UInt8](repeating: 0xAC, count: 4096)).write(to: URL(fileURLWithPath: path))
        await expectCode(.corruptBlock) { try await store.get(hash) }
        try FileManager.default.removeItem(atPath: path)
        await expectCode(.missingBlock) { try await store.get(hash) }

        let memory = MemoryBlockStore()
        _ = try await memory.put(hash, bytes)
        memory.corrupt(hash, with: [1, 2, 3])
        await expectCode(.corruptBlock) { try await memory.get(hash) }
    }

    @Test("remove keeps a block freshened after the cutoff and removes an older one")
    func conditionalRemove() async throws {
        for store in [try Self.tempStore().0 as any BlockStore, MemoryBlockStore()] {
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
        let path = "\(directory)/\(hash.hex.prefix(2))/\(hash.hex)"
        let old = Date().addingTimeInterval(-3600)
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: path)
        let cutoff = Date().addingTimeInterval(-1)
        #expect(try await store.list().first.map { $0.modified < cutoff } == true)
        #expect(try await !store.put(hash, bytes))  // dedup hit: freshens
        #expect(try await !store.remove(hash, unlessModifiedSince: cutoff))
        #expect(try await store.get(hash) == bytes)
    }
}
