public import Foundation
import Synchronization

/// An in-memory block store for tests; same contract as the filesystem one.
public final class MemoryBlockStore: BlockStore {
    private struct Entry {
        var bytes: [UInt8]
        var modified: Date
    }

    // Mutex guards the only mutable state.
    private let blocks = Mutex([BlockHash: Entry]())
    private let clock: @Sendable () -> Date

    /// - Parameter clock: the time recorded on put/freshen (tests may inject one).
    public init(clock: @escaping @Sendable () -> Date = { Date() }) {
        self.clock = clock
    }

    public func put(_ hash: BlockHash, _ bytes: ArraySlice<UInt8>) async throws -> Bool {
        let now = clock()
        return blocks.withLock { map in
            if map[hash] != nil {
                map[hash]?.modified = now
                return false
            }
            map[hash] = Entry(bytes: Array(bytes), modified: now)
            return true
        }
    }

    public func get(_ hash: BlockHash) async throws -> [UInt8] {
        guard let bytes = blocks.withLock({ $0[hash]?.bytes }) else {
            throw SnapshotError(.missingBlock, "block \(hash.hex) is missing from the block store")
        }
        guard Blocks.hash(bytes) == hash else {
            throw SnapshotError(.corruptBlock, "block \(hash.hex) does not match its SHA-256")
        }
        return bytes
    }

    public func contains(_ hash: BlockHash) async throws -> Bool { blocks.withLock { $0[hash] != nil } }

    public func sync() async throws {}

    public func list() async throws -> [StoredBlock] {
        blocks.withLock { map in
            map.map { StoredBlock(hash: $0.key, size: $0.value.bytes.count, modified: $0.value.modified) }
        }
    }

    public func remove(_ hashes: [BlockHash], unlessModifiedSince cutoff: Date) async throws -> Set<BlockHash> {
        blocks.withLock { map in
            var removed = Set<BlockHash>()
            for hash in hashes {
                guard let entry = map[hash], entry.modified < cutoff else { continue }
                map[hash] = nil
                removed.insert(hash)
            }
            return removed
        }
    }

    /// Test hook: overwrite a stored block's bytes (to prove reads are verified).
    public func corrupt(_ hash: BlockHash, with bytes: [UInt8]) {
        blocks.withLock { $0[hash]?.bytes = bytes }
    }
}
