import ArgumentParser

// Placeholder: replaced by the issue that builds this command.
struct S3Command: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "s3", abstract: "Not built yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw ValidationError("'s3' is not built yet") }
}
