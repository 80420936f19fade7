import Foundation
import PostgresNIO

/// Where the shared catalog lives, parsed from a libpq-style URL:
/// `postgres://user[:password]@host[:port]/database[?sslmode=…&schema=…]`.
///
/// - `sslmode`: `disable`, `allow`/`prefer`, `require` (encrypt, no certificate check, as libpq), `verify-ca`
///   (chain checked, not the host name) or `verify-full`. Without it: TLS off for a loopback host (`127.0.0.1`,
///   `::1`, `localhost`), `prefer` otherwise.
/// - `schema`: the PostgreSQL schema holding the tables (created if missing); default `public`. Lets several
///   independent catalogs (or tests) share one database.
/// - `application_name`, `connect_timeout` (seconds) as in libpq. Other parameters are refused, so a typo does
///   not silently weaken security.
///
/// The password may be percent-encoded; it is never logged or put in an error message (see ``redactedURL``).
public struct PostgresCatalogConfiguration: Sendable {
    /// The server host name or IP address.
    public var host: String
    /// The server TCP port (default 5432).
    public var port: Int
    /// The login role.
    public var username: String
    /// The password, if the URL has one.
    public var password: String?
    /// The database name (default: the user name, as libpq).
    public var database: String
    /// The schema holding the catalog tables; `nil` means PostgreSQL's default search path (`public`).
    public var schema: String?
    /// The TLS mode as parsed from `sslmode` (or the loopback default).
    public var tls: TLSMode
    /// Reported to the server as `application_name`.
    public var applicationName: String
    /// How long to wait for a TCP connection.
    public var connectTimeout: Duration
    /// Most connections one catalog instance opens at once.
    public var maximumConnections: Int

    /// libpq's `sslmode` values that this catalog honours.
    public enum TLSMode: String, Sendable, CaseIterable {
        case disable
        case prefer
        case require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    /// Parses a catalog URL.
    /// - Parameter url: `postgres://` or `postgresql://` URL.
    /// - Throws: ``PostgresCatalogError/Code-swift.struct/invalidURL`` naming the problem (without the password).
    public init(url: String) throws {
        guard let components = URLComponents(string: url),
            let scheme = components.scheme?.lowercased(), scheme == "postgres" || scheme == "postgresql"
        else {
            throw PostgresCatalogError(.invalidURL, "catalog URL must be postgres://user@host[:port]/database")
        }
        guard let host = components.host, !host.isEmpty else {
            throw PostgresCatalogError(.invalidURL, "catalog URL has no host")
        }
        guard let user = components.user.map({ $0.removingPercentEncoding ?? $0 }), !user.isEmpty else {
            throw PostgresCatalogError(.invalidURL, "catalog URL has no user name (postgres://USER@host/db)")
        }
        // IPv6 literals come back with brackets from URLComponents.
        self.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        self.port = components.port ?? 5432
        guard (1...65535).contains(self.port) else {
            throw PostgresCatalogError(.invalidURL, "catalog URL port \(self.port) is out of range")
        }
        self.username = user
        self.password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        let database = path.removingPercentEncoding ?? path
        guard !database.contains("/") else {
            throw PostgresCatalogError(.invalidURL, "catalog URL path must be a single database name")
        }
        self.database = database.isEmpty ? user : database
        self.schema = nil
        self.tls = Self.isLoopback(self.host) ? .disable : .prefer
        self.applicationName = "snapimport"
        self.connectTimeout = .seconds(10)
        self.maximumConnections = 8

        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                switch value {
                case "allow", "prefer": self.tls = .prefer
                default:
                    guard let mode = TLSMode(rawValue: value) else {
                        throw PostgresCatalogError(.invalidURL, "unsupported sslmode '\(value)'")
                    }
                    self.tls = mode
                }
            case "schema":
                guard Self.isValidSchemaName(value) else {
                    throw PostgresCatalogError(
                        .invalidURL, "schema '\(value)' must match [a-z_][a-z0-9_]{0,62}")
                }
                self.schema = value
            case "application_name":
                self.applicationName = value
            case "connect_timeout":
                guard let seconds = Int(value), seconds > 0, seconds <= 3600 else {
                    throw PostgresCatalogError(.invalidURL, "connect_timeout must be 1…3600 seconds")
                }
                self.connectTimeout = .seconds(seconds)
            default:
                throw PostgresCatalogError(.invalidURL, "unsupported catalog URL parameter '\(item.name)'")
            }
        }
    }

    /// The URL with the password replaced by `***`, for logs and messages.
    public var redactedURL: String {
        let auth = password == nil ? username : "\(username):***"
        let hostPart = host.contains(":") ? "[\(host)]" : host
        var url = "postgres://\(auth)@\(hostPart):\(port)/\(database)"
        if let schema { url += "?schema=\(schema)" }
        return url
    }

    /// Whether `name` is a plain lower-case identifier usable as a schema name without quoting.
    public static func isValidSchemaName(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 63 else { return false }
        let isLower = { (c: UInt8) in c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z") }
        let isDigit = { (c: UInt8) in c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
        guard isLower(first) || first == UInt8(ascii: "_") else { return false }
        return name.utf8.allSatisfy { isLower($0) || isDigit($0) || $0 == UInt8(ascii: "_") }
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// The TLS settings of `sslmode` (nil: no TLS).
    private var tlsSettings: (configuration: TLSConfiguration, required: Bool)? {
        switch tls {
        case .disable:
            return nil
        case .prefer, .require:
            // libpq semantics: `prefer`/`require` encrypt but do not check the certificate.
            var config = TLSConfiguration.makeClientConfiguration()
            config.certificateVerification = .none
            return (config, tls == .require)
        case .verifyCA:
            var config = TLSConfiguration.makeClientConfiguration()
            config.certificateVerification = .noHostnameVerification
            return (config, true)
        case .verifyFull:
            return (.makeClientConfiguration(), true)
        }
    }

    /// Startup parameters sent on every connection: the application name and, with a schema, the search path
    /// (a startup parameter sets the GUC for every pooled connection; the name was validated by the parser).
    private var startupParameters: [(String, String)] {
        var startup: [(String, String)] = [("application_name", applicationName)]
        if let schema { startup.append(("search_path", schema)) }
        return startup
    }

    /// The postgres-nio pool configuration.
    var clientConfiguration: PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS
        switch tlsSettings {
        case nil: tls = .disable
        case let (config, required)?: tls = required ? .require(config) : .prefer(config)
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = connectTimeout
        configuration.options.maximumConnections = maximumConnections
        configuration.options.connectionIdleTimeout = .seconds(60)
        configuration.options.additionalStartupParameters = startupParameters
        return configuration
    }

    /// A single-connection configuration with the same settings, for the connection probe.
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch tlsSettings {
        case nil: tls = .disable
        case let (config, required)?:
            let context = try NIOSSLContext(configuration: config)
            tls = required ? .require(context) : .prefer(context)
        }
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tls)
        let (seconds, attoseconds) = connectTimeout.components
        configuration.options.connectTimeout = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        configuration.options.additionalStartupParameters = startupParameters
        return configuration
    }
}
