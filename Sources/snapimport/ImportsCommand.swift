import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct ImportsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "imports", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'imports' is not built yet") }
}
