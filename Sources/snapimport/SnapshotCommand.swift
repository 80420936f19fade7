import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshot", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'snapshot' is not built yet") }
}
