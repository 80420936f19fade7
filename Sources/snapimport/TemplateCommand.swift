import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct TemplateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "template", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'template' is not built yet") }
}
