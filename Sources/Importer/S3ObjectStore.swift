public import S3

/// ``ObjectStore`` over the S3 module's blocking client, for one bucket.
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

    public func list(prefix: String) throws -> [ObjectSummary] {
        try mapped("list s3://\(bucket)/\(prefix)") {
            try client.listAllObjects(bucket: bucket, prefix: prefix).map {
                ObjectSummary(key: $0.key, etag: $0.etag, size: $0.size)
            }
        }
    }

    public func head(key: String) throws -> ObjectMetadata {
        try mapped("head \(key)") {
            let head = try client.headObject(bucket: bucket, key: key)
            return ObjectMetadata(etag: head.etag, size: head.size, metadata: head.metadata)
        }
    }

    public func get(key: String, range: Range<UInt64>?, ifMatch: String?) throws -> [UInt8] {
        try mapped("get \(key)") {
            if let range {
                guard !range.isEmpty else { return [] }
                return try client.getObject(
                    bucket: bucket, key: key, range: range.lowerBound...(range.upperBound - 1), ifMatch: ifMatch)
            }
            return try client.getObject(bucket: bucket, key: key, ifMatch: ifMatch)
        }
    }

    public func put(key: String, body: [UInt8], contentType: String) throws {
        try mapped("put \(key)") {
            _ = try client.putObject(bucket: bucket, key: key, body: body, contentType: contentType)
        }
    }

    public func copy(from sourceKey: String, to destinationKey: String, ifMatch: String?) throws {
        try mapped("copy \(sourceKey) to \(destinationKey)") {
            _ = try client.copyObject(
                sourceBucket: bucket, sourceKey: sourceKey, destinationBucket: bucket, destinationKey: destinationKey,
                ifMatch: ifMatch)
        }
    }

    public func delete(key: String) throws {
        try mapped("delete \(key)") { try client.deleteObject(bucket: bucket, key: key) }
    }

    private func mapped<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
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
