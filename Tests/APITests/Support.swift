import Foundation
import ProcessTestSupport
import Testing

/// Running the built `snapimport`, the aws CLI and the boto3 fixture as child processes.
enum Tools {
    typealias Result = ProcessOutput

    static let root = ChildProcess.repositoryRoot

    /// The built executable (next to the test bundle, or in .build/debug).
    static let binary = ChildProcess.snapimportBinary

    /// An executable on PATH.
    static func which(_ name: String) -> String? {
        for folder in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let path = "\(folder)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static let aws = which("aws")
    static let python = which("python3")
    static let hasBoto3: Bool = {
        guard let python else { return false }
        return (try? run(python, ["-c", "import boto3"]))?.status == 0
    }()
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/ec2_client.py").path

    /// Why the end-to-end suite cannot run here, or nil.
    static let missing: String? = {
        if binary == nil { return "the snapimport executable is not built (swift build first)" }
        if aws == nil { return "the aws CLI is not installed (pip install awscli; scripts/test does)" }
        if !hasBoto3 { return "boto3 is not installed (pip install boto3; scripts/test does)" }
        return nil
    }()

    static func run(_ executable: String, _ args: [String], environment extra: [String: String] = [:]) throws -> Result
    {
        let unset = ["SNAPIMPORT_CATALOG", "SNAPIMPORT_STORE", "SNAPIMPORT_BLOCKS", "AWS_PROFILE", "AWS_ENDPOINT_URL"]
        return try ChildProcess.run(executable, args, environment: ChildProcess.environment(removing: unset, adding: extra))
    }
}

extension ProcessOutput {
    /// The code in the aws CLI's `An error occurred (<Code>) when calling …` line.
    var awsErrorCode: String? {
        guard let open = stderr.range(of: "An error occurred ("),
            let close = stderr[open.upperBound...].firstIndex(of: ")")
        else { return nil }
        return String(stderr[open.upperBound..<close])
    }
}

/// A `snapimport serve` child process on a port it picked itself (`--listen 127.0.0.1:0`; the port is
/// read from its one stdout line).
final class ServeProcess: @unchecked Sendable {
    private(set) var process = Process()
    let stdoutPath: String
    let stderrPath: String
    let binary: String
    let config: String
    let arguments: [String]
    private(set) var endpoint = ""

    init(binary: String, config: String, directory: String, arguments: [String] = []) throws {
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
        environment.merge(extra) { $1 }
        process.environment = environment
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        log.seekToEndOfFile()
        process.standardError = log
        try process.run()
    }

    /// `kill -9` (a crash: nothing is drained), then a new `serve` on the same store, listening again.
    func crashAndRestart(environment: [String: String] = [:]) async throws {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try launch(environment: environment)
        try await waitUntilListening()
    }

    /// Waits for the "listening on" line (at most `seconds`).
    func waitUntilListening(seconds: Double = 60) async throws {
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

    var log: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// SIGTERM, then the exit status (nil when it did not exit within `seconds`; it is then killed).
    func terminate(seconds: Double = 30) async -> Int32? {
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

    struct ServeError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
