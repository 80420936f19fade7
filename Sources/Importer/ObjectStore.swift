import Synchronization

/// One object of a listing.
public struct ObjectSummary: Sendable, Equatable {
    public var key: String
    /// The entity tag as the server sent it, without quotes.
    public var etag: String
    public var size: UInt64

    public init(key: String, etag: String, size: UInt64) {
        self.key = key
        self.etag = etag
        self.size = size
    }
}

/// What a HEAD returns that the importer uses.
public struct ObjectMetadata: Sendable, Equatable {
    public var etag: String
    public var size: UInt64
    /// User metadata (`x-amz-meta-*`), names lowercased without the prefix.
    public var metadata: [String: String]

    public init(etag: String, size: UInt64, metadata: [String: String] = [:]) {
        self.etag = etag
        self.size = size
        self.metadata = metadata
    }
}

/// The bucket operations the importer needs: the I/O seam between the importer and S3.
///
/// Calls are `async` (conformers leave the cooperative pool for blocking I/O themselves) and safe to
/// make from several tasks at once; ``getBlocking(key:range:ifMatch:)`` is the one blocking call, for
/// the synchronous byte source. Failures are thrown as `ImporterError` with these codes so the importer
/// can tell rejections from transient trouble: `objectChanged` (If-Match / copy-source-if-match
/// failed: 412), `notFound` (404), `accessDenied` (403), `storageUnavailable` (network, 5xx,
/// throttling: retry later). A cancelled task may end a call with `CancellationError`.
public protocol ObjectStore: Sendable {
    /// Every object under `prefix`, all pages, in key order.
    func list(prefix: String) async throws -> [ObjectSummary]
    func head(key: String) async throws -> ObjectMetadata
    /// The bytes of `range` (the whole object when nil), only if the ETag still is `ifMatch`.
    func get(key: String, range: Range<UInt64>?, ifMatch: String?) async throws -> [UInt8]
    /// The bytes of `range`, only if the ETag still is `ifMatch`, blocking the calling thread.
    ///
    /// Only for code already running on a `BlockingExecutor` pool thread that cannot await: the
    /// synchronous `S3ObjectByteSource` read by a synchronous disk-image parser.
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await get elsewhere")
    func getBlocking(key: String, range: Range<UInt64>, ifMatch: String?) throws -> [UInt8]
    /// The bytes of `range` streamed to `sink` in order by one long GET, only if the ETag still is
    /// `ifMatch`, blocking the calling thread (same rules as ``getBlocking(key:range:ifMatch:)``). An
    /// error `sink` throws ends the transfer and is rethrown as it is.
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread")
    func streamBlocking(
        key: String, range: Range<UInt64>, ifMatch: String?, into sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws
    func put(key: String, body: [UInt8], contentType: String) async throws
    /// Server-side copy, only if the source's ETag still is `ifMatch`.
    func copy(from sourceKey: String, to destinationKey: String, ifMatch: String?) async throws
    func delete(key: String) async throws

    /// ``getBlocking(key:range:ifMatch:)`` that also returns the object's user metadata (`x-amz-meta-*`,
    /// names lowercased without the prefix) when the same answer carries it, so the importer needs no
    /// HEAD besides its GETs; nil when the store cannot tell (the importer then asks ``head(key:)``).
    /// The default makes the plain GET and returns nil.
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await get elsewhere")
    func getBlockingWithMetadata(key: String, range: Range<UInt64>, ifMatch: String?) throws
        -> (bytes: [UInt8], metadata: [String: String]?)
    /// ``copy(from:to:ifMatch:)`` of a source whose size the caller knows (the listing's, pinned by
    /// `ifMatch`), which may spare the store a request. The default ignores the size.
    func copy(from sourceKey: String, to destinationKey: String, ifMatch: String?, sourceSize: UInt64) async throws
    /// Deletes `key` only while its ETag is `etag`, in one atomic request, where the store can.
    /// - Returns: true when the store made the conditional delete (the object is gone); false when it
    ///   cannot delete conditionally and sent nothing (the caller checks the ETag itself first). The
    ///   default returns false.
    /// - Throws: `objectChanged` when the object has another ETag or is gone (nothing deleted).
    func delete(key: String, ifMatch etag: String) async throws -> Bool
}

extension ObjectStore {
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await get elsewhere")
    public func getBlockingWithMetadata(key: String, range: Range<UInt64>, ifMatch: String?) throws
        -> (bytes: [UInt8], metadata: [String: String]?)
    {
        (try getBlocking(key: key, range: range, ifMatch: ifMatch), nil)
    }

    public func copy(from sourceKey: String, to destinationKey: String, ifMatch: String?, sourceSize: UInt64)
        async throws
    {
        try await copy(from: sourceKey, to: destinationKey, ifMatch: ifMatch)
    }

    public func delete(key: String, ifMatch etag: String) async throws -> Bool { false }
}

extension ObjectStore {
    /// One ``getBlocking(key:range:ifMatch:)`` handed to `sink` whole: for stores without a streaming GET.
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread")
    public func streamBlocking(
        key: String, range: Range<UInt64>, ifMatch: String?, into sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let bytes = try getBlocking(key: key, range: range, ifMatch: ifMatch)
        try bytes.withUnsafeBytes { try sink($0) }
    }
}

/// An in-memory bucket for tests; ETags are a counter so a rewrite always changes them.
public final class MemoryObjectStore: ObjectStore {
    private struct Object {
        var body: [UInt8]
        var etag: String
        var metadata: [String: String]
    }
    private struct State {
        var objects: [String: Object] = [:]
        var counter = 0
        var failures: [String: ImporterError] = [:]
        var operations: [String] = []
    }
    // All state lives behind the mutex: the class is safe to share between threads.
    private let state = Mutex(State())

    public init() {}

    /// Stores an object (a new ETag every time) and returns its ETag.
    @discardableResult
    public func store(_ key: String, _ body: [UInt8], metadata: [String: String] = [:]) -> String {
        state.withLock { state in
            state.counter += 1
            let etag = "etag-\(state.counter)"
            state.objects[key] = Object(body: body, etag: etag, metadata: metadata)
            return etag
        }
    }

    /// Makes every operation whose description starts with `operation` (e.g. `"get incoming/x"`)
    /// fail with `error` until cleared with nil.
    public func failing(_ operation: String, with error: ImporterError?) {
        state.withLock { $0.failures[operation] = error }
    }

    /// Keys currently stored, sorted.
    public var keys: [String] { state.withLock { $0.objects.keys.sorted() } }

    /// The body of a key, if present.
    public func body(_ key: String) -> [UInt8]? { state.withLock { $0.objects[key]?.body } }

    /// Operations performed so far (`"list incoming/"`, `"get k"`, `"put k"`, …).
    public var operations: [String] { state.withLock { $0.operations } }

    private func record(_ operation: String) throws {
        try state.withLock { state in
            state.operations.append(operation)
            for (prefix, error) in state.failures where operation.hasPrefix(prefix) { throw error }
        }
    }

    public func list(prefix: String) async throws -> [ObjectSummary] {
        try record("list \(prefix)")
        return state.withLock { state in
            state.objects.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }
                .map { ObjectSummary(key: $0.key, etag: $0.value.etag, size: UInt64($0.value.body.count)) }
        }
    }

    public func head(key: String) async throws -> ObjectMetadata {
        try record("head \(key)")
        return try state.withLock { state in
            guard let object = state.objects[key] else { throw ImporterError(.notFound, "no object \(key)") }
            return ObjectMetadata(etag: object.etag, size: UInt64(object.body.count), metadata: object.metadata)
        }
    }

    public func get(key: String, range: Range<UInt64>?, ifMatch: String?) async throws -> [UInt8] {
        try read(key: key, range: range, ifMatch: ifMatch)
    }

    /// Recorded as `"get k"` like ``get(key:range:ifMatch:)`` (it is the same operation, only blocking).
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await get elsewhere")
    public func getBlocking(key: String, range: Range<UInt64>, ifMatch: String?) throws -> [UInt8] {
        try read(key: key, range: range, ifMatch: ifMatch)
    }

    /// Recorded as `"get k"` (one GET that also answers the metadata).
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await get elsewhere")
    public func getBlockingWithMetadata(key: String, range: Range<UInt64>, ifMatch: String?) throws
        -> (bytes: [UInt8], metadata: [String: String]?)
    {
        let (bytes, metadata) = try readWithMetadata(key: key, range: range, ifMatch: ifMatch)
        return (bytes, metadata)
    }

    private func read(key: String, range: Range<UInt64>?, ifMatch: String?) throws -> [UInt8] {
        try readWithMetadata(key: key, range: range, ifMatch: ifMatch).bytes
    }

    private func readWithMetadata(key: String, range: Range<UInt64>?, ifMatch: String?) throws
        -> (bytes: [UInt8], metadata: [String: String])
    {
        try record("get \(key)")
        return try state.withLock { state in
            guard let object = state.objects[key] else { throw ImporterError(.notFound, "no object \(key)") }
            if let ifMatch, ifMatch != object.etag {
                throw ImporterError(.objectChanged, "\(key): ETag is \(object.etag), not \(ifMatch)")
            }
            guard let range else { return (object.body, object.metadata) }
            let lower = Int(min(range.lowerBound, UInt64(object.body.count)))
            let upper = Int(min(range.upperBound, UInt64(object.body.count)))
            return (Array(object.body[lower..<upper]), object.metadata)
        }
    }

    public func put(key: String, body: [UInt8], contentType: String) async throws {
        try record("put \(key)")
        store(key, body)
    }

    public func copy(from sourceKey: String, to destinationKey: String, ifMatch: String?) async throws {
        try record("copy \(sourceKey)")
        try state.withLock { state in
            guard let object = state.objects[sourceKey] else {
                throw ImporterError(.notFound, "no object \(sourceKey)")
            }
            if let ifMatch, ifMatch != object.etag {
                throw ImporterError(.objectChanged, "\(sourceKey): ETag is \(object.etag), not \(ifMatch)")
            }
            state.counter += 1
            state.objects[destinationKey] = Object(
                body: object.body, etag: "etag-\(state.counter)", metadata: object.metadata)
        }
    }

    public func delete(key: String) async throws {
        try record("delete \(key)")
        _ = state.withLock { $0.objects.removeValue(forKey: key) }
    }

    /// Recorded as `"delete k"`; atomic under the store's lock.
    public func delete(key: String, ifMatch etag: String) async throws -> Bool {
        try record("delete \(key)")
        try state.withLock { state in
            guard let object = state.objects[key], object.etag == etag else {
                throw ImporterError(.objectChanged, "\(key): not deleted, its ETag is no longer \(etag)")
            }
            state.objects.removeValue(forKey: key)
        }
        return true
    }
}
