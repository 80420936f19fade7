import ArgumentParser
import DiskImage
import Foundation
import Importer
import Logging
import SnapshotCore
import UnixSignals

/// `snapimport import SOURCE [--project P@C] [--description TEXT] [--format FMT] [--json]`: one image,
/// from `s3://bucket/key` or a local file, into a snapshot owned by P@C; prints the snapshot document.
/// An object is imported exactly once (the same claim as `run`): importing it again prints the
/// existing snapshot. An object under `incoming/<project>@<customer>/` belongs to that project:
/// `--project` may be omitted, and naming another one is refused (`OwnerMismatch`), so a manual
/// import never gives one project's upload to another. Exit 1 when the image is rejected.
struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Import one image (s3://bucket/key or a local file) as a snapshot.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "s3://bucket/key (the key is taken literally) or a local path.")
    var source: String

    @Option(
        name: .long,
        help: "The owner project, project@customer (default for an object under incoming/: its folder's project).")
    var project: String?

    @Option(name: .long, help: "The snapshot's description (default: x-amz-meta-description, then the file name).")
    var description: String?

    @Option(name: .long, help: "What the image must be: a disk format (raw, iso, qcow2, vmdk, vhd|vpc, vhdx, vdi), a container (ova, tar, zip, gz, xz, zst, bz2) or both (raw.xz, qcow2.gz, tar.gz).")
    var format: String?

    func validate() throws {
        if let format { _ = try parseFormatClaim(format) }
        if let project {
            do {
                _ = try ProjectRef(parsing: project)
            } catch {
                throw ValidationError("--project \(project): \(error)")
            }
        } else if !source.hasPrefix("s3://") {
            throw ValidationError("--project is required to import a local file")
        }
    }

    func run() async throws {
        DiskImage.tuneAllocatorForImports()
        let context = try AppContext(global)
        let claimed = try format.map(parseFormatClaim)
        let logger = context.logger("snapimport.import")
        let json = global.json
        let bar = ProgressBar(label: (source as NSString).lastPathComponent)
        let progress: @Sendable (UInt64, UInt64) -> Void = { done, total in bar.update(done: done, total: total) }
        let (source, project, description) = (source, project, description)
        let record: SnapshotRecord
        let alreadyImported: Bool
        do {
            (record, alreadyImported) = try await Self.interruptible { () -> (SnapshotRecord, Bool) in
                if source.hasPrefix("s3://") {
                    let location = try S3Location(source, requireKey: true)
                    let key = location.key
                    let owner = try Self.owner(of: key, project: project, layout: context.settings(bucket: "").layout)
                    let result = try await context.withPipeline(bucket: location.bucket, logger: logger) {
                        pipeline, _ in
                        try await pipeline.importObjectManually(
                            key: key, owner: owner, description: description, claimedFormat: claimed?.format,
                            progress: progress)
                    }
                    switch result {
                    case .imported(let snapshot): return (snapshot, false)
                    case .alreadyImported(let snapshot): return (snapshot, true)
                    }
                }
                let path = URL(fileURLWithPath: source).standardizedFileURL.path
                let owner = try ProjectRef(parsing: project ?? "")
                let file = try FileByteSource(path: path)
                // A local file needs no bucket: the image importer alone (the catalog and the limits).
                let settings = context.settings(bucket: "")
                let text = description ?? (path as NSString).lastPathComponent
                let record = try await context.withStore(create: true, logger: logger) { service in
                    try await context.withLiveWorker(service) { service in
                        let importer = ImageImporter(
                            catalog: CoreImportCatalog(service: service), limits: settings.limits,
                            leaseDuration: settings.leaseDuration, progressInterval: settings.progressInterval)
                        var logger = logger
                        return try await importer.importImage(
                            source: file, claim: nil, owner: owner, description: text, claimedFormat: claimed?.format,
                            formatClaim: claimed,
                            snapshotSource: .file(path: path), logger: &logger, progress: progress)
                    }
                }
                return (record, false)
            }
        } catch {
            bar.finish()
            throw Self.failure(error, json: json)
        }
        bar.finish()
        if alreadyImported {
            CommandOutput.stderr("\(source) (same ETag) was already imported as \(record.id)")
        }
        if json {
            FileHandle.standardOutput.write(Data(SnapshotDocument.encoded(record)))
        } else {
            print(Self.humanText(record, alreadyImported: alreadyImported), terminator: "")
        }
    }

    /// What `import` prints without `--json`: the snapshot's ID and what an operator checks next.
    static func humanText(_ record: SnapshotRecord, alreadyImported: Bool) -> String {
        var source = ""
        switch record.source {
        case .object(let bucket, let key, let etag): source = "s3://\(bucket)/\(key) (ETag \(etag))"
        case .file(let path): source = path
        case .volume(let id): source = "volume \(id)"
        case .template(let id): source = "template \(id)"
        }
        return """
            \(alreadyImported ? "already imported as" : "imported") \(record.id)
              project:      \(record.owner)
              description:  \(record.description)
              format:       \(record.format)\(record.bootable ? " (bootable)" : "")
              virtual size: \(ByteCount.human(record.virtualSize))
              stored:       \(ByteCount.human(record.storedBytes))
              source:       \(source)
              checksum:     \(record.checksum ?? "-")

            """
    }

    /// The owner of an object: its `incoming/` folder's project when it sits in one (then `--project`
    /// must agree or be omitted), else `--project`.
    static func owner(of key: String, project: String?, layout: BucketLayout) throws -> ProjectRef {
        guard let folder = try? layout.ownerText(of: key) else {
            guard let project else {
                throw ValidationError(
                    "--project is required: \(key) is not inside an \(layout.incoming)<project>@<customer>/ folder")
            }
            return try ProjectRef(parsing: project)
        }
        let owner: ProjectRef
        do {
            owner = try ProjectRef(parsing: folder)
        } catch {
            throw ImporterError(.invalidProject, "the folder of \(key) is not a project: \(error)")
        }
        if let project, try ProjectRef(parsing: project) != owner {
            throw ImporterError(
                .ownerMismatch,
                "\(key) belongs to \(owner) (its \(layout.incoming) folder); it cannot be imported for \(project)")
        }
        return owner
    }

    /// A signal that ended a manual import.
    struct Interrupted: Error {
        let signal: UnixSignal
    }

    /// Runs the import, and on SIGINT, SIGTERM or SIGHUP (Ctrl-C, systemd or `timeout`, a closed SSH
    /// session) cancels it: the import aborts its pending snapshot and records its claim as an
    /// interrupted attempt, so nothing half-made stays visible; the command then fails with the
    /// conventional status 128 + the signal's number (130, 143, 129).
    static func interruptible<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm, .sighup)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                for await signal in signals { throw Interrupted(signal: signal) }
                return nil
            }
            defer { group.cancelAll() }
            while let value = try await group.next() {
                if let value { return value }
            }
            throw CancellationError()
        }
    }

    static func failure(_ error: any Error, json: Bool) -> CommandError {
        switch error {
        case let error as CommandError:
            return error
        case let interrupted as Interrupted:
            return CommandOutput.failure(
                code: "Interrupted",
                message: "\(interrupted.signal): the import was abandoned; no snapshot was made",
                json: json, exit: 128 + interrupted.signal.rawValue)
        case let error as DiskImageError:
            return CommandOutput.failure(code: error.code.name, message: error.message, json: json, exit: 1)
        case let error as ImporterError:
            // Refused credentials are a configuration error (2), like a missing bucket setting.
            return CommandOutput.failure(
                code: error.code.name, message: error.message, json: json, exit: error.code == .accessDenied ? 2 : 1)
        case let error as SnapshotError:
            return CommandOutput.failure(error, json: json)
        case let error as ValidationError:
            return CommandOutput.failure(code: "InvalidArgument", message: error.message, json: json, exit: 2)
        default:
            return CommandOutput.failure(code: "Error", message: "\(error)", json: json, exit: 1)
        }
    }
}
