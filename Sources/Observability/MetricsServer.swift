import Hummingbird
public import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
public import Prometheus
public import ServiceLifecycle

/// A small HTTP listener serving a Prometheus registry as text at `GET /metrics` (Hummingbird), run as a
/// `Service` beside the worker (`watch --metrics HOST:PORT`). Any other path is 404.
public struct MetricsServer: Service {
    private let application: Application<RouterResponder<BasicRequestContext>>
    private let address: String

    /// - Parameters:
    ///   - host: the address to bind (`127.0.0.1`, `0.0.0.0`, `::`).
    ///   - port: the port; 0 picks a free one (logged once the server runs).
    ///   - registry: what `/metrics` renders.
    ///   - onRunning: told the bound port once the listener accepts connections.
    public init(
        host: String, port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
        onRunning: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        let router = Router()
        router.get("/metrics") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        application = Application(
            router: router, configuration: ApplicationConfiguration(address: .hostname(host, port: port)),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                logger.info(
                    "serving metrics at http://\(host):\(bound)/metrics",
                    metadata: ["host": .string(host), "port": .stringConvertible(bound)])
                onRunning(bound)
            },
            logger: logger)
    }

    /// Serves until graceful shutdown.
    ///
    /// - Throws: ``MetricsServerError`` when the address cannot be listened on (in use, not local).
    public func run() async throws {
        do {
            try await application.run()
        } catch let error as IOError {
            throw MetricsServerError(address: address, reason: String(cString: strerror(error.errnoCode)))
        }
    }

    /// Parses `HOST:PORT` (`[::1]:9100` for IPv6); nil when malformed or the port is not 0…65535.
    public static func parseAddress(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else {
            return nil
        }
        return (host, port)
    }
}

/// The metrics listener could not start: `cannot serve metrics at 127.0.0.1:9464: Address already in use`.
public struct MetricsServerError: Error, CustomStringConvertible, Sendable {
    public let address: String
    public let reason: String

    public var description: String { "cannot serve metrics at \(address): \(reason)" }
}
