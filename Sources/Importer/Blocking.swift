import BlockingIO
import DiskImage
import Synchronization

/// Runs blocking work (libcurl calls, disk-image parsing over a byte source) on the process's
/// ``BlockingExecutor``, never on a cooperative-pool thread.
func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await BlockingExecutor.shared.run(work)
}

/// A `DiskReader` handed between an async task and the pool thread doing its blocking reads.
final class ReaderBox: @unchecked Sendable {
    // Safe: the box belongs to one import; its task awaits each `next()` before issuing the next,
    // so the reader is only ever touched by one thread at a time.
    var reader: any DiskReader
    init(_ reader: any DiskReader) { self.reader = reader }
    func next() throws -> Extent? { try reader.next() }
}

/// Runs cleanup that must happen even when the calling task was cancelled — aborting a pending snapshot,
/// recording an abandoned attempt — in a task of its own, which does not inherit the cancellation (the
/// catalog and the executor refuse work from a cancelled task). It is awaited: the cleanup is still
/// bounded by the caller's lifetime.
func uncancelled<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await Task { try await body() }.value
}

/// Task cancellation as synchronous code on the blocking executor can see it (`Task.isCancelled` is
/// false on a pool thread): set from a task's cancellation handler, polled by DiskImage while it
/// decompresses.
final class CancellationSignal: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}
