import ArgumentParser
import BlockStoreS3
import DiskImage
import Foundation
import Importer
import Logging
import Observability
import S3
import SnapshotCore
import SnapshotPostgres
import SnapshotSQLite
import SnapshotStores
import Synchronization

/// The composition root of one run: built once from the global options, it holds the configuration
/// and the environment, makes the loggers, the S3 client (on first use: commands that touch only the
/// store need no credentials) and opens the store (SQLite or PostgreSQL catalog; filesystem or S3 block
/// store) for the body of a command. Every command gets what it needs from here.
///
/// Configuration and credential problems are `CommandError`s with exit status 2.
final class AppContext: Sendable {
    let json: Bool
    let verbose: Bool
    /// `--log-format`: text lines or one JSON object per line.
    let logFormat: LogFormat
    let environment: [String: String]
    let configuration: Configuration
    // Made on first use, then kept for the run.
    private let client = Mutex<S3Client?>(nil)

    /// Loads the configuration (`--config`, `$SNAPIMPORT_CONFIG`, `./config/snapimport.toml`).
    init(_ global: GlobalOptions, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        json = global.json
        verbose = global.verbose
        logFormat = global.logFormat
        self.environment = environment
        do {
            configuration = try Configuration.load(path: global.config, environment: environment)
        } catch {
            throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: global.json, exit: 2)
        }
    }

    /// A logger writing to stderr in the `--log-format` (no global bootstrap: the label names the
    /// command), at `level`, or at debug with `--verbose` and warning otherwise.
    func logger(_ label: String, level: Logger.Level? = nil) -> Logger {
        let format = logFormat
        var logger = Logger(label: label, factory: { format.handler(label: $0) })
        logger.logLevel = verbose ? .debug : (level ?? .warning)
        return logger
    }

    // MARK: - S3

    /// The S3 client. Endpoint: `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL` (applied by the configuration),
    /// then `[s3] endpoint`, then the AWS profile's `endpoint_url`, then AWS itself; region likewise
    /// (`AWS_REGION`/`AWS_DEFAULT_REGION`, `[s3] region`, the profile, `us-east-1`).
    func s3() throws -> S3Client {
        try client.withLock { client in
            if let client { return client }
            let made: S3Client
            do {
                made = try makeClient()
            } catch {
                throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: json, exit: 2)
            }
            client = made
            return made
        }
    }

    private func makeClient() throws -> S3Client {
        let home = environment["HOME"]
        let config = configuration
        let region =
            config.s3.region ?? S3Configuration.region(environment: environment, homeDirectory: home) ?? "us-east-1"
        let endpoint =
            config.s3.endpoint ?? S3Configuration.endpoint(environment: environment, homeDirectory: home)
            ?? "https://s3.\(region).amazonaws.com"
        let credentials = try S3Credentials.resolve(environment: environment, homeDirectory: home)
        let s3 = S3Configuration(
            endpoint: endpoint, region: region, credentials: credentials,
            addressing: config.s3.addressing == "virtual" ? .virtual : .path, caFile: config.s3.caFile)
        return try S3Client(configuration: s3, logger: logger("snapimport.s3"))
    }

    /// The configured bucket (`[s3] bucket` / `SNAPIMPORT_BUCKET`).
    func bucket() throws -> String {
        guard let bucket = configuration.s3.bucket, !bucket.isEmpty else {
            throw CommandOutput.failure(
                code: "InvalidConfiguration", message: "no bucket configured: set [s3] bucket or SNAPIMPORT_BUCKET",
                json: json, exit: 2)
        }
        return bucket
    }

    /// An `s3://bucket/key` SOURCE as a byte source: one HEAD for the ETag and size, then ranged
    /// GETs pinned to that ETag. A missing object is `DiskImageError(.notFound)`.
    func openS3Source(_ string: String) async throws -> any ByteSource {
        let location = try S3Location(string, requireKey: true)
        let store = S3ObjectStore(client: try s3(), bucket: location.bucket)
        let head: ObjectMetadata
        do {
            head = try await store.head(key: location.key)
        } catch let error as ImporterError where error.code == .notFound {
            throw DiskImageError(.notFound, "no object \(string)")
        } catch let error as ImporterError where error.code == .accessDenied {
            throw CommandOutput.failure(
                code: "AccessDenied", message: "\(string): \(error.message)", json: json, exit: 2)
        } catch {
            throw DiskImageError(.ioError, "\(string): \(error)")
        }
        return S3ObjectByteSource(store: store, key: location.key, etag: head.etag, size: head.size)
    }

    // MARK: - The store

    /// Opens the snapshot service that `[store]` names, runs `body`, closes the catalog. Errors thrown
    /// by `body` propagate unchanged.
    ///
    /// - Parameter create: whether a missing store may be created. Only the commands that put snapshots
    ///   into a store (`run`, `watch`, `import`) create one; any other command on a missing store fails
    ///   with `NotFound` naming the path, rather than answering from a new, empty store (a wrong working
    ///   directory or config would otherwise look like "no snapshots").
    func withStore<R: Sendable>(
        create: Bool = false, logger: Logger? = nil, _ body: (SnapshotService) async throws -> R
    ) async throws -> R {
        let config = configuration
        let logger = logger ?? self.logger("snapimport.core")
        // A SQLite catalog is the store's mark (a PostgreSQL catalog lives on its server).
        let catalogFile = "\(config.store.path)/catalog.sqlite"
        if !create, config.store.catalog == nil, !FileManager.default.fileExists(atPath: catalogFile) {
            throw CommandOutput.failure(
                code: "NotFound",
                message: "no snapimport store at \(config.store.path) (no \(catalogFile)); check [store] path "
                    + "(a relative path is taken from the configuration file's folder) or import something first",
                json: json, exit: 2)
        }
        func open(_ catalog: (any Catalog)?) throws -> SnapshotService {
            do {
                guard let blocks = config.store.blocks else {
                    return try LocalStore.open(
                        path: config.store.path, blockSize: config.store.blockSize, catalog: catalog, logger: logger)
                }
                let client = try s3()
                try FileManager.default.createDirectory(atPath: config.store.path, withIntermediateDirectories: true)
                var options = SnapshotServiceOptions()
                if let size = config.store.blockSize { options.blockSize = size }
                return try SnapshotService(
                    catalog: try catalog ?? SQLiteCatalog(path: catalogFile),
                    blocks: try S3BlockStore(client: client, location: blocks, logger: logger),
                    volumesDirectory: "\(config.store.path)/volumes", options: options, logger: logger)
            } catch let error as CommandError {
                throw error
            } catch {
                throw CommandOutput.failure(
                    code: "InvalidConfiguration", message: "cannot open the store: \(ErrorText.plain(error))",
                    json: json, exit: 2)
            }
        }
        if let url = config.store.catalog {
            let catalog: PostgresCatalog
            do {
                catalog = try PostgresCatalog(url: url, logger: logger)
            } catch {
                throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: json, exit: 2)
            }
            return try await withPostgresCatalog(catalog) { catalog in try await body(try open(catalog)) }
        }
        let service = try open(nil)
        do {
            let result = try await body(service)
            try? await service.catalog.close()
            return result
        } catch {
            try? await service.catalog.close()
            throw error
        }
    }

    /// ``withStore(create:logger:_:)`` for the snapshot, volume, instance, template and imports
    /// commands: an existing store, and the core's errors in the CLI contract's terms.
    func withExistingStore<R: Sendable>(_ body: (SnapshotService) async throws -> R) async throws -> R {
        do {
            return try await withStore(body)
        } catch {
            throw CommandOutput.failure(error, json: json)
        }
    }

    // MARK: - The importer

    /// `<store>/scratch`, created on demand; nil (the system's temporary folder) when it cannot be.
    func scratchDirectory() -> String? {
        let path = "\(configuration.store.path)/scratch"
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            return path
        } catch {
            return nil
        }
    }

    /// This process as a worker, named in claims, pending snapshots and logs: `SNAPIMPORT_WORKER_NAME`
    /// (default: the host name), the process ID and a nonce drawn once per run.
    var workerID: WorkerID {
        Self.worker.withLock { id in
            if let id { return id }
            let name = environment["SNAPIMPORT_WORKER_NAME"].flatMap { $0.isEmpty ? nil : $0 }
            let process = ProcessInfo.processInfo
            let made = WorkerID(name: name ?? process.hostName, pid: process.processIdentifier)
            id = made
            return made
        }
    }
    // One identity per process, whatever number of contexts a run makes.
    private static let worker = Mutex<WorkerID?>(nil)

    /// Runs `body` with `service` acting as this worker (`run`, `watch`, `import`; later `serve`): holds the
    /// worker's proof of life for the duration — an `flock` on `<store>/workers/<id>.lock` and, with a
    /// PostgreSQL catalog, a session advisory lock — so that other workers take over its claims and
    /// pending snapshots the moment it dies, and it takes over theirs (see `WorkerLiveness`).
    func withLiveWorker<R: Sendable>(
        _ service: SnapshotService, _ body: (SnapshotService) async throws -> R
    ) async throws -> R {
        var parts: [any WorkerLiveness] = [FileLockLiveness(storePath: configuration.store.path)]
        if let catalog = service.catalog as? PostgresCatalog { parts.append(PostgresWorkerLiveness(catalog: catalog)) }
        let liveness = CombinedWorkerLiveness(parts)
        let id = workerID
        do {
            try await liveness.register(id)
        } catch {
            throw CommandOutput.failure(
                code: "InvalidConfiguration", message: "cannot hold this worker's proof of life: \(error)", json: json,
                exit: 2)
        }
        do {
            let result = try await body(service.forWorker(LiveWorker(id: id, liveness: liveness)))
            await liveness.release(id)
            return result
        } catch {
            await liveness.release(id)
            throw error
        }
    }

    /// The pipeline settings from the configuration. `SNAPIMPORT_LEASE_SECONDS` shortens the claim
    /// lease (tests of crash recovery; the default is 60 s).
    func settings(bucket: String) -> ImportPipeline.Settings {
        var lease = Duration.seconds(60)
        if let text = environment["SNAPIMPORT_LEASE_SECONDS"], let seconds = Double(text), seconds > 0 {
            lease = .milliseconds(Int64(seconds * 1000))
        }
        let config = configuration
        return ImportPipeline.Settings(
            bucket: bucket,
            layout: BucketLayout(
                incoming: config.layout.incoming, processed: config.layout.processed, failed: config.layout.failed),
            // A random-access disk inside a compressed stream is spilled (sparse, unlinked at once) beside
            // the store, not into a possibly small /tmp.
            limits: InspectionLimits(
                maxVirtualSize: config.limits.maxVirtualSize, scratchDirectory: scratchDirectory()),
            maxAttempts: config.limits.maxAttempts, leaseDuration: lease, workerID: workerID.rawValue)
    }

    /// Opens the store (creating it when needed) and wires the pipeline for objects of `bucket`
    /// (`run`, `watch`, `import s3://…`), runs `body`, closes the store.
    func withPipeline<R: Sendable>(
        bucket: String, logger: Logger, inFlight: InFlightImports? = nil,
        _ body: (ImportPipeline, SnapshotService) async throws -> R
    ) async throws -> R {
        let client = try s3()
        let settings = settings(bucket: bucket)
        return try await withStore(create: true, logger: logger) { service in
            try await withLiveWorker(service) { service in
                let pipeline = ImportPipeline(
                    store: S3ObjectStore(client: client, bucket: bucket), catalog: CoreImportCatalog(service: service),
                    settings: settings, logger: logger, inFlight: inFlight)
                return try await body(pipeline, service)
            }
        }
    }
}
