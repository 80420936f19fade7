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
