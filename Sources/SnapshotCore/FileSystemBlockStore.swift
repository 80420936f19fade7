import Crypto
public import Foundation
import Synchronization

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
    public static func hash(_ bytes: [UInt8]) -> BlockHash {
        // A SHA-256 digest is always 32 bytes, so the initializer cannot fail.
        BlockHash(bytes: Array(SHA256.hash(data: bytes)))!
    }

    /// True when every byte is zero (word-at-a-time).
    public static func isZero(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            let words = raw.count / 8
            for i in 0..<words where raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            for i in (words * 8)..<raw.count where raw[i] != 0 { return false }
            return true
        }
    }
}

/// The default block store: one file per block under `<data>/blocks`, named by its hash.
///
/// Layout: `blocks/<first 2 hex digits>/<64 hex digits>` (256 fan-out directories), temporary files in
/// `blocks/tmp/`, files being collected in `blocks/trash/`. A new block is written to a temporary file
/// and, at ``sync()`` (or when more than `batchLimit` are pending), fsynced, renamed into place and its
/// directory fsynced: a block file that exists under its name is always complete and durable, and the
/// syncs of a whole import are batched. An existing block is freshened (mtime set to now) instead of
/// rewritten. Reads verify the SHA-256. See ``BlockStore`` for the garbage-collection contract.
public final class FileSystemBlockStore: BlockStore {
    private struct Pending {
        var temporaries: [BlockHash: String] = [:]
    }

    public let root: String
    private let batchLimit: Int
    // Mutex makes the pending list safe to share across tasks; everything else is immutable.
    private let pending = Mutex(Pending())
    // Serializes syncs (held only across synchronous system calls, never across a suspension).
    private let syncLock = Mutex(())

    /// Creates the directories when needed.
    /// - Parameters:
    ///   - root: the block directory, e.g. `<data>/blocks`.
    ///   - batchLimit: blocks written before an automatic ``sync()`` (bounds temporary files and fds).
    public init(root: String, batchLimit: Int = 256) throws {
        self.root = root
        self.batchLimit = max(1, batchLimit)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try POSIX.makeDirectory(root + "/tmp")
        try POSIX.makeDirectory(root + "/trash")
        for i in 0..<256 { try POSIX.makeDirectory(root + "/" + Self.fanOut(i)) }
    }

    private static func fanOut(_ i: Int) -> String {
        let s = String(i, radix: 16)
        return s.count == 1 ? "0" + s : s
    }

    func path(_ hash: BlockHash) -> String {
        let hex = hash.hex
        return "\(root)/\(hex.prefix(2))/\(hex)"
    }

    public func put(_ hash: BlockHash, _ bytes: [UInt8]) async throws -> Bool {
        // Freshen rather than rewrite (see the GC contract in BlockStore): a temporary file of this
        // store not yet renamed into place, else the block file itself.
        if let temporary = pending.withLock({ $0.temporaries[hash] }), try POSIX.touch(temporary) { return false }
        if try POSIX.touch(path(hash)) { return false }
        let temporary = "\(root)/tmp/\(hash.hex).\(UInt64.random(in: 0...UInt64.max))"
        let fd = try POSIX.open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        do {
            try POSIX.pwriteAll(fd, bytes, at: 0, path: temporary)
            // The disk writes while the import downloads and hashes the next blocks; the fsync at
            // sync() then mostly waits for I/O already done.
            POSIX.startWriteback(fd)
            POSIX.close(fd)
        } catch {
            POSIX.close(fd)
            _ = try? POSIX.unlink(temporary)
            throw error
        }
        let (duplicate, count) = pending.withLock { state -> (Bool, Int) in
            if state.temporaries[hash] != nil { return (true, state.temporaries.count) }
            state.temporaries[hash] = temporary
            return (false, state.temporaries.count)
        }
        if duplicate {
            _ = try? POSIX.unlink(temporary)
            return false
        }
        if count >= batchLimit { try await sync() }
        return true
    }

    public func sync() async throws {
        // Syncs run one at a time: a sync that finds nothing pending must not return while another
        // sync is still making this caller's blocks durable (a commit relies on it).
        try syncLock.withLock { _ in try syncPending() }
    }

    private func syncPending() throws {
        let batch = pending.withLock { state -> [BlockHash: String] in
            defer { state.temporaries = [:] }
            return state.temporaries
        }
        guard !batch.isEmpty else { return }
        var directories = Set<String>()
        do {
            for (_, temporary) in batch { try POSIX.fsync(path: temporary) }
            for (hash, temporary) in batch {
                try POSIX.rename(temporary, path(hash))
                directories.insert("\(root)/\(hash.hex.prefix(2))")
            }
            for directory in directories { try POSIX.fsync(path: directory, directory: true) }
        } catch {
            // Put back what was not renamed, so a later sync retries it.
            pending.withLock { state in
                for (hash, temporary) in batch where FileManager.default.fileExists(atPath: temporary) {
                    state.temporaries[hash] = temporary
                }
            }
            throw error
        }
    }

    public func get(_ hash: BlockHash) async throws -> [UInt8] {
        let file = pending.withLock { $0.temporaries[hash] } ?? path(hash)
        guard let info = try POSIX.stat(file) else {
            throw SnapshotError(.missingBlock, "block \(hash.hex) is missing from the block store")
        }
        let fd = try POSIX.open(file, O_RDONLY)
        defer { POSIX.close(fd) }
        let bytes = try POSIX.preadFull(fd, count: info.size, at: 0, path: file)
        guard Blocks.hash(bytes) == hash else {
            throw SnapshotError(.corruptBlock, "block \(hash.hex) does not match its SHA-256 (\(info.size) bytes)")
        }
        return bytes
    }

    public func contains(_ hash: BlockHash) async throws -> Bool {
        if pending.withLock({ $0.temporaries[hash] != nil }) { return true }
        return try POSIX.stat(path(hash)) != nil
    }

    public func list() async throws -> [StoredBlock] {
        var result: [StoredBlock] = []
        for i in 0..<256 {
            let directory = "\(root)/\(Self.fanOut(i))"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                guard let hash = BlockHash(hex: name), let info = try POSIX.stat("\(directory)/\(name)") else {
                    continue
                }
                result.append(StoredBlock(hash: hash, size: info.size, modified: info.modified))
            }
        }
        return result
    }

    public func remove(_ hash: BlockHash, unlessModifiedSince cutoff: Date) async throws -> Bool {
        let file = path(hash)
        guard let info = try POSIX.stat(file), info.modified < cutoff else { return false }
        let trash = "\(root)/trash/\(hash.hex).\(UInt64.random(in: 0...UInt64.max))"
        guard try POSIX.rename(file, trash) else { return false }
        // A put that freshened the file before the rename shows in its time: put it back. A put after
        // the rename finds no file and writes a new one (identical bytes, so renaming back over it is fine).
        if let moved = try POSIX.stat(trash), moved.modified >= cutoff {
            try POSIX.rename(trash, file)
            return false
        }
        try POSIX.unlink(trash)
        return true
    }

    public func removeStaleTemporaries(olderThan cutoff: Date) async throws -> Int {
        let active = Set(pending.withLock { Array($0.temporaries.values) })
        var removed = 0
        for sub in ["tmp", "trash"] {
            let directory = "\(root)/\(sub)"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                let file = "\(directory)/\(name)"
                guard !active.contains(file), let info = try POSIX.stat(file), info.modified < cutoff else { continue }
                if try POSIX.unlink(file) { removed += 1 }
            }
        }
        return removed
    }
}

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

    public func put(_ hash: BlockHash, _ bytes: [UInt8]) async throws -> Bool {
        let now = clock()
        return blocks.withLock { map in
            if map[hash] != nil {
                map[hash]?.modified = now
                return false
            }
            map[hash] = Entry(bytes: bytes, modified: now)
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

    public func remove(_ hash: BlockHash, unlessModifiedSince cutoff: Date) async throws -> Bool {
        blocks.withLock { map in
            guard let entry = map[hash], entry.modified < cutoff else { return false }
            map[hash] = nil
            return true
        }
    }

    /// Test hook: overwrite a stored block's bytes (to prove reads are verified).
    public func corrupt(_ hash: BlockHash, with bytes: [UInt8]) {
        blocks.withLock { $0[hash]?.bytes = bytes }
    }
}
