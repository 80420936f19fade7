import Foundation
import ProcessTestSupport
import Testing

/// Child processes for the browser test (through ProcessTestSupport): the built `snapimport`, the aws CLI
/// (for the S3 test server), Python with Playwright, and Debian's Chromium; and `serve`, which runs
/// while the test reads its port and its log.
enum Browser {
    typealias Result = ProcessOutput

    static let environment = ProcessInfo.processInfo.environment
    static let s3Endpoint = environment["SNAPIMPORT_TEST_S3_ENDPOINT"]
    /// The credentials of scripts/lib.sh's S3 test server.
    static let s3Environment: [String: String] = [
        "AWS_ACCESS_KEY_ID": environment["AWS_ACCESS_KEY_ID"] ?? "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": environment["AWS_SECRET_ACCESS_KEY"] ?? "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    ]

    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/console_e2e.py").path

    static let binary = ChildProcess.snapimportBinary

    static func which(_ name: String) -> String? {
        for folder in (environment["PATH"] ?? "").split(separator: ":") {
            let path = "\(folder)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static let python = which("python3")
    static let aws = which("aws")
    /// Debian's Chromium (`apt-get install chromium`; scripts/test does).
    static let chromium = which("chromium") ?? which("chromium-browser")
    static let hasPlaywright: Bool = {
        guard let python else { return false }
        return (try? run(python, ["-c", "import playwright.sync_api"]))?.status == 0
    }()

    /// Why the browser test cannot run here, or nil.
    static let missing: String? = {
        if binary == nil { return "the snapimport executable is not built (swift build first)" }
        if s3Endpoint == nil { return "SNAPIMPORT_TEST_S3_ENDPOINT is unset (scripts/test sets it)" }
        if aws == nil { return "the aws CLI is not installed (pip install awscli; scripts/test does)" }
        if chromium == nil { return "chromium is not installed (apt-get install chromium; scripts/test does)" }
        if !hasPlaywright {
            return "Playwright for Python is not installed (pip install playwright; scripts/test does)"
        }
        return nil
    }()

    static func s3(_ args: [String]) throws -> Result {
        try run(aws!, args + ["--endpoint-url", s3Endpoint!, "--region", "us-east-1"], environment: s3Environment)
    }

    static func run(_ executable: String, _ args: [String], environment extra: [String: String] = [:]) throws -> Result
    {
        try ChildProcess.run(
            executable, args,
            environment: ChildProcess.environment(
                removing: [
                    "SNAPIMPORT_CATALOG", "SNAPIMPORT_STORE", "SNAPIMPORT_BLOCKS", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                ],
                adding: extra))
    }

    /// `snapimport serve --listen 127.0.0.1:0` (the port is read from its one stdout line).
    final class Serve: @unchecked Sendable {
        // Unchecked: the process is only touched by the one test that owns it, sequentially.
        let process = Process()
        let stdoutPath: String
        let stderrPath: String
        private(set) var endpoint = ""

        init(binary: String, config: String, directory: String) throws {
            stdoutPath = directory + "/serve.out"
            stderrPath = directory + "/serve.err"
            _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
            _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["serve", "--config", config, "--listen", "127.0.0.1:0", "--verbose"]
            var environment = Browser.environment
            for key in ["SNAPIMPORT_CATALOG", "SNAPIMPORT_STORE", "SNAPIMPORT_BLOCKS", "SNAPIMPORT_API_LISTEN"] {
                environment[key] = nil
            }
            environment.merge(Browser.s3Environment) { $1 }
            process.environment = environment
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
            try process.run()
        }

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
            Issue.record("serve did not start: \(log)")
            throw CancellationError()
        }

        var log: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

        /// SIGTERM, then the exit status (nil when it had to be killed).
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
    }
}
