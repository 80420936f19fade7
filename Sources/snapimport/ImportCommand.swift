import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "import", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'import' is not built yet") }
}
