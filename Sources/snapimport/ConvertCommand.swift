import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct ConvertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "convert", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'convert' is not built yet") }
}
