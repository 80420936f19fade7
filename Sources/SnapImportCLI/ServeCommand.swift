import API
import Console
import ArgumentParser
import DiskImage
import Foundation
import Importer
import Logging
import Observability
import ServiceLifecycle
import SnapshotCore
import UnixSignals

/// `snapimport serve [--listen HOST:PORT] [--metrics HOST:PORT]`: the EC2-compatible API (docs/api.md) and the
/// web console at `/console/` (docs/console.md) until SIGTERM/SIGINT.
///
/// One `ServiceGroup` holds the HTTP server, the import-task runner (ImportSnapshot), the garbage
/// collector, with `--metrics` the Prometheus listener (API requests by action and status, and the
/// importer's metrics) and, with `[api] watch = true`, `watch`'s importer. On SIGTERM/SIGINT the server stops
/// accepting and finishes the requests in flight, and the runner and the importer finish (or, after
/// their grace period, cleanly abandon) their imports.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve the EC2-compatible API until SIGTERM/SIGINT.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "HOST:PORT to listen on (default: [api] listen, 127.0.0.1:8773; port 0 picks one).")
    var listen: String?

    @OptionGroup var metricsOption: MetricsOption

    func run() async throws {
        let context = try AppContext(global)
        let config = context.configuration
        // Requests are logged at debug (--verbose); the lifecycle and Hummingbird's own lines stay at info:
        // their debug output describes the services, and with them the store's configuration.
        let logger = context.logger("snapimport.serve", level: .info)
        let lifecycleLogger = {
            var quieter = logger
            quieter.logLevel = .info
            return quieter
        }()
        let settings: APIServer.Settings
        do {
            let (host, port) = try APIServer.Settings.parseListen(listen ?? config.api.listen)
            settings = APIServer.Settings(
                host: host, port: port, tlsCertificate: config.api.tlsCert, tlsKey: config.api.tlsKey)
        } catch {
            throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: global.json, exit: 2)
        }
        let scheme = settings.tlsCertificate == nil ? "http" : "https"
        let json = global.json
        // One registry for the API's request metrics and, with `[api] watch`, the importer's.
        let importMetrics = ImportMetrics()
        let apiMetrics = APIMetrics(actions: EC2Actions.names, registry: importMetrics.registry)
        let metricsListen = metricsOption.address
        let metricsLogger = context.logger("snapimport.metrics", level: .info)

        /// The server (and the worker services) over an open store, until a signal ends the group.
        @Sendable func serve(_ service: SnapshotService, _ workers: [ServiceGroupConfiguration.ServiceConfiguration])
            async throws
        {
            // The import-task engine needs the S3 client ([s3] and credentials); without them the server
            // still answers everything else, and ImportSnapshot says why it cannot.
            var workers = workers
            var imports: (any ImportTaskActions)?
            var tasks: ImportTasks?
            do {
                let engine = try context.importTaskEngine(service: service, logger: logger)
                imports = ImportSnapshotActions(tasks: engine.tasks)
                tasks = engine.tasks
                workers.append(.init(service: engine.runner))
            } catch {
                logger.warning("import tasks are unavailable (ImportSnapshot answers UnsupportedOperation): \(error)")
            }
            let actions = EC2Actions(
                snapshots: SnapshotActions(service: service), volumes: VolumeActions(service: service),
                imports: imports)
            var responder = EC2Responder(
                actions: actions, authenticator: context.authenticator(service: service), logger: logger)
            responder.onResponse = { action, status, duration in
                apiMetrics.requestFinished(action: action, status: status, duration: duration)
            }
            if let metricsListen {
                workers.append(
                    .init(
                        service: MetricsServer(
                            host: metricsListen.host, port: metricsListen.port, registry: importMetrics.registry,
                            logger: metricsLogger
                        ) { port in
                            // Beside the "listening on" line: scripts and tests read the metrics port from it.
                            FileHandle.standardOutput.write(
                                Data("snapimport serve: metrics on http://\(metricsListen.host):\(port)/metrics\n".utf8))
                        }))
            }
            let application: any Service
            do {
                let console = try context.console(
                    service: service, imports: tasks, secure: settings.tlsCertificate != nil, logger: logger)
                application = try APIServer.application(
                    responder: ConsoleMount(console: console, api: responder), settings: settings,
                    logger: lifecycleLogger
                ) { port in
                    // The one line on stdout: scripts and tests read the bound port from it.
                    FileHandle.standardOutput.write(
                        Data("snapimport serve: listening on \(scheme)://\(settings.host):\(port)\n".utf8))
                    logger.info("listening", metadata: ["address": "\(scheme)://\(settings.host):\(port)"])
                }
            } catch {
                throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: json, exit: 2)
            }
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: application)] + workers,
                    gracefulShutdownSignals: [.sigterm, .sigint], logger: lifecycleLogger))
            do {
                try await group.run()
            } catch let error as MetricsServerError {
                // The --metrics address is part of the command's configuration: exit 2.
                throw CommandOutput.failure(code: "InvalidConfiguration", message: error.description, json: json, exit: 2)
            }
        }

        if config.api.watch {
            DiskImage.tuneAllocatorForImports()
            let bucket = try context.bucket()
            try await context.withPipeline(bucket: bucket, logger: logger) { pipeline, service in
                let worker = MeteredWorker(pipeline, metrics: importMetrics, logger: logger)
                let importer = Importer(
                    worker: worker,
                    options: .init(
                        concurrentImports: config.limits.concurrentImports,
                        concurrentImportsPerCustomer: config.limits.concurrentImportsPerCustomer,
                        interval: .seconds(30), shutdownGracePeriod: .seconds(20)),
                    clock: ContinuousClock(), logger: logger, onPass: { worker.passEnded($0) })
                try await serve(
                    service,
                    [
                        .init(service: importer),
                        .init(
                            service: GarbageCollectionService(
                                service: service, interval: .seconds(3600), clock: ContinuousClock(), logger: logger)),
                    ])
            }
        } else {
            try await context.withStore(create: true, logger: logger) { service in
                // The import-task runner is a worker like `watch`'s: it holds this process's proof of life.
                try await context.withLiveWorker(service) { service in
                    try await serve(
                    service,
                    [
                        .init(
                            service: GarbageCollectionService(
                                service: service, interval: .seconds(3600), clock: ContinuousClock(), logger: logger))
                    ])
                }
            }
        }
    }
}
