import ArgumentParser
import DiskImage
import Foundation
import Importer
import Logging
import ServiceLifecycle
import UnixSignals

/// `snapimport run [--json]`: one pass over incoming/, for cron. Quiet on success unless `--json`
/// or `--verbose`; exit 0 when every image was imported (now or before), 1 when any was rejected or
/// failed, 2 on bad configuration.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Import every image in incoming/ once, then exit (for cron).")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        DiskImage.tuneAllocatorForImports()
        let context = try AppContext(global)
        let config = context.configuration
        let logger = context.logger("snapimport.run")
        // On a terminal, a live line per import in flight (not with --json, whose stdout is one document).
        let live = isatty(STDERR_FILENO) == 1 && !global.json ? InFlightImports() : nil
        let summary = try await context.withPipeline(bucket: try context.bucket(), logger: logger, inFlight: live) {
            pipeline, service in
            let importer = Importer(
                worker: pipeline,
                options: .init(
                    concurrentImports: config.limits.concurrentImports,
                    concurrentImportsPerCustomer: config.limits.concurrentImportsPerCustomer, once: true),
                clock: ContinuousClock(), logger: logger)
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: importer, successTerminationBehavior: .gracefullyShutdownGroup)],
                    gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            if let live {
                try await withThrowingDiscardingTaskGroup { lines in
                    lines.addTask { await LiveImportLines(live).run() }
                    try await group.run()
                    lines.cancelAll()
                }
            } else {
                try await group.run()
            }
            // Blocks of imports that a crash abandoned (and of deleted snapshots) go at the end of a pass.
            await GarbageCollectionService<ContinuousClock>.collect(service, logger: logger)
            return importer.summaries.last ?? PassSummary()
        }
        CommandOutput.report(summary, json: global.json, verbose: global.verbose)
        // Refused credentials (the listing was denied) are a configuration error: 2, as for a bad config.
        if summary.listingError?.code == .accessDenied { throw ExitCode(2) }
        if !summary.succeeded { throw ExitCode(1) }
    }
}
