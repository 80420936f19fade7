import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct InstanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "instance", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'instance' is not built yet") }
}
