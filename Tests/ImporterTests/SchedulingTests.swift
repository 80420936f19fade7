import Importer
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// A worker whose imports take `delay` and record how many ran at once per customer.
final class FakeWorker: ObjectImporting {
    struct State {
        var candidates: [BucketLayout.Candidate] = []
        var running: [String: Int] = [:]
        var total = 0
        var peak = 0
        var peakPerCustomer = 0
        var started = 0
        var cancelled = 0
        var lists = 0
    }
    let state = Mutex(State())
    let delay: Duration

    init(keys: [String], delay: Duration) {
        self.delay = delay
        state.withLock { $0.candidates = keys.map { .init(key: $0, etag: "e", size: 1) } }
    }

    func preparePass() async {}
    func listCandidates() async throws -> [BucketLayout.Candidate] {
        state.withLock { $0.lists += 1; return $0.candidates }
    }
    func ownerText(of candidate: BucketLayout.Candidate) -> String? { try? BucketLayout().ownerText(of: candidate.key) }

    func importObject(_ candidate: BucketLayout.Candidate) async -> ImportResult {
        let customer = BucketLayout.customer(ofOwner: ownerText(of: candidate) ?? "")
        state.withLock { s in
            s.started += 1
            s.total += 1
            s.running[customer, default: 0] += 1
            s.peak = max(s.peak, s.total)
            s.peakPerCustomer = max(s.peakPerCustomer, s.running[customer, default: 0])
        }
        let clock = ContinuousClock()
        let end = clock.now + delay
        var outcome = ImportOutcome.imported(snapshotID: "snap-00000000")
        while clock.now < end {
            if Task.isCancelled {
                state.withLock { $0.cancelled += 1 }
                outcome = .retried(code: "Cancelled", message: "the worker is shutting down", attempts: 1)
                break
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
        state.withLock { s in
            s.total -= 1
            s.running[customer, default: 0] -= 1
            // Imported objects leave incoming/.
            if case .imported = outcome { s.candidates.removeAll { $0.key == candidate.key } }
        }
        return ImportResult(key: candidate.key, etag: "e", owner: "", outcome: outcome)
    }
}

@Suite("Importer service scheduling")
struct SchedulingTests {
    let logger = Logger(label: "test")

    @Test("concurrency is bounded overall and per customer")
    func bounds() async throws {
        let keys = (0..<6).map { "incoming/p@big/\($0)" } + (0..<3).map { "incoming/p@small/\($0)" }
        let worker = FakeWorker(keys: keys, delay: .milliseconds(50))
        let importer = Importer(
            worker: worker, options: .init(concurrentImports: 3, concurrentImportsPerCustomer: 2, once: true),
            clock: ContinuousClock(), logger: logger)
        let summary = await importer.runPass()
        #expect(summary.imported.count == 9)
        let state = worker.state.withLock { $0 }
        #expect(state.peak == 3)
        #expect(state.peakPerCustomer == 2)
    }

    @Test("the cron pass is one pass, then the group shuts down")
    func once() async throws {
        let worker = FakeWorker(keys: ["incoming/a@b/x"], delay: .milliseconds(1))
        let importer = Importer(
            worker: worker, options: .init(interval: .milliseconds(1), once: true), clock: ContinuousClock(),
            logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: importer, successTerminationBehavior: .gracefullyShutdownGroup)],
                logger: logger))
        try await group.run()
        #expect(importer.summaries.count == 1)
        #expect(worker.state.withLock { $0.lists } == 1)
    }

    @Test("watch mode polls every interval: one LIST per idle pass")
    func polls() async throws {
        let worker = FakeWorker(keys: [], delay: .zero)
        let clock = TestClock()
        let importer = Importer(
            worker: worker, options: .init(interval: .seconds(30)), clock: clock, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await importer.run() }
            for pass in 1...3 {
                await clock.waitForSleepers()  // the pass is done; the worker waits for the interval
                let afterPass = worker.state.withLock { $0.lists }
                #expect(afterPass == pass, "one LIST per pass, none while waiting")
                clock.advance(by: .seconds(29))
                await Task.yield()
                let beforeInterval = worker.state.withLock { $0.lists }
                #expect(beforeInterval == pass, "never before the interval is up")
                clock.advance(by: .seconds(1))
            }
            await clock.waitForSleepers()
            let lists = worker.state.withLock { $0.lists }
            #expect(lists == 4)
            group.cancelAll()
        }
    }

    @Test("graceful shutdown takes no new work and abandons in-flight imports after the grace period")
    func gracefulShutdown() async throws {
        let keys = (0..<4).map { "incoming/p@c/\($0)" }
        let worker = FakeWorker(keys: keys, delay: .seconds(3600))
        let clock = TestClock()
        let importer = Importer(
            worker: worker,
            options: .init(concurrentImports: 2, interval: .seconds(60), shutdownGracePeriod: .seconds(20)),
            clock: clock, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: importer)], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            while worker.state.withLock({ $0.started }) < 2 { await Task.yield() }
            await group.triggerGracefulShutdown()
            await clock.waitForSleepers()  // the watchdog waits out the grace period
            let cancelledDuringGrace = worker.state.withLock { $0.cancelled }
            #expect(cancelledDuringGrace == 0, "in-flight imports keep running during the grace")
            clock.advance(by: .seconds(20))
            try await tasks.waitForAll()
        }
        // The fake imports take an hour: the group ending proves they were abandoned, not awaited.
        let state = worker.state.withLock { $0 }
        #expect(state.started == 2)
        #expect(state.cancelled == 2)
        let summary = try #require(importer.summaries.last)
        #expect(summary.retried.count == 2)
        #expect(summary.skipped.count == 2)
    }
}

/// A worker whose listing hangs until its task is cancelled (a LIST in flight when `watch` stops), or fails.
final class HangingListWorker: ObjectImporting {
    let listing = Mutex(false)
    let failure: (any Error)?
    init(failure: (any Error)? = nil) { self.failure = failure }

    func preparePass() async {}
    func listCandidates() async throws -> [BucketLayout.Candidate] {
        if let failure { throw failure }
        listing.withLock { $0 = true }
        try await Task.sleep(for: .seconds(3600))
        return []
    }
    func ownerText(of candidate: BucketLayout.Candidate) -> String? { nil }
    func importObject(_ candidate: BucketLayout.Candidate) async -> ImportResult {
        ImportResult(key: candidate.key, etag: "e", owner: "", outcome: .skipped(reason: "unused"))
    }
}

@Suite("Importer pass interrupted while listing")
struct ListingInterruptedTests {
    @Test("a pass stopped while listing ends empty, not as a storage failure; a real listing failure still is one")
    func cancelledListing() async throws {
        let worker = HangingListWorker()
        let importer = Importer(worker: worker, options: .init(once: true), clock: ContinuousClock(), logger: Logger(label: "test"))
        let pass = Task { await importer.runPass() }
        while !worker.listing.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(2)) }
        pass.cancel()
        let summary = await pass.value
        #expect(summary.listingError == nil, "\(String(describing: summary.listingError))")
        #expect(summary.results.isEmpty)

        struct Down: Error {}
        let failing = Importer(
            worker: HangingListWorker(failure: Down()), options: .init(once: true), clock: ContinuousClock(),
            logger: Logger(label: "test"))
        let failed = await failing.runPass()
        #expect(failed.listingError?.code == .storageUnavailable)
        #expect(!failed.succeeded)
    }
}
