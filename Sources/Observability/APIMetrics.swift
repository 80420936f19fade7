import Metrics
public import Prometheus
import Synchronization

/// The API server's metrics (`serve --metrics`), recorded through swift-metrics into a Prometheus
/// registry (usually the one ``ImportMetrics`` uses, so one `/metrics` shows both):
///
/// - `snapimport_api_requests_total{action,status}`: requests answered, by EC2 action and HTTP status;
/// - `snapimport_api_request_duration_seconds{action}`: a histogram of response times.
///
/// `action` is one of the actions the server knows, `unknown` for any other name (a client cannot
/// create series at will), or `none` when the request named no action (bad path, `/healthz`).
public final class APIMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let actions: Set<String>
    private let factory: PrometheusMetricsFactory
    // Counters and timers by label, made on first use (one series per action and status seen).
    private let counters = Mutex<[String: Metrics.Counter]>([:])
    private let timers = Mutex<[String: Metrics.Timer]>([:])

    /// - Parameters:
    ///   - actions: the action names that get their own series.
    ///   - registry: where the metrics live.
    public init(actions: [String], registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        self.actions = Set(actions)
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["snapimport_api_request_duration_seconds"] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        self.factory = factory
    }

    /// A request for `action` (as the client named it, nil when none) was answered with `status` after
    /// `duration`.
    public func requestFinished(action: String?, status: Int, duration: Duration) {
        let label = action.map { actions.contains($0) ? $0 : "unknown" } ?? "none"
        let key = "\(label)|\(status)"
        let counter = counters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Metrics.Counter(
                label: "snapimport_api_requests_total", dimensions: [("action", label), ("status", "\(status)")],
                factory: factory)
            counters[key] = counter
            return counter
        }
        counter.increment()
        let timer = timers.withLock { timers in
            if let timer = timers[label] { return timer }
            let timer = Metrics.Timer(
                label: "snapimport_api_request_duration_seconds", dimensions: [("action", label)], factory: factory)
            timers[label] = timer
            return timer
        }
        timer.recordNanoseconds(
            Int64(duration.components.seconds) * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }
}
