public import Foundation

/// What a finished child process left: its exit status and everything it wrote.
public struct ProcessOutput: Sendable, CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }

    /// stdout parsed as JSON, if it is.
    public var json: Any? { try? JSONSerialization.jsonObject(with: Data(stdout.utf8)) }
    /// stdout as a JSON object (empty when it is not one).
    public var object: [String: Any] { json as? [String: Any] ?? [:] }
    /// The code of snapimport's error document (`{"error":{"code":…}}`) on stdout.
    public var errorCode: String? { (object["error"] as? [String: Any])?["code"] as? String }
    public var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// A child process of a test (the built `snapimport`, qemu-img, the aws CLI, python …) whose stdout and
/// stderr go to temporary files: a chatty child never blocks on a full pipe, and no reader thread is
/// needed. The one way the test targets start processes.
public final class ChildProcess: @unchecked Sendable {
    // @unchecked: `Process` is not Sendable; the fields are set once in init and Process is thread-safe
    // for the calls made here (isRunning, processIdentifier, waitUntilExit).
    public let process: Process
    private let stdoutURL: URL
    private let stderrURL: URL

    /// Starts `executable` with `arguments`.
    /// - Parameters:
    ///   - environment: the child's whole environment (nil: this process's).
    ///   - directory: its working directory (nil: this process's).
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil
    ) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("child-\(UUID().uuidString)")
        stdoutURL = base.appendingPathExtension("out")
        stderrURL = base.appendingPathExtension("err")
        for url in [stdoutURL, stderrURL] {
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path])
            }
        }
        process.standardOutput = try FileHandle(forWritingTo: stdoutURL)
        process.standardError = try FileHandle(forWritingTo: stderrURL)
        do {
            try process.run()
        } catch {
            removeFiles()
            throw error
        }
    }

    public var processIdentifier: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// What the child wrote to stderr so far.
    public var stderrSoFar: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }

    /// Waits for the child to exit and returns its output (the temporary files are removed).
    public func wait() -> ProcessOutput {
        process.waitUntilExit()
        defer { removeFiles() }
        return ProcessOutput(
            status: process.terminationStatus,
            stdout: String(decoding: (try? Data(contentsOf: stdoutURL)) ?? Data(), as: UTF8.self),
            stderr: String(decoding: (try? Data(contentsOf: stderrURL)) ?? Data(), as: UTF8.self))
    }

    /// Runs `executable` to completion.
    @discardableResult
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil
    ) throws -> ProcessOutput {
        try ChildProcess(executable, arguments, environment: environment, directory: directory).wait()
    }

    /// This process's environment without `removing` and with `adding` (which wins).
    public static func environment(removing: [String] = [], adding: [String: String] = [:]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        for key in removing { environment[key] = nil }
        environment.merge(adding) { $1 }
        return environment
    }

    /// The repository's root folder.
    public static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// The built `snapimport` executable (next to the test bundle, or in .build/debug), or nil.
    public static let snapimportBinary: String? = {
        let argv0 = URL(fileURLWithPath: CommandLine.arguments.first ?? "").deletingLastPathComponent()
        let candidates = [
            argv0.appendingPathComponent("snapimport").path,
            argv0.deletingLastPathComponent().appendingPathComponent("snapimport").path,
            repositoryRoot.appendingPathComponent(".build/debug/snapimport").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    private func removeFiles() {
        try? FileManager.default.removeItem(at: stdoutURL)
        try? FileManager.default.removeItem(at: stderrURL)
    }
}
