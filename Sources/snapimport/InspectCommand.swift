import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'inspect' is not built yet") }
}
