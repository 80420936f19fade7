public import Logging
public import ServiceLifecycle
public import SnapshotCore

/// Frees blocks that no snapshot references (left by deleted snapshots and by imports abandoned or
/// killed mid-way) every `interval`, for `snapimport watch`. Each collection visits only the blocks
/// whose reference count reached zero, plus one full sweep of the store after recovery found a
/// vanished writer (see SnapshotCore's `BlockCollector`); it is safe while imports run; graceful
/// shutdown ends the loop.
public struct GarbageCollectionService<C: Clock & Sendable>: Service where C.Duration == Duration {
    private let service: SnapshotService
    private let interval: Duration
    private let clock: C
    private let logger: Logger

    public init(service: SnapshotService, interval: Duration, clock: C, logger: Logger) {
        self.service = service
        self.interval = interval
        self.clock = clock
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown { try await clock.sleep(for: interval) }
            } catch {
                return  // cancelled or shutting down
            }
            if Task.isShuttingDownGracefully { return }
            await Self.collect(service, logger: logger)
        }
    }

    /// One collection; failures are logged, never fatal (the next one retries).
    public static func collect(_ service: SnapshotService, logger: Logger) async {
        do {
            let report = try await service.collectReleasedBlocks()
            logger.info(
                "garbage collection",
                metadata: ["removed": "\(report.removed)", "bytes": "\(report.removedBytes)", "kept": "\(report.kept)"])
        } catch {
            logger.warning("garbage collection failed: \(error)")
        }
    }
}
