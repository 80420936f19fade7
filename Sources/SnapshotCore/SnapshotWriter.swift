import Crypto
public import Foundation
import Synchronization

/// Counters of one writer.
public struct WriterStatistics: Sendable, Equatable {
    /// Non-zero blocks written (each counted once per index).
    public var dataBlocks = 0
    /// Blocks that were new to the block store (the rest were deduplicated).
    public var newBlocks = 0
    /// Bytes of the new blocks.
    public var newBytes = 0
    /// Blocks given as all zeros (not stored).
    public var zeroBlocks = 0
    public init() {}
}

/// Writes one new snapshot: created `pending` by ``SnapshotService/beginSnapshot(_:caller:now:)``,
/// fed the virtual disk block by block, then ``commit(now:)`` makes it `available` with its manifest
/// and checksum in one catalog transaction (with its import claim, when it has one), or
/// ``abort(reason:)`` removes it. No partial snapshot ever becomes available.
///
/// Blocks not written are zeros, so a caller feeds only data extents. Several tasks may call
/// ``writeBlock(index:bytes:)`` concurrently (for different indexes): the class is `Sendable` and
/// its mutable state sits behind a `Mutex`. The lease is renewed automatically when half of it has
/// passed during writes; call ``renewLease(now:)`` during long pauses.
public final class SnapshotWriter: Sendable {
    private struct State {
        var entries: [UInt64: BlockHash] = [:]
        var stored = Set<BlockHash>()
        /// The blocks this writer's puts created (an abort registers them for garbage collection).
        var created = Set<BlockHash>()
        var statistics = WriterStatistics()
        var finished = false
    }

    /// The snapshot's ID.
    public let id: SnapshotID
    /// The pending record as created.
    public let record: SnapshotRecord
    public let blockSize: Int
    public let virtualSize: UInt64
    /// `ceil(virtualSize / blockSize)`.
    public let blockCount: UInt64
    let token: String
    let claim: ImportClaim?
    let lease: TimeInterval
    /// The pending-snapshot aggregate this writer works through (it holds no reference to the service).
    let pending: PendingSnapshots
    // All mutable state is behind this Mutex; the other properties are immutable.
    private let state: Mutex<State>

    init(pending: PendingSnapshots, record: SnapshotRecord, claim: ImportClaim?, lease: TimeInterval) {
        self.pending = pending
        self.record = record
        self.id = record.id
        self.blockSize = record.blockSize
        self.virtualSize = record.virtualSize
        self.blockCount = (record.virtualSize + UInt64(record.blockSize) - 1) / UInt64(record.blockSize)
        self.token = record.writer ?? ""
        self.claim = claim
        self.lease = lease
        self.state = Mutex(State())
    }

    /// The length of block `index`: `blockSize`, except a shorter last block.
    public func blockLength(_ index: UInt64) -> Int {
        let start = index * UInt64(blockSize)
        guard start < virtualSize else { return 0 }
        return Int(min(UInt64(blockSize), virtualSize - start))
    }

    public var statistics: WriterStatistics { state.withLock { $0.statistics } }

    /// The blocks this writer's puts created, ascending.
    var createdBlocks: [BlockHash] { state.withLock { $0.created.sorted() } }

    /// Stores block `index` (hashing it, skipping zeros, deduplicating).
    /// - Parameter bytes: exactly ``blockLength(_:)`` bytes.
    /// - Throws: `.invalidArgument` (index or length), `.invalidState` after commit/abort, `.storage`,
    ///   `.leaseLost` when an automatic renewal finds the snapshot taken away.
    public func writeBlock(index: UInt64, bytes: [UInt8]) async throws {
        try await writeBlock(index: index, bytes: bytes[...])
    }

    /// Stores block `index` from a slice (of a larger extent, without copying it).
    public func writeBlock(index: UInt64, bytes: ArraySlice<UInt8>) async throws {
        guard index < blockCount else {
            throw SnapshotError(.invalidArgument, "block \(index) is past the end of a \(blockCount)-block disk")
        }
        guard bytes.count == blockLength(index) else {
            throw SnapshotError(
                .invalidArgument, "block \(index) must be \(blockLength(index)) bytes, not \(bytes.count)")
        }
        try state.withLock { state in
            guard !state.finished else { throw SnapshotError(.invalidState, "snapshot \(id) is already finished") }
        }
        if Blocks.isZero(bytes) {
            state.withLock { state in
                state.entries[index] = nil
                state.statistics.zeroBlocks += 1
            }
            return
        }
        let hash = Blocks.hash(bytes)
        // Put every block at least once, even a block expected to be deduplicated: that freshens it
        // so a concurrent garbage collection keeps it (see BlockStore).
        let needsPut = state.withLock { !$0.stored.contains(hash) }
        var isNew = false
        if needsPut { isNew = try await pending.blocks.put(hash, bytes) }
        state.withLock { state in
            if state.entries[index] == nil { state.statistics.dataBlocks += 1 }
            state.entries[index] = hash
            state.stored.insert(hash)
            if isNew {
                state.created.insert(hash)
                state.statistics.newBlocks += 1
                state.statistics.newBytes += bytes.count
            }
        }
    }

    /// Writes block-aligned data: `offset` a multiple of the block size, `bytes` whole blocks (the
    /// last one may end at the end of the disk).
    public func write(offset: UInt64, bytes: [UInt8]) async throws {
        guard offset % UInt64(blockSize) == 0 else {
            throw SnapshotError(.invalidArgument, "offset \(offset) is not a multiple of the block size \(blockSize)")
        }
        var index = offset / UInt64(blockSize)
        var at = 0
        while at < bytes.count {
            let length = blockLength(index)
            guard length > 0, at + length <= bytes.count else {
                throw SnapshotError(.invalidArgument, "data at offset \(offset) does not end on a block boundary")
            }
            try await writeBlock(index: index, bytes: bytes[at..<at + length])
            at += length
            index += 1
        }
    }

    /// Extends the lease (and the import claim's). Called by the one task that owns the lease (the
    /// object import's lease task, or ``SnapshotService/whileRenewing(_:_:)``); the writer never renews
    /// by itself and learns of a lost lease at ``commit(now:)``.
    /// - Throws: `.leaseLost`.
    public func renewLease(now: Date = Date()) async throws {
        try await pending.renew(self, lease: lease, now: now)
    }

    /// Makes every block durable, then marks the snapshot available with its manifest and checksum
    /// (and its import claim imported) in one catalog transaction.
    /// - Returns: the available snapshot.
    /// - Throws: `.leaseLost` when the snapshot or claim was taken over; the snapshot is then not available.
    public func commit(now: Date = Date()) async throws -> SnapshotRecord {
        let committed = try await pending.commit([self], extra: { [] }, now: now)
        guard let record = committed.first else { throw SnapshotError(.catalog, "commit returned no snapshot") }
        return record
    }

    /// Removes the pending snapshot; nothing of it is ever visible. Never throws (a failure is left
    /// to recovery when the lease expires).
    public func abort(reason: String) async {
        state.withLock { $0.finished = true }
        await pending.abort(self, reason: reason)
    }

    /// Freezes the writer: the manifest, the LINEAR checksum and the stored bytes.
    ///
    /// The checksum is SHA-256 over the SHA-256 of every block in order, zero blocks included (hashed
    /// at their real length), so it depends only on the disk's bytes, not on how sparse the source was —
    /// like EBS's LINEAR checksum aggregation.
    func finish() throws -> (Manifest, String, UInt64) {
        let entries = try state.withLock { state -> [UInt64: BlockHash] in
            guard !state.finished else { throw SnapshotError(.invalidState, "snapshot \(id) is already finished") }
            state.finished = true
            return state.entries
        }
        let sorted = entries.keys.sorted().map { Manifest.Entry(index: $0, hash: entries[$0]!) }
        let manifest = try Manifest(entries: sorted)
        let stored = entries.keys.reduce(UInt64(0)) { $0 + UInt64(blockLength($1)) }
        return (manifest, Self.checksum(manifest, blockSize: blockSize, virtualSize: virtualSize), stored)
    }

    /// The LINEAR checksum of a manifest (hex).
    public static func checksum(_ manifest: Manifest, blockSize: Int, virtualSize: UInt64) -> String {
        let count = (virtualSize + UInt64(blockSize) - 1) / UInt64(blockSize)
        // The hashes of a zero block (and of a shorter zero tail) are needed only where the manifest has a
        // hole; the default size's is a constant (hashing 1 MiB of zeros per commit was ~8 % of a
        // worker's CPU on small images).
        let tailLength = Int(virtualSize - (count - 1) * UInt64(blockSize))
        var zeroHashes: (full: [UInt8]?, tail: [UInt8]?) = (nil, nil)
        func zeroHash(last: Bool) -> [UInt8] {
            if last && tailLength != blockSize {
                if zeroHashes.tail == nil { zeroHashes.tail = Blocks.hash([UInt8](repeating: 0, count: tailLength)).bytes }
                return zeroHashes.tail!
            }
            if zeroHashes.full == nil { zeroHashes.full = Blocks.zeroHash(blockSize: blockSize) }
            return zeroHashes.full!
        }
        var hasher = SHA256()
        var buffer: [UInt8] = []
        buffer.reserveCapacity(32 * 4096)
        var next = manifest.entries.makeIterator()
        var pending = next.next()
        for index in 0..<count {
            if let entry = pending, entry.index == index {
                buffer.append(contentsOf: entry.hash.bytes)
                pending = next.next()
            } else {
                buffer.append(contentsOf: zeroHash(last: index == count - 1))
            }
            if buffer.count >= 32 * 4096 {
                hasher.update(data: buffer)
                buffer.removeAll(keepingCapacity: true)
            }
        }
        hasher.update(data: buffer)
        return BlockHash(bytes: Array(hasher.finalize()))!.hex
    }
}

extension Blocks {
    /// The SHA-256 of an all-zero block of `blockSize` bytes; the default size's is a constant computed once.
    static func zeroHash(blockSize: Int) -> [UInt8] {
        blockSize == defaultSize ? defaultSizeZeroHash : hash([UInt8](repeating: 0, count: blockSize)).bytes
    }

    private static let defaultSizeZeroHash = hash([UInt8](repeating: 0, count: defaultSize)).bytes
}
