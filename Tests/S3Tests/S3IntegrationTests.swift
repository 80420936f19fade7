import BlockingIO
import Crypto
import Foundation
@testable import S3
import Synchronization
import Testing

/// The S3 client against a real SeaweedFS with SigV4 enforced (scripts/test starts it).
@Suite("S3 against SeaweedFS", .enabled(if: TestEnvironment.hasS3, TestEnvironment.skipReason))
struct S3IntegrationTests {
    static let bucket = TestEnvironment.uniqueBucket("s3it")
    let client: S3Client
    var bucket: String { Self.bucket }

    init() async throws {
        client = try TestEnvironment.client()
        try await client.createBucket(Self.bucket)
    }

    @Test("keys that are hard to sign round-trip through put, head, list, get and delete")
    func hardKeys() async throws {
        let keys = ["p@c/a b+c=d&e.qcow2", "ü/日本/x", "a//b", "%41", "~tilde", "q?x#y z", " lead and trail "]
        for (index, key) in keys.enumerated() {
            let body = Array("body of \(key) #\(index)".utf8)
            let etag = try await client.putObject(bucket: bucket, key: key, body: body)
            #expect(!etag.isEmpty && !etag.contains("\""))
            let head = try await client.headObject(bucket: bucket, key: key)
            #expect(head.size == UInt64(body.count))
            #expect(head.etag == etag)
            #expect(try await client.getObject(bucket: bucket, key: key) == body, "key \(key)")
            let listed = try await client.listAllObjects(bucket: bucket, prefix: key)
            #expect(listed.map(\.key).contains(key), "listing of \(key) gave \(listed.map(\.key))")
            #expect(listed.first { $0.key == key }?.etag == etag)
            try await client.deleteObject(bucket: bucket, key: key)
            let error = await #expect(throws: S3Error.self) { try await client.headObject(bucket: bucket, key: key) }
            #expect(error?.code == .noSuchKey)
        }
        // `%41` is literal: "A" must not exist.
        await #expect(throws: S3Error.self) { try await client.headObject(bucket: bucket, key: "A") }
    }

    @Test("2,500 keys list exactly once over pages of 1000")
    func largeListing() async throws {
        let prefix = "many/"
        let keys = (0..<2500).map { String(format: "\(prefix)k%05d/item", $0) }
        // 16 concurrent writers, each taking every 16th key.
        let failures = await withTaskGroup(of: Int.self) { [client, bucket] group in
            for writer in 0..<16 {
                group.addTask {
                    var failed = 0
                    for index in stride(from: writer, to: keys.count, by: 16) {
                        do {
                            try await client.putObject(bucket: bucket, key: keys[index], body: [UInt8(index & 0xFF)])
                        } catch {
                            failed += 1
                        }
                    }
                    return failed
                }
            }
            return await group.reduce(0, +)
        }
        #expect(failures == 0)

        var pages: [ListPage] = []
        var token: String?
        repeat {
            let page = try await client.listObjects(bucket: bucket, prefix: prefix, continuationToken: token, maxKeys: 1000)
            #expect(page.objects.count <= 1000)
            pages.append(page)
            token = page.nextContinuationToken
        } while token != nil && pages.count < 10
        let listed = pages.flatMap { $0.objects.map(\.key) }
        #expect(pages.count == 3)
        #expect(listed.count == 2500)
        #expect(Set(listed).count == 2500)
        #expect(Set(listed) == Set(keys))
        #expect(try await client.listAllObjects(bucket: bucket, prefix: prefix).count == 2500)

        let delimited = try await client.listObjects(bucket: bucket, prefix: prefix, delimiter: "/", maxKeys: 10)
        #expect(delimited.objects.isEmpty)
        #expect(delimited.commonPrefixes.first == "\(prefix)k00000/")
        #expect(delimited.isTruncated)
        let after = try await client.listObjects(bucket: bucket, prefix: prefix, startAfter: keys[2497], maxKeys: 1000)
        #expect(after.objects.map(\.key) == [keys[2498], keys[2499]])
    }

    @Test("a 40 MiB file goes up in parts and comes back with the same SHA-256")
    func multipart() async throws {
        let size = 40 << 20
        let data = TestEnvironment.bytes(count: size, seed: 40)
        let path = NSTemporaryDirectory() + "s3-multipart-\(UUID().uuidString)"
        try Data(data).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let progress = Mutex<[UInt64]>([])
        let key = "multi/40MiB.raw"
        let etag = try await client.uploadFile(
            path: path, bucket: bucket, key: key, metadata: ["description": "forty"], partSize: 5 << 20,
            concurrency: 4, progress: { done, _ in progress.withLock { $0.append(done) } })
        #expect(etag.hasSuffix("-8"), "a multipart ETag names its part count: \(etag)")
        #expect(progress.withLock { $0.count } == 8)
        #expect(progress.withLock { $0.max() } == UInt64(size))
        let head = try await client.headObject(bucket: bucket, key: key)
        #expect(head.size == UInt64(size))
        #expect(head.metadata["description"] == "forty")

        let streamed = Mutex((hasher: SHA256(), received: 0))
        let streamedHead = try await client.getObject(bucket: bucket, key: key, ifMatch: etag) { chunk in
            streamed.withLock {
                $0.hasher.update(bufferPointer: chunk)
                $0.received += chunk.count
            }
        }
        #expect(streamed.withLock { $0.received } == size)
        #expect(streamedHead?.size == UInt64(size))
        let digest = streamed.withLock { Array($0.hasher.finalize()) }
        #expect(digest == Array(SHA256.hash(data: data)))

        // Parallel ranged download into a file.
        let out = path + ".out"
        defer { try? FileManager.default.removeItem(atPath: out) }
        try await client.downloadFile(bucket: bucket, key: key, path: out, concurrency: 3, chunkSize: 7 << 20)
        let downloaded = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(Array(SHA256.hash(data: downloaded)) == Array(SHA256.hash(data: data)))
    }

    @Test("list parts of an open upload, then abort it")
    func listPartsAndAbort() async throws {
        let key = "multi/aborted"
        let upload = try await client.createMultipartUpload(bucket: bucket, key: key)
        let part = TestEnvironment.bytes(count: 5 << 20, seed: 5)
        let etag = try await client.uploadPart(bucket: bucket, key: key, uploadID: upload, partNumber: 1, body: part)
        let parts = try await client.listParts(bucket: bucket, key: key, uploadID: upload)
        #expect(parts.map(\.partNumber) == [1])
        #expect(parts.first?.etag == etag)
        try await client.abortMultipartUpload(bucket: bucket, key: key, uploadID: upload)
        await #expect(throws: S3Error.self) { try await client.headObject(bucket: bucket, key: key) }
        await #expect(throws: S3Error.self) {
            try await client.completeMultipartUpload(
                bucket: bucket, key: key, uploadID: upload, parts: [UploadedPart(partNumber: 1, etag: etag)])
        }
    }

    @Test("Range GET returns exactly the asked bytes; If-Match mismatch is a precondition failure")
    func rangeAndIfMatch() async throws {
        let body = TestEnvironment.bytes(count: 100_000, seed: 7)
        let key = "range/object"
        let etag = try await client.putObject(bucket: bucket, key: key, body: body)
        #expect(try await client.getObject(bucket: bucket, key: key, range: 10...19) == Array(body[10...19]))
        #expect(try await client.getObject(bucket: bucket, key: key, range: 99_990...99_999, ifMatch: etag)
            == Array(body[99_990...]))
        let error = await #expect(throws: S3Error.self) {
            try await client.getObject(bucket: bucket, key: key, range: 0...9, ifMatch: "0123456789abcdef0123456789abcdef")
        }
        #expect(error?.code == .preconditionFailed)
        #expect(error?.httpStatus == 412)
        #expect(error?.isTransient == false)
        let missing = await #expect(throws: S3Error.self) { try await client.getObject(bucket: bucket, key: "range/none") }
        #expect(missing?.code == .noSuchKey)
    }

    @Test("user metadata round-trips; copy honours x-amz-copy-source-if-match and the metadata directive")
    func metadataAndCopy() async throws {
        let key = "copy/src p@c.img"
        let body = Array("copy me".utf8)
        let metadata = ["description": "a test image", "owner": "p@c"]
        let etag = try await client.putObject(
            bucket: bucket, key: key, body: body, metadata: metadata, contentType: "application/x-snapimport-test")
        let head = try await client.headObject(bucket: bucket, key: key)
        #expect(head.metadata == metadata)
        #expect(head.contentType == "application/x-snapimport-test")
        #expect(head.lastModified.map { abs($0.timeIntervalSinceNow) < 600 } == true)

        let copied = try await client.copyObject(
            sourceBucket: bucket, sourceKey: key, destinationBucket: bucket, destinationKey: "copy/dst ü.img",
            ifMatch: etag)
        #expect(!copied.isEmpty && !copied.contains("\""))
        #expect(try await client.getObject(bucket: bucket, key: "copy/dst ü.img") == body)
        #expect(try await client.headObject(bucket: bucket, key: "copy/dst ü.img").metadata == metadata)

        let error = await #expect(throws: S3Error.self) {
            try await client.copyObject(
                sourceBucket: bucket, sourceKey: key, destinationBucket: bucket, destinationKey: "copy/never",
                ifMatch: "ffffffffffffffffffffffffffffffff")
        }
        #expect(error?.code == .preconditionFailed)
        await #expect(throws: S3Error.self) { try await client.headObject(bucket: bucket, key: "copy/never") }

        try await client.copyObject(
            sourceBucket: bucket, sourceKey: key, destinationBucket: bucket, destinationKey: "copy/replaced",
            ifMatch: etag, metadata: ["description": "new"])
        #expect(try await client.headObject(bucket: bucket, key: "copy/replaced").metadata == ["description": "new"])
    }

    @Test("a source above the copy threshold is copied part by part with UploadPartCopy, pinned to its ETag")
    func multipartCopy() async throws {
        var configuration = TestEnvironment.configuration()
        configuration.multipartCopyThreshold = 8 << 20
        configuration.copyPartSize = 5 << 20
        let copier = try S3Client(configuration: configuration, logger: TestEnvironment.logger)
        let body = TestEnvironment.bytes(count: 12 << 20, seed: 12)
        let etag = try await client.putObject(bucket: bucket, key: "bigcopy/src", body: body, metadata: ["description": "big"])
        let copied = try await copier.copyObject(
            sourceBucket: bucket, sourceKey: "bigcopy/src", destinationBucket: bucket, destinationKey: "bigcopy/dst",
            ifMatch: etag)
        #expect(copied.hasSuffix("-3"), "three parts of 5, 5 and 2 MiB: \(copied)")
        #expect(try await client.getObject(bucket: bucket, key: "bigcopy/dst") == body)
        #expect(try await client.headObject(bucket: bucket, key: "bigcopy/dst").metadata == ["description": "big"])
        let error = await #expect(throws: S3Error.self) {
            try await copier.copyObject(
                sourceBucket: bucket, sourceKey: "bigcopy/src", destinationBucket: bucket, destinationKey: "bigcopy/no",
                ifMatch: "00000000000000000000000000000000")
        }
        #expect(error?.code == .preconditionFailed)
    }

    @Test("a wrong secret fails clearly, once, without a retry storm and without the secret in the message")
    func wrongSecret() async throws {
        let proxy = try FaultProxy(upstream: TestEnvironment.endpoint ?? "", faults: 0)
        defer { proxy.stop() }
        let secret = "WRONG-secret-value-0123456789"
        let bad = try TestEnvironment.client(endpoint: proxy.endpoint, secret: secret)
        let error = await #expect(throws: S3Error.self) { try await bad.getObject(bucket: bucket, key: "whatever") }
        #expect(error?.code == .signatureDoesNotMatch || error?.code == .accessDenied)
        #expect(error?.httpStatus == 403)
        #expect(error?.isTransient == false)
        #expect(error.map { !"\($0)".contains(secret) } == true)
        #expect(try proxy.requests().count == 1)
    }

    @Test("503 SlowDown twice: retried with a fresh signature and the body sent again")
    func slowDownRetried() async throws {
        let proxy = try FaultProxy(upstream: TestEnvironment.endpoint ?? "", faults: 2)
        defer { proxy.stop() }
        // Backoff of at least one second so that each attempt carries a different x-amz-date.
        let policy = S3RetryPolicy(
            maxAttempts: 5, baseDelay: .milliseconds(2000), maxDelay: .milliseconds(2000), maxTotalTime: .seconds(30))
        let viaProxy = try TestEnvironment.client(endpoint: proxy.endpoint, retry: policy)
        let body = Array("retried body".utf8)
        try await viaProxy.putObject(bucket: bucket, key: "retry/object", body: body)
        let requests = try proxy.requests()
        #expect(requests.count == 3)
        #expect(Set(requests.map { $0["date"] ?? "" }).count == 3)
        #expect(Set(requests.map { $0["authorization"] ?? "" }).count == 3)
        #expect(requests.allSatisfy { $0["method"] == "PUT" })
        #expect(try await client.getObject(bucket: bucket, key: "retry/object") == body)
    }

    @Test("a GET cut short after some bytes resumes with a ranged GET pinned by If-Match; the sink sees each byte once")
    func resumedGet() async throws {
        let body = TestEnvironment.bytes(count: 3 << 20, seed: 3)
        let etag = try await client.putObject(bucket: bucket, key: "resume/object", body: body)
        let proxy = try FaultProxy(upstream: TestEnvironment.endpoint ?? "", faults: 1, mode: "truncate")
        defer { proxy.stop() }
        let policy = S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(10), maxDelay: .milliseconds(20))
        let viaProxy = try TestEnvironment.client(endpoint: proxy.endpoint, retry: policy)
        let received = Mutex<[UInt8]>([])
        let head = try await viaProxy.getObject(bucket: bucket, key: "resume/object", ifMatch: etag) { chunk in
            received.withLock { $0.append(contentsOf: chunk) }
        }
        #expect(received.withLock { $0 } == body)
        #expect(head?.etag == etag)
        let requests = try proxy.requests()
        #expect(requests.count == 2)
        #expect(requests.first?["range"] == "")
        #expect(requests.last?["range"]?.hasPrefix("bytes=\(body.count / 2)-") == true, "\(requests)")
        #expect(requests.allSatisfy { $0["ifMatch"] == "\"\(etag)\"" })

        // Without an ETag to pin the version, a cut transfer is not resumed: the caller gets a transient error.
        let proxy2 = try FaultProxy(upstream: TestEnvironment.endpoint ?? "", faults: 1, mode: "truncate")
        defer { proxy2.stop() }
        let unpinned = try TestEnvironment.client(endpoint: proxy2.endpoint, retry: policy)
        let error = await #expect(throws: S3Error.self) {
            try await unpinned.getObject(bucket: bucket, key: "resume/object") { _ in }
        }
        #expect(error?.isTransient == true)
    }

    @Test("a blocking streamed GET cut short resumes where it stopped, pinned by If-Match; the sink sees each byte once")
    func resumedBlockingStream() async throws {
        let body = TestEnvironment.bytes(count: 3 << 20, seed: 4)
        let etag = try await client.putObject(bucket: bucket, key: "resume/stream", body: body)
        let proxy = try FaultProxy(upstream: TestEnvironment.endpoint ?? "", faults: 1, mode: "truncate")
        defer { proxy.stop() }
        let policy = S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(10), maxDelay: .milliseconds(20))
        let viaProxy = try TestEnvironment.client(endpoint: proxy.endpoint, retry: policy)
        let (bucket, last) = (bucket, UInt64(body.count - 1))
        let received = try await BlockingExecutor.shared.run {
            var received: [UInt8] = []
            var pieces = 0
            try viaProxy.getObjectBlocking(bucket: bucket, key: "resume/stream", range: 1000...last, ifMatch: etag) {
                received.append(contentsOf: $0)
                pieces += 1
            }
            return (received, pieces)
        }
        #expect(received.0 == Array(body[1000...]))
        #expect(received.1 > 1, "delivered as it arrives, not collected")
        let requests = try proxy.requests()
        #expect(requests.count == 2)
        #expect(requests.first?["range"] == "bytes=1000-\(last)")
        let resumedAt = requests.last?["range"].flatMap { UInt64($0.dropFirst(6).prefix { $0 != "-" }) } ?? 0
        #expect(resumedAt > 1000 && resumedAt < last, "\(requests)")
        #expect(requests.allSatisfy { $0["ifMatch"] == "\"\(etag)\"" })

        // A sink that throws ends the transfer with its own error, not retried.
        struct Enough: Error {}
        await #expect(throws: Enough.self) {
            try await BlockingExecutor.shared.run {
                try client.getObjectBlocking(bucket: bucket, key: "resume/stream", range: 0...last, ifMatch: etag) { _ in
                    throw Enough()
                }
            }
        }
    }

    @Test("a listing cut short is fetched again from scratch")
    func truncatedListingRetried() async throws {
        for index in 0..<50 { try await client.putObject(bucket: bucket, key: "cut/\(index)", body: []) }
        let proxy = try FaultProxy(upstream: TestEnvironment.endpoint ?? "", faults: 1, mode: "truncate")
        defer { proxy.stop() }
        let policy = S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(10), maxDelay: .milliseconds(20))
        let viaProxy = try TestEnvironment.client(endpoint: proxy.endpoint, retry: policy)
        let keys = try await viaProxy.listAllObjects(bucket: bucket, prefix: "cut/").map(\.key)
        #expect(keys.count == 50)
        #expect(Set(keys).count == 50)
        #expect(try proxy.requests().count == 2)
    }

    @Test("TLS is verified: a self-signed server is refused (no retry) unless its CA file is configured")
    func tlsVerification() async throws {
        let dir = NSTemporaryDirectory() + "s3-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        openssl.arguments = [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
        ]
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        try #require(openssl.terminationStatus == 0, "openssl could not make a test certificate")

        let proxy = try FaultProxy(
            upstream: TestEnvironment.endpoint ?? "", faults: 0, tls: (dir + "/cert.pem", dir + "/key.pem"))
        defer { proxy.stop() }
        let policy = S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(10), maxDelay: .milliseconds(20))
        let untrusted = try TestEnvironment.client(endpoint: proxy.endpoint, retry: policy)
        let error = await #expect(throws: S3Error.self) { try await untrusted.headObject(bucket: bucket, key: "tls") }
        #expect(error?.code == .tls, "\(String(describing: error))")
        #expect(error?.isTransient == false)

        var configuration = TestEnvironment.configuration(endpoint: proxy.endpoint, retry: policy)
        configuration.caFile = dir + "/cert.pem"
        let trusted = try S3Client(configuration: configuration, logger: TestEnvironment.logger)
        try await trusted.putObject(bucket: bucket, key: "tls/object", body: Array("over tls".utf8))
        #expect(try await trusted.getObject(bucket: bucket, key: "tls/object") == Array("over tls".utf8))
        #expect(try proxy.requests().count == 2)
    }

    @Test("SlowDown beyond the attempt budget ends in a transient error after exactly maxAttempts")
    func slowDownExhausted() async throws {
        let proxy = try FaultProxy(upstream: TestEnvironment.endpoint ?? "", faults: 100)
        defer { proxy.stop() }
        let policy = S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(10), maxDelay: .milliseconds(20))
        let viaProxy = try TestEnvironment.client(endpoint: proxy.endpoint, retry: policy)
        let error = await #expect(throws: S3Error.self) { try await viaProxy.headObject(bucket: bucket, key: "x") }
        #expect(error?.code == .slowDown || error?.code == .serviceUnavailable)
        #expect(error?.isTransient == true)
        #expect(try proxy.requests().count == 3)
    }

    @Test("RequestTimeTooSkewed: the clock is corrected from the server's Date and the request retried")
    func clockSkew() async throws {
        let skewed = try TestEnvironment.client()
        skewed.setClockOffset(-3600)
        try await skewed.putObject(bucket: bucket, key: "skew/object", body: [1, 2, 3])
        #expect(abs(skewed.clockCorrection) < 120)
        #expect(try await client.getObject(bucket: bucket, key: "skew/object") == [1, 2, 3])
    }

    @Test("virtual-hosted addressing reaches bucket.s3.localhost through CURLOPT_RESOLVE")
    func virtualHosted() async throws {
        let base = try #require(TestEnvironment.endpoint)
        let endpoint = try #require(URLComponents(string: base))
        let port = try #require(endpoint.port)
        let virtual = try TestEnvironment.client(
            endpoint: "http://s3.localhost:\(port)", addressing: .virtual,
            resolve: ["s3.localhost:\(port):127.0.0.1", "\(bucket).s3.localhost:\(port):127.0.0.1"])
        let key = "virtual/a b+c.txt"
        try await virtual.putObject(bucket: bucket, key: key, body: Array("hosted".utf8))
        #expect(try await virtual.getObject(bucket: bucket, key: key) == Array("hosted".utf8))
        #expect(try await virtual.listAllObjects(bucket: bucket, prefix: "virtual/").map(\.key) == [key])
        #expect(try await client.getObject(bucket: bucket, key: key) == Array("hosted".utf8))
    }

    @Test("connection refused is a transient transport error, retried within the budget")
    func connectionRefused() async throws {
        let policy = S3RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(10), maxDelay: .milliseconds(10))
        let nowhere = try TestEnvironment.client(endpoint: "http://127.0.0.1:1", retry: policy)
        let error = await #expect(throws: S3Error.self) { try await nowhere.headObject(bucket: bucket, key: "x") }
        #expect(error?.code == .transport)
        #expect(error?.isTransient == true)
    }
}
