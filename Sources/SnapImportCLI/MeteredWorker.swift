import Foundation
import Importer
import Logging
import Observability
import Synchronization

/// The pipeline with its work counted: wraps an ``ObjectImporting`` worker and records every import
/// (in flight, result, bytes) and every pass (duration, end time) into ``ImportMetrics``; an idle pass
/// logs a heartbeat at debug level, so `watch --verbose` shows the daemon alive while nothing arrives.
final class MeteredWorker: ObjectImporting {
    private let worker: any ObjectImporting
    private let metrics: ImportMetrics
    private let logger: Logger
    private struct State {
        var passStarted: ContinuousClock.Instant?
        var passes = 0
    }
    // The pass's start and count, behind the mutex; everything else is immutable and Sendable.
    private let state = Mutex(State())

    init(_ worker: any ObjectImporting, metrics: ImportMetrics, logger: Logger) {
        self.worker = worker
        self.metrics = metrics
        self.logger = logger
    }

    func preparePass() async {
        state.withLock { $0.passStarted = .now }
        await worker.preparePass()
    }

    func listCandidates() async throws -> [BucketLayout.Candidate] { try await worker.listCandidates() }

    func ownerText(of candidate: BucketLayout.Candidate) -> String? { worker.ownerText(of: candidate) }

    func importObject(_ candidate: BucketLayout.Candidate) async -> ImportResult {
        metrics.importStarted()
        let result = await worker.importObject(candidate)
        metrics.importFinished(result: Self.result(of: result.outcome), bytes: candidate.size)
        return result
    }

    /// The `result` label of an outcome.
    static func result(of outcome: ImportOutcome) -> String {
        switch outcome {
        case .imported: "imported"
        case .alreadyImported: "already_imported"
        case .rejected: "rejected"
        case .retried: "retried"
        case .skipped: "skipped"
        }
    }

    /// The importer's `onPass`: records the pass and, when it found nothing to do, logs the heartbeat.
    func passEnded(_ summary: PassSummary) {
        let (started, passes) = state.withLock { state -> (ContinuousClock.Instant?, Int) in
            state.passes += 1
            defer { state.passStarted = nil }
            return (state.passStarted, state.passes)
        }
        let duration = started.map { ContinuousClock.now - $0 } ?? .zero
        metrics.passFinished(duration: duration, endedAt: Date().timeIntervalSince1970)
        let idle =
            summary.listingError == nil && summary.imported.isEmpty && summary.rejected.isEmpty
            && summary.retried.isEmpty
        if idle {
            logger.debug(
                "heartbeat: idle, nothing to import",
                metadata: [
                    "passes": "\(passes)", "skipped": "\(summary.skipped.count)",
                    "pass_ms":
                        "\(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)",
                ])
        }
    }
}
