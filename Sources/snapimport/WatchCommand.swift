import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "watch", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'watch' is not built yet") }
}
