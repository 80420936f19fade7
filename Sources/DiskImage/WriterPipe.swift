import BlockingIO
import Synchronization

/// Overlaps reading with writing in `DiskImage.convert`: the caller queues data extents while a job on
/// the blocking executor skips all-zero extents (they stay holes) and `pwrite`s the rest.
///
/// Nobody ever waits for a job that has not started: when `depth` extents are queued the caller writes
/// the oldest one itself, and `finish()` calls off a job still waiting for a thread, drains what is left
/// itself, then waits only for the extent a running job is writing at that moment. A busy pool therefore slows a conversion to one thread; it
/// cannot stall it.
final class WriterPipe: Sendable {
    private struct State {
        var items: [(offset: UInt64, bytes: [UInt8])] = []
        var head = 0
        /// The background job's life: submitted to the pool (`queued`), started (`running`), or none.
        var job = Job.idle
        var error: (any Error)?
        var written: UInt64 = 0

        var count: Int { items.count - head }

        mutating func pop() -> (offset: UInt64, bytes: [UInt8])? {
            guard head < items.count else { return nil }
            defer {
                head += 1
                if head == items.count {
                    items.removeAll(keepingCapacity: true)
                    head = 0
                }
            }
            return items[head]
        }
    }

    private enum Job { case idle, queued, running }

    private let state = BlockingMonitor(State())
    private let writer: UncheckedBox<SparseRawWriter>
    private let depth: Int
    private let executor: BlockingExecutor

    /// `SparseRawWriter` writes with `pwrite` at explicit offsets, so extents may be written by two
    /// threads at once and in any order; it is touched again only after `finish()`.
    init(writer: SparseRawWriter, depth: Int, executor: BlockingExecutor = .shared) {
        self.writer = UncheckedBox(writer)
        self.depth = max(1, depth)
        self.executor = executor
    }

    /// Queues `bytes` for writing at `offset`; false when a write has failed (stop reading).
    func send(_ bytes: [UInt8], at offset: UInt64) -> Bool {
        let (overflow, startJob) = state.withLock { state in
            state.items.append((offset, bytes))
            let overflow = state.count > depth ? state.pop() : nil
            guard case .idle = state.job else { return (overflow, false) }
            state.job = .queued
            return (overflow, true)
        }
        if startJob { executor.submit { [self] in drain() } }
        if let overflow { write(overflow) }
        return state.withLock { $0.error == nil }
    }

    /// Writes what is still queued, waits for a background job that is running, then returns the bytes
    /// written or throws the first write error. A job still waiting for a pool thread is called off.
    func finish() throws -> UInt64 {
        state.withLock { state in if case .queued = state.job { state.job = .idle } }
        while let item = state.withLock({ $0.pop() }) { write(item) }
        return try state.wait(
            until: { if case .idle = $0.job { true } else { false } },
            then: { state in
                if let error = state.error { throw error }
                return state.written
            })
    }

    /// The background job: writes until the queue is empty, then lets the next `send` start a new one.
    private func drain() {
        let start = state.withLock { state in
            guard case .queued = state.job else { return false }  // called off by `finish()`
            state.job = .running
            return true
        }
        guard start else { return }
        while let item = state.withLock({ state in
            let item = state.pop()
            if item == nil { state.job = .idle }
            return item
        }) {
            write(item)
        }
    }

    private func write(_ item: (offset: UInt64, bytes: [UInt8])) {
        if state.withLock({ $0.error != nil }) || FieldReader.isAllZero(item.bytes) { return }
        do {
            try writer.value.write(item.bytes, at: item.offset)
            state.withLock { $0.written += UInt64(item.bytes.count) }
        } catch {
            state.withLock { state in if state.error == nil { state.error = error } }
        }
    }
}

/// Moves a non-Sendable value to another thread; each use site documents why no concurrent access happens
/// (or, for `pwrite` at distinct offsets, why it is safe).
struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
