public import ArgumentParser
import BuildInfo
import Foundation


/// The `snapimport` command: turns disk images dropped into an S3 bucket into volume snapshots.
///
/// Exit status (architecture.md): 0 success, 1 the work failed, 2 bad usage or configuration.
public struct SnapImport: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "snapimport",
        abstract: "Turn disk images uploaded to object storage into volume snapshots.",
        discussion: GlobalOptions.summary,
        version: BuildInfo.versionLine,
        subcommands: [
            RunCommand.self,
            WatchCommand.self,
            ImportCommand.self,
            InspectCommand.self,
            ConvertCommand.self,
            UploadCommand.self,
            S3Command.self,
            SnapshotCommand.self,
            VolumeCommand.self,
            InstanceCommand.self,
            TemplateCommand.self,
            ImportsCommand.self,
            ServeCommand.self,
            KeysCommand.self,
        ]
    )

    public init() {}

    /// Parses `arguments` (without the program name), runs the command and returns the exit status.
    /// Never ends the process: `main.swift` does, with the status returned here.
    ///
    /// Errors are printed here, once: a ``CommandError`` as `error: <code>: <message>` on stderr (and
    /// `{"error":{"code","message"}}` on stdout with `--json`); ArgumentParser's usage failures (its
    /// EX_USAGE, 64) become the contract's status 2; help and `--version` print and return 0.
    ///
    /// The global options (`--config FILE`, `--json`, `--verbose`, `--log-format F`) may also come before
    /// the subcommand (`snapimport --config /etc/x.toml run`); with `--json` anywhere, a usage error is
    /// also `{"error":{"code":"Usage","message":…}}` on stdout.
    public static func execute(_ arguments: [String]) async -> Int32 {
        if let word = GlobalOptions.unknownCommand(arguments) {
            let message = "Unknown command '\(word)'. Commands: \(GlobalOptions.subcommandNames.joined(separator: ", "))."
            CommandOutput.stderr("Error: \(message)\n\(usageString())\n  See 'snapimport --help' for more information.")
            if GlobalOptions.asksForJSON(arguments) {
                CommandOutput.printJSON(["error": ["code": "Usage", "message": message]])
            }
            return 2
        }
        let arguments = GlobalOptions.movingLeadingOptions(arguments)
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            return 0
        } catch let error as CommandError {
            CommandOutput.report(error)
            return error.exitStatus
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { print(message) }
                return 0
            }
            if !message.isEmpty { CommandOutput.stderr(message) }
            if code == .validationFailure && GlobalOptions.asksForJSON(arguments) {
                CommandOutput.printJSON(["error": ["code": "Usage", "message": SnapImport.message(for: error)]])
            }
            return code == .validationFailure ? 2 : code.rawValue
        }
    }
}
