import BlockingIO
import Foundation
@testable import S3
import Synchronization
import Testing

/// Behaviour that needs no server: parsing, credentials, retries over a scripted transport.
@Suite("S3 client without a server")
struct S3UnitTests {
    static let configuration = S3Configuration(
        endpoint: "http://127.0.0.1:9", region: "us-east-1",
        credentials: S3Credentials(accessKeyID: "AKID", secretAccessKey: "SECRET-VALUE"),
        retry: S3RetryPolicy(maxAttempts: 4, baseDelay: .milliseconds(1), maxDelay: .milliseconds(2)))

    func client(_ transport: ScriptedTransport, _ configuration: S3Configuration = Self.configuration) throws
        -> S3Client
    {
        try S3Client(configuration: configuration, transport: transport, logger: TestEnvironment.logger)
    }

    static func error(_ code: String, status: Int = 0) -> [UInt8] {
        Array("<?xml version=\"1.0\"?><Error><Code>\(code)</Code><Message>m</Message><RequestId>R1</RequestId></Error>".utf8)
    }

    @Test("listing: SeaweedFS-style XML without a namespace, url-encoded keys decoded, ETags unquoted")
    func lenientListing() async throws {
        let xml = """
            <ListBucketResult><Name>b</Name><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
            <NextContinuationToken>a/b==</NextContinuationToken>
            <Contents><Key>p%40c/a+b%2Bc%3Dd%26e.qcow2</Key><Size>12</Size><ETag>"abc"</ETag>
            <LastModified>2026-11-24T22:31:20.500Z</LastModified></Contents>
            <Contents><Key>%C3%BC/%E6%97%A5%E6%9C%AC/x</Key><Size>3</Size><ETag>def</ETag>
            <LastModified>2026-11-24T22:31:20Z</LastModified></Contents>
            <CommonPrefixes><Prefix>dir%2F</Prefix></CommonPrefixes></ListBucketResult>
            """
        let transport = ScriptedTransport([.init(status: 200, body: Array(xml.utf8))])
        let page = try await client(transport).listObjects(bucket: "b", prefix: "p@c/", maxKeys: 2)
        #expect(page.objects.map(\.key) == ["p@c/a b+c=d&e.qcow2", "ü/日本/x"])
        #expect(page.objects.map(\.etag) == ["abc", "def"])
        #expect(page.objects.first?.lastModified == Date(timeIntervalSince1970: 1_795_559_480.5))
        #expect(page.commonPrefixes == ["dir/"])
        #expect(page.nextContinuationToken == "a/b==")
        let url = try #require(transport.requests.first?.url)
        #expect(url == "http://127.0.0.1:9/b?encoding-type=url&list-type=2&max-keys=2&prefix=p%40c%2F")
    }

    @Test("an error inside a 200 answer to CompleteMultipartUpload is thrown")
    func errorIn200() async throws {
        let transport = ScriptedTransport([.init(status: 200, body: Self.error("InternalError"))])
        let error = await #expect(throws: S3Error.self) {
            try await client(transport).completeMultipartUpload(
                bucket: "b", key: "k", uploadID: "u", parts: [UploadedPart(partNumber: 1, etag: "e")])
        }
        #expect(error?.code == .internalError)
        #expect(error?.requestID == "R1")
    }

    @Test("5xx and SlowDown are retried with a fresh signature; other 4xx are not")
    func retries() async throws {
        let transport = ScriptedTransport([
            .init(status: 503, body: Self.error("SlowDown")), .init(status: 500, body: Self.error("InternalError")),
            .init(status: 502), .init(status: 200, headers: [("ETag", "\"e1\"")]),
        ])
        #expect(try await client(transport).putObject(bucket: "b", key: "k", body: [1, 2, 3]) == "e1")
        #expect(transport.requests.count == 4)
        for request in transport.requests {
            guard case .bytes(let body) = request.body else {
                Issue.record("body lost on retry")
                continue
            }
            #expect(body == [1, 2, 3])
            #expect(request.headers.contains { $0.name == "Authorization" })
            #expect(request.headers.contains { $0.name == "x-amz-content-sha256" })
        }

        let denied = ScriptedTransport([
            .init(status: 403, body: Self.error("AccessDenied")), .init(status: 200),
        ])
        let error = await #expect(throws: S3Error.self) { try await client(denied).deleteObject(bucket: "b", key: "k") }
        #expect(error?.code == .accessDenied)
        #expect(denied.requests.count == 1)

        let exhausted = ScriptedTransport(Array(repeating: .init(status: 504), count: 10))
        let gateway = await #expect(throws: S3Error.self) { try await client(exhausted).deleteObject(bucket: "b", key: "k") }
        #expect(gateway?.isTransient == true)
        #expect(exhausted.requests.count == 4)
    }

    @Test("404 without a body (HEAD) is NoSuchKey; 412 is PreconditionFailed")
    func statusOnlyErrors() async throws {
        let transport = ScriptedTransport([.init(status: 404), .init(status: 412)])
        let c = try client(transport)
        await #expect(throws: S3Error(code: .noSuchKey, message: "")) { try await c.headObject(bucket: "b", key: "k") }
        await #expect(throws: S3Error(code: .preconditionFailed, message: "")) {
            try await c.getObject(bucket: "b", key: "k", ifMatch: "x")
        }
        #expect(transport.requests.last?.headers.contains { $0.name == "If-Match" && $0.value == "\"x\"" } == true)
    }

    @Test("head: sizes, unquoted ETag, Last-Modified and x-amz-meta-*")
    func head() async throws {
        let transport = ScriptedTransport([
            .init(
                status: 200,
                headers: [
                    ("Content-Length", "1234"), ("ETag", "\"0123\""), ("Last-Modified", "Tue, 24 Nov 2026 22:31:20 GMT"),
                    ("x-amz-meta-Description", "hello"), ("Content-Type", "text/plain"),
                ])
        ])
        let head = try await client(transport).headObject(bucket: "b", key: "k")
        #expect(head == ObjectHead(
            size: 1234, etag: "0123", lastModified: Date(timeIntervalSince1970: 1_795_559_480),
            contentType: "text/plain", metadata: ["description": "hello"]))
    }

    @Test("part size: at least 5 MiB and never more than 10,000 parts")
    func partSizes() {
        #expect(S3Client.partSize(for: 1 << 30, requested: 1 << 20) == 5 << 20)
        #expect(S3Client.partSize(for: 1 << 30, requested: 16 << 20) == 16 << 20)
        let huge: UInt64 = 5 << 40
        let part = UInt64(S3Client.partSize(for: huge, requested: 16 << 20))
        #expect((huge + part - 1) / part <= 10_000)
        #expect(part % (1 << 20) == 0)
    }

    @Test("credentials from the environment, then from a profile; never printed")
    func credentials() throws {
        let fromEnv = try S3Credentials.resolve(
            environment: ["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_SESSION_TOKEN": "TK"],
            homeDirectory: nil)
        #expect(fromEnv == S3Credentials(accessKeyID: "AK", secretAccessKey: "SK", sessionToken: "TK"))

        let home = NSTemporaryDirectory() + "s3-home-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: home + "/.aws", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        try """
            [default]
            aws_access_key_id = DEFAULTKEY
            aws_secret_access_key = DEFAULTSECRET

            [work]
            aws_access_key_id=WORKKEY
            aws_secret_access_key=WORKSECRET
            """.write(toFile: home + "/.aws/credentials", atomically: false, encoding: .utf8)
        try """
            [profile work]
            region = eu-central-1
            endpoint_url = http://127.0.0.1:8333
            """.write(toFile: home + "/.aws/config", atomically: false, encoding: .utf8)
        let work = try S3Credentials.resolve(environment: ["AWS_PROFILE": "work"], homeDirectory: home)
        #expect(work.accessKeyID == "WORKKEY")
        #expect(work.secretAccessKey == "WORKSECRET")
        #expect(S3Configuration.region(environment: ["AWS_PROFILE": "work"], homeDirectory: home) == "eu-central-1")
        #expect(S3Configuration.endpoint(environment: ["AWS_PROFILE": "work"], homeDirectory: home)
            == "http://127.0.0.1:8333")
        #expect(try S3Credentials.resolve(environment: [:], homeDirectory: home).accessKeyID == "DEFAULTKEY")
        let missing = #expect(throws: S3Error.self) {
            try S3Credentials.resolve(environment: ["AWS_PROFILE": "nope"], homeDirectory: home)
        }
        #expect(missing?.message.contains("nope") == true)

        var dumped = ""
        dump(work, to: &dumped)
        for text in [String(describing: work), String(reflecting: work), dumped] {
            #expect(!text.contains("WORKSECRET"))
        }
    }

    @Test("requests never carry the secret, and errors never mention it")
    func noSecretsOnTheWire() async throws {
        let transport = ScriptedTransport([.init(status: 403, body: Self.error("SignatureDoesNotMatch"))])
        let error = await #expect(throws: S3Error.self) { try await client(transport).getObject(bucket: "b", key: "k") }
        #expect(error.map { !"\($0)".contains("SECRET-VALUE") } == true)
        let request = try #require(transport.requests.first)
        #expect(!request.headers.contains { $0.value.contains("SECRET-VALUE") })
        #expect(!request.url.contains("SECRET-VALUE"))
    }

    @Test("async calls get results and errors back")
    func asyncCalls() async throws {
        let transport = ScriptedTransport([.init(status: 200, headers: [("ETag", "\"e9\"")]), .init(status: 404)])
        let c = try client(transport)
        let etag = try await c.putObject(bucket: "b", key: "k", body: [1])
        #expect(etag == "e9")
        await #expect(throws: S3Error(code: .noSuchKey, message: "")) {
            try await c.headObject(bucket: "b", key: "k")
        }
    }

    @Test("a task cancelled while waiting to retry stops at once with CancellationError, without another attempt")
    func cancelledRetry() async throws {
        var configuration = Self.configuration
        configuration.retry = S3RetryPolicy(
            maxAttempts: 5, baseDelay: .seconds(60), maxDelay: .seconds(60), maxTotalTime: .seconds(600))
        let transport = ScriptedTransport(Array(repeating: .init(status: 503, body: Self.error("SlowDown")), count: 5))
        let c = try client(transport, configuration)
        let task = Task { try await c.headObject(bucket: "b", key: "k") }
        while transport.requests.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        let cancelled = ContinuousClock.now
        task.cancel()
        let result = await task.result
        #expect(ContinuousClock.now - cancelled < .seconds(10), "the back-off of 30–60 s was not waited out")
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(transport.requests.count == 1)
    }

    @Test("the blocking ranged GET retries, and resumes a cut transfer from where it stopped, pinned by If-Match")
    func blockingRangedGet() async throws {
        let transport = ScriptedTransport([
            .init(status: 503, body: Self.error("SlowDown")),
            .init(status: 206, body: Array(0..<10), cutAfter: 4),
            .init(status: 206, body: Array(4..<10)),
        ])
        let c = try client(transport)
        let bytes = try await BlockingExecutor.shared.run {
            try c.getObjectBlocking(bucket: "b", key: "k", range: 0...9, ifMatch: "e")
        }
        #expect(bytes == Array(0..<10))
        let requests = transport.requests
        #expect(requests.count == 3)
        func header(_ request: HTTPRequest, _ name: String) -> String? {
            request.headers.first { $0.name == name }?.value
        }
        #expect(requests.map { header($0, "Range") } == ["bytes=0-9", "bytes=0-9", "bytes=4-9"])
        #expect(requests.allSatisfy { header($0, "If-Match") == "\"e\"" })
    }

    @Test("the async GET resumes a cut transfer the same way; the sink sees each byte once")
    func asyncResumedGet() async throws {
        let transport = ScriptedTransport([
            .init(status: 206, body: Array(0..<10), cutAfter: 6), .init(status: 206, body: Array(6..<10)),
        ])
        let received = Mutex<[UInt8]>([])
        try await client(transport).getObject(bucket: "b", key: "k", range: 0...9, ifMatch: "e") { chunk in
            received.withLock { $0.append(contentsOf: chunk) }
        }
        #expect(received.withLock { $0 } == Array(0..<10))
        #expect(transport.requests.last?.headers.contains { $0.name == "Range" && $0.value == "bytes=6-9" } == true)
    }

    @Test("a part that fails aborts the multipart upload; no further part is sent and the first error is thrown")
    func multipartAbortedOnFailure() async throws {
        let path = NSTemporaryDirectory() + "s3-unit-\(UUID().uuidString)"
        try Data(count: 11 << 20).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let transport = ScriptedTransport([
            .init(status: 200, body: Array("<InitiateMultipartUploadResult><UploadId>U1</UploadId></InitiateMultipartUploadResult>".utf8)),
            .init(status: 200, headers: [("ETag", "\"p1\"")]),
            .init(status: 403, body: Self.error("AccessDenied")),
            .init(status: 204),
        ])
        let c = try client(transport)
        let error = await #expect(throws: S3Error.self) {
            try await c.uploadFile(path: path, bucket: "b", key: "k", partSize: 5 << 20, concurrency: 1)
        }
        #expect(error?.code == .accessDenied)
        #expect(transport.requests.count == 4)
        let abort = try #require(transport.requests.last)
        #expect(abort.method == "DELETE" && abort.url.hasSuffix("?uploadId=U1"))
    }

    @Test("a multipart upload whose task is cancelled is still aborted")
    func multipartAbortedOnCancellation() async throws {
        let path = NSTemporaryDirectory() + "s3-unit-\(UUID().uuidString)"
        try Data(count: 11 << 20).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var configuration = Self.configuration
        configuration.retry = S3RetryPolicy(
            maxAttempts: 5, baseDelay: .seconds(60), maxDelay: .seconds(60), maxTotalTime: .seconds(600))
        let transport = ScriptedTransport([
            .init(status: 200, body: Array("<InitiateMultipartUploadResult><UploadId>U2</UploadId></InitiateMultipartUploadResult>".utf8)),
            .init(status: 503, body: Self.error("SlowDown")),
            .init(status: 204),
        ])
        let c = try client(transport, configuration)
        let upload = Task { try await c.uploadFile(path: path, bucket: "b", key: "k", partSize: 5 << 20, concurrency: 1) }
        // Part 1 answered SlowDown: the upload now waits 30–60 s before retrying it.
        while transport.requests.count < 2 { try await Task.sleep(for: .milliseconds(5)) }
        upload.cancel()
        let result = await upload.result
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(transport.requests.count == 3)
        let abort = try #require(transport.requests.last)
        #expect(abort.method == "DELETE" && abort.url.hasSuffix("?uploadId=U2"))
    }

    @Test("dates: ISO 8601 listings and HTTP headers")
    func dates() {
        #expect(S3Date.parseISO8601("1970-01-01T00:00:00Z") == Date(timeIntervalSince1970: 0))
        #expect(S3Date.parseISO8601("2000-02-29T12:00:00.250Z") == Date(timeIntervalSince1970: 951_825_600.25))
        #expect(S3Date.parseHTTP("Tue, 29 Feb 2000 12:00:00 GMT") == Date(timeIntervalSince1970: 951_825_600))
        #expect(S3Date.parseISO8601("garbage") == nil)
    }

    @Test("endpoints must be http(s) without a path")
    func endpoints() {
        for bad in ["ftp://h", "file:///etc/passwd", "http://h/path", "h:80", ""] {
            #expect(throws: S3Error.self, "\(bad)") {
                var configuration = Self.configuration
                configuration.endpoint = bad
                _ = try S3Client(configuration: configuration, logger: TestEnvironment.logger)
            }
        }
    }
}
