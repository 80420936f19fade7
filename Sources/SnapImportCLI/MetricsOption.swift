import ArgumentParser
import Observability

/// `--metrics HOST:PORT`, shared by `watch` and `serve`: where to serve Prometheus text at `/metrics`.
struct MetricsOption: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free port).", valueName: "host:port"))
    var metrics: String?

    /// The parsed address, nil without `--metrics`.
    var address: (host: String, port: Int)? { metrics.flatMap(MetricsServer.parseAddress) }

    func validate() throws {
        if let metrics, MetricsServer.parseAddress(metrics) == nil {
            throw ValidationError("--metrics wants HOST:PORT (e.g. 127.0.0.1:9464), got '\(metrics)'")
        }
    }
}
