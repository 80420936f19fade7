import NIOCore
import Synchronization

extension BlockingExecutor {
    /// Runs `body(0)`, …, `body(count - 1)` on the calling thread and on up to `helpers` pool threads,
    /// and returns when every call has returned (the parallel inflate of compressed clusters). `helpers`
    /// defaults to one per other core.
    ///
    /// The calling thread takes part: it works through the indices itself while helpers join as pool
    /// threads free up, so a busy (or stopped) pool slows the work down but can never deadlock it —
    /// the caller waits only for indices a helper has already started.
    ///
    /// **Only from blocking code** (inside ``run(_:)`` or a synchronous reader it drives): it blocks.
    @available(*, noasync, message: "blocks its thread: call it from code running on the executor")
    public func forEach(_ count: Int, helpers: Int? = nil, _ body: @escaping @Sendable (Int) -> Void) {
        guard count > 0 else { return }
        let batch = IndexBatch(count: count)
        // By default one helper per other core: the work is CPU-bound (inflating).
        let helpers = helpers ?? (System.coreCount - 1)
        for _ in 0..<min(max(0, helpers), count - 1) {
            submit { batch.work(body) }
        }
        batch.work(body)
        batch.waitUntilFinished()
    }
}

/// The indices of one ``BlockingExecutor/forEach(_:helpers:_:)``: each is claimed by exactly one thread.
private final class IndexBatch: Sendable {
    private let count: Int
    private let next = Atomic<Int>(0)
    /// How many indices have been finished; `waitUntilFinished` waits for `count`.
    private let finished = BlockingMonitor(0)

    init(count: Int) { self.count = count }

    func work(_ body: @Sendable (Int) -> Void) {
        while true {
            let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
            guard index < count else { return }
            body(index)
            finished.withLock { $0 += 1 }
        }
    }

    func waitUntilFinished() {
        finished.wait(until: { $0 == count }, then: { _ in })
    }
}
