import ArgumentParser
import Foundation
import S3

/// `snapimport upload FILE --project P@C [--name NAME]`: puts an image into `incoming/P@C/NAME`
/// (multipart for large files, a progress bar on a terminal).
struct UploadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upload", abstract: "Put an image into the bucket's incoming/ prefix for import.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The image file.")
    var file: String

    @Option(name: .long, help: "The owning project, as name@customer.")
    var project: String

    @Option(name: .long, help: "Object name under incoming/P@C/ (default: the file's name).")
    var name: String?

    @Option(name: .customLong("description"), help: "Snapshot description (sent as x-amz-meta-description).")
    var imageDescription: String?

    func validate() throws {
        let parts = project.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty, !project.contains("/") else {
            throw ValidationError("--project must be name@customer, got '\(project)'")
        }
        if let name {
            guard !name.isEmpty, !name.hasPrefix("/") else { throw ValidationError("--name must be a relative name") }
        }
    }

    func run() async throws {
        let context = try AppContext(global)
        let bucket = try context.bucket()
        var incoming = context.configuration.layout.incoming
        if !incoming.isEmpty && !incoming.hasSuffix("/") { incoming += "/" }
        let key = incoming + project + "/" + (name ?? (file as NSString).lastPathComponent)
        var metadata: [String: String] = [:]
        if let imageDescription { metadata["description"] = imageDescription }
        let result = try await upload(
            context: context, file: file, bucket: bucket, key: key, metadata: metadata, contentType: nil,
            json: global.json)
        if global.json {
            CommandOutput.printJSON(result)
        } else {
            print("uploaded \(file) to s3://\(bucket)/\(key) (\(result.size) bytes, ETag \(result.etag))")
        }
    }
}
