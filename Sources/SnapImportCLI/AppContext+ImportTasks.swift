import Foundation
import Importer
import Logging
import S3
import SnapshotCore

extension AppContext {
    /// The import-task engine of `snapimport serve` (the EC2 API's ImportSnapshot): the task rules and the
    /// runner `Service`, over the open store's `service` and the `[s3]` client (made on first use: the
    /// runner reads each task's bucket with it). The runner imports with the limits of `[limits]`
    /// (`concurrent_imports`, `concurrent_imports_per_customer`, `max_attempts`) and the pipeline settings
    /// of `run`; a key in a project's folder of the `[s3] bucket` belongs to that project.
    ///
    /// Give it the service of ``withLiveWorker(_:_:)``: the runner's task holds and object claims are then
    /// named after this process, and it takes over those of a provably dead runner at once.
    ///
    /// - Parameter options: runner options (defaults from the configuration).
    func importTaskEngine(
        service: SnapshotService, logger: Logger, options: ImportTaskRunner.Options? = nil
    ) throws -> (tasks: ImportTasks, runner: ImportTaskRunner) {
        let config = configuration
        let base = settings(bucket: config.s3.bucket ?? "")
        let tasks = ImportTasks(
            catalog: service.catalog,
            settings: ImportTasks.Settings(
                bucket: config.s3.bucket, layout: base.layout,
                maxDescriptionLength: service.options.maxDescriptionLength))
        let catalog = CoreImportCatalog(service: service)
        let client = try s3()
        let pipeline: @Sendable (String) -> ImportPipeline = { [settings = base] bucket in
            var settings = settings
            settings.bucket = bucket
            return ImportPipeline(
                store: S3ObjectStore(client: client, bucket: bucket), catalog: catalog, settings: settings,
                logger: logger)
        }
        let runnerOptions =
            options
            ?? ImportTaskRunner.Options(
                concurrentTasks: config.limits.concurrentImports,
                concurrentTasksPerCustomer: config.limits.concurrentImportsPerCustomer,
                leaseDuration: base.leaseDuration, maxAttempts: config.limits.maxAttempts,
                workerID: workerID.rawValue, liveWorker: service.ledger.worker)
        return (tasks, ImportTaskRunner(tasks: tasks, pipeline: pipeline, options: runnerOptions, logger: logger))
    }
}
