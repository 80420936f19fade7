import Metrics
public import Prometheus

/// The import worker's metrics (`watch --metrics`, and `serve` later), recorded through swift-metrics
/// into one Prometheus registry that ``MetricsServer`` renders at `/metrics`:
///
/// - `snapimport_imports_total{result}`: objects handled, by result (`imported`, `already_imported`,
///   `rejected`, `retried`, `skipped`);
/// - `snapimport_import_bytes_total`: bytes of the objects imported (their size in the bucket);
/// - `snapimport_imports_in_flight`: imports running now;
/// - `snapimport_pass_duration_seconds`: a histogram of pass durations;
/// - `snapimport_passes_total`, `snapimport_last_pass_timestamp_seconds` (Unix time of the end of the
///   last pass: alert when it stops moving).
///
/// No global bootstrap: the metrics use this instance's factory, so tests and several workers in one
/// process each have their own registry.
public final class ImportMetrics: Sendable {
    /// The results `snapimport_imports_total` counts, one series each from the start.
    public static let results = ["imported", "already_imported", "rejected", "retried", "skipped"]

    /// The registry the metrics live in (render it with `emitToString()`, or serve it with ``MetricsServer``).
    public let registry: PrometheusCollectorRegistry
    private let byResult: [String: Metrics.Counter]
    private let bytes: Metrics.Counter
    private let inFlight: Metrics.Meter
    private let passDuration: Metrics.Timer
    private let passes: Metrics.Counter
    private let lastPass: Metrics.Gauge

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["snapimport_pass_duration_seconds"] = [
            .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5), .seconds(15), .seconds(60),
            .seconds(300), .seconds(900), .seconds(3600),
        ]
        var counters: [String: Metrics.Counter] = [:]
        for result in Self.results {
            let counter = Metrics.Counter(
                label: "snapimport_imports_total", dimensions: [("result", result)], factory: factory)
            counter.increment(by: 0)
            counters[result] = counter
        }
        byResult = counters
        bytes = Metrics.Counter(label: "snapimport_import_bytes_total", factory: factory)
        inFlight = Metrics.Meter(label: "snapimport_imports_in_flight", factory: factory)
        passDuration = Metrics.Timer(label: "snapimport_pass_duration_seconds", factory: factory)
        passes = Metrics.Counter(label: "snapimport_passes_total", factory: factory)
        lastPass = Metrics.Gauge(label: "snapimport_last_pass_timestamp_seconds", factory: factory)
    }

    /// An import started.
    public func importStarted() { inFlight.increment() }

    /// An import ended with `result` (one of ``results``); `bytes` of the object count when it was imported.
    public func importFinished(result: String, bytes: UInt64) {
        inFlight.decrement()
        byResult[result]?.increment()
        if result == "imported" { self.bytes.increment(by: Int64(clamping: bytes)) }
    }

    /// A pass ended at `endedAt` (Unix seconds) after `duration`.
    public func passFinished(duration: Duration, endedAt: Double) {
        passDuration.recordNanoseconds(
            Int64(duration.components.seconds) * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
        passes.increment()
        lastPass.record(endedAt)
    }

    /// The Prometheus text exposition of every metric.
    public func render() -> String { registry.emitToString() }
}
