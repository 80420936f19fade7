public import Hummingbird
import HummingbirdCore
import HummingbirdTLS
public import Logging
import NIOCore
import NIOSSL

/// Builds the HTTP server of `snapimport serve`: a Hummingbird application (a swift-service-lifecycle
/// `Service`: it stops accepting on graceful shutdown and finishes the requests in flight) around an
/// ``EC2Responder``, on plain HTTP or, with a certificate and key, TLS.
public enum APIServer {
    /// Where and how to listen.
    public struct Settings: Sendable {
        public var host: String
        public var port: Int
        /// PEM certificate chain and private key; both or neither.
        public var tlsCertificate: String?
        public var tlsKey: String?

        public init(host: String, port: Int, tlsCertificate: String? = nil, tlsKey: String? = nil) {
            self.host = host
            self.port = port
            self.tlsCertificate = tlsCertificate
            self.tlsKey = tlsKey
        }

        /// Parses `HOST:PORT` (`[::1]:8773` for IPv6). - Throws: a message naming the expected form.
        public static func parseListen(_ text: String) throws -> (host: String, port: Int) {
            var host: Substring
            var portText: Substring
            if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
                host = text[text.index(after: text.startIndex)..<close]
                let rest = text[text.index(after: close)...]
                guard rest.hasPrefix(":") else {
                    throw APIServerError("listen address \(quoted(text)): expected [HOST]:PORT")
                }
                portText = rest.dropFirst()
            } else {
                guard let colon = text.lastIndex(of: ":") else {
                    throw APIServerError("listen address \(quoted(text)): expected HOST:PORT")
                }
                host = text[..<colon]
                portText = text[text.index(after: colon)...]
            }
            guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else {
                throw APIServerError("listen address \(quoted(text)): expected HOST:PORT with a port from 0 to 65535")
            }
            return (String(host), port)
        }
    }

    /// The application around `responder` (the ``EC2Responder``, or it mounted beside the console).
    /// `onListening` gets the bound port (useful with port 0).
    public static func application<Responder: HTTPResponder>(
        responder: Responder, settings: Settings, logger: Logger,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol where Responder.Context == BasicRequestContext {
        let server: HTTPServerBuilder
        switch (settings.tlsCertificate, settings.tlsKey) {
        case (nil, nil):
            server = .http1()
        case (let cert?, let key?):
            let tls: TLSConfiguration
            do {
                tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            } catch {
                throw APIServerError("cannot load the TLS certificate \(cert) or key \(key): \(error)")
            }
            server = try .tls(.http1(), tlsConfiguration: tls)
        default:
            throw APIServerError("[api] tls_cert and tls_key go together: set both or neither")
        }
        return Application(
            responder: responder, server: server,
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: nil),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? settings.port) },
            logger: logger)
    }
}

/// A configuration problem of the server (listen address, TLS files).
public struct APIServerError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
