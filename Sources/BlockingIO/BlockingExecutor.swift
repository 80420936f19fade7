#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOPosix

/// The one place where snapimport leaves Swift's cooperative thread pool.
///
/// libcurl transfers, `pread`/`pwrite`, `fsync` and SQLite calls block their thread. Run on the
/// cooperative pool (one thread per core) they would starve every other task of the process — lease
/// renewals, catalog commits, the signal handler's shutdown. They run here instead: a fixed pool of
/// threads (NIO's `NIOThreadPool`), entered with ``run(_:)``, which honours task cancellation: work that
/// has not started when its task is cancelled never starts and throws `CancellationError` (work already
/// running finishes; a blocking call cannot be interrupted half-way).
///
/// The process shares one pool, ``shared`` (like `NIOThreadPool.singleton`): its size bounds the
/// blocking work in flight whatever the number of imports, and a pool per component would multiply
/// threads instead of bounding them.
public struct BlockingExecutor: Sendable {
    private let pool: NIOThreadPool

    /// The process's pool: 16 threads, enough for the default concurrency (every import's read-ahead
    /// GETs, block writes and catalog calls) while still bounded.
    public static let shared = BlockingExecutor(threads: 16)

    /// A pool of its own (tests, tools). Its threads live as long as the process.
    public init(threads: Int) {
        let pool = NIOThreadPool(numberOfThreads: max(1, threads))
        pool.start()
        self.pool = pool
    }

    /// Runs blocking `body` on the pool and returns its result.
    ///
    /// - Throws: `CancellationError` when the calling task is cancelled before `body` starts; otherwise
    ///   whatever `body` throws.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try Task.checkCancellation()
        return try await pool.runIfActive(body)
    }

    /// Blocks the calling thread for `duration` (a retry's back-off in blocking code).
    ///
    /// **Only from a pool thread** — code already running inside ``run(_:)`` or ``submit(_:)`` that
    /// cannot await (a synchronous byte source read by a synchronous parser). Async code waits with
    /// `Task.sleep(for:)` instead, which frees its thread and ends early on cancellation; this cannot.
    /// - Parameter duration: how long to sleep; zero or negative returns at once.
    @available(*, noasync, message: "blocks its thread: use Task.sleep(for:) in async code")
    public static func sleepBlocking(_ duration: Duration) {
        guard duration > .zero else { return }
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        // nanosleep returns early (EINTR) when a signal is handled: sleep the rest.
        while nanosleep(&request, &remaining) != 0 && errno == EINTR {
            request = remaining
        }
    }

    /// Starts `body` on the pool without waiting for it (a read-ahead the caller collects later).
    /// `body` must handle its own errors.
    public func submit(_ body: @escaping @Sendable () -> Void) {
        pool.submit { state in
            if case .active = state { body() }
        }
    }
}
