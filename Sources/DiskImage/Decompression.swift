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

    /// Decompresses zstd data (qcow2 `compression_type=zstd`).
    public static func zstd(_ input: [UInt8], exactly size: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: size) { out, initialized in
            try input.withUnsafeBytes { try zstd($0, into: UnsafeMutableRawBufferPointer(out)) }
            initialized = size
        }
    }

    /// Decompresses zstd data into `output`, which it must fill exactly.
    ///
    /// As qemu's `qcow2_zstd_decompress`: the data may hold several frames; decoding goes on until the output
    /// is full, and the frame that fills it must end there (a cluster that would inflate to more is damaged).
    static func zstd(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        guard let stream = ZSTD_createDStream() else {
            throw DiskImageError(.decompressionFailed, "zstd: cannot allocate a decompression context")
        }
        defer { ZSTD_freeDStream(stream) }
        // Bound the window so a hostile frame cannot make the decoder allocate more than it must.
        ZSTD_DCtx_setParameter(stream, ZSTD_d_windowLogMax, 27)
        let size = output.count
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: size, pos: 0)
        var frameOpen = false
        while outBuffer.pos < outBuffer.size {
            let before = (inBuffer.pos, outBuffer.pos)
            let ret = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
            if ZSTD_isError(ret) != 0 {
                throw DiskImageError(.decompressionFailed, "zstd: \(String(cString: ZSTD_getErrorName(ret)))")
            }
            frameOpen = ret != 0
            if before.0 == inBuffer.pos && before.1 == outBuffer.pos { break }
        }
        let produced = outBuffer.pos
        if produced == size && frameOpen {
            throw DiskImageError(.decompressionFailed, "zstd data inflates to more than \(size) bytes")
        }
        guard produced == size else {
            throw DiskImageError(.decompressionFailed, "zstd data inflated to \(produced) bytes instead of \(size)")
        }
    }

    /// Inflates a raw DEFLATE stream into `output`, which it must fill exactly (see `inflateRaw(_:exactly:)`).
    static func inflateRaw(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        try inflate(input, into: output, windowBits: -15, what: "deflate")
    }

    private static func inflate(_ input: [UInt8], windowBits: Int32, exactly size: Int, what: String) throws
        -> [UInt8]
    {
        try [UInt8](unsafeUninitializedCapacity: size) { out, initialized in
            try input.withUnsafeBytes {
                try inflate($0, into: UnsafeMutableRawBufferPointer(out), windowBits: windowBits, what: what)
            }
            initialized = size
        }
    }

    private static func inflate(
        _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, windowBits: Int32, what: String
    ) throws {
        var stream = z_stream()
        guard inflateInit2_(&stream, windowBits, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DiskImageError(.decompressionFailed, "\(what): cannot initialise zlib")
        }
        defer { inflateEnd(&stream) }
        let size = output.count
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.avail_in = uInt(input.count)
        stream.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.avail_out = uInt(size)
        let status = zlib.inflate(&stream, Z_FINISH)
        let produced = size - Int(stream.avail_out)
        // Success is a full output buffer: the stream either ended exactly there (Z_STREAM_END)
        // or had more to give (Z_BUF_ERROR with no room left), as qemu accepts.
        let ok = produced == size && (status == Z_STREAM_END || status == Z_BUF_ERROR || status == Z_OK)
        guard ok else {
            throw DiskImageError(
                .decompressionFailed,
                "\(what) data inflated to \(produced) bytes instead of \(size) (zlib status \(status))")
        }
    }
}

/// `zlib.inflate`, named so it does not clash with `Decompression.inflate`.
private enum zlib {
    static func inflate(_ stream: inout z_stream, _ flush: Int32) -> Int32 { CCompression.inflate(&stream, flush) }
}
