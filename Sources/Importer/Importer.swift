public import Logging
public import ServiceLifecycle
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
}

/// The import worker as a swift-service-lifecycle `Service`.
///
/// `run()` polls incoming/ every `interval` on the injected clock (one LIST per pass when idle)
/// and imports with at most `concurrentImports` in flight, at most `concurrentImportsPerCustomer`
/// per customer. On graceful shutdown it stops taking work, lets the imports in flight finish
/// for up to `shutdownGracePeriod`, then abandons them (each releases its lease and aborts its
/// pending snapshot). With `once`, `run()` does one pass and returns: run it in a ServiceGroup
/// with `successTerminationBehavior: .gracefullyShutdownGroup` (the cron pass).
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
                state.withLock { $0.stopping = true }
                logger.info("shutting down: no new imports; in-flight imports get \(options.shutdownGracePeriod)")
                try await clock.sleep(for: options.shutdownGracePeriod)
                let (inFlight, abandon) = state.withLock { ($0.inFlight, $0.abandon) }
                if inFlight > 0 { logger.warning("abandoning \(inFlight) import(s) still in flight") }
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
        await worker.preparePass()
        let candidates: [BucketLayout.Candidate]
        do {
            candidates = try await worker.listCandidates()
        } catch {
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
                        let perCustomer = running[customer, default: 0]
                        state.withLock { state in
                            state.inFlight = total
                            state.peakInFlight = max(state.peakInFlight, total)
                            state.peakPerCustomer = max(state.peakPerCustomer, perCustomer)
                        }
                        group.addTask { [worker] in
                            .finished(customer: customer, await worker.importObject(candidate))
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
                    outcome: .skipped(reason: "worker shutting down")))
        }
        let summary = PassSummary(results: results)
        state.withLock { $0.summaries.append(summary) }
        let counts =
            "\(summary.imported.count) imported, \(summary.rejected.count) rejected, "
            + "\(summary.retried.count) retried, \(summary.skipped.count) skipped"
        if results.isEmpty {
            logger.debug("pass: incoming/ is empty")
        } else {
            logger.info("pass done: \(counts)")
        }
        return summary
    }
}

/// What a pass's task group hears: an import finished, the watchdog abandons the imports in flight, or
/// the pass has nothing left to abandon.
private enum PassEvent: Sendable {
    case finished(customer: String, ImportResult)
    case abandon
    case passEnded
}
