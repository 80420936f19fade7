import BlockingIO
public import DiskImage
import Foundation
import Synchronization

/// An S3 object read as random-access bytes: ranged GETs pinned with `If-Match` to the ETag
/// seen in the listing, so a replaced object fails the read (`objectChanged`) instead of
/// mixing two versions.
///
/// Reads go through aligned chunks kept in a small LRU cache. When the reader moves forward chunk by
/// chunk, one long GET streams the rest of the object in the background and cuts it into chunks, at
/// most `readAhead` of them ahead of the reader (the stream waits for the reader beyond that, and TCP
/// holds the server back): one request per sequential run instead of one per chunk, and no ranged
/// request that a server must cut from its own larger pieces. Reads elsewhere (metadata, tables, a
/// jump) are ranged GETs of their chunk; a stream the reader has left is abandoned. Without streaming
/// (`streaming: false`), the next `readAhead` chunks are fetched as parallel ranged GETs instead.
/// Memory is bounded by `chunkSize × (cachedChunks + readAhead)` whatever the object size; no
/// temporary file is written.
///
/// Threads: reads are blocking calls made by a disk reader on the ``BlockingExecutor``; read-ahead GETs
/// are submitted to the same executor. A reader never waits for a GET that has not started: it takes
/// a queued one over and makes it itself, so the bounded pool cannot deadlock on its own readers.
/// ``cancel()`` (the import's task was cancelled) makes every later request fail at once.
public final class S3ObjectByteSource: ByteSource {
    public let key: String
    public let etag: String
    public let size: UInt64
    private let store: any ObjectStore
    private let chunkSize: UInt64
    private let cachedChunks: Int
    private let readAhead: Int
    private let streaming: Bool
    private let cancelled = Atomic<Bool>(false)
    /// Where the bytes fetched are counted for the import's progress, if anywhere.
    private let progress: ImportProgress?

    /// One GET of a chunk: queued on the executor, taken over by a reader that needs it first, or
    /// running; whoever needs its bytes waits for the outcome.
    private final class Fetch: Sendable {
        private enum State {
            case queued
            case running
            case done(Result<[UInt8], any Error>)
        }

        /// A fetch the stream fills: readers wait for it and never take it over.
        static func running() -> Fetch {
            let fetch = Fetch()
            _ = fetch.claim()
            return fetch
        }
        // A blocking wait for the outcome is made only on a pool thread, by a reader waiting for a GET
        // under way.
        private let state = BlockingMonitor(State.queued)

        /// Takes the GET over when nobody started it yet. - Returns: whether the caller must make it.
        func claim() -> Bool {
            state.withLock { state in
                guard case .queued = state else { return false }
                state = .running
                return true
            }
        }

        func complete(_ result: Result<[UInt8], any Error>) {
            state.withLock { $0 = .done(result) }
        }

        func wait() -> Result<[UInt8], any Error> {
            state.wait(
                until: { if case .done = $0 { true } else { false } },
                then: { state in
                    guard case .done(let result) = state else { preconditionFailure("woken before done") }
                    return result
                })
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
        /// Whether a stream is submitted or runs (one at a time).
        var streaming = false
        /// The chunk the running stream fills (or, between two chunks, has just filled; nil: no stream runs
        /// yet or any more). Set where the stream takes a chunk on, in ``reserve(_:)``.
        var streamNext: UInt64?
        /// Chunks readers wait for that the running stream has not reached yet: it fills them, or makes
        /// their GETs when it stops early.
        var streamReserved: [UInt64: Fetch] = [:]
        var streams = 0
        /// Evicted chunks kept for the stream to fill again: memory already faulted in, instead of fresh
        /// pages for every chunk (a buffer a reader still holds is copied on write, never overwritten).
        var spare: [[UInt8]] = []
        /// The object's user metadata, from the first GET whose answer carried it.
        var metadata: [String: String]?
    }
    // Mutable state lives behind the monitor (on which a stream waits for the reader) and GETs happen
    // outside it; every stored property is immutable or Sendable: the class is safe to share between threads.
    private let cache = BlockingMonitor(Cache())
    /// How long a stream waits for a reader that has stopped consuming before it gives up (and its
    /// thread and connection with it); the reader then goes on with ranged GETs.
    private let streamPatience: Duration

    /// - Parameters:
    ///   - store: the bucket.
    ///   - key: the object's key.
    ///   - etag: the ETag every read is pinned to.
    ///   - size: the object's size from the listing.
    ///   - chunkSize: bytes per ranged GET (default 8 MiB).
    ///   - cachedChunks: chunks kept in memory (default 4).
    ///   - readAhead: chunks fetched ahead of a sequential reader (default 2; 0 disables).
    ///   - streaming: fetch ahead of a sequential reader with one streaming GET (default) rather than
    ///     `readAhead` ranged GETs per step.
    ///   - progress: counts the bytes fetched (its total is set to `size`).
    public init(
        store: any ObjectStore, key: String, etag: String, size: UInt64,
        chunkSize: Int = 8 << 20, cachedChunks: Int = 4, readAhead: Int = 2, streaming: Bool = true,
        streamPatience: Duration = .seconds(5), progress: ImportProgress? = nil
    ) {
        self.streaming = streaming
        self.streamPatience = streamPatience
        self.progress = progress
        progress?.setTotal(size)
        self.store = store
        self.key = key
        self.etag = etag
        self.size = size
        self.chunkSize = UInt64(max(chunkSize, 4096))
        self.readAhead = max(0, readAhead)
        self.cachedChunks = max(cachedChunks, 1 + self.readAhead)
    }

    /// Makes every later request fail with `Cancelled` (the import was cancelled or has ended: shutdown,
    /// a lost lease, or the reader is done); GETs already under way finish, a stream stops at once.
    public func cancel() {
        cancelled.store(true, ordering: .relaxed)
        cache.withLock { _ in }  // wakes a stream waiting for the reader
    }

    /// Bytes downloaded so far.
    public var fetchedBytes: UInt64 { cache.withLock { $0.fetchedBytes } }
    /// Chunks received so far (by ranged GETs or cut from a stream).
    public var requests: Int { cache.withLock { $0.requests } }
    /// Streaming GETs started so far.
    public var streams: Int { cache.withLock { $0.streams } }
    /// Whether a streaming GET is under way.
    public var isStreaming: Bool { cache.withLock { $0.streaming } }
    /// The object's user metadata (`x-amz-meta-*`, names lowercased without the prefix) as the first
    /// answered GET carried it: every GET is pinned to ``etag``, so it is the metadata of that version.
    /// Nil before a GET answered, or when the store cannot return metadata with a GET.
    public var userMetadata: [String: String]? { cache.withLock { $0.metadata } }

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
        let (found, sequential) = cache.withLock { cache -> (Lookup, Bool) in
            let sequential = cache.lastIndex.map { index == $0 + 1 } ?? false
            cache.lastIndex = index
            return (self.lookup(index, in: &cache), sequential)
        }
        let bytes: [UInt8]
        switch found {
        case .hit(let chunk):
            bytes = chunk
        case .fetch(let fetch):
            _ = fetch.claim()
            bytes = try make(index, fetch)
        case .wait(let fetch):
            // A read-ahead still queued is made here rather than waited for.
            bytes = fetch.claim() ? try make(index, fetch) : try fetch.wait().get()
        }
        if sequential { prefetch(after: index) }
        return bytes
    }

    /// Makes the GET of a fetch this thread claimed, and publishes its outcome.
    private func make(_ index: UInt64, _ fetch: Fetch) throws -> [UInt8] {
        let result = Result { try get(index) }
        finish(index, fetch, result)
        return try result.get()
    }

    /// A cached chunk, a GET already under way, or a new GET for the caller to make.
    private func lookup(_ index: UInt64, in cache: inout Cache) -> Lookup {
        if let chunk = cache.chunks[index] {
            if let at = cache.order.firstIndex(of: index) { cache.order.remove(at: at) }
            cache.order.append(index)
            return .hit(chunk)
        }
        if let fetch = cache.inFlight[index] { return .wait(fetch) }
        if let next = cache.streamNext, index >= next, index - next <= UInt64(readAhead) {
            // The running stream is about to deliver it: wait for the stream rather than race it.
            let fetch = Fetch.running()
            cache.inFlight[index] = fetch
            cache.streamReserved[index] = fetch
            return .wait(fetch)
        }
        let fetch = Fetch()
        cache.inFlight[index] = fetch
        return .fetch(fetch)
    }

    /// Fetches ahead when the reader moves forward: starts a stream (if none runs), or ranged GETs of
    /// the chunks after `index` without streaming.
    private func prefetch(after index: UInt64) {
        guard readAhead > 0, !cancelled.load(ordering: .relaxed) else { return }
        if streaming {
            let first = index + 1
            let start = cache.withLock { cache -> Bool in
                guard !cache.streaming, first < chunkCount, cache.chunks[first] == nil, cache.inFlight[first] == nil
                else { return false }
                cache.streaming = true
                cache.streams += 1
                return true
            }
            if start { BlockingExecutor.shared.submit { [self] in stream(from: first) } }
            return
        }
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
            BlockingExecutor.shared.submit { [self] in
                guard fetch.claim() else { return }  // a reader took it over
                finish(next, fetch, Result { try get(next) })
            }
        }
    }

    private func finish(_ index: UInt64, _ fetch: Fetch, _ result: Result<[UInt8], any Error>) {
        cache.withLock { cache in
            cache.inFlight[index] = nil
            guard case .success(let bytes) = result else { return }
            cache.fetchedBytes += UInt64(bytes.count)
            progress?.add(UInt64(bytes.count))
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
                if let evicted = cache.chunks.removeValue(forKey: cache.order.remove(at: victim)), streaming,
                    cache.spare.count < 2
                {
                    cache.spare.append(evicted)
                }
            }
        }
        fetch.complete(result)
    }

    /// Why a stream stops early (never seen by a reader).
    private struct StreamAbandoned: Error {}

    /// Streams the object from chunk `first` (or the first chunk after it that nobody fetched meanwhile)
    /// to its end, publishing each chunk as it is complete. Before it fills a chunk it waits until that
    /// chunk is at most `readAhead` ahead of the reader, and it stops when the reader went past it or
    /// fetched that chunk itself, when the source is cancelled, or after `streamPatience` without progress
    /// of the reader. Runs on a pool thread; chunks readers wait for are never left unfinished.
    private func stream(from first: UInt64) {
        let start = cache.withLock { cache -> UInt64? in
            var start = first
            while start < chunkCount, cache.chunks[start] != nil || cache.inFlight[start] != nil {
                guard start < first + UInt64(readAhead) else { return nil }  // the reader is ahead of it already
                start += 1
            }
            guard start < chunkCount, !cancelled.load(ordering: .relaxed) else { return nil }
            cache.streamNext = start
            return start
        }
        var index = start ?? first
        var fetch: Fetch?
        var buffer: [UInt8] = []
        defer {
            let reserved = cache.withLock { cache -> [(UInt64, Fetch)] in
                cache.streaming = false
                cache.streamNext = nil
                cache.spare = []
                defer { cache.streamReserved = [:] }
                return cache.streamReserved.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            }
            // A chunk readers may already wait for is not left unfinished: fetched with its own GET.
            if let fetch { _ = try? make(index, fetch) }
            for (index, fetch) in reserved { _ = try? make(index, fetch) }
        }
        guard let start else { return }
        do {
            try store.streamBlocking(key: key, range: start * chunkSize..<size, ifMatch: etag) { piece in
                var piece = piece
                while !piece.isEmpty {
                    if fetch == nil {
                        fetch = try reserve(index)
                        buffer = cache.withLock { $0.spare.popLast() } ?? []
                        buffer.removeAll(keepingCapacity: true)
                        buffer.reserveCapacity(chunkLength(index))
                    }
                    let take = min(chunkLength(index) - buffer.count, piece.count)
                    buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: piece[..<take]))
                    piece = UnsafeRawBufferPointer(rebasing: piece[take...])
                    if buffer.count == chunkLength(index), let done = fetch {
                        finish(index, done, .success(buffer))
                        (fetch, buffer, index) = (nil, [], index + 1)
                    }
                }
            }
        } catch is StreamAbandoned {
        } catch {
            if let failed = fetch {
                finish(index, failed, .failure(error))
                fetch = nil
            }
        }
    }

    /// The fetch the stream fills for chunk `index`: one a reader reserved, or a new one once the chunk
    /// is at most `readAhead` ahead of the reader.
    /// - Throws: `StreamAbandoned` when the stream is no longer of use.
    private func reserve(_ index: UInt64) throws -> Fetch {
        let readAhead = UInt64(readAhead)
        let deadline = Date().addingTimeInterval(streamPatience.seconds)
        let fetch = cache.wait(
            until: { cache in
                self.cancelled.load(ordering: .relaxed) || cache.chunks[index] != nil || cache.inFlight[index] != nil
                    || (cache.lastIndex ?? 0) + readAhead >= index
            }, deadline: deadline,
            then: { cache -> Fetch? in
                guard !cancelled.load(ordering: .relaxed) else { return nil }
                if let reserved = cache.streamReserved.removeValue(forKey: index) {
                    cache.streamNext = index
                    return reserved
                }
                guard cache.chunks[index] == nil, cache.inFlight[index] == nil, (cache.lastIndex ?? 0) <= index
                else { return nil }
                let fetch = Fetch.running()
                cache.inFlight[index] = fetch
                cache.streamNext = index
                return fetch
            })
        guard let fetch = fetch ?? nil else { throw StreamAbandoned() }
        return fetch
    }

    private func chunkLength(_ index: UInt64) -> Int {
        Int(min(size, (index + 1) * chunkSize) - index * chunkSize)
    }

    private func get(_ index: UInt64) throws -> [UInt8] {
        guard !cancelled.load(ordering: .relaxed) else {
            throw ImporterError(.cancelled, "the read of \(key) was cancelled")
        }
        let lower = index * chunkSize
        let upper = min(size, lower + chunkSize)
        let (bytes, metadata) = try store.getBlockingWithMetadata(key: key, range: lower..<upper, ifMatch: etag)
        if let metadata { cache.withLock { $0.metadata = $0.metadata ?? metadata } }
        guard bytes.count == Int(upper - lower) else {
            // The listed size no longer holds: the object changed under us.
            throw ImporterError(
                .objectChanged, "\(key): ranged GET \(lower)-\(upper - 1) returned \(bytes.count) bytes")
        }
        return bytes
    }
}
