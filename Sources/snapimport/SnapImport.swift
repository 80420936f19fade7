import ArgumentParser

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
}
