import DiskImage
import Foundation
public import Logging
public import ServiceLifecycle
public import SnapshotCore

/// Runs import tasks (``ImportTasks``) as a swift-service-lifecycle `Service` beside the API server.
///
/// It polls the catalog's active tasks (and wakes at once when a task is started in this process), holds
/// each task it runs with a lease on the task row (renewed every third of it), and runs the task's object
/// import through ``ImportPipeline/importForTask(key:head:owner:description:claimedFormat:progress:)``: the
/// same claim, validation and progress as `run` and `import s3://…`. At most `concurrentTasks` run at once,
/// at most `concurrentTasksPerCustomer` for one customer.
///
/// How a task ends:
/// - committed (or the object version was imported before): `completed` with its snapshot;
/// - rejected: `deleted`, `ClientError: <Code>: <message>` (the stable codes);
/// - transient failures (S3 5xx, the network, a lost lease) are retried with backoff; after
///   `maxAttempts` the task ends `deleted`, `ServerError: <Code>: <message>`;
/// - cancelled (the row turned `deleted`): the running import is cancelled within `watchInterval`; its
///   claim is released and its pending snapshot dropped.
///
/// Restarts: a task whose runner vanished is taken over at once when its death is provable (``Options/liveWorker``),
/// otherwise it keeps its lease until it expires, then any runner takes it over
/// and imports it again (the object claim is taken over the same way). On graceful shutdown the runner
/// takes no new task, gives running ones `shutdownGracePeriod`, then interrupts them and hands them back
/// (still `active`, no runner): the next start resumes them at once.
public final class ImportTaskRunner: Service {
    public struct Options: Sendable {
        public var concurrentTasks: Int
        public var concurrentTasksPerCustomer: Int
        /// How often the catalog is polled for active tasks (a task started in this process wakes it at once).
        public var pollInterval: Duration
        /// The runner's hold on a task row.
        public var leaseDuration: Duration
        /// How often a running task's row is re-read to notice a cancellation.
        public var watchInterval: Duration
        /// Transient failures before a task ends `deleted` with a `ServerError`.
        public var maxAttempts: Int
        /// The wait after the first transient failure; doubled after each, at most a minute.
        public var retryDelay: Duration
        /// The wait when another worker holds the object's claim.
        public var busyDelay: Duration
        public var shutdownGracePeriod: Duration
        /// How often abandoned imports (pending snapshots and claims whose lease expired) are recovered.
        public var recoveryInterval: Duration
        /// Names this runner in task leases (a ``WorkerID``; its holds are `<id>/<random>` tokens).
        public var workerID: String
        /// This process's proof of life (`AppContext.withLiveWorker`): a task held under an unexpired lease
        /// by a runner that provably died (its lock is free) is taken over at once instead of after the
        /// lease. Nil: only the lease ends a hold.
        public var liveWorker: LiveWorker?

        public init(
            concurrentTasks: Int = 4, concurrentTasksPerCustomer: Int = 16, pollInterval: Duration = .seconds(2),
            leaseDuration: Duration = .seconds(60), watchInterval: Duration = .milliseconds(500), maxAttempts: Int = 5,
            retryDelay: Duration = .seconds(2), busyDelay: Duration = .seconds(5),
            shutdownGracePeriod: Duration = .seconds(10), recoveryInterval: Duration = .seconds(30), workerID: String,
            liveWorker: LiveWorker? = nil
        ) {
            self.concurrentTasks = max(1, concurrentTasks)
            self.concurrentTasksPerCustomer = max(1, concurrentTasksPerCustomer)
            self.pollInterval = pollInterval
            self.leaseDuration = leaseDuration
            self.watchInterval = watchInterval
            self.maxAttempts = max(1, maxAttempts)
            self.retryDelay = retryDelay
            self.busyDelay = busyDelay
            self.shutdownGracePeriod = shutdownGracePeriod
            self.recoveryInterval = recoveryInterval
            self.workerID = workerID
            self.liveWorker = liveWorker
        }
    }

    private let tasks: ImportTasks
    private let pipeline: @Sendable (String) -> ImportPipeline
    private let options: Options
    private let logger: Logger

    /// - Parameters:
    ///   - tasks: the task rules and catalog (their wakeup is this runner's).
    ///   - pipeline: the object import for a bucket (its store reads that bucket with the server's S3 client).
    public init(
        tasks: ImportTasks, pipeline: @escaping @Sendable (_ bucket: String) -> ImportPipeline, options: Options,
        logger: Logger
    ) {
        self.tasks = tasks
        self.pipeline = pipeline
        self.options = options
        self.logger = logger
    }

    private var catalog: any Catalog { tasks.catalog }

    private enum Event: Sendable {
        case poll
        case finished(ImportTaskID, retryAt: ContinuousClock.Instant?)
        case shutdown
        case abandon
    }

    public func run() async throws {
        let (events, emit) = AsyncStream.makeStream(of: Event.self)
        let options = options
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    emit.yield(.poll)
                    try? await Task.sleep(for: options.pollInterval)
                }
            }
            group.addTask { [wakeup = tasks.wakeup] in
                for await _ in wakeup.signals { emit.yield(.poll) }
            }
            group.addTask {
                guard (try? await gracefulShutdown()) != nil else { return }
                emit.yield(.shutdown)
                try? await Task.sleep(for: options.shutdownGracePeriod)
                emit.yield(.abandon)
            }
            var running: [ImportTaskID: String] = [:]
            var retryAt: [ImportTaskID: ContinuousClock.Instant] = [:]
            var stopping = false
            var lastRecovery: ContinuousClock.Instant?
            for await event in events {
                switch event {
                case .poll:
                    guard !stopping else { break }
                    if lastRecovery.map({ ContinuousClock.now - $0 >= options.recoveryInterval }) ?? true {
                        lastRecovery = ContinuousClock.now
                        await recoverAbandoned()
                    }
                    await fill(&running, retryAt: &retryAt, group: &group, emit: emit)
                case .finished(let id, let at):
                    running[id] = nil
                    retryAt[id] = at
                    if !stopping { await fill(&running, retryAt: &retryAt, group: &group, emit: emit) }
                case .shutdown:
                    stopping = true
                    if !running.isEmpty {
                        logger.info(
                            "shutting down: no new import tasks; \(running.count) running get \(options.shutdownGracePeriod)"
                        )
                    }
                case .abandon:
                    if !running.isEmpty { logger.warning("interrupting \(running.count) import task(s) still running") }
                    group.cancelAll()
                }
                if (stopping || Task.isCancelled) && running.isEmpty { break }
            }
            group.cancelAll()
        }
    }

    /// Starts active tasks while there is room.
    private func fill(
        _ running: inout [ImportTaskID: String], retryAt: inout [ImportTaskID: ContinuousClock.Instant],
        group: inout TaskGroup<Void>, emit: AsyncStream<Event>.Continuation
    ) async {
        var cursor: ImportTaskID?
        let now = ContinuousClock.now
        retryAt = retryAt.filter { $0.value > now }
        while running.count < options.concurrentTasks {
            let page: [ImportTaskRecord]
            do {
                page = try await catalog.importTasks(in: .active, after: cursor, limit: 100)
            } catch {
                logger.warning("listing active import tasks failed: \(error)")
                return
            }
            for task in page where running[task.id] == nil && retryAt[task.id] == nil {
                guard running.count < options.concurrentTasks else { return }
                let customer = task.owner.customer
                guard running.values.filter({ $0 == customer }).count < options.concurrentTasksPerCustomer else {
                    continue
                }
                guard let held = await take(task) else { continue }
                running[task.id] = customer
                group.addTask { [self] in
                    let retry = await execute(held)
                    emit.yield(.finished(held.id, retryAt: retry))
                }
            }
            guard page.count == 100, let last = page.last else { return }
            cursor = last.id
        }
    }

    private func recoverAbandoned() async {
        do {
            try await pipeline("").catalog.recoverAbandoned()
        } catch {
            logger.warning("recovering abandoned imports failed: \(error)")
        }
    }

    // MARK: - One task

    /// Takes a task whose runner is gone (none, its lease ended, or it provably died). - Returns: the task
    /// as held, or nil.
    private func take(_ task: ImportTaskRecord) async -> ImportTaskRecord? {
        let now = Date()
        if let holder = task.worker, let lease = task.leaseExpiresAt, lease > now {
            guard let liveWorker = options.liveWorker, await liveWorker.provesDeath(ofHolder: holder) else {
                return nil
            }
            logger.info(
                "the runner holding an import task died; taking it over before its lease ends",
                metadata: ["task": "\(task.id)", "holder": "\(holder)"])
        }
        var held = task
        held.worker =
            options.liveWorker?.id.attemptToken()
            ?? WorkerID(rawValue: options.workerID)?.attemptToken()
            ?? "\(options.workerID)/\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        held.leaseExpiresAt = ImportTasks.stamp(now.addingTimeInterval(options.leaseDuration.seconds))
        held.statusMessage = "downloading/converting"
        held.updatedAt = ImportTasks.stamp(now)
        do {
            try await catalog.apply([.updateImportTask(held)])
        } catch {
            return nil  // another runner took it, or it was cancelled meanwhile
        }
        held.version += 1
        if task.worker != nil {
            logger.info("taking over an import task whose runner is gone", metadata: ["task": "\(task.id)"])
        }
        return held
    }

    /// What one attempt came to.
    private enum Attempt: Sendable {
        case completed(SnapshotID)
        case rejected(code: String, message: String)
        case serverError(code: String, message: String)
        case transient(code: String, message: String)
        case busy
        case interrupted
        /// The task was cancelled or taken over while it ran.
        case stopped
    }

    /// Runs one held task to the end of one attempt and records the outcome.
    /// - Returns: when to try it again, when it stays active.
    private func execute(_ task: ImportTaskRecord) async -> ContinuousClock.Instant? {
        var taskLogger = logger
        taskLogger[metadataKey: "task"] = "\(task.id)"
        taskLogger[metadataKey: "key"] = "\(task.key)"
        let logger = taskLogger
        let progress = ImportProgress(total: task.bytesTotal.map { UInt64(max(0, $0)) })
        let attempt: Attempt = await withTaskGroup(of: Attempt?.self) { group in
            group.addTask { [self] in await watch(task) }
            group.addTask { [self] in await importObject(task, progress: progress, logger: logger) }
            // The first to end decides: the import's outcome, or the watch's `.stopped`.
            let first = await group.next() ?? nil
            group.cancelAll()
            // The import must end (releasing its claim, dropping its pending snapshot) before the task is settled.
            for await _ in group {}
            return first ?? .interrupted
        }
        return await settle(task, attempt, progress: progress, logger: logger)
    }

    /// Renews the task's lease and watches its row; returns `.stopped` when the task was cancelled or taken
    /// over (the import is then cancelled), and never otherwise (cancelled when the import ends).
    private func watch(_ task: ImportTaskRecord) async -> Attempt? {
        let renewEvery = options.leaseDuration / 3
        var sinceRenewal = Duration.zero
        while true {
            do {
                try await Task.sleep(for: options.watchInterval)
            } catch {
                return nil
            }
            sinceRenewal += options.watchInterval
            do {
                guard var row = try await catalog.importTask(task.id), row.state == .active, row.worker == task.worker
                else {
                    logger.info(
                        "import task cancelled or taken over: stopping its import", metadata: ["task": "\(task.id)"])
                    return .stopped
                }
                if sinceRenewal >= renewEvery {
                    row.leaseExpiresAt = ImportTasks.stamp(Date().addingTimeInterval(options.leaseDuration.seconds))
                    try await catalog.apply([.updateImportTask(row)])
                    sinceRenewal = .zero
                }
            } catch {
                // A conflict (the row changed meanwhile) or a catalog hiccup: look again next time.
                if Task.isCancelled { return nil }
            }
        }
    }

    /// The task's object import: HEAD, then the shared claim and import.
    private func importObject(_ task: ImportTaskRecord, progress: ImportProgress, logger: Logger) async -> Attempt {
        let objects = self.pipeline(task.bucket)
        // Imported before under the ETag this task saw (a restart after the commit): done.
        if let etag = task.etag,
            let row = try? await catalog.importRecord(ImportKey(bucket: task.bucket, key: task.key, etag: etag)),
            row.state == .imported, let id = row.snapshotID
        {
            return .completed(id)
        }
        let head: ObjectMetadata
        do {
            head = try await objects.store.head(key: task.key)
        } catch {
            if Task.isCancelled { return .interrupted }
            let failure = ImportFailure.importerError(error)
            let location = "s3://\(task.bucket)/\(task.key)"
            if failure.code == .notFound { return .rejected(code: "NotFound", message: "no object \(location)") }
            if failure.code == .accessDenied {
                return .rejected(code: "AccessDenied", message: "the server may not read \(location)")
            }
            return .transient(code: failure.code.name, message: failure.message)
        }
        progress.setTotal(head.size)
        if task.etag != head.etag || task.bytesTotal != Int64(clamping: head.size) {
            await update(task.id, worker: task.worker, endsHold: false) { row in
                row.etag = head.etag
                row.bytesTotal = Int64(clamping: head.size)
            }
        }
        let format: ImageFormat?
        do {
            format = try ImportPipeline.format(task.format, key: task.key)
        } catch {
            return .rejected(code: "InvalidArgument", message: "\(error)")
        }
        switch await objects.importForTask(
            key: task.key, head: head, owner: task.owner, description: task.description, claimedFormat: format,
            progress: progress)
        {
        case .imported(let record): return .completed(record.id)
        case .alreadyImported(let id): return .completed(id)
        case .rejected(let code, let message):
            // An import row given up by `run` after its transient attempts is not the image's fault.
            return Self.transientCodes.contains(code)
                ? .serverError(code: code, message: message) : .rejected(code: code, message: message)
        case .transient(let code, let message): return .transient(code: code, message: message)
        case .busy: return .busy
        case .interrupted: return .interrupted
        }
    }

    /// Codes of trouble of the moment (never a property of the image).
    static let transientCodes: Set<String> = [
        ImporterError.Code.storageUnavailable.name, ImporterError.Code.objectChanged.name,
        ImporterError.Code.leaseLost.name, ImporterError.Code.cancelled.name, ImporterError.Code.internalError.name,
        SnapshotError.Code.catalog.description, SnapshotError.Code.storage.description,
        SnapshotError.Code.conflict.description,
    ]

    /// Records how the attempt ended. - Returns: when to retry, if the task stays active.
    private func settle(_ task: ImportTaskRecord, _ attempt: Attempt, progress: ImportProgress, logger: Logger) async
        -> ContinuousClock.Instant?
    {
        let read = Int64(clamping: progress.bytesRead)
        let total = progress.bytesTotal.map { Int64(clamping: $0) }
        var retry: ContinuousClock.Instant?
        switch attempt {
        case .stopped:
            return nil
        case .completed(let id):
            logger.info("import task completed", metadata: ["snapshot": "\(id)"])
            await update(task.id, worker: task.worker, evenIfCancelled: true) { row in
                row.snapshotID = id
                guard row.state == .active else { return }  // cancelled as it committed: keep the snapshot's ID
                row.state = .completed
                row.statusMessage = nil
                if let total = total ?? row.bytesTotal {
                    row.bytesTotal = total
                    row.bytesRead = total
                }
            }
            return nil
        case .rejected(let code, let message):
            logger.warning("import task rejected: \(code): \(message)")
            await end(task, "ClientError: \(code): \(message)", read: read, total: total)
            return nil
        case .serverError(let code, let message):
            logger.warning("import task failed: \(code): \(message)")
            await end(task, "ServerError: \(code): \(message)", read: read, total: total)
            return nil
        case .transient(let code, let message):
            let attempts = task.attempts + 1
            if attempts >= options.maxAttempts {
                logger.warning("import task failed after \(attempts) attempts: \(code): \(message)")
                await end(
                    task, "ServerError: \(code): \(message) (gave up after \(attempts) attempts)", read: read,
                    total: total)
                return nil
            }
            logger.warning("import task attempt \(attempts) failed (retrying): \(code): \(message)")
            let delay = min(options.retryDelay * (1 << min(attempts - 1, 16)), .seconds(60))
            retry = .now + delay
            await release(task, attempts: attempts, read: read, total: total)
        case .busy:
            retry = .now + options.busyDelay
            await release(task, attempts: task.attempts, read: read, total: total)
        case .interrupted:
            await release(task, attempts: task.attempts, read: read, total: total)
        }
        return retry
    }

    private func end(_ task: ImportTaskRecord, _ message: String, read: Int64, total: Int64?) async {
        await update(task.id, worker: task.worker) { row in
            row.state = .deleted
            row.statusMessage = String(message.prefix(2000))
            row.bytesRead = read
            row.bytesTotal = total ?? row.bytesTotal
        }
    }

    /// Hands the task back (still active, no runner).
    private func release(_ task: ImportTaskRecord, attempts: Int, read: Int64, total: Int64?) async {
        await update(task.id, worker: task.worker) { row in
            row.attempts = attempts
            row.statusMessage = "pending"
            row.bytesRead = read
            row.bytesTotal = total ?? row.bytesTotal
        }
    }

    /// Changes the task row while this runner holds it (and it is active, unless `evenIfCancelled`); with
    /// `endsHold` the runner's hold ends too. Re-read and retried on conflicts, in a task of its own (the
    /// caller may be cancelled: the outcome must still be recorded).
    private func update(
        _ id: ImportTaskID, worker: String?, endsHold: Bool = true, evenIfCancelled: Bool = false,
        _ change: @escaping @Sendable (inout ImportTaskRecord) -> Void
    ) async {
        let (catalog, logger) = (catalog, logger)
        do {
            try await uncancelled {
                for _ in 0..<50 {
                    guard var row = try await catalog.importTask(id), row.worker == worker,
                        evenIfCancelled || row.state == .active
                    else { return }
                    change(&row)
                    if endsHold {
                        row.worker = nil
                        row.leaseExpiresAt = nil
                    }
                    row.updatedAt = ImportTasks.stamp(Date())
                    do {
                        try await catalog.apply([.updateImportTask(row)])
                        return
                    } catch let error as SnapshotError where error.code == .conflict {
                        try await Task.sleep(for: .milliseconds(Int.random(in: 1...20)))
                    }
                }
            }
        } catch {
            logger.warning("recording the import task's state failed: \(error)", metadata: ["task": "\(id)"])
        }
    }
}
