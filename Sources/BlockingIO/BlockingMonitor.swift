public import Foundation

/// A value behind a lock, with a blocking wait for a condition on it: the join of blocking work that
/// runs on several pool threads (a parallel inflate, a read-ahead GET, a background writer).
///
/// Every change wakes every waiter, which re-checks its condition: simple and correct for the handful
/// of threads that ever wait on one monitor. **Blocking code only**: async code awaits instead.
public final class BlockingMonitor<State>: @unchecked Sendable {
    // `state` is read and written only with `condition` locked.
    private let condition = NSCondition()
    private var state: State

    public init(_ state: State) {
        self.state = state
    }

    /// Runs `body` with the state locked, then wakes the waiters.
    public func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        return try body(&state)
    }

    /// Blocks until `predicate` holds, then runs `body` with the state still locked.
    @available(*, noasync, message: "blocks its thread: call it from code running on the executor")
    public func wait<R>(until predicate: (State) -> Bool, then body: (inout State) throws -> R) rethrows -> R {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        while !predicate(state) { condition.wait() }
        return try body(&state)
    }

    /// Blocks until `predicate` holds or `deadline` passes; runs `body` with the state still locked when the
    /// predicate held. - Returns: `body`'s result, or nil when the deadline passed first.
    @available(*, noasync, message: "blocks its thread: call it from code running on the executor")
    public func wait<R>(until predicate: (State) -> Bool, deadline: Date, then body: (inout State) throws -> R)
        rethrows -> R?
    {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        while !predicate(state) {
            guard condition.wait(until: deadline) else { return predicate(state) ? try body(&state) : nil }
        }
        return try body(&state)
    }
}
