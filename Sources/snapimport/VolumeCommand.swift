import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct VolumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "volume", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'volume' is not built yet") }
}
