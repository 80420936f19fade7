import ArgumentParser
import Foundation
import Logging
import S3
import Synchronization

/// What the S3 commands need: a client built from the configuration (`[s3]`) and the environment
/// (credentials, endpoint, region), the default bucket and the bucket layout.
struct S3Context {
    let client: S3Client
    let configuration: Configuration
    let logger: Logger

    /// Builds the context; configuration and credential problems end the command with exit 2.
    static func make(global: GlobalOptions, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> S3Context
    {
        do {
            let config = try Configuration.load(path: global.config, environment: environment)
            return try make(config: config, verbose: global.verbose, environment: environment)
        } catch {
            throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: global.json, exit: 2)
        }
    }

    /// Endpoint: `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL` (already applied by `Configuration.load`), then
    /// `[s3] endpoint`, then the AWS profile's `endpoint_url`, then AWS itself. Region likewise
    /// (`AWS_REGION`/`AWS_DEFAULT_REGION`, `[s3] region`, the profile, `us-east-1`).
    static func make(config: Configuration, verbose: Bool, environment: [String: String]) throws -> S3Context {
        let home = environment["HOME"]
        let region =
            config.s3.region ?? S3Configuration.region(environment: environment, homeDirectory: home) ?? "us-east-1"
        let endpoint =
            config.s3.endpoint ?? S3Configuration.endpoint(environment: environment, homeDirectory: home)
            ?? "https://s3.\(region).amazonaws.com"
        let credentials = try S3Credentials.resolve(environment: environment, homeDirectory: home)
        var logger = Logger(label: "snapimport.s3", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = verbose ? .debug : .warning
        let s3 = S3Configuration(
            endpoint: endpoint, region: region, credentials: credentials,
            addressing: config.s3.addressing == "virtual" ? .virtual : .path, caFile: config.s3.caFile)
        return S3Context(client: try S3Client(configuration: s3, logger: logger), configuration: config, logger: logger)
    }

    /// The configured bucket (`[s3] bucket` / `SNAPIMPORT_BUCKET`), or exit 2.
    func defaultBucket(json: Bool) throws -> String {
        guard let bucket = configuration.s3.bucket, !bucket.isEmpty else {
            throw CommandOutput.failure(
                code: "InvalidConfiguration", message: "no bucket configured: set [s3] bucket or SNAPIMPORT_BUCKET",
                json: json, exit: 2)
        }
        return bucket
    }

    /// Prints an S3 failure in the CLI contract's terms and exits 1 (2 for a refused request).
    static func failure(_ error: any Error, json: Bool) -> CommandError {
        if let error = error as? CommandError { return error }
        guard let error = error as? S3Error else {
            return CommandOutput.failure(code: "Error", message: "\(error)", json: json, exit: 1)
        }
        let code: String
        switch error.code {
        case .noSuchKey, .noSuchBucket, .noSuchUpload: code = "NotFound"
        case .accessDenied, .signatureDoesNotMatch, .invalidAccessKeyID: code = "AccessDenied"
        default: code = error.awsCode ?? error.code.description
        }
        return CommandOutput.failure(code: code, message: error.description, json: json, exit: error.code == .invalidRequest ? 2 : 1)
    }
}

/// An `s3://bucket/key` location; the key is taken literally (no percent-decoding; `?`, `#` and
/// spaces are part of it).
struct S3Location: Equatable {
    var bucket: String
    var key: String

    /// - Parameter requireKey: whether an empty key is refused (objects) or allowed (a prefix).
    init(_ text: String, requireKey: Bool) throws {
        guard text.hasPrefix("s3://") else { throw ValidationError("expected s3://bucket/key, got '\(text)'") }
        let rest = text.dropFirst("s3://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        bucket = String(rest[..<slash])
        key = slash == rest.endIndex ? "" : String(rest[rest.index(after: slash)...])
        guard !bucket.isEmpty else { throw ValidationError("no bucket in '\(text)'") }
        if requireKey && key.isEmpty { throw ValidationError("no key in '\(text)'") }
    }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
final class ProgressBar: Sendable {
    private struct State {
        var lastDraw = ContinuousClock.now - .seconds(1)
        var drawn = false
    }
    private let state = Mutex(State())
    private let label: String
    private let started = ContinuousClock.now
    let enabled: Bool

    init(label: String, enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.label = label
        self.enabled = enabled
    }

    func update(done: UInt64, total: UInt64) {
        guard enabled else { return }
        let now = ContinuousClock.now
        let line: String? = state.withLock { s in
            guard done >= total || now - s.lastDraw >= .milliseconds(100) else { return nil }
            s.lastDraw = now
            s.drawn = true
            let fraction = total == 0 ? 1 : Double(done) / Double(total)
            let width = 30
            let filled = min(width, Int(fraction * Double(width)))
            let elapsed = max(0.001, Double((now - started).components.seconds) + Double((now - started).components.attoseconds) / 1e18)
            let rate = Double(done) / elapsed / 1_048_576
            let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
            return "\r\(label) [\(bar)] \(Int(fraction * 100))% " + String(format: "%.1f", rate) + " MiB/s"
        }
        if let line { FileHandle.standardError.write(Data(line.utf8)) }
    }

    func finish() {
        if enabled && state.withLock({ $0.drawn }) { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
