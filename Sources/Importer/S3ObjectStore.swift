public import S3

/// ``ObjectStore`` over the S3 module's client, for one bucket.
///
/// S3 failures become ``ImporterError``s the importer can act on: 412 → `objectChanged`,
/// 404 → `notFound`, 403 and signature problems → `accessDenied`, network/5xx/throttling (after the
/// client's own retries) → `storageUnavailable`. Messages carry the S3 error code and request id,
/// never credentials.
public struct S3ObjectStore: ObjectStore {
    public let client: S3Client
    public let bucket: String

    public init(client: S3Client, bucket: String) {
        self.client = client
        self.bucket = bucket
    }

    public func list(prefix: String) async throws -> [ObjectSummary] {
        try await mapped("list s3://\(bucket)/\(prefix)") {
            try await client.listAllObjects(bucket: bucket, prefix: prefix).map {
                ObjectSummary(key: $0.key, etag: $0.etag, size: $0.size)
            }
        }
    }

    public func head(key: String) async throws -> ObjectMetadata {
        try await mapped("head \(key)") {
            let head = try await client.headObject(bucket: bucket, key: key)
            return ObjectMetadata(etag: head.etag, size: head.size, metadata: head.metadata)
        }
    }

    public func get(key: String, range: Range<UInt64>?, ifMatch: String?) async throws -> [UInt8] {
        try await mapped("get \(key)") {
            if let range {
                guard !range.isEmpty else { return [] }
                return try await client.getObject(
                    bucket: bucket, key: key, range: range.lowerBound...(range.upperBound - 1), ifMatch: ifMatch)
            }
            return try await client.getObject(bucket: bucket, key: key, ifMatch: ifMatch)
        }
    }

    /// The client's one blocking call (``S3Client/getObjectBlocking(bucket:key:range:ifMatch:)``), mapped
    /// like ``get(key:range:ifMatch:)``.
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await get elsewhere")
    public func getBlocking(key: String, range: Range<UInt64>, ifMatch: String?) throws -> [UInt8] {
        guard !range.isEmpty else { return [] }
        do {
            return try client.getObjectBlocking(
                bucket: bucket, key: key, range: range.lowerBound...(range.upperBound - 1), ifMatch: ifMatch)
        } catch let error as S3Error {
            throw Self.classify(error, what: "get \(key)")
        }
    }

    /// ``S3Client/getObjectBlocking(bucket:key:range:ifMatch:into:)``, mapped like ``getBlocking(key:range:ifMatch:)``;
    /// what `sink` throws passes unchanged.
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread")
    public func streamBlocking(
        key: String, range: Range<UInt64>, ifMatch: String?, into sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        guard !range.isEmpty else { return }
        do {
            try client.getObjectBlocking(
                bucket: bucket, key: key, range: range.lowerBound...(range.upperBound - 1), ifMatch: ifMatch,
                into: sink)
        } catch let error as S3Error {
            throw Self.classify(error, what: "get \(key)")
        }
    }

    /// One ranged GET; its answer's head carries the user metadata.
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await get elsewhere")
    public func getBlockingWithMetadata(key: String, range: Range<UInt64>, ifMatch: String?) throws
        -> (bytes: [UInt8], metadata: [String: String]?)
    {
        guard !range.isEmpty else { return ([], nil) }
        do {
            let (bytes, head) = try client.getObjectBlockingWithHead(
                bucket: bucket, key: key, range: range.lowerBound...(range.upperBound - 1), ifMatch: ifMatch)
            return (bytes, head?.metadata)
        } catch let error as S3Error {
            throw Self.classify(error, what: "get \(key)")
        }
    }

    public func put(key: String, body: [UInt8], contentType: String) async throws {
        try await mapped("put \(key)") {
            _ = try await client.putObject(bucket: bucket, key: key, body: body, contentType: contentType)
        }
    }

    public func copy(from sourceKey: String, to destinationKey: String, ifMatch: String?) async throws {
        try await mapped("copy \(sourceKey) to \(destinationKey)") {
            _ = try await client.copyObject(
                sourceBucket: bucket, sourceKey: sourceKey, destinationBucket: bucket, destinationKey: destinationKey,
                ifMatch: ifMatch)
        }
    }

    /// One CopyObject, without the HEAD that would otherwise choose between a single and a multipart copy.
    public func copy(from sourceKey: String, to destinationKey: String, ifMatch: String?, sourceSize: UInt64)
        async throws
    {
        try await mapped("copy \(sourceKey) to \(destinationKey)") {
            _ = try await client.copyObject(
                sourceBucket: bucket, sourceKey: sourceKey, destinationBucket: bucket, destinationKey: destinationKey,
                ifMatch: ifMatch, sourceSize: sourceSize)
        }
    }

    public func delete(key: String) async throws {
        try await mapped("delete \(key)") { try await client.deleteObject(bucket: bucket, key: key) }
    }

    /// A DeleteObject with `If-Match` when the server was found to honour it
    /// (``S3Client/honoursIfMatchOnDelete(bucket:)``, learned once per process); false otherwise.
    public func delete(key: String, ifMatch etag: String) async throws -> Bool {
        guard await client.honoursIfMatchOnDelete(bucket: bucket) else { return false }
        try await mapped("delete \(key)") { try await client.deleteObject(bucket: bucket, key: key, ifMatch: etag) }
        return true
    }

    /// Runs `body`, turning an `S3Error` into the importer's view of it (other errors, such as
    /// `CancellationError`, pass unchanged).
    private func mapped<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as S3Error {
            throw Self.classify(error, what: what)
        }
    }

    /// The importer's view of an S3 failure.
    public static func classify(_ error: S3Error, what: String) -> ImporterError {
        let message = "\(what): \(error)"
        if error.code == .preconditionFailed || error.httpStatus == 412 {
            return ImporterError(.objectChanged, message, underlying: error)
        }
        if error.code == .invalidRange || error.httpStatus == 416 {
            return ImporterError(.objectChanged, message, underlying: error)
        }
        if error.code == .noSuchKey || error.code == .noSuchBucket || error.httpStatus == 404 {
            return ImporterError(.notFound, message, underlying: error)
        }
        if error.code == .accessDenied || error.code == .signatureDoesNotMatch || error.code == .invalidAccessKeyID
            || error.httpStatus == 403
        {
            return ImporterError(.accessDenied, message, underlying: error)
        }
        return ImporterError(.storageUnavailable, message, underlying: error)
    }
}
