import Foundation
import ProcessTestSupport
import Testing
import BlockStoreS3
import Importer
import Logging
import S3
import SnapshotCore
import SnapshotStores
import SnapshotPostgres
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The servers and tools the end-to-end tests use, from the environment scripts/test exports.
struct E2E: Sendable {
    let endpoint: String
    let qemuImg: String
    let postgresURL: String?
    let work: String
    let environment: [String: String]
    /// Every test works under its own prefix of one shared bucket (SeaweedFS gives each bucket its
    /// own volumes, and a test run must not exhaust them).
    let prefix: String

    /// The bucket layout under ``prefix``.
    var layout: BucketLayout {
        BucketLayout(incoming: prefix + "incoming/", processed: prefix + "processed/", failed: prefix + "failed/")
    }

    /// One bucket per test process.
    static let sharedBucket = "importer-tests-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"

    static let environment = ProcessInfo.processInfo.environment

    /// Whether the servers the end-to-end suites need are configured (scripts/test sets them); the suites
    /// carry `.enabled(if: E2E.isConfigured, E2E.skipReason)`, so without them they are reported skipped.
    static let isConfigured: Bool = {
        let env = ProcessInfo.processInfo.environment
        return !(env["SNAPIMPORT_TEST_S3_ENDPOINT"] ?? "").isEmpty && !(env["SNAPIMPORT_TEST_QEMU_IMG"] ?? "").isEmpty
    }()
    static let skipReason: Comment = "SNAPIMPORT_TEST_S3_ENDPOINT or SNAPIMPORT_TEST_QEMU_IMG is unset (run scripts/test)"
    /// Whether PostgreSQL is configured too.
    static let hasPostgres = !(ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_POSTGRES_URL"] ?? "").isEmpty
    static let postgresSkipReason: Comment = "SNAPIMPORT_TEST_POSTGRES_URL is unset (run scripts/test)"

    /// The environment of one end-to-end test (nil only when the servers are not configured, which the
    /// suites' `.enabled(if:)` rules out: use `try #require(E2E.load(…))`).
    static func load(_ test: String) -> E2E? {
        let env = environment
        guard let endpoint = env["SNAPIMPORT_TEST_S3_ENDPOINT"], !endpoint.isEmpty,
            let qemu = env["SNAPIMPORT_TEST_QEMU_IMG"], !qemu.isEmpty
        else { return nil }
        let base = env["SNAPIMPORT_TEST_WORK"] ?? NSTemporaryDirectory()
        let work = "\(base)/importer-\(test)-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        return E2E(
            endpoint: endpoint, qemuImg: qemu, postgresURL: env["SNAPIMPORT_TEST_POSTGRES_URL"], work: work,
            environment: env, prefix: "\(test)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))/")
    }

    static var credentials: S3Credentials {
        S3Credentials(
            accessKeyID: environment["AWS_ACCESS_KEY_ID"] ?? "AKIDEXAMPLE",
            secretAccessKey: environment["AWS_SECRET_ACCESS_KEY"] ?? "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    }

    func client(endpoint: String? = nil, attempts: Int = 3) throws -> S3Client {
        let configuration = S3Configuration(
            endpoint: endpoint ?? self.endpoint, region: environment["AWS_REGION"] ?? "us-east-1",
            credentials: Self.credentials, connectTimeout: 2, stallTimeout: 5,
            retry: S3RetryPolicy(
                maxAttempts: attempts, baseDelay: .milliseconds(50), maxDelay: .milliseconds(200),
                maxTotalTime: .seconds(3)))
        return try S3Client(configuration: configuration, logger: Logger(label: "e2e"))
    }

    func makeBucket(_ client: S3Client) async throws -> String {
        // CreateBucket succeeds when the bucket exists and is ours.
        try await client.createBucket(Self.sharedBucket)
        return Self.sharedBucket
    }

    /// A config file for the CLI: the bucket, a store directory, and optionally a PostgreSQL catalog.
    func writeConfig(
        bucket: String, data: String, catalog: String? = nil, blocks: String? = nil, name: String = "snapimport.toml"
    ) throws -> String {
        var text = """
            [s3]
            endpoint = "\(endpoint)"
            region = "\(environment["AWS_REGION"] ?? "us-east-1")"
            bucket = "\(bucket)"

            [store]
            path = "\(data)"

            """
        if let catalog { text += "catalog = \"\(catalog)\"\n" }
        if let blocks { text += "blocks = \"\(blocks)\"\n" }
        text += """

            [layout]
            incoming = "\(prefix)incoming/"
            processed = "\(prefix)processed/"
            failed = "\(prefix)failed/"

            """
        text += "\n[limits]\nmax_attempts = 3\nconcurrent_imports = 2\n"
        let path = "\(work)/\(name)"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        return path
    }

    /// A PostgreSQL URL with a fresh schema (isolates each test).
    func postgresSchemaURL() -> String? {
        guard let url = postgresURL else { return nil }
        let schema = "imp_\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        return url + (url.contains("?") ? "&" : "?") + "schema=\(schema)"
    }
}

// MARK: - Processes

typealias ProcessResult = ProcessOutput

enum Tools {
    /// The built `snapimport` next to the test bundle (or from `swift build --show-bin-path`).
    static func snapimportBinary() throws -> String {
        if let path = ChildProcess.snapimportBinary { return path }
        let root = ChildProcess.repositoryRoot
        let binPath = try run("/usr/bin/env", ["swift", "build", "--show-bin-path"], directory: root.path).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let path = binPath + "/snapimport"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw HarnessError("snapimport binary not found (next to the tests, .build/debug, \(path)); run swift build first")
        }
        return path
    }

    static func start(
        _ tool: String, _ args: [String], environment: [String: String]? = nil, directory: String? = nil
    ) throws -> ChildProcess {
        try ChildProcess(tool, args, environment: environment, directory: directory)
    }

    static func finish(_ started: ChildProcess) -> ProcessResult { started.wait() }

    @discardableResult
    static func run(
        _ tool: String, _ args: [String], environment: [String: String]? = nil, directory: String? = nil
    ) throws -> ProcessResult {
        try ChildProcess.run(tool, args, environment: environment, directory: directory)
    }

    static func qemuImg(_ e2e: E2E, _ args: [String]) throws {
        let result = try run(e2e.qemuImg, args)
        guard result.status == 0 else { throw HarnessError("qemu-img \(args.joined(separator: " ")): \(result.stderr)") }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Fixtures

/// One generated image, with the reference bytes qemu-img reads from it.
struct Fixture: Sendable {
    var name: String
    var path: String
    var qemuFormat: String
}

enum Fixtures {
    /// A raw disk of `size` bytes: an MBR signature, patterned runs at odd offsets, zeros elsewhere.
    static func baseDisk(size: Int, seed: UInt8) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: size)
        bytes[510] = 0x55
        bytes[511] = 0xAA
        for (start, length) in [(4096, 70_000), (size / 2 + 513, 131_071), (size - 5000, 4000)] {
            for i in 0..<length where start + i < size {
                bytes[start + i] = UInt8(truncatingIfNeeded: (start + i) &* 7 &+ Int(seed) &+ i >> 9)
            }
        }
        return bytes
    }

    /// Every format and sub-format snapimport reads, converted by qemu-img from one raw disk.
    static func everyFormat(_ e2e: E2E, directory: String, seed: UInt8) throws -> [Fixture] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let raw = "\(directory)/base.raw"
        try Data(baseDisk(size: 3 << 20, seed: seed)).write(to: URL(fileURLWithPath: raw))
        var fixtures = [Fixture(name: "disk.raw", path: raw, qemuFormat: "raw")]
        let conversions: [(String, [String], String)] = [
            ("disk.qcow2", ["-O", "qcow2"], "qcow2"),
            ("compressed.qcow2", ["-O", "qcow2", "-c", "-o", "cluster_size=65536"], "qcow2"),
            ("stream.vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"], "vmdk"),
            ("sparse.vmdk", ["-O", "vmdk", "-o", "subformat=monolithicSparse"], "vmdk"),
            ("dynamic.vhd", ["-O", "vpc", "-o", "subformat=dynamic"], "vpc"),
            ("fixed.vhd", ["-O", "vpc", "-o", "subformat=fixed"], "vpc"),
            ("disk.vhdx", ["-O", "vhdx"], "vhdx"),
            ("disk.vdi", ["-O", "vdi"], "vdi"),
        ]
        for (name, options, format) in conversions {
            let path = "\(directory)/\(name)"
            try Tools.qemuImg(e2e, ["convert", "-f", "raw"] + options + [raw, path])
            fixtures.append(Fixture(name: name, path: path, qemuFormat: format))
        }
        return fixtures
    }

    /// A qcow2 whose backing file is a host path: must be refused (BackingFileNotAllowed).
    static func hostile(_ e2e: E2E, directory: String) throws -> Fixture {
        let path = "\(directory)/hostile.qcow2"
        try Tools.qemuImg(e2e, ["create", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", path, "1M"])
        return Fixture(name: "hostile.qcow2", path: path, qemuFormat: "qcow2")
    }

    /// What `qemu-img convert -O raw` makes of a fixture.
    static func reference(_ e2e: E2E, _ fixture: Fixture) throws -> [UInt8] {
        let out = fixture.path + ".ref.raw"
        try Tools.qemuImg(e2e, ["convert", "-f", fixture.qemuFormat, "-O", "raw", fixture.path, out])
        defer { try? FileManager.default.removeItem(atPath: out) }
        return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
    }
}

// MARK: - The store, read back

/// Opens the data directory's store (SQLite, or the PostgreSQL catalog when `catalogURL` is set).
/// With `blocks` (an `s3://bucket/prefix/` read through `e2e`'s client), the shared S3 block store.
func withStore<R: Sendable>(
    data: String, catalogURL: String?, options: SnapshotServiceOptions? = nil, blocks: (E2E, String)? = nil,
    _ body: (SnapshotService) async throws -> R
) async throws -> R {
    let logger = Logger(label: "e2e.store")
    if let catalogURL {
        return try await withPostgresCatalog(url: catalogURL, logger: logger) { catalog in
            if let (e2e, location) = blocks {
                return try await body(
                    SnapshotService(
                        catalog: catalog,
                        blocks: S3BlockStore(client: try e2e.client(), location: location, logger: logger),
                        volumesDirectory: "\(data)/volumes", options: options ?? SnapshotServiceOptions(),
                        logger: logger))
            }
            return try await body(LocalStore.open(path: data, catalog: catalog, options: options, logger: logger))
        }
    }
    // A worker may be creating the SQLite file right now: SQLiteCatalog retries that race itself.
    let service = try LocalStore.open(path: data, options: options, logger: logger)
    let result = try await body(service)
    try? await service.catalog.close()
    return result
}

/// The virtual disk of a committed snapshot, rebuilt from its manifest and blocks.
func snapshotBytes(_ service: SnapshotService, _ record: SnapshotRecord) async throws -> [UInt8] {
    guard let manifest = try await service.catalog.manifest(record.id) else {
        throw HarnessError("no manifest for \(record.id)")
    }
    var bytes = [UInt8](repeating: 0, count: Int(record.virtualSize))
    for entry in manifest.entries {
        let block = try await service.blocks.get(entry.hash)
        let start = Int(entry.index) * record.blockSize
        bytes.replaceSubrange(start..<start + block.count, with: block)
    }
    return bytes
}

/// Objects (keys) under a prefix.
func keys(_ client: S3Client, _ bucket: String, _ prefix: String) async throws -> [String] {
    try await client.listAllObjects(bucket: bucket, prefix: prefix).map(\.key)
}

func jsonObject(_ text: String) throws -> [String: Any] {
    guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
        throw HarnessError("not a JSON object: \(text)")
    }
    return object
}
