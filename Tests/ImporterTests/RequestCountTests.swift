import Foundation
import BlockStoreS3
import Importer
import Logging
import S3
import SnapshotCore
import SnapshotPostgres
import Synchronization
import S3TestSupport
import Testing

/// What an import costs in S3 requests, with the topology many workers share (PostgreSQL catalog, S3 block
/// store, SeaweedFS), counted on the wire.
@Suite(
    "S3 requests per import", .serialized, .enabled(if: E2E.isConfigured, E2E.skipReason),
    .enabled(if: E2E.hasPostgres, E2E.postgresSkipReason))
struct RequestCountTests {
    @Test("an image without a sidecar costs five requests: GET, block PUT, copy, receipt PUT, conditional DELETE")
    func fiveRequestsPerImage() async throws {
        let e2e = try #require(E2E.load("requests"))
        let plain = try e2e.client()
        let bucket = try await e2e.makeBucket(plain)
        var images: [String: [UInt8]] = [:]
        for index in 0..<3 {
            var image = [UInt8](repeating: 0, count: 64 << 10)
            for i in 0..<4096 { image[i] = UInt8.random(in: 0...255) }
            let key = "\(e2e.prefix)incoming/p@acme/img-\(index).raw"
            images[key] = image
            try await plain.putObject(
                bucket: bucket, key: key, body: image, metadata: index == 0 ? ["description": "from x-amz-meta"] : [:])
        }
        let transport = RecordingTransport(CurlTransport(configuration: plain.configuration))
        let client = try S3Client(configuration: plain.configuration, transport: transport, logger: Logger(label: "req"))
        let logger = Logger(label: "requests")
        let url = try #require(e2e.postgresSchemaURL())
        let (summary, descriptions) = try await withPostgresCatalog(url: url, logger: logger) { catalog in
            let service = try SnapshotService(
                catalog: catalog,
                blocks: try S3BlockStore(client: client, location: "s3://\(bucket)/\(e2e.prefix)blocks/", logger: logger),
                volumesDirectory: "\(e2e.work)/volumes", logger: logger)
            let pipeline = ImportPipeline(
                store: S3ObjectStore(client: client, bucket: bucket), catalog: CoreImportCatalog(service: service),
                settings: .init(bucket: bucket, layout: e2e.layout, workerID: "requests:1:ab"), logger: logger)
            let summary = await Importer(
                worker: pipeline, options: .init(concurrentImports: 1, once: true), clock: ContinuousClock(),
                logger: logger
            ).runPass()
            var descriptions: [String: String] = [:]
            for record in try await service.listSnapshots(caller: .operator) {
                if case .object(_, let key, _) = record.source { descriptions[key] = record.description }
            }
            return (summary, descriptions)
        }
        #expect(summary.imported.count == 3)
        #expect(descriptions["\(e2e.prefix)incoming/p@acme/img-0.raw"] == "from x-amz-meta", "the GET's metadata")
        #expect(descriptions["\(e2e.prefix)incoming/p@acme/img-1.raw"] == "img-1.raw")

        // Everything but the listing and the once-per-process probes, by image.
        let perImage = transport.requests.filter {
            !$0.url.contains("list-type=2") && !$0.url.contains(".snapimport-probe-") && !$0.url.contains("/blocks/probe/")
        }
        #expect(perImage.count == 15, "five requests for each of three images: \(perImage.map { "\($0.method) \($0.url)" })")
        #expect(!perImage.contains { $0.method == "HEAD" }, "no HEAD at all")
        for (key, _) in images {
            let name = key.split(separator: "/").last.map(String.init) ?? key
            let mine = perImage.filter { $0.url.contains(name) || $0.headers.contains { $0.value.contains(name) } }
            let kinds = mine.map { request -> String in
                if request.headers.contains(where: { $0.name.lowercased() == "x-amz-copy-source" }) { return "COPY" }
                if request.url.hasSuffix(".snapshot.json") { return "RECEIPT" }
                return request.method
            }
            #expect(kinds.sorted() == ["COPY", "DELETE", "GET", "RECEIPT"], "\(name): \(kinds)")
            #expect(mine.first { $0.method == "DELETE" }?.headers.contains { $0.name == "If-Match" } == true)
        }
        let blockPuts = perImage.filter { $0.url.contains("/blocks/") && $0.method == "PUT" }
        #expect(blockPuts.count == 3)
        #expect(blockPuts.allSatisfy { request in request.headers.contains { $0.name == "If-None-Match" && $0.value == "*" } })
        #expect(try await keys(plain, bucket, e2e.layout.incoming).isEmpty, "nothing left in incoming/")
        let processed = try await keys(plain, bucket, e2e.layout.processed)
        #expect(processed.count == 6, "each image and its receipt: \(processed)")
    }
}

/// A bucket that uploads a new version of an image right after its receipt is written, that is between the
/// copy to processed/ and the delete from incoming/; with `conditionalDelete` false it offers no
/// conditional DELETE (the HEAD-then-DELETE fallback runs).
final class ReplacingStore: ObjectStore {
    let base: S3ObjectStore
    let conditionalDelete: Bool
    let replacement: [UInt8]
    let replaced = Mutex<[String]>([])

    init(_ base: S3ObjectStore, conditionalDelete: Bool, replacement: [UInt8]) {
        self.base = base
        self.conditionalDelete = conditionalDelete
        self.replacement = replacement
    }

    func list(prefix: String) async throws -> [ObjectSummary] { try await base.list(prefix: prefix) }
    func head(key: String) async throws -> ObjectMetadata { try await base.head(key: key) }
    func get(key: String, range: Range<UInt64>?, ifMatch: String?) async throws -> [UInt8] {
        try await base.get(key: key, range: range, ifMatch: ifMatch)
    }
    @available(*, noasync)
    func getBlocking(key: String, range: Range<UInt64>, ifMatch: String?) throws -> [UInt8] {
        try base.getBlocking(key: key, range: range, ifMatch: ifMatch)
    }
    func put(key: String, body: [UInt8], contentType: String) async throws {
        try await base.put(key: key, body: body, contentType: contentType)
        guard key.hasSuffix(BucketLayout.receiptSuffix) else { return }
        // processed/<p>/<name>.snapshot.json → incoming/<p>/<name>
        let image = String(key.dropLast(BucketLayout.receiptSuffix.count)).replacingOccurrences(
            of: "/processed/", with: "/incoming/")
        try await base.put(key: image, body: replacement, contentType: "application/octet-stream")
        replaced.withLock { $0.append(image) }
    }
    func copy(from sourceKey: String, to destinationKey: String, ifMatch: String?) async throws {
        try await base.copy(from: sourceKey, to: destinationKey, ifMatch: ifMatch)
    }
    func delete(key: String) async throws { try await base.delete(key: key) }
    func delete(key: String, ifMatch etag: String) async throws -> Bool {
        conditionalDelete ? try await base.delete(key: key, ifMatch: etag) : false
    }
}

extension RequestCountTests {
    @Test(
        "an image replaced between its copy and its delete stays in incoming/ (conditional DELETE, and the HEAD fallback)",
        arguments: [true, false])
    func replacedBeforeTheDeleteIsKept(conditionalDelete: Bool) async throws {
        let e2e = try #require(E2E.load("replaced"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let key = "\(e2e.prefix)incoming/p@acme/disk.raw"
        var original = [UInt8](repeating: 0, count: 64 << 10)
        for i in 0..<4096 { original[i] = UInt8.random(in: 0...255) }
        try await client.putObject(bucket: bucket, key: key, body: original)
        let replacement = original.map { $0 ^ 0x5a }
        let store = ReplacingStore(
            S3ObjectStore(client: client, bucket: bucket), conditionalDelete: conditionalDelete, replacement: replacement)
        let logger = Logger(label: "replaced")
        let summary = try await withStore(data: "\(e2e.work)/data", catalogURL: nil) { service in
            let pipeline = ImportPipeline(
                store: store, catalog: CoreImportCatalog(service: service),
                settings: .init(bucket: bucket, layout: e2e.layout, workerID: "replaced:1:ab"), logger: logger)
            return await Importer(
                worker: pipeline, options: .init(concurrentImports: 1, once: true), clock: ContinuousClock(),
                logger: logger
            ).runPass()
        }
        #expect(summary.imported.count == 1)
        #expect(store.replaced.withLock { $0 } == [key])
        #expect(try await client.getObject(bucket: bucket, key: key) == replacement, "the new upload was kept")
        #expect(try await client.getObject(bucket: bucket, key: e2e.layout.processedKey(for: key)) == original)
    }
}
