import ArgumentParser
import DiskImage
import Foundation
import Importer
import Logging
import ServiceLifecycle
import UnixSignals

/// `snapimport watch [--interval S]`: the daemon. Polls incoming/ every interval (one LIST per idle
/// pass), imports with bounded concurrency, logs progress, and on SIGTERM/SIGINT stops taking work
/// and finishes (or, after a grace period, cleanly abandons) the imports in flight.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Import images from incoming/ continuously until SIGTERM/SIGINT.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Seconds between passes over incoming/.")
    var interval: Double = 30

    @Option(name: .long, help: "Seconds in-flight imports get to finish after SIGTERM/SIGINT.")
    var shutdownGrace: Double = 20

    func validate() throws {
        guard interval > 0, interval <= 86_400 else { throw ValidationError("--interval must be 0 < S <= 86400") }
        guard shutdownGrace >= 0 else { throw ValidationError("--shutdown-grace must be >= 0") }
    }

    func run() async throws {
        DiskImage.tuneAllocatorForImports()
        let context = try AppContext(global)
        let config = context.configuration
        let bucket = try context.bucket()
        let logger = context.logger("snapimport.watch", level: .info)
        let interval = interval
        let grace = shutdownGrace
        try await context.withPipeline(bucket: bucket, logger: logger) { pipeline, service in
            let settings = pipeline.settings
            let importer = Importer(
                worker: pipeline,
                options: .init(
                    concurrentImports: config.limits.concurrentImports,
                    concurrentImportsPerCustomer: config.limits.concurrentImportsPerCustomer,
                    interval: .milliseconds(Int64(interval * 1000)),
                    shutdownGracePeriod: .milliseconds(Int64(grace * 1000))),
                clock: ContinuousClock(), logger: logger)
            logger.info(
                "watching s3://\(bucket)/\(settings.layout.incoming)",
                metadata: ["interval": "\(interval)s", "worker": "\(settings.workerID)"])
            let group = ServiceGroup(
                configuration: .init(
                    services: [
                        .init(service: importer),
                        .init(
                            service: GarbageCollectionService(
                                service: service, interval: .seconds(3600), clock: ContinuousClock(), logger: logger)),
                    ],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger))
            try await group.run()
        }
    }
}
