/// How a command fails: a stable `code` (architecture.md's error codes, `InvalidConfiguration`,
/// `Usage` …), a message for a person, and the exit status the contract gives it (1: the work failed;
/// 2: bad usage or configuration). Commands throw it; ``SnapImport/execute(_:)`` prints it once and
/// returns the status, and only `main.swift` ends the process.
public struct CommandError: Error, CustomStringConvertible, Sendable {
    public let code: String
    public let message: String
    public let exitStatus: Int32
    /// Whether the command was asked for JSON (`--json`): the error is then also printed on stdout as
    /// `{"error":{"code","message"}}`.
    public let json: Bool

    public init(code: String, message: String, exitStatus: Int32, json: Bool) {
        self.code = code
        self.message = message
        self.exitStatus = exitStatus
        self.json = json
    }

    public var description: String { "\(code): \(message)" }
}

extension CommandOutput {
    /// Prints `error` the way the contract says: stderr always, stdout too with `--json`.
    static func report(_ error: CommandError) {
        stderr("error: \(error.code): \(error.message)")
        if error.json { printJSON(["error": ["code": error.code, "message": error.message]]) }
    }
}
