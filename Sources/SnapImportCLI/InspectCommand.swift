import BlockingIO
import ArgumentParser
import DiskImage
import Foundation

/// `snapimport inspect SOURCE [--format FMT] [--metadata-only] [--json]`: detects the format (of the disk
/// inside any container) and runs every safety check without converting: it reads the whole disk, as a
/// conversion would, unless `--metadata-only`. Exit 1 when the image is rejected.
struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Detect an image's format and validate it without converting.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A local image path or s3://bucket/key.")
    var source: String

    @Option(name: .long, help: "What the image must be: a disk format (raw, iso, qcow2, vmdk, vhd|vpc, vhdx, vdi), a container (ova, tar, zip, gz, xz, zst, bz2) or both (raw.xz, qcow2.gz, tar.gz).")
    var format: String?

    @Flag(name: .long, help: "Check headers and tables only; do not read (decompress) the disk's data.")
    var metadataOnly = false

    func validate() throws {
        if let format { _ = try parseFormatClaim(format) }
    }

    func run() async throws {
        let claimed = try format.map(parseFormatClaim)
        let config = try AppContext(global).configuration
        let bytes: any ByteSource
        do {
            bytes = try await openSource(source, global: global)
        } catch let error as DiskImageError {
            throw CommandOutput.failure(code: error.code.name, message: error.message, json: global.json, exit: 1)
        }
        let limits = InspectionLimits(maxVirtualSize: config.limits.maxVirtualSize)
        let metadataOnly = metadataOnly
        let result = try await BlockingExecutor.shared.run {
            DiskImage.inspect(
                bytes, claimedFormat: claimed?.format, claim: claimed, limits: limits, metadataOnly: metadataOnly)
        }
        if global.json {
            CommandOutput.printJSON(result)
        } else {
            print("format:         \(result.format?.rawValue ?? "unknown")")
            if let container = result.container { print("container:      \(container.rawValue)") }
            print("image size:     \(ByteCount.human(bytes.size))")
            print(
                "virtual size:   \(result.virtualSize == 0 && result.format == nil ? "unknown" : ByteCount.human(result.virtualSize))"
            )
            print("allocated:      \(ByteCount.human(result.allocatedBytes))")
            print("bootable:       \(result.bootable ? "yes" : "no")")
            print("verdict:        \(result.verdict.rawValue)")
            for reason in result.reasons { print("reason:         \(reason.code): \(reason.message)") }
        }
        if result.verdict == .rejected {
            for reason in result.reasons { CommandOutput.stderr("rejected: \(reason.code): \(reason.message)") }
            throw ExitCode(1)
        }
    }
}

/// Output helpers shared by the image commands: JSON on stdout, errors on stderr (and as JSON with --json).
