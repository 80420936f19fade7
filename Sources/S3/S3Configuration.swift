import Foundation
import SigV4

/// Credentials for S3. Printing, dumping or interpolating this value never shows the secret or token.
public struct S3Credentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    var sigV4: SigV4Credentials {
        SigV4Credentials(accessKeyID: accessKeyID, secretAccessKey: secretAccessKey, sessionToken: sessionToken)
    }

    public var description: String { "S3Credentials(accessKeyID: \(accessKeyID), secret: <redacted>)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }

    /// Finds credentials the way the AWS CLI does, in this order:
    /// 1. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`);
    /// 2. the profile `AWS_PROFILE` (else `default`) in `AWS_SHARED_CREDENTIALS_FILE`
    ///    (else `~/.aws/credentials`), then in `AWS_CONFIG_FILE` (else `~/.aws/config`, section
    ///    `[profile NAME]` or `[default]`).
    /// - Throws: `S3Error` `.invalidRequest` naming where it looked (never a secret).
    public static func resolve(environment: [String: String], homeDirectory: String?) throws -> S3Credentials {
        if let key = environment["AWS_ACCESS_KEY_ID"], !key.isEmpty,
            let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty
        {
            let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return S3Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: token)
        }
        let files = AWSConfigFiles(environment: environment, homeDirectory: homeDirectory)
        let profile = files.profileName
        for section in [files.credentials(profile: profile), files.config(profile: profile)] {
            if let key = section["aws_access_key_id"], let secret = section["aws_secret_access_key"] {
                return S3Credentials(
                    accessKeyID: key, secretAccessKey: secret, sessionToken: section["aws_session_token"])
            }
        }
        throw S3Error(
            code: .invalidRequest,
            message: "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with "
                + "\(files.credentialsPath ?? "~/.aws/credentials") (profile '\(profile)' not found or incomplete)")
    }
}

/// The AWS shared config and credentials files (INI), read leniently.
public struct AWSConfigFiles: Sendable {
    public let profileName: String
    let credentialsPath: String?
    let configPath: String?

    public init(environment: [String: String], homeDirectory: String?) {
        profileName = environment["AWS_PROFILE"].flatMap { $0.isEmpty ? nil : $0 } ?? "default"
        let home = homeDirectory ?? environment["HOME"]
        credentialsPath = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? home.map { $0 + "/.aws/credentials" }
        configPath = environment["AWS_CONFIG_FILE"] ?? home.map { $0 + "/.aws/config" }
    }

    /// The `[NAME]` section of the credentials file.
    public func credentials(profile: String) -> [String: String] {
        guard let credentialsPath else { return [:] }
        return Self.parseINI(path: credentialsPath)[profile] ?? [:]
    }

    /// The `[profile NAME]` (or `[default]`) section of the config file.
    public func config(profile: String) -> [String: String] {
        guard let configPath else { return [:] }
        let sections = Self.parseINI(path: configPath)
        if profile == "default" { return sections["default"] ?? sections["profile default"] ?? [:] }
        return sections["profile \(profile)"] ?? [:]
    }

    /// `region` of the current profile in the config file.
    public var region: String? { config(profile: profileName)["region"] }
    /// `endpoint_url` of the current profile in the config file.
    public var endpointURL: String? { config(profile: profileName)["endpoint_url"] }

    static func parseINI(path: String) -> [String: [String: String]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        var sections: [String: [String: String]] = [:]
        var current: String?
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                let name = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                current = name.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
                continue
            }
            guard let current, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            sections[current, default: [:]][key] = value
        }
        return sections
    }
}

/// Retry policy: exponential backoff with full jitter, bounded attempts and total time.
public struct S3RetryPolicy: Sendable {
    /// Attempts in total, the first included (1 disables retries).
    public var maxAttempts: Int
    /// Backoff before the first retry; doubled for each further retry.
    public var baseDelay: Duration
    /// Upper bound of one backoff.
    public var maxDelay: Duration
    /// No retry starts once this much time has passed since the first attempt.
    public var maxTotalTime: Duration

    public init(
        maxAttempts: Int = 5, baseDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(10),
        maxTotalTime: Duration = .seconds(120)
    ) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxTotalTime = maxTotalTime
    }

    /// The delay before retry number `retry` (1-based): uniform in [d/2, d] with d = min(max, base·2^(retry-1)).
    func delay(beforeRetry retry: Int) -> Duration {
        let factor = 1 << min(max(retry - 1, 0), 20)
        let capped = min(maxDelay, baseDelay * factor)
        return .milliseconds(Int(capped.seconds * 1000 * Double.random(in: 0.5...1.0)))
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// How requests name the bucket.
public enum S3Addressing: String, Sendable {
    /// `http://endpoint/bucket/key` (default; works with any endpoint).
    case path
    /// `http://bucket.endpoint/key`.
    case virtual
}

/// Everything an `S3Client` needs. Never printed with secrets (see `S3Credentials`).
public struct S3Configuration: Sendable {
    /// Base URL, `http(s)://host[:port]` (a path is not allowed).
    public var endpoint: String
    public var region: String
    public var credentials: S3Credentials
    public var addressing: S3Addressing
    /// PEM CA bundle to trust instead of the system store (`CURLOPT_CAINFO`).
    public var caFile: String?
    /// Seconds to establish a connection (TCP + TLS).
    public var connectTimeout: Int
    /// A transfer slower than `stallSpeedLimit` bytes/s for this many seconds is aborted.
    public var stallTimeout: Int
    /// Bytes per second under which a transfer counts as stalled.
    public var stallSpeedLimit: Int
    public var retry: S3RetryPolicy
    /// `CURLOPT_RESOLVE` entries `HOST:PORT:ADDRESS`, e.g. `bkt.s3.localhost:8333:127.0.0.1` to
    /// reach virtual-hosted names on loopback without DNS.
    public var resolve: [String]
    /// Largest number of idle connections kept for reuse.
    public var maxIdleConnections: Int
    /// Whether to verify TLS peers (always true unless a test explicitly turns it off).
    public var verifyTLS: Bool
    /// Sources larger than this are copied with UploadPartCopy (S3 refuses a single CopyObject
    /// above 5 GiB).
    public var multipartCopyThreshold: UInt64 = 5 << 30
    /// Part size for multipart copies.
    public var copyPartSize: Int = 512 << 20

    public init(
        endpoint: String, region: String, credentials: S3Credentials, addressing: S3Addressing = .path,
        caFile: String? = nil, connectTimeout: Int = 10, stallTimeout: Int = 30, stallSpeedLimit: Int = 1,
        retry: S3RetryPolicy = S3RetryPolicy(), resolve: [String] = [], maxIdleConnections: Int = 32,
        verifyTLS: Bool = true
    ) {
        self.endpoint = endpoint
        self.region = region
        self.credentials = credentials
        self.addressing = addressing
        self.caFile = caFile
        self.connectTimeout = connectTimeout
        self.stallTimeout = stallTimeout
        self.stallSpeedLimit = stallSpeedLimit
        self.retry = retry
        self.resolve = resolve
        self.maxIdleConnections = maxIdleConnections
        self.verifyTLS = verifyTLS
    }

    /// Endpoint from `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, then the profile's `endpoint_url`.
    public static func endpoint(environment: [String: String], homeDirectory: String?) -> String? {
        for name in ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"] {
            if let value = environment[name], !value.isEmpty { return value }
        }
        return AWSConfigFiles(environment: environment, homeDirectory: homeDirectory).endpointURL
    }

    /// Region from `AWS_REGION`, `AWS_DEFAULT_REGION`, then the profile's `region`.
    public static func region(environment: [String: String], homeDirectory: String?) -> String? {
        for name in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            if let value = environment[name], !value.isEmpty { return value }
        }
        return AWSConfigFiles(environment: environment, homeDirectory: homeDirectory).region
    }
}

/// Parsed endpoint: scheme, host and port.
struct S3Endpoint: Sendable {
    var scheme: String
    var host: String
    var port: Int?

    init(_ string: String) throws {
        guard let components = URLComponents(string: string), let scheme = components.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty
        else {
            throw S3Error(code: .invalidRequest, message: "S3 endpoint must be http(s)://host[:port], got '\(string)'")
        }
        guard components.path.isEmpty || components.path == "/", components.query == nil else {
            throw S3Error(code: .invalidRequest, message: "S3 endpoint must not have a path or query: '\(string)'")
        }
        self.scheme = scheme
        self.host = host
        self.port = components.port
    }

    /// `host[:port]` for a given host name, omitting default ports.
    func authority(host: String) -> String {
        guard let port else { return host }
        if (scheme == "http" && port == 80) || (scheme == "https" && port == 443) { return host }
        return "\(host):\(port)"
    }
}
