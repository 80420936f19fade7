import BlockingIO
import ArgumentParser
import DiskImage

#if canImport(Glibc)
import Glibc
#endif

/// `snapimport convert SOURCE --output FILE`: validates the image and writes its virtual disk as a sparse
/// raw file (holes where the disk is zero). Exit 1 when the image is rejected.
struct ConvertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert", abstract: "Validate an image and write its virtual disk as a sparse raw file.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A local image path or s3://bucket/key.")
    var source: String

    @Option(name: .long, help: "The raw file to write (created or truncated).")
    var output: String

    @Option(name: .long, help: "The format the image must be (raw, iso, qcow2, vmdk, vhd|vpc, vhdx, vdi).")
    var format: String?

    func validate() throws {
        if let format { _ = try parseImageFormat(format) }
    }

    func run() async throws {
        let claimed = try format.map(parseImageFormat)
        DiskImage.tuneAllocatorForLargeExtents()
        let config = try AppContext(global).configuration
        do {
            let bytes = try await openSource(source, global: global)
            let limits = InspectionLimits(maxVirtualSize: config.limits.maxVirtualSize)
            let output = output
            // Parsing and writing block: they run on the blocking executor.
            let (format, result) = try await BlockingExecutor.shared.run { () -> (ImageFormat, ConversionResult) in
                var reader = try DiskImage.open(bytes, claimedFormat: claimed, limits: limits)
                do {
                    return (reader.info.format, try DiskImage.convert(&reader, toRawFile: output))
                } catch {
                    // A half-written disk must not be mistaken for a converted one.
                    unlink(output)
                    throw error
                }
            }
            if global.json {
                CommandOutput.printJSON(
                    ConvertSummary(
                        format: format.rawValue, virtualSize: result.virtualSize,
                        dataBytesWritten: result.dataBytesWritten, output: output))
            } else {
                print(
                    "\(format) → raw \(output): \(result.virtualSize) bytes virtual, "
                        + "\(result.dataBytesWritten) bytes of data written")
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
