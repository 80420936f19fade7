import BlockingIO
import Foundation
@testable import S3
import Synchronization
import S3TestSupport
import Testing


@Suite("S3 conditional requests without a server")
struct S3ConditionalUnitTests {
    func client(_ transport: ScriptedTransport) throws -> S3Client {
        try S3Client(configuration: S3UnitTests.configuration, transport: transport, logger: TestEnvironment.logger)
    }

    @Test("a copy of known size is one CopyObject pinned to the ETag; of unknown size, a HEAD comes first")
    func copyOfKnownSize() async throws {
        let copyAnswer = ScriptedTransport.Answer(
            status: 200, body: Array("<CopyObjectResult><ETag>\"e2\"</ETag></CopyObjectResult>".utf8))
        let known = ScriptedTransport([copyAnswer])
        try await client(known).copyObject(
            sourceBucket: "b", sourceKey: "incoming/k", destinationBucket: "b", destinationKey: "processed/k",
            ifMatch: "e1", sourceSize: 65_536)
        #expect(known.requests.map(\.method) == ["PUT"])
        #expect(known.requests.first?.header("x-amz-copy-source-if-match") == "\"e1\"")

        let unknown = ScriptedTransport([
            .init(status: 200, headers: [("Content-Length", "65536"), ("ETag", "\"e1\"")]), copyAnswer,
        ])
        try await client(unknown).copyObject(
            sourceBucket: "b", sourceKey: "incoming/k", destinationBucket: "b", destinationKey: "processed/k",
            ifMatch: "e1")
        #expect(unknown.requests.map(\.method) == ["HEAD", "PUT"])
    }

    @Test("a server that ignores If-None-Match and If-Match is found out by the probes, which answer no")
    func probesSeeIgnoredHeaders() async throws {
        // PUT accepted twice (the header ignored), then the probe object's DELETE; a DELETE of a missing
        // key with a random If-Match answered 204.
        let transport = ScriptedTransport([.init(status: 200), .init(status: 200), .init(status: 204), .init(status: 204)])
        let c = try client(transport)
        #expect(await c.honoursIfNoneMatchOnPut(bucket: "b", probePrefix: "blocks/probe/") == false)
        #expect(await c.honoursIfMatchOnDelete(bucket: "b") == false)
        let requests = transport.requests
        #expect(requests.map(\.method) == ["PUT", "PUT", "DELETE", "DELETE"])
        #expect(requests[0].header("If-None-Match") == "*")
        #expect(requests[0].url.contains("/b/blocks/probe/"))
        #expect(requests[2].url == requests[0].url, "the probe object is removed")
        #expect(requests[3].header("If-Match") != nil)
        // Remembered: no more requests.
        #expect(await c.honoursIfNoneMatchOnPut(bucket: "b", probePrefix: "blocks/probe/") == false)
        #expect(await c.honoursIfMatchOnDelete(bucket: "b") == false)
        #expect(transport.requests.count == 4)
    }

    @Test("a transient failure of a probe answers no for that call and is not remembered")
    func transientProbeIsRetriedLater() async throws {
        var configuration = S3UnitTests.configuration
        configuration.retry.maxAttempts = 1
        let transport = ScriptedTransport([.init(status: 503), .init(status: 412)])
        let c = try S3Client(configuration: configuration, transport: transport, logger: TestEnvironment.logger)
        #expect(await c.honoursIfMatchOnDelete(bucket: "b") == false)
        #expect(await c.honoursIfMatchOnDelete(bucket: "b") == true)
        #expect(await c.honoursIfMatchOnDelete(bucket: "b") == true)
        #expect(transport.requests.count == 2)
    }
}

/// Conditional requests against the real SeaweedFS.
@Suite("S3 conditional requests against SeaweedFS", .enabled(if: TestEnvironment.hasS3, TestEnvironment.skipReason))
struct S3ConditionalIntegrationTests {
    static let bucket = TestEnvironment.uniqueBucket("s3cond")
    var bucket: String { Self.bucket }

    init() async throws {
        try await TestEnvironment.client().createBucket(Self.bucket)
    }

    func client() throws -> (S3Client, RecordingTransport) {
        let configuration = TestEnvironment.configuration()
        let transport = RecordingTransport(CurlTransport(configuration: configuration))
        return (try S3Client(configuration: configuration, transport: transport, logger: TestEnvironment.logger), transport)
    }

    @Test("SeaweedFS honours If-None-Match on PUT and If-Match on DELETE, and the probes say so")
    func honoured() async throws {
        let (client, _) = try client()
        #expect(await client.honoursIfNoneMatchOnPut(bucket: bucket, probePrefix: "probe/"))
        #expect(await client.honoursIfMatchOnDelete(bucket: bucket))
        #expect(try await client.listAllObjects(bucket: bucket, prefix: "probe/").isEmpty, "the probe object is gone")

        let first = try await client.putObject(bucket: bucket, key: "cond/a", body: Array("one".utf8), ifAbsent: true)
        let refused = await #expect(throws: S3Error.self) {
            try await client.putObject(bucket: bucket, key: "cond/a", body: Array("two".utf8), ifAbsent: true)
        }
        #expect(refused?.code == .preconditionFailed)
        #expect(try await client.getObject(bucket: bucket, key: "cond/a") == Array("one".utf8))

        let kept = await #expect(throws: S3Error.self) {
            try await client.deleteObject(bucket: bucket, key: "cond/a", ifMatch: "00000000000000000000000000000000")
        }
        #expect(kept?.code == .preconditionFailed)
        #expect(try await client.headObject(bucket: bucket, key: "cond/a").etag == first)
        try await client.deleteObject(bucket: bucket, key: "cond/a", ifMatch: first)
        await #expect(throws: S3Error.self) { try await client.headObject(bucket: bucket, key: "cond/a") }
    }

    @Test("a blocking ranged GET also answers the whole size, the ETag and the user metadata")
    func getWithHead() async throws {
        let (client, transport) = try client()
        let body = TestEnvironment.bytes(count: 10_000, seed: 3)
        let etag = try await client.putObject(
            bucket: bucket, key: "gethead/x", body: body, metadata: ["description": "from the metadata"])
        transport.reset()
        let (bytes, head) = try await BlockingExecutor.shared.run {
            try client.getObjectBlockingWithHead(bucket: Self.bucket, key: "gethead/x", range: 0...99, ifMatch: etag)
        }
        #expect(bytes == Array(body[0..<100]))
        #expect(head?.size == 10_000)
        #expect(head?.etag == etag)
        #expect(head?.metadata == ["description": "from the metadata"])
        #expect(transport.requests.map(\.method) == ["GET"])
    }

    @Test("a copy of known size is one request and still refuses a changed source")
    func copyOfKnownSize() async throws {
        let (client, transport) = try client()
        let body = Array("copied".utf8)
        let etag = try await client.putObject(bucket: bucket, key: "sized/src", body: body)
        transport.reset()
        try await client.copyObject(
            sourceBucket: bucket, sourceKey: "sized/src", destinationBucket: bucket, destinationKey: "sized/dst",
            ifMatch: etag, sourceSize: UInt64(body.count))
        #expect(transport.requests.map(\.method) == ["PUT"])
        #expect(try await client.getObject(bucket: bucket, key: "sized/dst") == body)
        let error = await #expect(throws: S3Error.self) {
            try await client.copyObject(
                sourceBucket: bucket, sourceKey: "sized/src", destinationBucket: bucket, destinationKey: "sized/no",
                ifMatch: "ffffffffffffffffffffffffffffffff", sourceSize: UInt64(body.count))
        }
        #expect(error?.code == .preconditionFailed)
        let missing = await #expect(throws: S3Error.self) {
            try await client.copyObject(
                sourceBucket: bucket, sourceKey: "sized/none", destinationBucket: bucket, destinationKey: "sized/none2",
                sourceSize: 10)
        }
        #expect(missing?.code == .noSuchKey, "a missing source is NoSuchKey without the HEAD too")
    }
}
