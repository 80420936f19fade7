import ArgumentParser
import DiskImage
import Foundation
import Importer
import Logging
import Observability
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

    @OptionGroup var metricsOption: MetricsOption

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
        let listen = metricsOption.address
        try await context.withPipeline(bucket: bucket, logger: logger) { pipeline, service in
            let settings = pipeline.settings
            let importMetrics = ImportMetrics()
            let worker = MeteredWorker(pipeline, metrics: importMetrics, logger: logger)
            let importer = Importer(
                worker: worker,
                options: .init(
                    concurrentImports: config.limits.concurrentImports,
                    concurrentImportsPerCustomer: config.limits.concurrentImportsPerCustomer,
                    interval: .milliseconds(Int64(interval * 1000)),
                    shutdownGracePeriod: .milliseconds(Int64(grace * 1000))),
                clock: ContinuousClock(), logger: logger, onPass: { worker.passEnded($0) })
            logger.info(
                "watching s3://\(bucket)/\(settings.layout.incoming)",
                metadata: ["interval": "\(interval)s", "worker": "\(settings.workerID)"])
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
                .init(service: importer),
                .init(
                    service: GarbageCollectionService(
                        service: service, interval: .seconds(3600), clock: ContinuousClock(), logger: logger)),
            ]
            if let listen {
                services.append(
                    .init(
                        service: MetricsServer(
                            host: listen.host, port: listen.port, registry: importMetrics.registry,
                            logger: context.logger("snapimport.metrics", level: .info))))
            }
            let group = ServiceGroup(
                configuration: .init(
                    services: services,
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger))
            do {
                try await group.run()
            } catch let error as MetricsServerError {
                // The --metrics address is part of the command's configuration: exit 2.
                throw CommandOutput.failure(
                    code: "InvalidConfiguration", message: error.description, json: global.json, exit: 2)
            }
        }
    }
}
