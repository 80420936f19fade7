public import DiskImage
import Dispatch
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
/// Reads go through aligned chunks kept in a small LRU cache; when the reader moves forward
/// chunk by chunk, the next `readAhead` chunks are fetched in the background while it works on
/// the current one. Memory is bounded by `chunkSize × (cachedChunks + readAhead)` whatever the
/// object size; no temporary file is written.
public final class S3ObjectByteSource: ByteSource {
    public let key: String
    public let etag: String
    public let size: UInt64
    private let store: any ObjectStore
    private let chunkSize: UInt64
    private let cachedChunks: Int
    private let readAhead: Int
    private let cancellation: CancellationFlag?

    /// One GET of a chunk, awaited by whoever needs the chunk first.
    private final class Fetch: Sendable {
        // The semaphore is signalled once the result is set; the result sits behind a mutex.
        private let done = DispatchSemaphore(value: 0)
        private let outcome = Mutex<Result<[UInt8], any Error>?>(nil)

        func complete(_ result: Result<[UInt8], any Error>) {
            outcome.withLock { $0 = result }
            done.signal()
        }

        func wait() -> Result<[UInt8], any Error> {
            done.wait()
            done.signal()  // let any other waiter through too
            return outcome.withLock { $0! }
        }
    }

    private struct Cache {
        var chunks: [UInt64: [UInt8]] = [:]
        /// Chunk indexes, least recently used first.
        var order: [UInt64] = []
        var inFlight: [UInt64: Fetch] = [:]
        var lastIndex: UInt64?
        var fetchedBytes: UInt64 = 0
        var requests = 0
    }
    // Mutable state lives behind the mutex and GETs happen outside it; every stored property
    // is immutable or Sendable: the class is safe to share between threads.
    private let cache = Mutex(Cache())

    /// - Parameters:
    ///   - store: the bucket.
    ///   - key: the object's key.
    ///   - etag: the ETag every read is pinned to.
    ///   - size: the object's size from the listing.
    ///   - chunkSize: bytes per ranged GET (default 8 MiB).
    ///   - cachedChunks: chunks kept in memory (default 4).
    ///   - readAhead: chunks fetched ahead of a sequential reader (default 2; 0 disables).
    ///   - cancellation: checked before every request.
    public init(
        store: any ObjectStore, key: String, etag: String, size: UInt64,
        chunkSize: Int = 8 << 20, cachedChunks: Int = 4, readAhead: Int = 2, cancellation: CancellationFlag? = nil
    ) {
        self.store = store
        self.key = key
        self.etag = etag
        self.size = size
        self.chunkSize = UInt64(max(chunkSize, 4096))
        self.readAhead = max(0, readAhead)
        self.cachedChunks = max(cachedChunks, 1 + self.readAhead)
        self.cancellation = cancellation
    }

    /// Bytes downloaded so far.
    public var fetchedBytes: UInt64 { cache.withLock { $0.fetchedBytes } }
    /// GET requests made so far.
    public var requests: Int { cache.withLock { $0.requests } }

    private var chunkCount: UInt64 { (size + chunkSize - 1) / chunkSize }

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

    private enum Lookup {
        case hit([UInt8])
        case wait(Fetch)
        case fetch(Fetch)
    }

    private func chunk(_ index: UInt64) throws -> [UInt8] {
        let (lookup, sequential) = cache.withLock { cache -> (Lookup, Bool) in
            let sequential = cache.lastIndex.map { index == $0 + 1 } ?? false
            cache.lastIndex = index
            return (Self.lookup(index, in: &cache), sequential)
        }
        let bytes: [UInt8]
        switch lookup {
        case .hit(let chunk):
            bytes = chunk
        case .wait(let fetch):
            bytes = try fetch.wait().get()
        case .fetch(let fetch):
            let result = Result { try get(index) }
            finish(index, fetch, result)
            bytes = try result.get()
        }
        if sequential { prefetch(after: index) }
        return bytes
    }

    /// A cached chunk, a GET already under way, or a new GET for the caller to make.
    private static func lookup(_ index: UInt64, in cache: inout Cache) -> Lookup {
        if let chunk = cache.chunks[index] {
            if let at = cache.order.firstIndex(of: index) { cache.order.remove(at: at) }
            cache.order.append(index)
            return .hit(chunk)
        }
        if let fetch = cache.inFlight[index] { return .wait(fetch) }
        let fetch = Fetch()
        cache.inFlight[index] = fetch
        return .fetch(fetch)
    }

    /// Starts background GETs of the chunks after `index` when the reader moves forward.
    private func prefetch(after index: UInt64) {
        guard readAhead > 0, cancellation?.error == nil else { return }
        let starts = cache.withLock { cache -> [(UInt64, Fetch)] in
            var starts: [(UInt64, Fetch)] = []
            var next = index + 1
            while next <= index + UInt64(readAhead), next < chunkCount {
                if cache.chunks[next] == nil && cache.inFlight[next] == nil {
                    let fetch = Fetch()
                    cache.inFlight[next] = fetch
                    starts.append((next, fetch))
                }
                next += 1
            }
            return starts
        }
        for (next, fetch) in starts {
            DispatchQueue.global().async { [self] in
                finish(next, fetch, Result { try get(next) })
            }
        }
    }

    private func finish(_ index: UInt64, _ fetch: Fetch, _ result: Result<[UInt8], any Error>) {
        cache.withLock { cache in
            cache.inFlight[index] = nil
            guard case .success(let bytes) = result else { return }
            cache.fetchedBytes += UInt64(bytes.count)
            cache.requests += 1
            if cache.chunks[index] == nil {
                cache.chunks[index] = bytes
                cache.order.append(index)
            }
            // Evict what the reader has left behind first (least recently used of those), so a
            // chunk fetched ahead is not dropped before the reader reaches it.
            while cache.order.count > cachedChunks {
                let current = cache.lastIndex ?? 0
                let victim = cache.order.firstIndex { $0 < current } ?? 0
                cache.chunks.removeValue(forKey: cache.order.remove(at: victim))
            }
        }
        fetch.complete(result)
    }

    private func get(_ index: UInt64) throws -> [UInt8] {
        try cancellation?.check()
        let lower = index * chunkSize
        let upper = min(size, lower + chunkSize)
        let bytes = try store.getBlocking(key: key, range: lower..<upper, ifMatch: etag)
        guard bytes.count == Int(upper - lower) else {
            // The listed size no longer holds: the object changed under us.
            throw ImporterError(
                .objectChanged, "\(key): ranged GET \(lower)-\(upper - 1) returned \(bytes.count) bytes")
        }
        return bytes
    }
}
