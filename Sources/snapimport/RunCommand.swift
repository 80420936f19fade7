import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'run' is not built yet") }
}
