import ArgumentParser
import Foundation
import Importer
import S3

/// `snapimport upload FILE --project P@C [--name NAME] [--format FMT]`: puts an image into
/// `incoming/P@C/NAME` (multipart for large files, a progress bar on a terminal); `--format` first writes
/// the sidecar `NAME.json` with that `format`.
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

    @Option(
        name: .long,
        help: "What the image is, written to its sidecar: a disk format (raw, qcow2, …), a container (ova, tar, zip, gz, xz, zst, bz2) or both (raw.xz, qcow2.gz, tar.gz).")
    var format: String?

    func validate() throws {
        if let format { _ = try parseFormatClaim(format) }
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
        if let format {
            // The sidecar goes first: a pass that lists the image must find its claim beside it.
            let sidecar = try JSONEncoder().encode(Sidecar(format: format))
            _ = try await context.s3().putObject(bucket: bucket, key: key + ".json", body: Array(sidecar))
        }
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
