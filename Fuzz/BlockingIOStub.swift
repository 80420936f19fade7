// The fuzz build compiles DiskImage's sources into one module with swiftc, without SwiftPM and so without
// the BlockingIO target (it needs swift-nio). This stands in for the two BlockingIO entry points DiskImage
// calls, running the work inline on the calling thread: the same results, one thread. BlockingMonitor is
// compiled from its own source (Foundation only).

struct BlockingExecutor: Sendable {
    static let shared = BlockingExecutor()

    /// Runs `body` for every index in turn.
    func forEach(_ count: Int, helpers: Int? = nil, _ body: @escaping @Sendable (Int) -> Void) {
        for index in 0..<count { body(index) }
    }

    /// Runs `body` at once.
    func submit(_ body: @escaping @Sendable () -> Void) { body() }
}
