import ArgumentParser
import DiskImage
import Foundation
import Importer
import Logging
import SnapshotCore

/// `snapimport import SOURCE --project P@C [--description TEXT] [--format FMT] [--json]`: one image,
/// from `s3://bucket/key` or a local file, into a snapshot owned by P@C; prints the snapshot document.
/// An object is imported exactly once (the same claim as `run`): importing it again prints the
/// existing snapshot. Exit 1 when the image is rejected.
struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Import one image (s3://bucket/key or a local file) as a snapshot.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "s3://bucket/key (the key is taken literally) or a local path.")
    var source: String

    @Option(name: .long, help: "The owner project, project@customer.")
    var project: String

    @Option(name: .long, help: "The snapshot's description (default: x-amz-meta-description, then the file name).")
    var description: String?

    @Option(name: .long, help: "The format the image must be (raw, iso, qcow2, vmdk, vhd|vpc, vhdx, vdi).")
    var format: String?

    func validate() throws {
        if let format { _ = try parseImageFormat(format) }
        do {
            _ = try ProjectRef(parsing: project)
        } catch {
            throw ValidationError("--project \(project): \(error)")
        }
    }

    func run() async throws {
        DiskImage.tuneAllocatorForImports()
        let environment = ProcessInfo.processInfo.environment
        let config = try ImporterContext.configuration(global, environment: environment)
        let owner = try ProjectRef(parsing: project)
        let claimed = try format.map(parseImageFormat)
        var logger = ImporterContext.logger("snapimport.import", level: global.verbose ? .debug : .warning)
        let json = global.json
        let bar = ProgressBar(label: (source as NSString).lastPathComponent)
        let progress: @Sendable (UInt64, UInt64) -> Void = { done, total in bar.update(done: done, total: total) }
        var alreadyImported = false
        let record: SnapshotRecord
        do {
            if source.hasPrefix("s3://") {
                let location = try S3Location(source, requireKey: true)
                let description = description
                let key = location.key
                let result = try await ImporterContext.withPipeline(
                    config, global: global, bucket: location.bucket, logger: logger, environment: environment
                ) { pipeline, _ in
                    try await pipeline.importObjectManually(
                        key: key, owner: owner, description: description, claimedFormat: claimed,
                        progress: progress)
                }
                switch result {
                case .imported(let snapshot): record = snapshot
                case .alreadyImported(let snapshot):
                    record = snapshot
                    alreadyImported = true
                }
            } else {
                let path = URL(fileURLWithPath: source).standardizedFileURL.path
                let file = try FileByteSource(path: path)
                // A local file needs no bucket: the image importer alone (the catalog and the limits).
                let settings = try ImporterContext.settings(config, bucket: "", environment: environment)
                let text = description ?? (path as NSString).lastPathComponent
                record = try await ImporterContext.withService(config, s3: nil, json: json, logger: logger) {
                    service in
                    let importer = ImageImporter(
                        catalog: CoreImportCatalog(service: service), limits: settings.limits,
                        leaseDuration: settings.leaseDuration, progressInterval: settings.progressInterval)
                    var logger = logger
                    return try await importer.importImage(
                        source: file, claim: nil, owner: owner, description: text, claimedFormat: claimed,
                        snapshotSource: .file(path: path), logger: &logger,
                        progress: progress)
                }
            }
        } catch {
            bar.finish()
            throw Self.failure(error, json: json)
        }
        bar.finish()
        logger[metadataKey: "snapshot"] = "\(record.id)"
        if alreadyImported {
            CommandOutput.stderr("\(source) (same ETag) was already imported as \(record.id)")
        }
        if json {
            FileHandle.standardOutput.write(Data(SnapshotDocument.encoded(record)))
        } else {
            print(String(decoding: SnapshotDocument.encoded(record), as: UTF8.self), terminator: "")
        }
    }

    static func failure(_ error: any Error, json: Bool) -> CommandError {
        switch error {
        case let error as DiskImageError:
            return CommandOutput.failure(code: error.code.name, message: error.message, json: json, exit: 1)
        case let error as ImporterError:
            return CommandOutput.failure(code: error.code.name, message: error.message, json: json, exit: 1)
        case let error as SnapshotError:
            return CoreContext.failure(error, json: json)
        case let error as ValidationError:
            return CommandOutput.failure(code: "InvalidArgument", message: error.message, json: json, exit: 2)
        default:
            return CommandOutput.failure(code: "Error", message: "\(error)", json: json, exit: 1)
        }
    }
}
