import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct UploadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "upload", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'upload' is not built yet") }
}
