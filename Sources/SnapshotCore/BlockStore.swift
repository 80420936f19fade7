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
    /// The block becomes durable at the next ``sync()``.
    /// - Returns: true when the block was new to the store.
    /// - Throws: `.storage` on I/O failure.
    func put(_ hash: BlockHash, _ bytes: [UInt8]) async throws -> Bool

    /// Reads and verifies a block. - Throws: `.missingBlock`, `.corruptBlock` (hash mismatch), `.storage`.
    func get(_ hash: BlockHash) async throws -> [UInt8]

    /// Whether the block is stored (not verified).
    func contains(_ hash: BlockHash) async throws -> Bool

    /// Makes every block put so far durable (fsync of data and directories). Called before a commit;
    /// implementations may batch the work of many puts here.
    func sync() async throws

    /// Every stored block (for garbage collection and checks).
    func list() async throws -> [StoredBlock]

    /// Removes the block unless it was put or freshened at or after `cutoff` (pass `.distantFuture`
    /// to remove unconditionally). - Returns: true when removed.
    func remove(_ hash: BlockHash, unlessModifiedSince cutoff: Date) async throws -> Bool

    /// Removes leftovers of crashed writers (temporary files) older than `cutoff`.
    /// - Returns: how many were removed.
    func removeStaleTemporaries(olderThan cutoff: Date) async throws -> Int
}

extension BlockStore {
    /// Stores without temporary files have nothing to clean.
    public func removeStaleTemporaries(olderThan cutoff: Date) async throws -> Int { 0 }
}
