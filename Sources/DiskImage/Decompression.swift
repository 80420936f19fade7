import CCompression

/// Inflaters for compressed clusters and grains, each producing exactly one unit of output.
///
/// Both qemu and snapimport treat a compressed cluster as valid only when it inflates to the
/// full cluster size; trailing input (the compressed-size field rounds up to sectors) is ignored.
public enum Decompression {
    /// Inflates a raw DEFLATE stream (RFC 1951, no header), as qcow2 stores compressed clusters.
    ///
    /// - Parameters:
    ///   - input: the compressed bytes (may carry trailing padding).
    ///   - size: the exact number of bytes the data must inflate to.
    /// - Returns: `size` bytes.
    public static func inflateRaw(_ input: [UInt8], exactly size: Int) throws -> [UInt8] {
        try inflate(input, windowBits: -15, exactly: size, what: "deflate")
    }

    /// Inflates a zlib stream (RFC 1950), as VMDK streamOptimized stores compressed grains.
    public static func inflateZlib(_ input: [UInt8], exactly size: Int) throws -> [UInt8] {
        try inflate(input, windowBits: 15, exactly: size, what: "zlib")
    }

    /// Decompresses a zstd frame (qcow2 `compression_type=zstd`).
    public static func zstd(_ input: [UInt8], exactly size: Int) throws -> [UInt8] {
        guard let stream = ZSTD_createDStream() else {
            throw DiskImageError(.decompressionFailed, "zstd: cannot allocate a decompression context")
        }
        defer { ZSTD_freeDStream(stream) }
        // Bound the window so a hostile frame cannot make the decoder allocate more than it must.
        ZSTD_DCtx_setParameter(stream, ZSTD_d_windowLogMax, 27)
        var produced = 0
        var frameOpen = false
        // As qemu's qcow2_zstd_decompress: the data may hold several frames; decode until the output is full,
        // and the frame that fills it must end there (a cluster that would inflate to more is damaged).
        let output = try [UInt8](unsafeUninitializedCapacity: size) { out, initialized in
            try input.withUnsafeBytes { inBytes in
                var inBuffer = ZSTD_inBuffer(src: inBytes.baseAddress, size: inBytes.count, pos: 0)
                var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: size, pos: 0)
                while outBuffer.pos < outBuffer.size {
                    let before = (inBuffer.pos, outBuffer.pos)
                    let ret = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
                    if ZSTD_isError(ret) != 0 {
                        throw DiskImageError(
                            .decompressionFailed, "zstd: \(String(cString: ZSTD_getErrorName(ret)))")
                    }
                    frameOpen = ret != 0
                    if before.0 == inBuffer.pos && before.1 == outBuffer.pos { break }
                }
                produced = outBuffer.pos
            }
            initialized = produced
        }
        if produced == size && frameOpen {
            throw DiskImageError(.decompressionFailed, "zstd data inflates to more than \(size) bytes")
        }
        guard produced == size else {
            throw DiskImageError(
                .decompressionFailed, "zstd data inflated to \(produced) bytes instead of \(size)")
        }
        return output
    }

    private static func inflate(_ input: [UInt8], windowBits: Int32, exactly size: Int, what: String) throws
        -> [UInt8]
    {
        var stream = z_stream()
        guard inflateInit2_(&stream, windowBits, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DiskImageError(.decompressionFailed, "\(what): cannot initialise zlib")
        }
        defer { inflateEnd(&stream) }
        var produced = 0
        var status: Int32 = Z_OK
        let output = [UInt8](unsafeUninitializedCapacity: size) { out, initialized in
            input.withUnsafeBytes { inBytes in
                stream.next_in = UnsafeMutablePointer(
                    mutating: inBytes.baseAddress?.assumingMemoryBound(to: Bytef.self))
                stream.avail_in = uInt(inBytes.count)
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(size)
                status = zlib.inflate(&stream, Z_FINISH)
                produced = size - Int(stream.avail_out)
            }
            initialized = produced
        }
        // Success is a full output buffer: the stream either ended exactly there (Z_STREAM_END)
        // or had more to give (Z_BUF_ERROR with no room left), as qemu accepts.
        let ok = produced == size && (status == Z_STREAM_END || status == Z_BUF_ERROR || status == Z_OK)
        guard ok else {
            throw DiskImageError(
                .decompressionFailed,
                "\(what) data inflated to \(produced) bytes instead of \(size) (zlib status \(status))")
        }
        return output
    }
}

/// `zlib.inflate`, named so it does not clash with `Decompression.inflate`.
private enum zlib {
    static func inflate(_ stream: inout z_stream, _ flush: Int32) -> Int32 { CCompression.inflate(&stream, flush) }
}
