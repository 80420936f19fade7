import CCompression

/// Inflates VMDK compressed grains as qemu's vmdk driver does (`uncompress()` into a grain-sized buffer):
/// the zlib stream (RFC 1950) must end, and must not produce more than one grain.
enum VMDKInflate {
    /// Inflates `input` to between `minimum` and `maximum` bytes (both one grain, except for the last grain
    /// of a disk whose size is not a multiple of the grain, which qemu writes short).
    ///
    /// - Throws: `DecompressionFailed` when the data is not a complete zlib stream or inflates to a size
    ///   outside `minimum...maximum`.
    static func grain(_ input: [UInt8], minimum: Int, maximum: Int) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit_(&stream, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DiskImageError(.decompressionFailed, "zlib: cannot initialise an inflate stream")
        }
        defer { inflateEnd(&stream) }
        // One byte of room past the maximum tells "exactly a grain" from "more than a grain".
        let capacity = maximum + 1
        var produced = 0
        var status: Int32 = Z_OK
        var output = [UInt8](unsafeUninitializedCapacity: capacity) { out, initialized in
            input.withUnsafeBytes { inBytes in
                stream.next_in = UnsafeMutablePointer(
                    mutating: inBytes.baseAddress?.assumingMemoryBound(to: Bytef.self))
                stream.avail_in = uInt(inBytes.count)
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(capacity)
                status = inflate(&stream, Z_FINISH)
                produced = capacity - Int(stream.avail_out)
            }
            initialized = produced
        }
        guard status == Z_STREAM_END, produced >= minimum, produced <= maximum else {
            let why =
                produced > maximum
                ? "more than \(maximum) bytes"
                : status == Z_STREAM_END
                    ? "\(produced) bytes" : "an incomplete stream (zlib status \(status), \(produced) bytes)"
            throw DiskImageError(
                .decompressionFailed,
                "zlib data inflated to \(why), expected \(minimum == maximum ? "\(maximum)" : "\(minimum)…\(maximum)") bytes"
            )
        }
        if produced > minimum { output.removeLast(produced - minimum) }
        return output
    }
}
