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
}
