import CCompression

/// Inflaters for compressed clusters and grains, each producing exactly one unit of output.
///
/// A compressed cluster is valid only when it inflates to the full cluster size and its stream ends there
/// (stricter than qemu, which also takes a stream that goes on); trailing input (the compressed-size field
/// rounds up to sectors) is ignored.
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
            // The output is full: let the decoder finish the frame (its epilogue, a checksum) without room to
            // write more. A frame that still has data, or is cut short, does not end within the cluster.
            let ret = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
            if ZSTD_isError(ret) != 0 || ret != 0 {
                throw DiskImageError(
                    .decompressionFailed, "zstd data fills the \(size)-byte cluster but its frame does not end there")
            }
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
        // Success is a full output buffer where the stream also ends (Z_STREAM_END) inside the compressed
        // bytes it was given. qemu also accepts a stream that has more to give, or does not end, once the
        // cluster is full; no writer produces one, so it is refused as damaged.
        guard produced == size, status == Z_STREAM_END else {
            let why =
                produced < size
                ? "inflated to \(produced) bytes instead of \(size)"
                : "fills the \(size)-byte cluster but does not end there (more data or a cut stream)"
            throw DiskImageError(.decompressionFailed, "\(what) data \(why) (zlib status \(status))")
        }
    }
}

/// `zlib.inflate`, named so it does not clash with `Decompression.inflate`.
private enum zlib {
    static func inflate(_ stream: inout z_stream, _ flush: Int32) -> Int32 { CCompression.inflate(&stream, flush) }
}
