import ArgumentParser
import DiskImage
import Foundation
import Importer
import Logging
import S3
import SnapshotCore
import SnapshotPostgres

/// What the importer commands (`run`, `watch`, `import`, `imports`) need: the configuration, the
/// S3 client, the snapshot service (SQLite or PostgreSQL catalog; filesystem or S3 block store) and
/// a pipeline wired from them. Problems with the configuration end the command with exit 2.
enum ImporterContext {
    static func configuration(_ global: GlobalOptions, environment: [String: String]) throws -> Configuration {
        do {
            return try Configuration.load(path: global.config, environment: environment)
        } catch {
            throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: global.json, exit: 2)
        }
    }

    /// A logger writing to stderr (no global bootstrap: the label names the command).
    static func logger(_ label: String, level: Logger.Level) -> Logger {
        var logger = Logger(label: label, factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = level
        return logger
    }

    static func s3Client(_ config: Configuration, global: GlobalOptions, environment: [String: String]) throws -> S3Client {
        do {
            return try S3Context.make(config: config, verbose: global.verbose, environment: environment).client
        } catch {
            throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: global.json, exit: 2)
        }
    }

    static func bucket(_ config: Configuration, json: Bool) throws -> String {
        guard let bucket = config.s3.bucket, !bucket.isEmpty else {
            throw CommandOutput.failure(
                code: "InvalidConfiguration", message: "no bucket configured: set [s3] bucket or SNAPIMPORT_BUCKET",
                json: json, exit: 2)
        }
        return bucket
    }

    /// Opens the snapshot service for `body`, then closes it (``StoreContext``). Opening failures exit 2.
    static func withService<R: Sendable>(
        _ config: Configuration, s3: S3Client?, json: Bool, logger: Logger,
        _ body: (SnapshotService) async throws -> R
    ) async throws -> R {
        try await StoreContext.withService(config, s3: s3, json: json, logger: logger, create: true, body)
    }

    /// Opens the snapshot service and wires the pipeline for objects of `bucket` (`run`, `watch`,
    /// `import s3://…`), runs `body`, closes the service. Configuration problems exit 2.
    static func withPipeline<R: Sendable>(
        _ config: Configuration, global: GlobalOptions, bucket: String, logger: Logger,
        environment: [String: String], _ body: (ImportPipeline, SnapshotService) async throws -> R
    ) async throws -> R {
        let client = try s3Client(config, global: global, environment: environment)
        let settings = settings(config, bucket: bucket, environment: environment)
        return try await withService(config, s3: client, json: global.json, logger: logger) { service in
            let pipeline = ImportPipeline(
                store: S3ObjectStore(client: client, bucket: bucket), catalog: CoreImportCatalog(service: service),
                settings: settings, logger: logger)
            return try await body(pipeline, service)
        }
    }

    /// `host:pid`: names this worker in claims and logs.
    static var workerID: String {
        "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
    }

    /// The pipeline settings from the configuration. `SNAPIMPORT_LEASE_SECONDS` shortens the claim
    /// lease (tests of crash recovery; the default is 60 s).
    static func settings(_ config: Configuration, bucket: String, environment: [String: String]) -> ImportPipeline.Settings {
        var lease = Duration.seconds(60)
        if let text = environment["SNAPIMPORT_LEASE_SECONDS"], let seconds = Double(text), seconds > 0 {
            lease = .milliseconds(Int64(seconds * 1000))
        }
        return ImportPipeline.Settings(
            bucket: bucket,
            layout: BucketLayout(
                incoming: config.layout.incoming, processed: config.layout.processed, failed: config.layout.failed),
            limits: InspectionLimits(maxVirtualSize: config.limits.maxVirtualSize),
            maxAttempts: config.limits.maxAttempts, leaseDuration: lease, workerID: workerID)
    }

    /// Prints a pass summary: JSON on stdout with `--json`, else human lines (stdout when `verbose`
    /// or when something needs a person; nothing on a quiet success).
    static func report(_ summary: PassSummary, json: Bool, verbose: Bool) {
        if json {
            CoreContext.printJSON(summary.document)
            return
        }
        guard verbose || !summary.succeeded else { return }
        if let error = summary.listingError { print("error: \(error.code): \(error.message)") }
        for result in summary.results {
            switch result.outcome {
            case .imported(let id): print("imported  \(id)  \(result.key)")
            case .alreadyImported(let id): print("done      \(id)  \(result.key) (already imported)")
            case .rejected(let code, let message): print("rejected  \(code)  \(result.key): \(message)")
            case .retried(let code, let message, let attempts):
                print("retry     \(code)  \(result.key) (attempt \(attempts)): \(message)")
            case .skipped(let reason): print("skipped   \(result.key): \(reason)")
            }
        }
        print(
            "\(summary.imported.count) imported, \(summary.rejected.count) rejected, \(summary.retried.count) retried, "
                + "\(summary.skipped.count) skipped")
    }
}

extension ImporterContext {
    /// An `s3://bucket/key` SOURCE as a byte source: one HEAD for the ETag and size, then ranged
    /// GETs pinned to that ETag. A missing object is `DiskImageError(.notFound)`; configuration
    /// problems exit 2.
    static func openS3Source(_ string: String, global: GlobalOptions) async throws -> any ByteSource {
        let location = try S3Location(string, requireKey: true)
        let environment = ProcessInfo.processInfo.environment
        let config = try configuration(global, environment: environment)
        let client = try s3Client(config, global: global, environment: environment)
        let store = S3ObjectStore(client: client, bucket: location.bucket)
        let head: ObjectMetadata
        do {
            head = try await store.head(key: location.key)
        } catch let error as ImporterError where error.code == .notFound {
            throw DiskImageError(.notFound, "no object \(string)")
        } catch {
            throw DiskImageError(.ioError, "\(string): \(error)")
        }
        return S3ObjectByteSource(store: store, key: location.key, etag: head.etag, size: head.size)
    }
}
