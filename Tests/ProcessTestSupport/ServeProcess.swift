public import Foundation

/// A `snapimport serve` child process on a port it picked itself (`--listen 127.0.0.1:0`; the port is
/// read from its one stdout line).
public final class ServeProcess: @unchecked Sendable {
    public private(set) var process = Process()
    public let stdoutPath: String
    public let stderrPath: String
    public let binary: String
    public let config: String
    public let arguments: [String]
    public private(set) var endpoint = ""
    /// Added to the child's environment at every launch (e.g. S3 credentials).
    public let environment: [String: String]

    public init(
        binary: String, config: String, directory: String, arguments: [String] = [], environment: [String: String] = [:]
    ) throws {
        self.environment = environment
        stdoutPath = directory + "/serve.out"
        stderrPath = directory + "/serve.err"
        self.binary = binary
        self.config = config
        self.arguments = arguments
        try launch(environment: [:])
    }

    private func launch(environment extra: [String: String]) throws {
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        if !FileManager.default.fileExists(atPath: stderrPath) {
            _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        }
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", config, "--listen", "127.0.0.1:0", "--verbose"] + arguments
        var environment = ProcessInfo.processInfo.environment
        for key in ["SNAPIMPORT_CATALOG", "SNAPIMPORT_STORE", "SNAPIMPORT_BLOCKS", "SNAPIMPORT_API_LISTEN"] {
            environment[key] = nil
        }
        environment.merge(self.environment) { $1 }
        environment.merge(extra) { $1 }
        process.environment = environment
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        log.seekToEndOfFile()
        process.standardError = log
        try process.run()
    }

    /// `kill -9` (a crash: nothing is drained), then a new `serve` on the same store, listening again.
    public func crashAndRestart(environment: [String: String] = [:]) async throws {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try launch(environment: environment)
        try await waitUntilListening()
    }

    /// Waits for the "listening on" line (at most `seconds`).
    public func waitUntilListening(seconds: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? ""
            if let range = text.range(of: "listening on ") {
                endpoint = String(text[range.upperBound...].prefix { !$0.isWhitespace })
                return
            }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ServeError("serve did not start: \(log)")
    }

    public var log: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// SIGTERM, then the exit status (nil when it did not exit within `seconds`; it is then killed).
    public func terminate(seconds: Double = 30) async -> Int32? {
        guard process.isRunning else { return process.terminationStatus }
        process.terminate()
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline { try? await Task.sleep(for: .milliseconds(100)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    public struct ServeError: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }
}
