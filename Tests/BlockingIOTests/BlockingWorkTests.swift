import BlockingIO
import Synchronization
import Testing

@Suite("BlockingExecutor.forEach")
struct BlockingWorkTests {
    /// Counts of how many times each index ran (shared with the pool threads).
    final class Tally: Sendable {
        let counts: Mutex<[Int]>
        init(_ n: Int) { counts = Mutex([Int](repeating: 0, count: n)) }
        func hit(_ i: Int) { counts.withLock { $0[i] += 1 } }
        var all: [Int] { counts.withLock { $0 } }
    }

    @Test("every index runs exactly once, on the caller and the helpers")
    func everyIndexOnce() async throws {
        let executor = BlockingExecutor(threads: 4)
        let tally = Tally(1000)
        try await executor.run {
            executor.forEach(1000, helpers: 3) { tally.hit($0) }
        }
        #expect(tally.all == [Int](repeating: 1, count: 1000))
    }

    @Test("a pool whose every thread is busy cannot stall it: the caller does the work alone")
    func saturatedPoolDoesNotDeadlock() async throws {
        let executor = BlockingExecutor(threads: 1)
        // Occupy the pool's only thread until forEach has returned.
        let release = BlockingMonitor(false)
        executor.submit { release.wait(until: { $0 }, then: { _ in }) }
        let tally = Tally(50)
        // The caller runs on another pool; the busy one never starts a helper, so only the caller works.
        try await BlockingExecutor(threads: 1).run {
            executor.forEach(50, helpers: 4) { tally.hit($0) }
        }
        release.withLock { $0 = true }
        #expect(tally.all == [Int](repeating: 1, count: 50))
    }

    @Test("zero indices return at once")
    func empty() {
        BlockingExecutor(threads: 1).forEach(0) { _ in Issue.record("no index should run") }
    }
}
