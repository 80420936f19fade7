public import Foundation
public import Logging
public import S3
public import SnapshotCore
import Synchronization

/// A block store under an S3 prefix, shared by importers on many hosts (`[store] blocks = "s3://B/P/"`).
///
/// Layout: `<prefix><hh>/<hash hex>` where `hh` is the first byte of the hash (fan-out keeps listings
/// and any per-prefix rate limits spread). Each object is one block, content-addressed, so a PUT is
/// idempotent and S3's atomic PUT makes it visible whole or not at all.
///
/// ## Durability
/// A PutObject that returned 200 is durable (S3's contract), so ``sync()`` has nothing to flush; it
/// re-checks instead the blocks this process *reused* since the last sync (see below).
///
/// ## Garbage-collection safety (``BlockStore``'s time-based contract)
/// - A new block is written with `If-None-Match: *` where the server honours it (learned once per
///   process with a probe object under the prefix, removed at once), so one request both stores it and
///   proves it was absent; a refused write means the block exists and is freshened instead.
/// - Freshening an existing block is a self-copy with `x-amz-metadata-directive: REPLACE`, which
///   sets a new `Last-Modified` without moving the bytes over the wire.
/// - ``remove(_:unlessModifiedSince:)`` re-reads `Last-Modified` right before its DeleteObject.
///   S3 has no atomic rename or time-conditional delete, so a freshen can still land between that
///   HEAD and the DELETE. That window is closed on the writer's side: ``sync()`` (called before every
///   commit) HEADs every block freshened since the previous sync and throws `MissingBlock` if one
///   vanished, so the commit fails, the import is retried, and no snapshot ever becomes available
///   with a block missing.
public final class S3BlockStore: BlockStore {
    private let client: S3Client
    public let bucket: String
    public let prefix: String
    private let logger: Logger
    /// Blocks freshened (deduplicated) since the last ``sync()``; checked again there.
    private let reused = Mutex(Set<BlockHash>())

    /// Whether new blocks are written with `If-None-Match: *`: nil to ask the server once (the default),
    /// false never to (the freshening copy comes first, as for a server that ignores the header).
    private let conditionalWrites: Bool?

    /// - Parameters:
    ///   - client: the S3 client (its calls leave the cooperative pool by themselves).
    ///   - location: `s3://bucket/prefix/`.
    ///   - conditionalWrites: nil (default) to use `If-None-Match: *` where the server honours it; false
    ///     never to use it.
    public init(client: S3Client, location: String, logger: Logger, conditionalWrites: Bool? = nil) throws {
        guard let (bucket, prefix) = Self.parse(location) else {
            throw SnapshotError(.invalidArgument, "block store location must be s3://bucket/prefix/, not \(location)")
        }
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.logger = logger
        self.conditionalWrites = conditionalWrites == false ? false : nil
    }

    /// Splits `s3://bucket/prefix` into bucket and a prefix that is empty or ends with `/`.
    static func parse(_ location: String) -> (bucket: String, prefix: String)? {
        guard location.hasPrefix("s3://") else { return nil }
        let rest = location.dropFirst(5)
        let bucket = String(rest.prefix { $0 != "/" })
        guard !bucket.isEmpty else { return nil }
        var prefix = String(rest.dropFirst(bucket.count + 1))
        if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }
        return (bucket, prefix)
    }

    func key(_ hash: BlockHash) -> String {
        let hex = hash.hex
        return "\(prefix)\(hex.prefix(2))/\(hex)"
    }

    /// Where the store learns whether the server honours `If-None-Match: *` on a PUT (a probe object of a
    /// few bytes, removed at once; not a block name, so listings and garbage collection pass it by).
    var probePrefix: String { "\(prefix)probe/" }

    /// Stores a block, or freshens it when it is there already.
    ///
    /// Where the server honours `If-None-Match: *` (``S3Client/honoursIfNoneMatchOnPut(bucket:probePrefix:)``,
    /// learned once per process) a new block costs one conditional PUT; a refused PUT (412: the block
    /// exists) goes on to the freshening self-copy. Elsewhere the self-copy comes first and a missing
    /// block (NoSuchKey) is then uploaded. Either way a block counts as *reused* (checked again by
    /// ``sync()``) exactly when this call found it present: a conditional PUT that succeeded proves the
    /// block was absent at that instant, so no collection can have judged an old copy of it.
    public func put(_ hash: BlockHash, _ bytes: ArraySlice<UInt8>) async throws -> Bool {
        let key = key(hash)
        let size = UInt64(bytes.count)
        let existed = try await storage("put block \(hash.hex)") {
            if conditionalWrites != false, await client.honoursIfNoneMatchOnPut(bucket: bucket, probePrefix: probePrefix) {
                do {
                    try await client.putObject(
                        bucket: bucket, key: key, body: Array(bytes), contentType: "application/octet-stream",
                        ifAbsent: true)
                    return false
                } catch let error as S3Error where error.code == .preconditionFailed || error.httpStatus == 412
                    || error.httpStatus == 409
                {
                    // Present (412), or a concurrent conditional write of the same block (409): freshen it.
                }
            }
            do {
                // Freshen: a self-copy replacing the metadata updates Last-Modified in place (one request:
                // the size is known, so no HEAD chooses between a single and a multipart copy).
                try await client.copyObject(
                    sourceBucket: bucket, sourceKey: key, destinationBucket: bucket, destinationKey: key,
                    metadata: ["freshened": String(Int(Date().timeIntervalSince1970))], sourceSize: size)
                return true
            } catch let error as S3Error where error.code == .noSuchKey {
                // Copied into an array only when it is uploaded (a freshened block needs no bytes).
                try await client.putObject(
                    bucket: bucket, key: key, body: Array(bytes), contentType: "application/octet-stream")
                return false
            }
        }
        if existed { reused.withLock { _ = $0.insert(hash) } }
        return !existed
    }

    public func get(_ hash: BlockHash) async throws -> [UInt8] {
        let key = key(hash)
        let bytes: [UInt8]
        do {
            bytes = try await client.getObject(bucket: bucket, key: key)
        } catch let error as S3Error where error.code == .noSuchKey {
            throw SnapshotError(.missingBlock, "block \(hash.hex) is missing from s3://\(bucket)/\(prefix)")
        } catch let error as CancellationError {
            throw error
        } catch {
            throw SnapshotError(.storage, "cannot read block \(hash.hex): \(error)", underlying: error)
        }
        guard Blocks.hash(bytes) == hash else {
            throw SnapshotError(.corruptBlock, "block \(hash.hex) does not match its SHA-256 (\(bytes.count) bytes)")
        }
        return bytes
    }

    public func contains(_ hash: BlockHash) async throws -> Bool {
        try await head(hash) != nil
    }

    public func sync() async throws {
        let check = reused.withLock { set -> Set<BlockHash> in
            defer { set.removeAll() }
            return set
        }
        for hash in check where try await head(hash) == nil {
            throw SnapshotError(
                .missingBlock, "block \(hash.hex) was collected while being reused; the write must be retried")
        }
    }

    public func list() async throws -> [StoredBlock] {
        let objects = try await storage("list blocks") { try await client.listAllObjects(bucket: bucket, prefix: prefix) }
        return objects.compactMap { object in
            guard let hash = BlockHash(hex: String(object.key.split(separator: "/").last ?? "")) else { return nil }
            return StoredBlock(hash: hash, size: Int(object.size), modified: object.lastModified ?? .distantFuture)
        }
    }

    public func remove(_ hashes: [BlockHash], unlessModifiedSince cutoff: Date) async throws -> Set<BlockHash> {
        var removed = Set<BlockHash>()
        for hash in hashes {
            guard let head = try await head(hash), let modified = head.lastModified, modified < cutoff else { continue }
            let key = key(hash)
            try await storage("remove block \(hash.hex)") { try await client.deleteObject(bucket: bucket, key: key) }
            removed.insert(hash)
        }
        return removed
    }

    private func head(_ hash: BlockHash) async throws -> ObjectHead? {
        let key = key(hash)
        return try await storage("check block \(hash.hex)") {
            do {
                return try await client.headObject(bucket: bucket, key: key)
            } catch let error as S3Error where error.code == .noSuchKey || error.httpStatus == 404 {
                return nil
            }
        }
    }

    /// Runs S3 calls, mapping their failures to `SnapshotError.storage` (a cancelled task's
    /// `CancellationError` passes unchanged: it is not a storage failure).
    private func storage<T>(_ what: String, _ work: () async throws -> T) async throws -> T {
        do {
            return try await work()
        } catch let error as SnapshotError {
            throw error
        } catch let error as CancellationError {
            throw error
        } catch {
            throw SnapshotError(.storage, "cannot \(what) in s3://\(bucket)/\(prefix): \(error)", underlying: error)
        }
    }
}
