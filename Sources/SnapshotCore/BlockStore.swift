import Crypto
public import Foundation

/// A block as listed by a store for garbage collection.
public struct StoredBlock: Hashable, Sendable {
    public var hash: BlockHash
    /// Bytes stored.
    public var size: Int
    /// The last time the block was written or freshened by ``BlockStore/put(_:_:)``.
    public var modified: Date

    public init(hash: BlockHash, size: Int, modified: Date) {
        self.hash = hash
        self.size = size
        self.modified = modified
    }
}

/// Content-addressed storage of blocks named by their SHA-256 (issue 4, "Block store").
///
/// Zero blocks are never stored (the snapshot writer skips them); identical blocks are stored once.
///
/// ## Garbage collection safety (the contract every implementation keeps)
/// A block may be needed by a snapshot that is still being written (pending) and so is named by no
/// manifest yet. Rather than recording every pending block in the catalog (a catalog round trip per
/// block), the collector protects blocks by TIME, like git's object "freshening":
/// 1. ``put(_:_:)`` of a block that already exists refreshes its modification time ("freshens" it);
///    a writer puts every non-zero block it references, even ones it expects to be deduplicated.
/// 2. The collector lists pending snapshots first, then the manifests, and takes
///    `cutoff = min(now, oldest pending snapshot's createdAt) - safetyMargin`.
/// 3. It removes only unreferenced blocks through ``remove(_:unlessModifiedSince:)``, which must be
///    atomic against a concurrent `put`: a put that returned before the removal leaves a time
///    `>= cutoff` and the block is kept; a put that runs after the removal finds the block absent
///    and writes it again. (The filesystem store renames the file aside, re-checks its time, and
///    renames it back when it was freshened in between.)
/// So a block written or reused by a writer that began before the collector looked is never collected.
public protocol BlockStore: Sendable {
    /// Stores `bytes` under `hash` when absent, or freshens the existing block. Idempotent.
    /// The block becomes durable at the next ``sync()``. A slice, so that the writer can hand over a
    /// block cut from a larger extent without copying it.
    /// - Returns: true when the block was new to the store.
    /// - Throws: `.storage` on I/O failure.
    func put(_ hash: BlockHash, _ bytes: ArraySlice<UInt8>) async throws -> Bool

    /// Reads and verifies a block. - Throws: `.missingBlock`, `.corruptBlock` (hash mismatch), `.storage`.
    func get(_ hash: BlockHash) async throws -> [UInt8]

    /// Whether the block is stored (not verified).
    func contains(_ hash: BlockHash) async throws -> Bool

    /// Makes every block put so far durable (fsync of data and directories). Called before a commit;
    /// implementations may batch the work of many puts here.
    func sync() async throws

    /// Every stored block (for garbage collection and checks).
    func list() async throws -> [StoredBlock]

    /// Removes each of `hashes` unless it was put or freshened at or after `cutoff` (pass
    /// `.distantFuture` to remove unconditionally); atomic per block against a concurrent put.
    /// A batch lets a store make many removals durable at once. - Returns: the removed ones.
    func remove(_ hashes: [BlockHash], unlessModifiedSince cutoff: Date) async throws -> Set<BlockHash>

    /// Removes leftovers of crashed writers (temporary files, space written but never indexed) older
    /// than `cutoff`.
    /// - Returns: how many were removed.
    func removeStaleTemporaries(olderThan cutoff: Date) async throws -> Int
}

extension BlockStore {
    /// Stores without temporary files have nothing to clean.
    public func removeStaleTemporaries(olderThan cutoff: Date) async throws -> Int { 0 }

    /// Stores a whole array (see ``put(_:_:)-(_,ArraySlice<UInt8>)``).
    public func put(_ hash: BlockHash, _ bytes: [UInt8]) async throws -> Bool {
        try await put(hash, bytes[...])
    }

    /// Removes one block unless it was put or freshened at or after `cutoff`. - Returns: true when removed.
    public func remove(_ hash: BlockHash, unlessModifiedSince cutoff: Date) async throws -> Bool {
        try await remove([hash], unlessModifiedSince: cutoff).contains(hash)
    }
}

/// Hashing and zero detection shared by the stores and the writer.
public enum Blocks {
    /// The default block size: 1 MiB.
    ///
    /// Why 1 MiB: small enough that sparse images keep their holes (qcow2/VHDX allocate in 64 KiB–2 MiB
    /// units; a 4 KiB write in an otherwise empty region costs one block) and that dedup finds shared
    /// OS files across images; large enough that per-block costs (one file, one rename, one catalog
    /// manifest entry of 40 bytes, one SHA-256 finalisation) vanish next to the data — 700 MB of data is
    /// ~700 files — and that a bounded pipeline of a few dozen blocks in flight stays far under 256 MiB.
    /// EBS uses 512 KiB, Ceph RBD 4 MiB objects; configurable from 4 KiB to 64 MiB (`[store] block_size`).
    public static let defaultSize = 1 << 20

    /// SHA-256 of `bytes`.
    public static func hash(_ bytes: [UInt8]) -> BlockHash { hash(bytes[...]) }

    /// SHA-256 of `bytes`.
    public static func hash(_ bytes: ArraySlice<UInt8>) -> BlockHash {
        // A SHA-256 digest is always 32 bytes, so the initializer cannot fail.
        bytes.withUnsafeBytes { BlockHash(bytes: Array(SHA256.hash(data: $0)))! }
    }

    /// True when every byte is zero (word-at-a-time).
    public static func isZero(_ bytes: [UInt8]) -> Bool { isZero(bytes[...]) }

    /// True when every byte is zero (word-at-a-time).
    public static func isZero(_ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.withUnsafeBytes { raw in
            let words = raw.count / 8
            for i in 0..<words where raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            for i in (words * 8)..<raw.count where raw[i] != 0 { return false }
            return true
        }
    }
}
