import BlockingIO
import Foundation
public import Logging
import SigV4
import Synchronization

/// An S3 client over libcurl, signing every request with SigV4.
///
/// Every call is `async`: each HTTP attempt (libcurl blocks its thread) runs on the process's
/// ``BlockingExecutor``, never on Swift's cooperative pool, and calls may run concurrently from any
/// number of tasks (each attempt takes its own pooled connection). Requests are retried per
/// `S3Configuration.retry` on 500/502/503/504, SlowDown and transport errors, each attempt re-signed
/// with a fresh date and with its body sent again from the start; the wait between attempts is a
/// `Task.sleep`, so a cancelled task stops retrying at once and throws `CancellationError`.
/// `RequestTimeTooSkewed` corrects the clock from the server's `Date` header and retries once.
///
/// One blocking call remains for code that already runs on a pool thread and cannot await:
/// ``getObjectBlocking(bucket:key:range:ifMatch:)``.
public final class S3Client: Sendable {
    public let configuration: S3Configuration
    private let transport: any S3Transport
    let logger: Logger
    private let endpoint: S3Endpoint
    /// Seconds to add to the local clock when signing (learned from RequestTimeTooSkewed).
    private let clockOffset = Mutex<Double>(0)
    /// What the server was found to honour of conditional requests, per bucket (see "Conditional requests").
    private let conditionalSupport = ProbeAnswers()

    /// - Throws: `S3Error` `.invalidRequest` when the endpoint is not `http(s)://host[:port]`.
    public convenience init(configuration: S3Configuration, logger: Logger) throws {
        try self.init(configuration: configuration, transport: CurlTransport(configuration: configuration), logger: logger)
    }

    /// With an explicit transport (tests, other HTTP stacks).
    public init(configuration: S3Configuration, transport: any S3Transport, logger: Logger) throws {
        self.configuration = configuration
        self.transport = transport
        self.logger = logger
        self.endpoint = try S3Endpoint(configuration.endpoint)
    }

    /// Sets the clock correction (seconds added to local time when signing). For tests of the
    /// RequestTimeTooSkewed path; the client learns the real value by itself.
    func setClockOffset(_ seconds: Double) { clockOffset.withLock { $0 = seconds } }

    /// The current clock correction in seconds.
    public var clockCorrection: Double { clockOffset.withLock { $0 } }

    // MARK: - Listing

    /// One page of ListObjectsV2 (`encoding-type=url`; keys come back decoded).
    /// - Parameters:
    ///   - maxKeys: at most this many keys (S3 caps at 1000).
    public func listObjects(
        bucket: String, prefix: String? = nil, delimiter: String? = nil, continuationToken: String? = nil,
        startAfter: String? = nil, maxKeys: Int? = nil
    ) async throws -> ListPage {
        var query: [(name: String, value: String)] = [("list-type", "2"), ("encoding-type", "url")]
        if let prefix, !prefix.isEmpty { query.append(("prefix", prefix)) }
        if let delimiter { query.append(("delimiter", delimiter)) }
        if let continuationToken { query.append(("continuation-token", continuationToken)) }
        if let startAfter { query.append(("start-after", startAfter)) }
        if let maxKeys { query.append(("max-keys", String(maxKeys))) }
        let request = S3Request(operation: "ListObjectsV2", method: "GET", bucket: bucket, key: nil, query: query)
        let body = try await sendCollecting(request)
        guard let root = XMLTree.parse(body), root.name == "ListBucketResult" else {
            throw invalidResponse(request, "ListObjectsV2 answer is not a ListBucketResult")
        }
        let encoded = root.value("EncodingType")?.lowercased() == "url"
        func decode(_ text: String) -> String { encoded ? Self.urlDecode(text) : text }
        var objects: [S3Object] = []
        for content in root.children("Contents") {
            guard let key = content.value("Key") else { throw invalidResponse(request, "a listed object has no Key") }
            objects.append(
                S3Object(
                    key: decode(key), size: UInt64(content.value("Size") ?? "") ?? 0,
                    etag: Self.unquote(content.value("ETag") ?? ""),
                    lastModified: content.value("LastModified").flatMap(S3Date.parseISO8601)))
        }
        let prefixes = root.children("CommonPrefixes").compactMap { $0.value("Prefix").map(decode) }
        let truncated = root.value("IsTruncated")?.lowercased() == "true"
        let token = root.value("NextContinuationToken").flatMap { $0.isEmpty ? nil : $0 }
        if truncated && token == nil {
            throw invalidResponse(request, "a truncated listing without NextContinuationToken")
        }
        return ListPage(
            objects: objects, commonPrefixes: prefixes, isTruncated: truncated,
            nextContinuationToken: truncated ? token : nil)
    }

    /// Every object under `prefix`, all pages (no delimiter: recursive).
    public func listAllObjects(bucket: String, prefix: String? = nil) async throws -> [S3Object] {
        var all: [S3Object] = []
        var token: String?
        var seenTokens: Set<String> = []
        repeat {
            let page = try await listObjects(bucket: bucket, prefix: prefix, continuationToken: token, maxKeys: 1000)
            all.append(contentsOf: page.objects)
            token = page.nextContinuationToken
            if let token, !seenTokens.insert(token).inserted {
                throw S3Error(
                    code: .invalidResponse, message: "ListObjectsV2 s3://\(bucket)/\(prefix ?? ""): repeated continuation token")
            }
        } while token != nil
        return all
    }

    // MARK: - Objects

    /// HeadObject: size, ETag, Last-Modified, content type and user metadata.
    public func headObject(bucket: String, key: String) async throws -> ObjectHead {
        let request = S3Request(operation: "HeadObject", method: "HEAD", bucket: bucket, key: key)
        let response = try await send(request) { _ in }
        return try objectHead(response, request)
    }

    /// GetObject into memory.
    /// - Parameters:
    ///   - range: inclusive byte range, or nil for the whole object.
    ///   - ifMatch: the ETag the object must still have (`.preconditionFailed` otherwise).
    public func getObject(bucket: String, key: String, range: ClosedRange<UInt64>? = nil, ifMatch: String? = nil)
        async throws -> [UInt8]
    {
        let collected = CollectedBytes(reserving: range.map { $0.upperBound - $0.lowerBound + 1 })
        _ = try await getObject(bucket: bucket, key: key, range: range, ifMatch: ifMatch) { chunk, _ in
            collected.append(chunk)
        }
        return collected.take()
    }

    /// A ranged GetObject into memory that blocks the calling thread: the one blocking call of the client.
    ///
    /// For code that already runs on a ``BlockingExecutor`` pool thread and cannot await (a synchronous
    /// byte source read by a synchronous disk-image parser). Attempts, retries, `RequestTimeTooSkewed`
    /// correction and the resumption of a transfer broken after some bytes arrived are those of the
    /// async ``getObject(bucket:key:range:ifMatch:)``; the wait between attempts blocks the thread
    /// (``BlockingExecutor/sleepBlocking(_:)``) and there is no task whose cancellation it could see.
    /// - Parameters:
    ///   - range: inclusive byte range.
    ///   - ifMatch: the ETag the object must still have (`.preconditionFailed` otherwise).
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await getObject elsewhere")
    public func getObjectBlocking(bucket: String, key: String, range: ClosedRange<UInt64>, ifMatch: String?) throws
        -> [UInt8]
    {
        try getObjectBlockingWithHead(bucket: bucket, key: key, range: range, ifMatch: ifMatch).bytes
    }

    /// ``getObjectBlocking(bucket:key:range:ifMatch:)`` that also returns the head of the answer: the
    /// ETag, the whole object's size (from `Content-Range`) and its user metadata, which a GET carries
    /// like a HEAD does, so a caller that needs both makes one request instead of two.
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await getObject elsewhere")
    public func getObjectBlockingWithHead(bucket: String, key: String, range: ClosedRange<UInt64>, ifMatch: String?)
        throws -> (bytes: [UInt8], head: ObjectHead?)
    {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(min(range.upperBound - range.lowerBound + 1, 1 << 30)))
        let head = try getObjectBlocking(bucket: bucket, key: key, range: range, ifMatch: ifMatch) { chunk in
            bytes.append(contentsOf: chunk)
        }
        return (bytes, head)
    }

    /// A ranged GetObject streamed to `sink` on the calling thread (blocking), in arrival order: one
    /// long transfer instead of many ranged requests. A transfer broken after some bytes were delivered
    /// is resumed from where it stopped (pinned with `If-Match`), so `sink` sees every byte exactly once;
    /// otherwise as ``getObjectBlocking(bucket:key:range:ifMatch:)``.
    /// - Parameters:
    ///   - sink: called with each piece as it arrives; an error it throws ends the transfer and is
    ///     rethrown (a sink that blocks holds the transfer back: TCP's flow control does the rest).
    /// - Returns: the head of the (last) answer.
    @available(*, noasync, message: "blocks its thread: only from a BlockingExecutor pool thread; await getObject elsewhere")
    @discardableResult
    public func getObjectBlocking(
        bucket: String, key: String, range: ClosedRange<UInt64>, ifMatch: String?,
        into sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> ObjectHead? {
        var get = GetProgress(bucket: bucket, key: key, range: range, ifMatch: ifMatch)
        while true {
            let request = get.request()
            do {
                let response = try sendBlocking(request) { chunk in
                    get.delivered += UInt64(chunk.count)
                    try sink(chunk)
                }
                return try? objectHead(response, request)
            } catch let error as S3Error {
                try get.resume(after: error, maxResumes: configuration.retry.maxAttempts, logger: logger)
            }
        }
    }

    /// GetObject streamed to `sink` in arrival order. A transfer broken after some bytes were delivered
    /// is resumed from where it stopped (a ranged GET pinned with `If-Match` to `ifMatch`), so `sink`
    /// sees every byte exactly once.
    /// - Parameters:
    ///   - sink: called with each chunk as it arrives, on a ``BlockingExecutor`` pool thread, one call
    ///     at a time; an error it throws ends the transfer and is rethrown.
    /// - Returns: the head of the answer (`size` is the whole object's size).
    @discardableResult
    public func getObject(
        bucket: String, key: String, range: ClosedRange<UInt64>? = nil, ifMatch: String? = nil,
        into sink: @escaping @Sendable (UnsafeRawBufferPointer) throws -> Void
    ) async throws -> ObjectHead? {
        try await getObject(bucket: bucket, key: key, range: range, ifMatch: ifMatch) { chunk, _ in try sink(chunk) }
    }

    /// GetObject streamed to `sink`, which also learns where each chunk belongs: its offset from the
    /// start of `range` (or of the object). Resumes a broken transfer like the public variant.
    @discardableResult
    func getObject(
        bucket: String, key: String, range: ClosedRange<UInt64>?, ifMatch: String?,
        at sink: @escaping @Sendable (UnsafeRawBufferPointer, _ offset: UInt64) throws -> Void
    ) async throws -> ObjectHead? {
        var get = GetProgress(bucket: bucket, key: key, range: range, ifMatch: ifMatch)
        while true {
            let request = get.request()
            // Counts what the sink received during this attempt (written on the pool thread, read here after it).
            let delivered = DeliveredCount(get.delivered)
            do {
                let response = try await send(request) { chunk in
                    try sink(chunk, delivered.add(chunk.count))
                }
                return try? objectHead(response, request)
            } catch let error as S3Error {
                get.delivered = delivered.value
                try get.resume(after: error, maxResumes: configuration.retry.maxAttempts, logger: logger)
            }
        }
    }

    /// PutObject from memory.
    /// - Returns: the ETag without quotes.
    /// - Parameter ifAbsent: send `If-None-Match: *`: the server refuses the write with 412
    ///   (`.preconditionFailed`) when the key exists. Servers that ignore the header overwrite; see
    ///   ``honoursIfNoneMatchOnPut(bucket:probePrefix:)`` before relying on it.
    @discardableResult
    public func putObject(
        bucket: String, key: String, body: [UInt8], metadata: [String: String] = [:], contentType: String? = nil,
        ifAbsent: Bool = false
    ) async throws -> String {
        var headers = Self.metadataHeaders(metadata)
        if let contentType { headers.append(("Content-Type", contentType)) }
        if ifAbsent { headers.append(("If-None-Match", "*")) }
        let request = S3Request(
            operation: "PutObject", method: "PUT", bucket: bucket, key: key, headers: headers, body: .bytes(body))
        let response = try await send(request) { _ in }
        return Self.unquote(response.header("ETag") ?? "")
    }

    /// Copies an object, pinned to `ifMatch` when given. `metadata` non-nil replaces the user metadata
    /// (`x-amz-metadata-directive: REPLACE`), nil copies it. Sources above
    /// `configuration.multipartCopyThreshold` (5 GiB, S3's CopyObject limit) are copied part by part
    /// with UploadPartCopy, each part carrying `x-amz-copy-source-if-match`.
    /// - Returns: the new object's ETag without quotes.
    ///
    /// A caller that knows the source's size (from a listing, pinned by `ifMatch`, or a block it wrote)
    /// passes it as `sourceSize`: a source within the CopyObject limit is then copied in ONE request,
    /// without the HeadObject that otherwise decides between the single and the multipart copy (the
    /// server still checks `ifMatch` through `x-amz-copy-source-if-match`).
    @discardableResult
    public func copyObject(
        sourceBucket: String, sourceKey: String, destinationBucket: String, destinationKey: String,
        ifMatch: String? = nil, metadata: [String: String]? = nil, sourceSize: UInt64? = nil
    ) async throws -> String {
        if let sourceSize, sourceSize <= configuration.multipartCopyThreshold {
            return try await singleCopy(
                sourceBucket: sourceBucket, sourceKey: sourceKey, destinationBucket: destinationBucket,
                destinationKey: destinationKey, ifMatch: ifMatch, metadata: metadata)
        }
        let source = try await headObject(bucket: sourceBucket, key: sourceKey)
        if let ifMatch, Self.unquote(ifMatch) != source.etag {
            throw S3Error(
                code: .preconditionFailed, message: "CopyObject s3://\(sourceBucket)/\(sourceKey): the source's ETag "
                    + "is \(source.etag), not \(Self.unquote(ifMatch))", httpStatus: 412)
        }
        if source.size > configuration.multipartCopyThreshold {
            return try await multipartCopy(
                source: source, sourceBucket: sourceBucket, sourceKey: sourceKey, destinationBucket: destinationBucket,
                destinationKey: destinationKey, metadata: metadata ?? source.metadata)
        }
        return try await singleCopy(
            sourceBucket: sourceBucket, sourceKey: sourceKey, destinationBucket: destinationBucket,
            destinationKey: destinationKey, ifMatch: ifMatch ?? source.etag, metadata: metadata)
    }

    private func singleCopy(
        sourceBucket: String, sourceKey: String, destinationBucket: String, destinationKey: String,
        ifMatch: String?, metadata: [String: String]?
    ) async throws -> String {
        var headers: [(name: String, value: String)] = [
            ("x-amz-copy-source", SigV4Signer.percentEncode("/\(sourceBucket)/\(sourceKey)", keepSlash: true))
        ]
        if let ifMatch { headers.append(("x-amz-copy-source-if-match", Self.quote(ifMatch))) }
        if let metadata {
            headers.append(("x-amz-metadata-directive", "REPLACE"))
            headers.append(contentsOf: Self.metadataHeaders(metadata))
        }
        let request = S3Request(
            operation: "CopyObject", method: "PUT", bucket: destinationBucket, key: destinationKey, headers: headers)
        let body = try await sendCollecting(request, errorIn200: true)
        guard let root = XMLTree.parse(body), let etag = root.value("ETag") else {
            throw invalidResponse(request, "CopyObject answer has no ETag")
        }
        return Self.unquote(etag)
    }

    /// DeleteObject (succeeds when the key does not exist, as S3 does).
    /// - Parameter ifMatch: delete only while the object's ETag is this one (`If-Match`); a server that
    ///   honours it answers 412 (`.preconditionFailed`) otherwise, also for a missing key. Servers that
    ///   ignore the header delete anyway: see ``honoursIfMatchOnDelete(bucket:)`` before relying on it.
    public func deleteObject(bucket: String, key: String, ifMatch: String? = nil) async throws {
        let headers: [(name: String, value: String)] = ifMatch.map { [("If-Match", Self.quote($0))] } ?? []
        _ = try await send(
            S3Request(operation: "DeleteObject", method: "DELETE", bucket: bucket, key: key, headers: headers)
        ) { _ in }
    }

    // MARK: - Conditional requests

    /// Whether the server refuses a PutObject with `If-None-Match: *` on an existing key (S3 does since
    /// 2024; older or other servers may overwrite instead). Learned once per bucket and process with a
    /// probe object of a few bytes at a random key under `probePrefix`: written with the header, written
    /// again with it (which must be refused), then deleted. Any other answer counts as "no" for this call
    /// (not remembered when it was a transient failure), so callers fall back to what works without it.
    public func honoursIfNoneMatchOnPut(bucket: String, probePrefix: String) async -> Bool {
        await conditionalSupport.answer(for: "put \(bucket)/\(probePrefix)") { [self] in
            let key = probePrefix + (0..<4).map { _ in String(UInt32.random(in: 0...UInt32.max), radix: 16) }.joined()
            let body = Array("If-None-Match probe\n".utf8)
            let answer: Bool?
            do {
                _ = try await putObject(bucket: bucket, key: key, body: body, contentType: "text/plain", ifAbsent: true)
                _ = try await putObject(bucket: bucket, key: key, body: body, contentType: "text/plain", ifAbsent: true)
                answer = false  // the second write was accepted: the header is ignored
            } catch let error as S3Error where error.code == .preconditionFailed || error.httpStatus == 412 {
                answer = true
            } catch let error as S3Error {
                answer = error.isTransient ? nil : false
            } catch {
                answer = nil
            }
            try? await deleteObject(bucket: bucket, key: key)  // a leftover would be a few harmless bytes
            return answer
        }
    }

    /// Whether the server refuses a DeleteObject whose `If-Match` does not hold. Learned once per bucket
    /// and process, without writing anything: a DELETE of a random key that does not exist, with a
    /// random `If-Match`, is refused with 412 by a server that evaluates the header, and answered 204 by
    /// one that ignores it. Any other answer counts as "no" (not remembered when transient).
    public func honoursIfMatchOnDelete(bucket: String) async -> Bool {
        await conditionalSupport.answer(for: "delete \(bucket)") { [self] in
            let nonce = (0..<4).map { _ in String(UInt32.random(in: 0...UInt32.max), radix: 16) }.joined()
            do {
                try await deleteObject(bucket: bucket, key: ".snapimport-probe-\(nonce)", ifMatch: "probe-\(nonce)")
                return false
            } catch let error as S3Error where error.code == .preconditionFailed || error.httpStatus == 412 {
                return true
            } catch let error as S3Error {
                return error.isTransient ? nil : false
            } catch {
                return nil
            }
        }
    }

    /// CreateBucket; succeeds when the bucket already exists and is ours.
    public func createBucket(_ bucket: String) async throws {
        var body: HTTPRequestBody = .none
        if configuration.region != "us-east-1" {
            let xml = XMLTree(
                name: "CreateBucketConfiguration",
                children: [XMLTree(name: "LocationConstraint", text: configuration.region)])
            body = .bytes(Array(xml.serialized().utf8))
        }
        do {
            _ = try await send(S3Request(operation: "CreateBucket", method: "PUT", bucket: bucket, key: nil, body: body)) {
                _ in
            }
        } catch let error as S3Error where error.code == .bucketAlreadyOwnedByYou {
            return
        }
    }

    // MARK: - Multipart

    /// CreateMultipartUpload.
    /// - Returns: the upload ID.
    public func createMultipartUpload(
        bucket: String, key: String, metadata: [String: String] = [:], contentType: String? = nil
    ) async throws -> String {
        var headers = Self.metadataHeaders(metadata)
        if let contentType { headers.append(("Content-Type", contentType)) }
        let request = S3Request(
            operation: "CreateMultipartUpload", method: "POST", bucket: bucket, key: key, query: [("uploads", "")],
            headers: headers, body: .bytes([]))
        let body = try await sendCollecting(request)
        guard let root = XMLTree.parse(body), let uploadID = root.value("UploadId"), !uploadID.isEmpty else {
            throw invalidResponse(request, "CreateMultipartUpload answer has no UploadId")
        }
        return uploadID
    }

    /// UploadPart (part numbers 1…10,000; every part but the last at least 5 MiB).
    /// - Returns: the part's ETag without quotes.
    public func uploadPart(bucket: String, key: String, uploadID: String, partNumber: Int, body: [UInt8])
        async throws -> String
    {
        guard (1...Self.maxParts).contains(partNumber) else {
            throw S3Error(code: .invalidRequest, message: "part number \(partNumber) is outside 1…\(Self.maxParts)")
        }
        let request = S3Request(
            operation: "UploadPart", method: "PUT", bucket: bucket, key: key,
            query: [("partNumber", String(partNumber)), ("uploadId", uploadID)], body: .bytes(body))
        let response = try await send(request) { _ in }
        guard let etag = response.header("ETag") else { throw invalidResponse(request, "UploadPart answer has no ETag") }
        return Self.unquote(etag)
    }

    /// CompleteMultipartUpload; an error carried in a 200 answer is detected and thrown.
    /// - Returns: the object's ETag without quotes.
    @discardableResult
    public func completeMultipartUpload(bucket: String, key: String, uploadID: String, parts: [UploadedPart])
        async throws -> String
    {
        let xml = XMLTree(
            name: "CompleteMultipartUpload",
            children: parts.sorted { $0.partNumber < $1.partNumber }.map {
                XMLTree(
                    name: "Part",
                    children: [
                        XMLTree(name: "PartNumber", text: String($0.partNumber)),
                        XMLTree(name: "ETag", text: Self.quote($0.etag)),
                    ])
            })
        let request = S3Request(
            operation: "CompleteMultipartUpload", method: "POST", bucket: bucket, key: key,
            query: [("uploadId", uploadID)], headers: [("Content-Type", "application/xml")],
            body: .bytes(Array(xml.serialized().utf8)))
        let body = try await sendCollecting(request, errorIn200: true)
        guard let root = XMLTree.parse(body), let etag = root.value("ETag") else {
            throw invalidResponse(request, "CompleteMultipartUpload answer has no ETag")
        }
        return Self.unquote(etag)
    }

    /// UploadPartCopy: part `partNumber` of an upload is the byte range `range` of the source object,
    /// pinned with `x-amz-copy-source-if-match` when `ifMatch` is given.
    /// - Returns: the part's ETag without quotes.
    public func uploadPartCopy(
        bucket: String, key: String, uploadID: String, partNumber: Int, sourceBucket: String, sourceKey: String,
        range: ClosedRange<UInt64>, ifMatch: String?
    ) async throws -> String {
        var headers: [(name: String, value: String)] = [
            ("x-amz-copy-source", SigV4Signer.percentEncode("/\(sourceBucket)/\(sourceKey)", keepSlash: true)),
            ("x-amz-copy-source-range", "bytes=\(range.lowerBound)-\(range.upperBound)"),
        ]
        if let ifMatch { headers.append(("x-amz-copy-source-if-match", Self.quote(ifMatch))) }
        let request = S3Request(
            operation: "UploadPartCopy", method: "PUT", bucket: bucket, key: key,
            query: [("partNumber", String(partNumber)), ("uploadId", uploadID)], headers: headers)
        let body = try await sendCollecting(request, errorIn200: true)
        guard let root = XMLTree.parse(body), let etag = root.value("ETag") else {
            throw invalidResponse(request, "UploadPartCopy answer has no ETag")
        }
        return Self.unquote(etag)
    }

    private func multipartCopy(
        source: ObjectHead, sourceBucket: String, sourceKey: String, destinationBucket: String,
        destinationKey: String, metadata: [String: String]
    ) async throws -> String {
        let part = UInt64(Self.partSize(for: source.size, requested: configuration.copyPartSize))
        let partCount = Int((source.size + part - 1) / part)
        let uploadID = try await createMultipartUpload(
            bucket: destinationBucket, key: destinationKey, metadata: metadata, contentType: source.contentType)
        return try await runMultipart(
            bucket: destinationBucket, key: destinationKey, uploadID: uploadID, partCount: partCount, concurrency: 4
        ) { number in
            let start = UInt64(number - 1) * part
            let end = min(start + part, source.size) - 1
            let etag = try await self.uploadPartCopy(
                bucket: destinationBucket, key: destinationKey, uploadID: uploadID, partNumber: number,
                sourceBucket: sourceBucket, sourceKey: sourceKey, range: start...end, ifMatch: source.etag)
            return UploadedPart(partNumber: number, etag: etag, size: end - start + 1)
        }
    }

    /// AbortMultipartUpload.
    public func abortMultipartUpload(bucket: String, key: String, uploadID: String) async throws {
        _ = try await send(
            S3Request(
                operation: "AbortMultipartUpload", method: "DELETE", bucket: bucket, key: key,
                query: [("uploadId", uploadID)])
        ) { _ in }
    }

    /// ListParts (all pages).
    public func listParts(bucket: String, key: String, uploadID: String) async throws -> [UploadedPart] {
        var parts: [UploadedPart] = []
        var marker: String?
        repeat {
            var query: [(name: String, value: String)] = [("uploadId", uploadID)]
            if let marker { query.append(("part-number-marker", marker)) }
            let request = S3Request(operation: "ListParts", method: "GET", bucket: bucket, key: key, query: query)
            let body = try await sendCollecting(request)
            guard let root = XMLTree.parse(body), root.name == "ListPartsResult" else {
                throw invalidResponse(request, "ListParts answer is not a ListPartsResult")
            }
            for part in root.children("Part") {
                guard let number = part.value("PartNumber").flatMap({ Int($0) }) else { continue }
                parts.append(
                    UploadedPart(
                        partNumber: number, etag: Self.unquote(part.value("ETag") ?? ""),
                        size: UInt64(part.value("Size") ?? "") ?? 0))
            }
            let truncated = root.value("IsTruncated")?.lowercased() == "true"
            let next = root.value("NextPartNumberMarker")
            marker = truncated && next != marker ? next : nil
        } while marker != nil
        return parts
    }

    /// S3's limits for multipart uploads.
    public static let minPartSize = 5 << 20
    public static let maxParts = 10_000

    /// The part size to use for an object of `size` bytes: at least `requested` and 5 MiB, and large
    /// enough (rounded up to a MiB) that no more than 10,000 parts are needed.
    public static func partSize(for size: UInt64, requested: Int) -> Int {
        var part = UInt64(max(requested, minPartSize))
        let needed = (size + UInt64(maxParts) - 1) / UInt64(maxParts)
        if needed > part { part = (needed + (1 << 20) - 1) / (1 << 20) * (1 << 20) }
        return Int(part)
    }

    // MARK: - Requests, signing and retries

    struct S3Request {
        var operation: String
        var method: String
        var bucket: String?
        var key: String?
        var query: [(name: String, value: String)] = []
        var headers: [(name: String, value: String)] = []
        var body: HTTPRequestBody = .none

        var resource: String { "s3://\(bucket ?? "")/\(key ?? "")" }
    }

    /// Sends and returns the whole 2xx body.
    private func sendCollecting(_ request: S3Request, errorIn200: Bool = false) async throws -> [UInt8] {
        let body = CollectedBytes(reserving: nil)
        // The body is collected in memory, so a transfer cut short can be retried from scratch.
        let response = try await send(request, restartable: true, onRestart: { body.removeAll() }) {
            body.append($0)
        }
        let bytes = body.take()
        if errorIn200, let root = XMLTree.parse(bytes), root.name == "Error" {
            throw error(from: root, status: response.status, response: response, request: request)
        }
        return bytes
    }

    /// Sends `request` with retries. Each attempt runs on ``BlockingExecutor`` (libcurl blocks); body
    /// bytes of a 2xx answer go to `onData` there as they arrive. Once any byte has been delivered, a
    /// failure is retried only when `restartable` (after `onRestart` discarded what arrived); otherwise
    /// it is thrown and the caller may resume.
    /// - Throws: `S3Error`; `CancellationError` when the task is cancelled before an attempt or while
    ///   waiting to retry (the wait ends at once).
    func send(
        _ request: S3Request, restartable: Bool = false, onRestart: () -> Void = {},
        onData: @escaping @Sendable (UnsafeRawBufferPointer) throws -> Void
    ) async throws -> HTTPResponse {
        var attempts = try Attempts(request, client: self, restartable: restartable)
        while true {
            let signed = attempts.next()
            let (outcome, delivered) = try await BlockingExecutor.shared.run { [transport] in
                try Self.attempt(signed, transport: transport, onData: onData)
            }
            switch try attempts.verdict(outcome, delivered: delivered) {
            case .done(let response):
                return response
            case .retry(let delay):
                if delay > .zero { try await Task.sleep(for: delay) }
                if delivered { onRestart() }
            }
        }
    }

    /// ``send(_:restartable:onRestart:onData:)`` blocking the calling thread, for
    /// ``getObjectBlocking(bucket:key:range:ifMatch:)``: the same attempts and verdicts, the wait
    /// between attempts a ``BlockingExecutor/sleepBlocking(_:)``. Never restartable.
    @available(*, noasync)
    private func sendBlocking(_ request: S3Request, onData: (UnsafeRawBufferPointer) throws -> Void) throws
        -> HTTPResponse
    {
        var attempts = try Attempts(request, client: self, restartable: false)
        while true {
            let (outcome, delivered) = try Self.attempt(attempts.next(), transport: transport, onData: onData)
            switch try attempts.verdict(outcome, delivered: delivered) {
            case .done(let response): return response
            case .retry(let delay): BlockingExecutor.sleepBlocking(delay)
            }
        }
    }

    /// One exchange on the calling thread (blocking). S3 failures are returned, not thrown, for the
    /// retry verdict; anything else (what `onData` threw) is thrown.
    /// - Returns: the answer or its failure, and whether any body byte reached `onData`.
    private static func attempt(
        _ request: HTTPRequest, transport: any S3Transport, onData: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> (Result<HTTPResponse, S3Error>, delivered: Bool) {
        var delivered = false
        do {
            let response = try transport.perform(request) { chunk in
                delivered = true
                try onData(chunk)
            }
            return (.success(response), delivered)
        } catch let error as S3Error {
            return (.failure(error), delivered)
        }
    }

    /// The attempts of one request and the verdict after each: the retry policy, shared by the async
    /// ``send(_:restartable:onRestart:onData:)`` and the blocking ``sendBlocking(_:onData:)``.
    struct Attempts {
        enum Verdict {
            case done(HTTPResponse)
            /// Send again after waiting `after` (zero: at once).
            case retry(after: Duration)
        }

        let request: S3Request
        let client: S3Client
        let restartable: Bool
        let payloadHash: String
        let started = ContinuousClock.now
        private(set) var attempt = 0
        private var skewCorrected = false

        init(_ request: S3Request, client: S3Client, restartable: Bool) throws {
            try client.validate(request)
            self.request = request
            self.client = client
            self.restartable = restartable
            payloadHash =
                switch request.body {
                case .none: SigV4Signer.emptyPayloadHash
                case .bytes(let bytes): bytes.withUnsafeBytes { SigV4Signer.hexSHA256($0) }
                case .file: SigV4Signer.unsignedPayload
                }
        }

        /// The next attempt, signed now (with the current clock correction).
        mutating func next() -> HTTPRequest {
            attempt += 1
            return client.sign(request, payloadHash: payloadHash)
        }

        /// What follows an attempt that answered `outcome` after delivering (or not) body bytes.
        /// - Throws: the attempt's `S3Error` when it is not to be retried.
        mutating func verdict(_ outcome: Result<HTTPResponse, S3Error>, delivered: Bool) throws -> Verdict {
            let logger = client.logger
            let error: S3Error
            switch outcome {
            case .success(let response):
                logger.debug(
                    "S3 request",
                    metadata: [
                        "op": "\(request.operation)", "resource": "\(request.resource)", "status": "\(response.status)",
                        "attempt": "\(attempt)",
                    ])
                if (200..<300).contains(response.status) { return .done(response) }
                error = client.error(fromBody: response.errorBody, response: response, request: request)
            case .failure(let transportError):
                error = transportError
            }
            // RequestTimeTooSkewed: learn the server's clock from its Date header, retry once.
            if error.code == .requestTimeTooSkewed && !skewCorrected && !delivered {
                skewCorrected = true
                if let serverDate = error.serverDate {
                    let offset = serverDate.timeIntervalSinceNow
                    client.setClockOffset(offset)
                    logger.warning(
                        "S3 clock skew corrected", metadata: ["offsetSeconds": "\(Int(offset))", "op": "\(request.operation)"])
                    return .retry(after: .zero)
                }
            }
            let policy = client.configuration.retry
            let retryable =
                error.code == .transport || error.code == .timeout || error.code == .slowDown
                || S3Error.retriedStatuses.contains(error.httpStatus)
            let delay = policy.delay(beforeRetry: attempt)
            let elapsed = ContinuousClock.now - started
            guard retryable, !delivered || restartable, attempt < policy.maxAttempts,
                elapsed + delay < policy.maxTotalTime
            else {
                logger.debug(
                    "S3 request failed",
                    metadata: ["op": "\(request.operation)", "resource": "\(request.resource)", "error": "\(error)",
                        "attempt": "\(attempt)"])
                throw error
            }
            logger.info(
                "S3 request failed, retrying",
                metadata: ["op": "\(request.operation)", "resource": "\(request.resource)", "error": "\(error)",
                    "attempt": "\(attempt)", "delayMs": "\(Int(delay.seconds * 1000))"])
            return .retry(after: delay)
        }
    }

    /// Where a GET stands: the bytes delivered so far and how a broken transfer resumes. Shared by the
    /// async and the blocking GET.
    struct GetProgress {
        let bucket: String
        let key: String
        let range: ClosedRange<UInt64>?
        let ifMatch: String?
        /// Bytes the sink has received (from the start of `range`, or of the object).
        var delivered: UInt64 = 0
        private var resumes = 0

        init(bucket: String, key: String, range: ClosedRange<UInt64>?, ifMatch: String?) {
            self.bucket = bucket
            self.key = key
            self.range = range
            self.ifMatch = ifMatch
        }

        /// The GET for what is still missing, pinned to `ifMatch`.
        func request() -> S3Request {
            var headers: [(name: String, value: String)] = []
            let start = (range?.lowerBound ?? 0) + delivered
            if let range {
                headers.append(("Range", "bytes=\(start)-\(range.upperBound)"))
            } else if delivered > 0 {
                headers.append(("Range", "bytes=\(start)-"))
            }
            if let ifMatch { headers.append(("If-Match", S3Client.quote(ifMatch))) }
            return S3Request(operation: "GetObject", method: "GET", bucket: bucket, key: key, headers: headers)
        }

        /// After a failed attempt: returns when the GET is to be resumed from `delivered`, throws
        /// `error` otherwise. `send` does not retry once bytes reached the sink; a transient failure after
        /// that is resumed here, at most `maxResumes` times, and only when `ifMatch` pins the object's
        /// version (without it the rest could come from another object).
        mutating func resume(after error: S3Error, maxResumes: Int, logger: Logger) throws {
            guard error.isTransient, delivered > 0, resumes < maxResumes, ifMatch != nil else { throw error }
            resumes += 1
            logger.debug(
                "resuming GetObject",
                metadata: ["bucket": "\(bucket)", "key": "\(key)", "offset": "\((range?.lowerBound ?? 0) + delivered)"])
        }
    }

    fileprivate func validate(_ request: S3Request) throws {
        if let bucket = request.bucket {
            guard !bucket.isEmpty, !bucket.contains("/") else {
                throw S3Error(code: .invalidRequest, message: "\(request.operation): invalid bucket name '\(bucket)'")
            }
            if configuration.addressing == .virtual {
                guard bucket.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == ".") }) else {
                    throw S3Error(
                        code: .invalidRequest,
                        message: "\(request.operation): bucket '\(bucket)' cannot be used with virtual-hosted addressing")
                }
            }
        }
        if let key = request.key, key.isEmpty {
            throw S3Error(code: .invalidRequest, message: "\(request.operation): empty key in s3://\(request.bucket ?? "")/")
        }
    }

    /// Builds the URL and headers for one attempt, signed with the current (offset-corrected) time.
    func sign(_ request: S3Request, payloadHash: String) -> HTTPRequest {
        var host = endpoint.host
        var path = "/"
        if let bucket = request.bucket {
            switch configuration.addressing {
            case .path: path = "/" + bucket + (request.key.map { "/" + $0 } ?? "")
            case .virtual:
                host = bucket + "." + endpoint.host
                path = "/" + (request.key ?? "")
            }
        }
        let authority = endpoint.authority(host: host)
        var headers = request.headers
        headers.append(("Host", authority))
        headers.append(("x-amz-content-sha256", payloadHash))
        let signer = SigV4Signer(credentials: configuration.credentials.sigV4, region: configuration.region)
        let date = Date().addingTimeInterval(clockOffset.withLock { $0 })
        let signed = signer.sign(
            SigV4Request(
                method: request.method, path: path, query: request.query, headers: headers, payloadHash: payloadHash),
            date: date)
        let query = signed.encodedQuery.isEmpty ? "" : "?" + signed.encodedQuery
        return HTTPRequest(
            method: request.method, url: "\(endpoint.scheme)://\(authority)\(signed.encodedPath)\(query)",
            headers: signed.headers, body: request.body)
    }

    // MARK: - Answers

    private func objectHead(_ response: HTTPResponse, _ request: S3Request) throws -> ObjectHead {
        var size = UInt64(response.header("Content-Length") ?? "") ?? 0
        if let range = response.header("Content-Range"), let slash = range.lastIndex(of: "/"),
            let total = UInt64(range[range.index(after: slash)...])
        {
            size = total
        }
        var metadata: [String: String] = [:]
        for (name, value) in response.headers {
            let lower = name.lowercased()
            if lower.hasPrefix("x-amz-meta-") { metadata[String(lower.dropFirst("x-amz-meta-".count))] = value }
        }
        return ObjectHead(
            size: size, etag: Self.unquote(response.header("ETag") ?? ""),
            lastModified: response.header("Last-Modified").flatMap(S3Date.parseHTTP),
            contentType: response.header("Content-Type"), metadata: metadata)
    }

    fileprivate func error(fromBody body: [UInt8], response: HTTPResponse, request: S3Request) -> S3Error {
        if let root = XMLTree.parse(body), root.name == "Error" {
            return error(from: root, status: response.status, response: response, request: request)
        }
        let code = S3Error.Code.from(awsCode: nil, status: response.status)
        var error = S3Error(
            code: code, message: "\(request.operation) \(request.resource)",
            httpStatus: response.status, requestID: response.header("x-amz-request-id"))
        error.serverDate = response.header("Date").flatMap(S3Date.parseHTTP)
        return error
    }

    private func error(from root: XMLTree, status: Int, response: HTTPResponse, request: S3Request) -> S3Error {
        let awsCode = root.value("Code")
        let message = root.value("Message").map { ": " + $0 } ?? ""
        var error = S3Error(
            code: .from(awsCode: awsCode, status: status),
            message: "\(request.operation) \(request.resource)\(message)", awsCode: awsCode, httpStatus: status,
            requestID: root.value("RequestId") ?? response.header("x-amz-request-id"))
        error.serverDate = response.header("Date").flatMap(S3Date.parseHTTP)
            ?? root.value("ServerTime").flatMap(S3Date.parseISO8601)
        return error
    }

    private func invalidResponse(_ request: S3Request, _ what: String) -> S3Error {
        S3Error(code: .invalidResponse, message: "\(request.operation) \(request.resource): \(what)")
    }

    // MARK: - Helpers

    static func metadataHeaders(_ metadata: [String: String]) -> [(name: String, value: String)] {
        metadata.sorted { $0.key < $1.key }.map { ("x-amz-meta-" + $0.key.lowercased(), $0.value) }
    }

    /// Removes surrounding quotes from an ETag (SeaweedFS sometimes sends none).
    static func unquote(_ etag: String) -> String {
        var text = etag.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("W/") { text.removeFirst(2) }
        if text.count >= 2 && text.hasPrefix("\"") && text.hasSuffix("\"") { text = String(text.dropFirst().dropLast()) }
        return text
    }

    static func quote(_ etag: String) -> String {
        etag.hasPrefix("\"") ? etag : "\"" + etag + "\""
    }

    /// Decodes `encoding-type=url` values: `+` is a space, `%XX` a byte (UTF-8).
    static func urlDecode(_ text: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), iterator.count >= 2,
                let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The body of an answer collected in memory. The sink appends on a ``BlockingExecutor`` pool thread
/// while the awaiting task is suspended; the task takes the bytes after the attempt returned. The
/// mutex makes that hand-over safe without further argument (it is never contended: one attempt at a
/// time appends, and the task reads only between attempts).
final class CollectedBytes: Sendable {
    private let bytes: Mutex<[UInt8]>

    /// - Parameter reserving: the expected size, reserved up front (capped at 1 GiB).
    init(reserving expected: UInt64?) {
        var bytes: [UInt8] = []
        if let expected { bytes.reserveCapacity(Int(min(expected, 1 << 30))) }
        self.bytes = Mutex(bytes)
    }

    func append(_ chunk: UnsafeRawBufferPointer) { bytes.withLock { $0.append(contentsOf: chunk) } }

    /// Forgets what arrived (a transfer restarted from scratch).
    func removeAll() { bytes.withLock { $0.removeAll(keepingCapacity: true) } }

    /// The bytes, leaving the box empty (no copy).
    func take() -> [UInt8] {
        bytes.withLock { bytes in
            defer { bytes = [] }
            return bytes
        }
    }
}

/// A running count of body bytes the sink received, counted on the pool thread during an attempt and
/// read by the awaiting task after it (to resume a broken GET from there). Relaxed ordering suffices:
/// the executor's hand-back of the attempt (a continuation resumed after the transfer) orders the
/// pool thread's writes before the task's read.
final class DeliveredCount: Sendable {
    private let count: Atomic<UInt64>

    init(_ start: UInt64) { count = Atomic(start) }

    /// Counts `bytes` more.
    /// - Returns: the count before them (the offset of the chunk they are).
    func add(_ bytes: Int) -> UInt64 {
        count.wrappingAdd(UInt64(bytes), ordering: .relaxed).oldValue
    }

    var value: UInt64 { count.load(ordering: .relaxed) }
}

/// Answers of capability probes, each learned once per process: concurrent first callers share one
/// probe, later callers read the remembered answer. A probe that answers nil (it could not tell: a
/// transient failure) is not remembered; the caller gets false and the next caller probes again.
final class ProbeAnswers: Sendable {
    private let answers = Mutex<[String: Task<Bool?, Never>]>([:])

    func answer(for name: String, probe: @escaping @Sendable () async -> Bool?) async -> Bool {
        let task = answers.withLock { answers in
            if let task = answers[name] { return task }
            // An unstructured task so that concurrent first callers wait for the same probe, and a caller
            // cancelled meanwhile does not cancel it for the others; it makes at most two requests.
            let task = Task { await probe() }
            answers[name] = task
            return task
        }
        guard let answer = await task.value else {
            answers.withLock { if $0[name] == task { $0[name] = nil } }
            return false
        }
        return answer
    }
}
