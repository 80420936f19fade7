import ArgumentParser
import BlockingIO
import DiskImage
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `snapimport convert SOURCE --output FILE`: validates the image and writes its virtual disk as a sparse
/// raw file (holes where the disk is zero), or with `--output -` as a raw stream on stdout (the summary then
/// goes to stderr, with `--json` too, so stdout carries only the disk). Exit 1 when the image is rejected.
struct ConvertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert", abstract: "Validate an image and write its virtual disk as a sparse raw file.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A local image path or s3://bucket/key.")
    var source: String

    @Option(name: .long, help: "The raw file to write (created or truncated); '-' writes the disk to stdout.")
    var output: String

    @Option(name: .long, help: "What the image must be: a disk format (raw, iso, qcow2, vmdk, vhd|vpc, vhdx, vdi), a container (ova, tar, zip, gz, xz, zst, bz2) or both (raw.xz, qcow2.gz, tar.gz).")
    var format: String?

    func validate() throws {
        if let format { _ = try parseFormatClaim(format) }
    }

    func run() async throws {
        let claimed = try format.map(parseFormatClaim)
        DiskImage.tuneAllocatorForLargeExtents()
        let config = try AppContext(global).configuration
        if output == "-" && isatty(STDOUT_FILENO) == 1 {
            throw CommandOutput.failure(
                code: "InvalidArgument",
                message: "--output - writes a raw disk to stdout, which is a terminal: redirect it",
                json: global.json, exit: 2)
        }
        do {
            let bytes = try await openSource(source, global: global)
            let limits = InspectionLimits(maxVirtualSize: config.limits.maxVirtualSize)
            let output = output
            // Parsing and writing block: they run on the blocking executor.
            let (format, result) = try await BlockingExecutor.shared.run { () -> (ImageFormat, ConversionResult) in
                var reader = try DiskImage.open(bytes, claimedFormat: claimed?.format, claim: claimed, limits: limits)
                if output == "-" {
                    return (reader.info.format, try DiskImage.convert(&reader, toStream: STDOUT_FILENO))
                }
                do {
                    return (reader.info.format, try DiskImage.convert(&reader, toRawFile: output))
                } catch {
                    // A half-written disk must not be mistaken for a converted one.
                    unlink(output)
                    throw error
                }
            }
            let summary = ConvertSummary(
                format: format.rawValue, virtualSize: result.virtualSize, dataBytesWritten: result.dataBytesWritten,
                output: output)
            let text =
                "\(format) → raw \(output == "-" ? "stdout" : output): \(ByteCount.human(result.virtualSize)) virtual, "
                + "\(ByteCount.human(result.dataBytesWritten)) of data written"
            if output == "-" {
                // Standard output holds the disk: the summary goes to stderr.
                if global.json {
                    let data = (try? JSONEncoder().encode(summary)).map { String(decoding: $0, as: UTF8.self) }
                    CommandOutput.stderr(data ?? text)
                } else {
                    CommandOutput.stderr(text)
                }
            } else if global.json {
                CommandOutput.printJSON(summary)
            } else {
                print(text)
            }
        } catch let error as DiskImageError {
            throw CommandOutput.failure(code: error.code.name, message: error.message, json: global.json, exit: 1)
        }
    }
}

private struct ConvertSummary: Encodable {
    var format: String
    var virtualSize: UInt64
    var dataBytesWritten: UInt64
    var output: String
}
