import ArgumentParser
import Foundation


/// The `snapimport` command: turns disk images dropped into an S3 bucket into volume snapshots.
///
/// Exit status (architecture.md): 0 success, 1 the work failed, 2 bad usage or configuration.
@main
struct SnapImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapimport",
        abstract: "Turn disk images uploaded to object storage into volume snapshots.",
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
        ]
    )

    /// Runs the parsed subcommand, mapping ArgumentParser's usage failures (EX_USAGE, 64) to the
    /// contract's exit status 2; every other outcome keeps ArgumentParser's handling.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                let message = fullMessage(for: error)
                if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
                Self.exit(withError: ExitCode(2))
            }
            exit(withError: error)
        }
    }
}
