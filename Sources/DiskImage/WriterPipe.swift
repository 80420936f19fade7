import Dispatch
import Synchronization

/// Hands data extents to a writer thread through a bounded queue: the caller reads while the writer skips
/// all-zero extents (they stay holes) and writes the rest with `pwrite`.
final class WriterPipe: Sendable {
    private struct State {
        var queue: [(offset: UInt64, bytes: [UInt8])?] = []
        var error: (any Error)?
        var written: UInt64 = 0
    }

    private let state = Mutex(State())
    private let free: DispatchSemaphore
    private let ready = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private let finished = Mutex(false)

    /// Starts the writer thread.
    init(writer: SparseRawWriter, depth: Int) {
        free = DispatchSemaphore(value: depth)
        // `SparseRawWriter` is used only by the writer thread until `done` is signalled; the caller touches
        // it again only after `finish()` waited for that signal.
        let box = UncheckedBox(writer)
        DispatchQueue.global().async { [self] in
            while true {
                ready.wait()
                guard let item = state.withLock({ $0.queue.removeFirst() }) else { break }
                free.signal()
                if state.withLock({ $0.error != nil }) { continue }
                if FieldReader.isAllZero(item.bytes) { continue }
                do {
                    try box.value.write(item.bytes, at: item.offset)
                    state.withLock { $0.written += UInt64(item.bytes.count) }
                } catch {
                    state.withLock { $0.error = error }
                }
            }
            done.signal()
        }
    }

    /// Queues `bytes` for writing at `offset`; false when the writer has failed (stop reading).
    func send(_ bytes: [UInt8], at offset: UInt64) -> Bool {
        free.wait()
        let failed = state.withLock { state -> Bool in
            state.queue.append((offset, bytes))
            return state.error != nil
        }
        ready.signal()
        return !failed
    }

    /// Waits for the writer to drain, then returns the bytes written or throws its error.
    func finish() throws -> UInt64 {
        let first = finished.withLock { value -> Bool in
            defer { value = true }
            return !value
        }
        if first {
            state.withLock { $0.queue.append(nil) }
            ready.signal()
            done.wait()
        }
        return try state.withLock { state in
            if let error = state.error { throw error }
            return state.written
        }
    }
}

/// Moves a non-Sendable value to another thread; each use site documents why no concurrent access happens.
struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
