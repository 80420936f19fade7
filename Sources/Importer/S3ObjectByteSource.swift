public import DiskImage
import Synchronization

/// A flag set from outside an import (shutdown, lost lease) and checked by its blocking work.
public final class CancellationFlag: Sendable {
    // The reason lives behind a mutex: the class is safe to share between threads.
    private let reason = Mutex<ImporterError?>(nil)

    public init() {}

    /// Marks the work cancelled; the first reason wins.
    public func cancel(_ error: ImporterError) {
        reason.withLock { if $0 == nil { $0 = error } }
    }

    /// The reason, when cancelled.
    public var error: ImporterError? { reason.withLock { $0 } }

    /// Throws the reason when cancelled.
    public func check() throws {
        if let error { throw error }
    }
}

/// An S3 object read as random-access bytes: ranged GETs pinned with `If-Match` to the ETag
/// seen in the listing, so a replaced object fails the read (`objectChanged`) instead of
/// mixing two versions.
///
/// Reads go through aligned chunks kept in a small LRU cache: memory is bounded by
/// `chunkSize × cachedChunks` whatever the object size; no temporary file is written.
public final class S3ObjectByteSource: ByteSource {
    public let key: String
    public let etag: String
    public let size: UInt64
    private let store: any ObjectStore
    private let chunkSize: UInt64
    private let cachedChunks: Int
    private let cancellation: CancellationFlag?

    private struct Cache {
        var chunks: [UInt64: [UInt8]] = [:]
        /// Chunk indexes, least recently used first.
        var order: [UInt64] = []
        var fetchedBytes: UInt64 = 0
        var requests = 0
    }
    // Mutable state lives behind the mutex and fetches happen outside it; every stored property
    // is immutable or Sendable: the class is safe to share between threads.
    private let cache = Mutex(Cache())

    /// - Parameters:
    ///   - store: the bucket.
    ///   - key: the object's key.
    ///   - etag: the ETag every read is pinned to.
    ///   - size: the object's size from the listing.
    ///   - chunkSize: bytes per ranged GET (default 8 MiB).
    ///   - cachedChunks: chunks kept in memory (default 4).
    ///   - cancellation: checked before every request.
    public init(
        store: any ObjectStore, key: String, etag: String, size: UInt64,
        chunkSize: Int = 8 << 20, cachedChunks: Int = 4, cancellation: CancellationFlag? = nil
    ) {
        self.store = store
        self.key = key
        self.etag = etag
        self.size = size
        self.chunkSize = UInt64(max(chunkSize, 4096))
        self.cachedChunks = max(cachedChunks, 1)
        self.cancellation = cancellation
    }

    /// Bytes downloaded so far.
    public var fetchedBytes: UInt64 { cache.withLock { $0.fetchedBytes } }
    /// GET requests made so far.
    public var requests: Int { cache.withLock { $0.requests } }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard offset < size, count > 0 else { return [] }
        let end = min(size, offset + UInt64(count))
        var result: [UInt8] = []
        result.reserveCapacity(Int(end - offset))
        var position = offset
        while position < end {
            let index = position / chunkSize
            let chunk = try chunk(index)
            let start = Int(position - index * chunkSize)
            let stop = Int(min(end - index * chunkSize, UInt64(chunk.count)))
            guard start < stop else { break }
            result.append(contentsOf: chunk[start..<stop])
            position += UInt64(stop - start)
        }
        return result
    }

    private func chunk(_ index: UInt64) throws -> [UInt8] {
        if let hit = cache.withLock({ cache -> [UInt8]? in
            guard let chunk = cache.chunks[index] else { return nil }
            if let at = cache.order.firstIndex(of: index) { cache.order.remove(at: at) }
            cache.order.append(index)
            return chunk
        }) {
            return hit
        }
        try cancellation?.check()
        let lower = index * chunkSize
        let upper = min(size, lower + chunkSize)
        let bytes = try store.get(key: key, range: lower..<upper, ifMatch: etag)
        guard bytes.count == Int(upper - lower) else {
            // The listed size no longer holds: the object changed under us.
            throw ImporterError(
                .objectChanged, "\(key): ranged GET \(lower)-\(upper - 1) returned \(bytes.count) bytes")
        }
        cache.withLock { cache in
            cache.fetchedBytes += UInt64(bytes.count)
            cache.requests += 1
            if cache.chunks[index] == nil {
                cache.chunks[index] = bytes
                cache.order.append(index)
            }
            while cache.order.count > cachedChunks {
                cache.chunks.removeValue(forKey: cache.order.removeFirst())
            }
        }
        return bytes
    }
}
