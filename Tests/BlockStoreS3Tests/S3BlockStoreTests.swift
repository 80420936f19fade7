import Foundation
import BlockStoreS3
import Logging
import S3
import SnapshotCore
import Synchronization
import S3TestSupport
import Testing

/// The S3-prefix block store against the real SeaweedFS (SigV4 enforced).
@Suite(.enabled(if: ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_S3_ENDPOINT"] != nil,
    "SNAPIMPORT_TEST_S3_ENDPOINT is not set (run scripts/test)"))
struct S3BlockStoreTests {
    let client: S3Client
    let bucket = Self.sharedBucket
    /// Every test gets its own prefix in one bucket (SeaweedFS gives each bucket its own volumes).
    let prefix = "store-\(UInt32.random(in: 0...UInt32.max))/"
    let store: S3BlockStore
    static let sharedBucket = "blocks-\(UInt32.random(in: 0...UInt32.max))"

    init() async throws {
        let env = ProcessInfo.processInfo.environment
        let configuration = S3Configuration(
            endpoint: env["SNAPIMPORT_TEST_S3_ENDPOINT"] ?? "", region: env["AWS_REGION"] ?? "us-east-1",
            credentials: S3Credentials(
                accessKeyID: env["AWS_ACCESS_KEY_ID"] ?? "AKIDEXAMPLE",
                secretAccessKey: env["AWS_SECRET_ACCESS_KEY"] ?? "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            retry: S3RetryPolicy(maxAttempts: 3))
        client = try S3Client(configuration: configuration, logger: Logger(label: "test"))
        try await client.createBucket(bucket)
        store = try S3BlockStore(client: client, location: "s3://\(bucket)/\(prefix)v1", logger: Logger(label: "test"))
    }

    func key(_ hash: BlockHash) -> String { "\(prefix)v1/\(hash.hex.prefix(2))/\(hash.hex)" }

    static func block(_ seed: UInt8, size: Int = 64 << 10) -> (BlockHash, [UInt8]) {
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
        return (Blocks.hash(bytes), bytes)
    }

    @Test func putIsIdempotentAndGetVerifies() async throws {
        let (hash, bytes) = Self.block(1)
        #expect(try await store.put(hash, bytes) == true)
        #expect(try await store.put(hash, bytes) == false)
        #expect(try await store.get(hash) == bytes)
        #expect(try await store.contains(hash))
        try await store.sync()
        let listed = try await store.list()
        #expect(listed.map(\.hash) == [hash])
        #expect(listed.first?.size == bytes.count)
        let keys = try await client.listAllObjects(bucket: bucket, prefix: prefix).map(\.key)
        #expect(keys == [key(hash)])
    }

    @Test func corruptBlockIsRefusedOnRead() async throws {
        let (hash, bytes) = Self.block(2)
        _ = try await store.put(hash, bytes)
        try await client.putObject(bucket: bucket, key: key(hash), body: [1, 2, 3])
        await #expect(throws: SnapshotError(.corruptBlock, "")) { try await store.get(hash) }
    }

    @Test func removeHonoursTheCutoffAndFreshening() async throws {
        let (hash, bytes) = Self.block(3)
        _ = try await store.put(hash, bytes)
        // Modified after the cutoff: kept.
        #expect(try await store.remove(hash, unlessModifiedSince: Date(timeIntervalSinceNow: -3600)) == false)
        #expect(try await store.contains(hash))
        // Freshening moves Last-Modified forward (S3 keeps whole seconds).
        let before = try #require(try await client.headObject(bucket: bucket, key: key(hash)).lastModified)
        try await Task.sleep(for: .milliseconds(1100))
        _ = try await store.put(hash, bytes)
        let after = try #require(try await client.headObject(bucket: bucket, key: key(hash)).lastModified)
        #expect(after > before)
        // Older than the cutoff: removed, and then missing.
        #expect(try await store.remove(hash, unlessModifiedSince: Date(timeIntervalSinceNow: 60)) == true)
        await #expect(throws: SnapshotError(.missingBlock, "")) { try await store.get(hash) }
    }

    @Test func syncDetectsAReusedBlockCollectedMeanwhile() async throws {
        let (hash, bytes) = Self.block(4)
        _ = try await store.put(hash, bytes)
        try await store.sync()
        #expect(try await store.put(hash, bytes) == false)  // reused (deduplicated)
        try await client.deleteObject(bucket: bucket, key: key(hash))  // a racing GC
        await #expect(throws: SnapshotError(.missingBlock, "")) { try await store.sync() }
    }

    /// A store whose client records the requests it sends.
    func recordingStore(conditionalWrites: Bool? = nil) throws -> (S3BlockStore, RecordingTransport) {
        let transport = RecordingTransport(CurlTransport(configuration: client.configuration))
        let recording = try S3Client(configuration: client.configuration, transport: transport, logger: Logger(label: "test"))
        let store = try S3BlockStore(
            client: recording, location: "s3://\(bucket)/\(prefix)v1", logger: Logger(label: "test"),
            conditionalWrites: conditionalWrites)
        return (store, transport)
    }

    @Test("a new block is one conditional PUT; a present one a refused PUT and the freshening copy, checked at sync")
    func conditionalPut() async throws {
        let (store, transport) = try recordingStore()
        let (warm, warmBytes) = Self.block(9)
        #expect(try await store.put(warm, warmBytes) == true)  // the probe happens here, once
        transport.reset()
        let (hash, bytes) = Self.block(5)
        #expect(try await store.put(hash, bytes) == true)
        #expect(transport.requests.map(\.method) == ["PUT"])
        #expect(transport.requests.first?.header("If-None-Match") == "*")
        transport.reset()
        #expect(try await store.put(hash, bytes) == false)
        #expect(transport.requests.map(\.method) == ["PUT", "PUT"], "refused PUT, then the self-copy")
        #expect(transport.requests.last?.header("x-amz-copy-source") != nil)
        // The reused block is checked again at sync: collected meanwhile, the commit must fail.
        try await client.deleteObject(bucket: bucket, key: key(hash))
        await #expect(throws: SnapshotError(.missingBlock, "")) { try await store.sync() }
        let keys = try await client.listAllObjects(bucket: bucket, prefix: prefix).map(\.key)
        #expect(keys == [key(warm)], "no probe object is left under the prefix")
    }

    @Test("without conditional writes a present block is found by the freshening copy and a new one uploaded")
    func copyFirst() async throws {
        let (store, transport) = try recordingStore(conditionalWrites: false)
        let (hash, bytes) = Self.block(6)
        #expect(try await store.put(hash, bytes) == true)
        #expect(transport.requests.map(\.method) == ["PUT", "PUT"], "the copy finds nothing, then the upload")
        #expect(transport.requests.allSatisfy { $0.header("If-None-Match") == nil })
        transport.reset()
        #expect(try await store.put(hash, bytes) == false)
        #expect(transport.requests.map(\.method) == ["PUT"], "one self-copy, no HEAD")
        try await client.deleteObject(bucket: bucket, key: key(hash))
        await #expect(throws: SnapshotError(.missingBlock, "")) { try await store.sync() }
    }

    @Test func locationsAreParsed() throws {
        #expect(throws: SnapshotError(.invalidArgument, "")) {
            try S3BlockStore(client: client, location: "/var/blocks", logger: Logger(label: "test"))
        }
        let store = try S3BlockStore(client: client, location: "s3://b", logger: Logger(label: "test"))
        #expect(store.bucket == "b" && store.prefix == "")
    }
}

