import Foundation
import Logging
@testable import S3
import Synchronization
import Testing

/// Environment of the integration tests (scripts/test exports these).
enum TestEnvironment {
    static let environment = ProcessInfo.processInfo.environment
    static let endpoint = environment["SNAPIMPORT_TEST_S3_ENDPOINT"]
    static let hasS3 = endpoint != nil
    static let skipReason: Comment = "SNAPIMPORT_TEST_S3_ENDPOINT is not set (run scripts/test)"
    static let accessKey = environment["AWS_ACCESS_KEY_ID"] ?? "AKIDEXAMPLE"
    static let secretKey = environment["AWS_SECRET_ACCESS_KEY"] ?? "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    static let region = environment["AWS_REGION"] ?? "us-east-1"

    static let logger: Logger = {
        var logger = Logger(label: "s3-tests", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = environment["SNAPIMPORT_TEST_LOG"] == "debug" ? .debug : .warning
        return logger
    }()

    static func configuration(
        endpoint: String? = nil, secret: String? = nil, retry: S3RetryPolicy = S3RetryPolicy(maxAttempts: 4),
        addressing: S3Addressing = .path, resolve: [String] = []
    ) -> S3Configuration {
        S3Configuration(
            endpoint: endpoint ?? self.endpoint ?? "http://127.0.0.1:1", region: region,
            credentials: S3Credentials(accessKeyID: accessKey, secretAccessKey: secret ?? secretKey),
            addressing: addressing, connectTimeout: 5, stallTimeout: 30, retry: retry, resolve: resolve)
    }

    static func client(
        endpoint: String? = nil, secret: String? = nil, retry: S3RetryPolicy = S3RetryPolicy(maxAttempts: 4),
        addressing: S3Addressing = .path, resolve: [String] = []
    ) throws -> S3Client {
        try S3Client(
            configuration: configuration(
                endpoint: endpoint, secret: secret, retry: retry, addressing: addressing, resolve: resolve),
            logger: logger)
    }

    /// A bucket name unique to this test process and suite.
    static func uniqueBucket(_ suite: String) -> String {
        let stamp = String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36)
        return "\(suite)-\(stamp)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
    }

    /// Deterministic pseudo-random bytes (xorshift), fast enough for tens of MiB.
    static func bytes(count: Int, seed: UInt64) -> [UInt8] {
        var state = seed | 1
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { raw in
            let words = count / 8
            let p = raw.baseAddress!.assumingMemoryBound(to: UInt64.self)
            for i in 0..<words {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                p[i] = state
            }
        }
        for i in (count / 8 * 8)..<count { out[i] = UInt8(truncatingIfNeeded: i &* 31) }
        return out
    }
}

/// The loopback fault proxy (Tests/fault_proxy.py) as a child process.
final class FaultProxy: Sendable {
    let endpoint: String
    let logPath: String
    private let process: Process

    /// Starts the proxy in front of `upstream`; the first `faults` requests get 503 SlowDown (mode
    /// `slowdown`) or an answer cut after half its body (mode `truncate`).
    init(upstream: String, faults: Int, mode: String = "slowdown", tls: (cert: String, key: String)? = nil) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fault_proxy.py").path
        logPath = NSTemporaryDirectory() + "fault-proxy-\(UUID().uuidString).jsonl"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, upstream, logPath, String(faults), mode] + (tls.map { [$0.cert, $0.key] } ?? [])
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        self.process = process
        // The first line on stdout is the port.
        var line = [UInt8]()
        let handle = pipe.fileHandleForReading
        while true {
            let byte = handle.readData(ofLength: 1)
            guard let b = byte.first else { break }
            if b == UInt8(ascii: "\n") { break }
            line.append(b)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self)) else {
            kill(process.processIdentifier, SIGKILL)
            throw S3Error(code: .invalidRequest, message: "fault proxy did not start")
        }
        endpoint = "\(tls == nil ? "http" : "https")://127.0.0.1:\(port)"
    }

    /// Recorded requests: method, path, authorization, date.
    func requests() throws -> [[String: String]] {
        let text = try String(contentsOfFile: logPath, encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
            return object.compactMapValues { $0 as? String }
        }
    }

    func stop() {
        // SIGKILL, not terminate(): a child spawned from a dispatch worker inherits its blocked signal
        // mask, so SIGTERM would stay pending forever.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: logPath)
    }
}

/// An in-memory transport for tests without a server: answers from a script and records requests.
final class ScriptedTransport: S3Transport {
    struct Answer: Sendable {
        var status: Int
        var headers: [(name: String, value: String)] = []
        var body: [UInt8] = []
        /// Deliver only this many body bytes, then fail as a connection reset would.
        var cutAfter: Int? = nil
    }

    private let state: Mutex<(answers: [Answer], requests: [HTTPRequest])>

    init(_ answers: [Answer]) { state = Mutex((answers, [])) }

    var requests: [HTTPRequest] { state.withLock { $0.requests } }

    func perform(_ request: HTTPRequest, onData: (UnsafeRawBufferPointer) throws -> Void) throws -> HTTPResponse {
        let answer = state.withLock { s -> Answer? in
            s.requests.append(request)
            return s.answers.isEmpty ? nil : s.answers.removeFirst()
        }
        guard let answer else { throw S3Error(code: .transport, message: "no scripted answer left") }
        if (200..<300).contains(answer.status) {
            if let cut = answer.cutAfter {
                try answer.body.prefix(cut).withUnsafeBytes { try onData($0) }
                throw S3Error(code: .transport, message: "connection reset (scripted)", curlCode: 56)
            }
            try answer.body.withUnsafeBytes { try onData($0) }
            return HTTPResponse(status: answer.status, headers: answer.headers, errorBody: [])
        }
        return HTTPResponse(status: answer.status, headers: answer.headers, errorBody: answer.body)
    }
}
