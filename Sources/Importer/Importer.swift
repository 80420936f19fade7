public import Logging
public import ServiceLifecycle
import SnapshotCore
import Synchronization

/// The per-object work the service schedules (implemented by ``ImportPipeline``; a seam so the
/// scheduling can be tested alone).
public protocol ObjectImporting: Sendable {
    /// Housekeeping before a pass (e.g. recovering pending snapshots whose writer died).
    func preparePass() async
    /// One LIST of incoming/ (all pages), as candidates.
    func listCandidates() async throws -> [BucketLayout.Candidate]
    /// The owner text used to bound concurrency per customer (nil when the key has none).
    func ownerText(of candidate: BucketLayout.Candidate) -> String?
    /// Imports one object; never throws: every failure is an outcome. The task is cancelled when the
    /// worker shuts down and the import must be abandoned cleanly (an outcome with code `Cancelled`).
    func importObject(_ candidate: BucketLayout.Candidate) async -> ImportResult
    /// ``importObject(_:)``, calling `committed` once the object's snapshot is committed (from then on
    /// only its move to processed/ remains): how the worker tells, at shutdown, the imports whose move it
    /// finishes from those it abandons.
    func importObject(_ candidate: BucketLayout.Candidate, committed: @escaping @Sendable () -> Void) async
        -> ImportResult
}

extension ObjectImporting {
    /// Never reports a commit (a worker that cannot tell).
    public func importObject(_ candidate: BucketLayout.Candidate, committed: @escaping @Sendable () -> Void) async
        -> ImportResult
    {
        await importObject(candidate)
    }
}

/// The import worker as a swift-service-lifecycle `Service`.
///
/// `run()` polls incoming/ every `interval` on the injected clock (one LIST per pass when idle)
/// and imports with at most `concurrentImports` in flight, at most `concurrentImportsPerCustomer`
/// per customer. On graceful shutdown it stops taking work, lets the imports in flight finish
/// for up to `shutdownGracePeriod` (those already committed finish their move to processed/), then
/// cancels what is still in flight: an uncommitted import is abandoned (it releases its claim, not
/// counted as an attempt, and aborts its pending snapshot), a committed one stops its move after the
/// current S3 request and leaves the rest to the next pass. Shutdown therefore lasts at most the
/// grace plus one in-flight S3 request (and the catalog writes that release the claims). The log says
/// what really happened, with true counts. With `once`, `run()` does one pass and returns: run it in a
/// ServiceGroup with `successTerminationBehavior: .gracefullyShutdownGroup` (the cron pass).
public final class Importer<C: Clock>: Service where C.Duration == Duration {
    public struct Options: Sendable {
        public var concurrentImports: Int
        public var concurrentImportsPerCustomer: Int
        public var interval: Duration
        public var shutdownGracePeriod: Duration
        public var once: Bool

        public init(
            concurrentImports: Int = 4, concurrentImportsPerCustomer: Int = 16, interval: Duration = .seconds(30),
            shutdownGracePeriod: Duration = .seconds(20), once: Bool = false
        ) {
            self.concurrentImports = max(1, concurrentImports)
            self.concurrentImportsPerCustomer = max(1, concurrentImportsPerCustomer)
            self.interval = interval
            self.shutdownGracePeriod = shutdownGracePeriod
            self.once = once
        }
    }

    private struct State {
        var stopping = false
        var inFlight = 0
        /// Abandons the current pass's imports in flight (cancels their tasks).
        var abandon: AsyncStream<Void>.Continuation?
        var summaries: [PassSummary] = []
        /// The in-flight imports (by pass-local number) whose snapshot is committed: only their move remains.
        var committed: Set<Int> = []
        /// Whether a graceful shutdown began (the pass then reports what it finished and abandoned).
        var shuttingDown = false
        var peakInFlight = 0
        var peakPerCustomer = 0
    }

    private let worker: any ObjectImporting
    private let options: Options
    private let clock: C
    private let logger: Logger
    private let onPass: @Sendable (PassSummary) -> Void
    // Every mutable field lives behind the mutex; the rest is immutable and Sendable.
    private let state = Mutex(State())

    /// - Parameters:
    ///   - worker: does the per-object work.
    ///   - options: concurrency, interval, shutdown grace, once.
    ///   - clock: the clock the polling sleeps on.
    ///   - logger: where pass summaries and progress go.
    ///   - onPass: called after every pass with its summary.
    public init(
        worker: any ObjectImporting, options: Options, clock: C, logger: Logger,
        onPass: @escaping @Sendable (PassSummary) -> Void = { _ in }
    ) {
        self.worker = worker
        self.options = options
        self.clock = clock
        self.logger = logger
        self.onPass = onPass
    }

    /// The summaries of the passes run so far.
    public var summaries: [PassSummary] { state.withLock { $0.summaries } }
    /// Most imports seen in flight at once, overall and for one customer (for tests).
    public var peakConcurrency: (total: Int, perCustomer: Int) {
        state.withLock { ($0.peakInFlight, $0.peakPerCustomer) }
    }

    public func run() async throws {
        await withThrowingTaskGroup(of: Void.self) { group in
            // The shutdown watchdog: stop taking work at once, abandon in-flight work after the grace.
            group.addTask { [self] in
                try await gracefulShutdown()
                let (inFlight, moving) = state.withLock { state in
                    state.stopping = true
                    state.shuttingDown = true
                    return (state.inFlight, state.committed.count)
                }
                let grace = options.shutdownGracePeriod
                if inFlight == 0 {
                    logger.info("shutting down: no new imports, none in flight")
                } else {
                    logger.info(
                        """
                        shutting down: no new imports; finishing the move of \(moving) committed import(s); \
                        \(inFlight - moving) import(s) in progress get \(grace) to commit
                        """,
                        metadata: ["inFlight": "\(inFlight)", "committed": "\(moving)", "grace": "\(grace)"])
                }
                try await clock.sleep(for: grace)
                let (left, leftMoving, abandon) = state.withLock { ($0.inFlight, $0.committed.count, $0.abandon) }
                if left > 0 {
                    logger.warning(
                        """
                        grace period over: cancelling \(left - leftMoving) uncommitted import(s); the move of \
                        \(leftMoving) committed import(s) stops after its current S3 request
                        """,
                        metadata: ["inFlight": "\(left)", "committed": "\(leftMoving)"])
                }
                abandon?.yield()
            }
            while !stopping {
                let summary = await runPass()
                onPass(summary)
                if options.once || stopping { break }
                do {
                    try await cancelWhenGracefulShutdown { [clock, options] in
                        try await clock.sleep(for: options.interval)
                    }
                } catch {
                    break
                }
            }
            group.cancelAll()
            // The watchdog ends with a CancellationError once cancelled; that is the normal end.
            while let _ = try? await group.next() {}
        }
    }

    private var stopping: Bool {
        state.withLock { $0.stopping } || Task.isCancelled || Task.isShuttingDownGracefully
    }

    /// One pass: list, then import every candidate under the concurrency bounds.
    public func runPass() async -> PassSummary {
        let conflictsBefore = CatalogConflicts.retriedSoFar
        await worker.preparePass()
        let candidates: [BucketLayout.Candidate]
        do {
            candidates = try await worker.listCandidates()
        } catch {
            // Stopped while listing (watch's shutdown cancels the pass): not a storage failure, and
            // nothing was started, so the pass simply ends empty.
            if error is CancellationError || Task.isCancelled {
                logger.info("pass stopped while listing incoming/: shutting down")
                return PassSummary()
            }
            let failure = error as? ImporterError ?? ImporterError(.storageUnavailable, "\(error)", underlying: error)
            logger.error("listing incoming/ failed: \(failure)")
            let summary = PassSummary(listingError: failure)
            state.withLock { $0.summaries.append(summary) }
            return summary
        }
        var queue = candidates.map { ($0, BucketLayout.customer(ofOwner: worker.ownerText(of: $0) ?? "")) }
        var results: [ImportResult] = []
        var running: [String: Int] = [:]
        var total = 0
        var started = 0
        // The shutdown watchdog abandons the imports still in flight after the grace period through this
        // signal: the pass cancels its import tasks, which end with a `Cancelled` outcome.
        let (abandonSignal, abandon) = AsyncStream.makeStream(of: Void.self)
        state.withLock { $0.abandon = abandon }
        defer { state.withLock { $0.abandon = nil } }
        await withTaskGroup(of: PassEvent.self) { group in
            group.addTask {
                for await _ in abandonSignal { return .abandon }
                return .passEnded
            }
            while true {
                if !stopping {
                    var index = 0
                    while total < options.concurrentImports, index < queue.count {
                        let (candidate, customer) = queue[index]
                        guard running[customer, default: 0] < options.concurrentImportsPerCustomer else {
                            index += 1
                            continue
                        }
                        queue.remove(at: index)
                        running[customer, default: 0] += 1
                        total += 1
                        started += 1
                        let perCustomer = running[customer, default: 0]
                        state.withLock { state in
                            state.inFlight = total
                            state.peakInFlight = max(state.peakInFlight, total)
                            state.peakPerCustomer = max(state.peakPerCustomer, perCustomer)
                        }
                        group.addTask { [self, worker, number = started] in
                            let result = await worker.importObject(candidate) {
                                self.state.withLock { _ = $0.committed.insert(number) }
                            }
                            state.withLock { _ = $0.committed.remove(number) }
                            return .finished(customer: customer, result)
                        }
                    }
                }
                if total == 0 && (queue.isEmpty || stopping) {
                    abandon.finish()  // nothing left to abandon: the signal's task ends the pass
                }
                guard let event = await group.next() else { break }
                switch event {
                case .finished(let customer, let result):
                    running[customer, default: 1] -= 1
                    total -= 1
                    state.withLock { $0.inFlight = total }
                    results.append(result)
                case .abandon:
                    group.cancelAll()
                case .passEnded:
                    continue
                }
            }
        }
        for (candidate, _) in queue {
            results.append(
                ImportResult(
                    key: candidate.key, etag: candidate.etag, owner: worker.ownerText(of: candidate) ?? "",
                    outcome: .skipped(reason: Self.notStartedReason)))
        }
        var summary = PassSummary(results: results)
        summary.conflictsRetried = CatalogConflicts.retriedSoFar - conflictsBefore
        state.withLock { $0.summaries.append(summary) }
        let counts =
            "\(summary.imported.count) imported, \(summary.rejected.count) rejected, "
            + "\(summary.retried.count) retried, \(summary.skipped.count) skipped "
            + "(\(summary.lostClaims) claims lost to other workers, \(summary.importedByOthers) imported by them, "
            + "\(summary.conflictsRetried) catalog conflicts retried)"
        if results.isEmpty {
            logger.debug("pass: incoming/ is empty")
        } else {
            logger.info("pass done: \(counts)")
        }
        if state.withLock({ $0.shuttingDown }) { logShutdownOutcome(summary) }
        return summary
    }
}

extension Importer {
    /// The pass a shutdown ended, in the words of what happened to each import (counted from the
    /// outcomes, so the numbers are true whatever raced with the cancellation).
    private func logShutdownOutcome(_ summary: PassSummary) {
        let abandoned = summary.results.filter {
            if case .retried(let code, _, _) = $0.outcome { code == ImporterError.Code.cancelled.name } else { false }
        }
        let imported = summary.imported
        let moveLeft = imported.filter(\.movePending)
        let notStarted = summary.results.filter {
            if case .skipped(let reason) = $0.outcome { reason == Self.notStartedReason } else { false }
        }
        logger.info(
            """
            shutdown: \(imported.count) imported (\(moveLeft.count) of them left for the next pass to finish the \
            move to processed/), abandoned \(abandoned.count) (released, not counted as an attempt: the next \
            pass imports them again), \(notStarted.count) not started
            """,
            metadata: [
                "imported": "\(imported.count)", "moveLeft": "\(moveLeft.count)", "abandoned": "\(abandoned.count)",
                "notStarted": "\(notStarted.count)",
            ])
    }

    static var notStartedReason: String { "worker shutting down" }
}

/// What a pass's task group hears: an import finished, the watchdog abandons the imports in flight, or
/// the pass has nothing left to abandon.
private enum PassEvent: Sendable {
    case finished(customer: String, ImportResult)
    case abandon
    case passEnded
}
