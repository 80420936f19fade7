import CArchive
import CCompression

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A libarchive read handle over a `ByteSource`: libarchive pulls the bytes through read, skip and seek
/// callbacks, so the same code reads a local file (`pread`) or an S3 object (ranged GETs).
///
/// Owns the `struct archive *` and frees it in `deinit`; not `Sendable` (a C handle stays inside one task).
final class ArchiveReader {
    /// What libarchive found in the byte stream.
    enum Format { case tar, zip, raw }

    private let handle: OpaquePointer
    private let input: ArchiveInput

    /// Opens `source` with the given filters and formats enabled (nothing else: no external programs, no
    /// formats snapimport does not accept).
    ///
    /// - Parameters:
    ///   - compressed: enable libarchive's xz, zstd and bzip2 filters.
    ///   - gunzip: the source is a gzip stream, decompressed here with zlib before libarchive sees it:
    ///     libarchive 3.6's gzip filter checks neither the CRC-32 nor the length in a member's trailer
    ///     (measured: a member with a flipped CRC, or with damaged stored blocks, reads without error), zlib
    ///     checks both.
    ///   - formats: which archive formats libarchive may bid for.
    ///   - chunkSize: bytes per read of `source` (large for sequential decompression, small for listing).
    ///   - isCancelled: polled before every read.
    init(
        source: any ByteSource, compressed: Bool, gunzip: Bool = false, formats: Set<Format>, chunkSize: Int,
        isCancelled: (@Sendable () -> Bool)?
    ) throws {
        guard let handle = archive_read_new() else {
            throw DiskImageError(.ioError, "libarchive: cannot allocate a read handle")
        }
        self.handle = handle
        input = ArchiveInput(
            source: source, chunkSize: chunkSize, gunzip: gunzip ? try GzipStream() : nil, isCancelled: isCancelled)
        if compressed {
            // ARCHIVE_WARN means libarchive would run an external program instead of a linked library: refused.
            for (name, enable) in [
                ("xz", archive_read_support_filter_xz),
                ("zstd", archive_read_support_filter_zstd), ("bzip2", archive_read_support_filter_bzip2),
            ] where enable(handle) != ARCHIVE_OK {
                throw DiskImageError(.unsupportedContainer, "libarchive on this host has no built-in \(name) support")
            }
        }
        if formats.contains(.tar) { archive_read_support_format_tar(handle) }
        if formats.contains(.zip) { archive_read_support_format_zip_seekable(handle) }
        if formats.contains(.raw) { archive_read_support_format_raw(handle) }

        let context = Unmanaged.passUnretained(input).toOpaque()
        archive_read_set_callback_data(handle, context)
        archive_read_set_read_callback(handle) { _, context, out in
            guard let context, let out else { return -1 }
            return Unmanaged<ArchiveInput>.fromOpaque(context).takeUnretainedValue().read(into: out)
        }
        archive_read_set_skip_callback(handle) { _, context, request in
            guard let context else { return 0 }
            return Unmanaged<ArchiveInput>.fromOpaque(context).takeUnretainedValue().skip(request)
        }
        archive_read_set_seek_callback(handle) { _, context, offset, whence in
            guard let context else { return Int64(ARCHIVE_FATAL) }
            return Unmanaged<ArchiveInput>.fromOpaque(context).takeUnretainedValue().seek(offset, whence: whence)
        }
        try check(archive_read_open1(handle), "opening the container")
    }

    deinit { archive_read_free(handle) }

    /// Number of compression filters libarchive stacked (0 for an uncompressed tar or zip).
    var compressionFilters: Int { max(0, Int(archive_filter_count(handle)) - 1) }

    /// Bytes of the uncompressed stream consumed so far: after `nextEntry()`, where the entry's data starts.
    var uncompressedPosition: UInt64 { UInt64(max(0, archive_filter_bytes(handle, 0))) }

    /// The archive format of the entries read so far (valid after the first `nextEntry()`).
    var format: Format? {
        switch archive_format(handle) & ARCHIVE_FORMAT_BASE_MASK {
        case ARCHIVE_FORMAT_TAR: .tar
        case ARCHIVE_FORMAT_ZIP: .zip
        case ARCHIVE_FORMAT_RAW: .raw
        default: nil
        }
    }

    /// One entry's header.
    struct Entry {
        var name: String
        var isRegularFile: Bool
        /// The entry's size when the archive records it (tar, zip; not a bare compressed stream).
        var size: UInt64?
        var isSparse: Bool
        var isEncrypted: Bool
    }

    /// Reads the next entry header; nil at the end of the archive.
    func nextEntry() throws -> Entry? {
        var entry: OpaquePointer?
        let status = archive_read_next_header(handle, &entry)
        if status == ARCHIVE_EOF { return nil }
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else {
            throw error(status, "reading the next member header")
        }
        let name = archive_entry_pathname(entry).map { String(cString: $0) } ?? ""
        let size: UInt64? = archive_entry_size_is_set(entry) != 0 ? UInt64(max(0, archive_entry_size(entry))) : nil
        return Entry(
            name: name, isRegularFile: snapimport_archive_entry_is_regular(entry) != 0, size: size,
            isSparse: archive_entry_sparse_count(entry) > 0, isEncrypted: archive_entry_is_encrypted(entry) != 0)
    }

    /// The next block of the current entry's data as `(offset in the entry, bytes)`; nil at its end.
    /// A sparse entry's holes are skipped (the offsets jump).
    func nextBlock() throws -> (offset: UInt64, bytes: UnsafeRawBufferPointer)? {
        var buffer: UnsafeRawPointer?
        var size = 0
        var offset: Int64 = 0
        let status = archive_read_data_block(handle, &buffer, &size, &offset)
        if status == ARCHIVE_EOF { return nil }
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN else { throw error(status, "decompressing a member") }
        guard offset >= 0 else { throw DiskImageError(.corruptImage, "container member data at negative offset") }
        return (UInt64(offset), UnsafeRawBufferPointer(start: buffer, count: buffer == nil ? 0 : size))
    }

    /// Reads up to `limit` bytes of the current entry into memory (a descriptor, never a disk).
    ///
    /// - Throws: `MetadataTooLarge` when the entry holds more.
    func readEntry(limit: Int, what: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        while let (offset, block) = try nextBlock() {
            let end = offset + UInt64(block.count)
            guard end <= UInt64(limit) else {
                throw DiskImageError(.metadataTooLarge, "\(what) is larger than \(limit) bytes")
            }
            if bytes.count < Int(end) { bytes += [UInt8](repeating: 0, count: Int(end) - bytes.count) }
            bytes.replaceSubrange(Int(offset)..<Int(end), with: block)
        }
        return bytes
    }

    /// Skips the current entry's data (a seek when the archive is uncompressed).
    func skipEntry() throws {
        let status = archive_read_data_skip(handle)
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN || status == ARCHIVE_EOF else {
            throw error(status, "skipping a member")
        }
    }

    private func check(_ status: Int32, _ what: String) throws {
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN else { throw error(status, what) }
    }

    /// The error behind a failed libarchive call: the byte source's own error when a callback failed (so a
    /// lost lease or a cancelled task keeps its meaning), else libarchive's message mapped to a code.
    private func error(_ status: Int32, _ what: String) -> any Error {
        if let error = input.error { return error }
        let message = archive_error_string(handle).map { String(cString: $0) } ?? "status \(status)"
        let lower = message.lowercased()
        let code: DiskImageError.Code
        if ["truncat", "premature", "unexpected end", "eof", "end of file", "no progress is possible"].contains(where: lower.contains) {
            code = .truncatedImage
        } else if lower.contains("encrypt") {
            code = .encryptedImage
        } else if ["decompress", "lzma", "zstd", "bzip", "crc", "checksum", "inflate", "deflate"].contains(where: lower.contains) {
            code = .decompressionFailed
        } else if ["tar", "header", "damaged", "zip", "pathname", "archive"].contains(where: lower.contains) {
            code = .corruptImage
        } else {
            code = .decompressionFailed
        }
        return DiskImageError(code, "container: \(what): \(message)")
    }
}

/// The callback side of `ArchiveReader`: reads `source` forward in chunks into one buffer that stays valid
/// until the next read, as libarchive requires.
private final class ArchiveInput {
    let source: any ByteSource
    let chunkSize: Int
    let isCancelled: (@Sendable () -> Bool)?
    private(set) var position: UInt64 = 0
    private let buffer: UnsafeMutableRawBufferPointer
    private let gunzip: GzipStream?
    /// The first error a callback hit; reported instead of libarchive's generic message.
    var error: (any Error)?

    init(source: any ByteSource, chunkSize: Int, gunzip: GzipStream?, isCancelled: (@Sendable () -> Bool)?) {
        self.source = source
        self.chunkSize = max(chunkSize, 4096)
        self.isCancelled = isCancelled
        self.gunzip = gunzip
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: self.chunkSize, alignment: 16)
    }

    deinit { buffer.deallocate() }

    func read(into out: UnsafeMutablePointer<UnsafeRawPointer?>) -> Int {
        do {
            if Task.isCancelled || isCancelled?() == true { throw CancellationError() }
            if let gunzip {
                let count = try gunzip.inflate(into: buffer) { [self] in
                    guard position < source.size else { return [] }
                    let bytes = try source.read(at: position, count: chunkSize)
                    position += UInt64(bytes.count)
                    return bytes
                }
                out.pointee = UnsafeRawPointer(buffer.baseAddress)
                return count
            }
            guard position < source.size else { return 0 }
            let bytes = try source.read(at: position, count: chunkSize)
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            position += UInt64(bytes.count)
            out.pointee = UnsafeRawPointer(buffer.baseAddress)
            return bytes.count
        } catch {
            if self.error == nil { self.error = error }
            return -1
        }
    }

    func skip(_ request: Int64) -> Int64 {
        guard request > 0 else { return 0 }
        let step = min(UInt64(request), source.size - min(position, source.size))
        position += step
        return Int64(step)
    }

    func seek(_ offset: Int64, whence: Int32) -> Int64 {
        let base: Int64
        switch whence {
        case SEEK_SET: base = 0
        case SEEK_CUR: base = Int64(position)
        case SEEK_END: base = Int64(source.size)
        default: return Int64(ARCHIVE_FATAL)
        }
        let (target, overflow) = base.addingReportingOverflow(offset)
        guard !overflow, target >= 0 else { return Int64(ARCHIVE_FATAL) }
        position = UInt64(target)
        return target
    }
}

/// A gzip stream (RFC 1952) inflated with zlib, which checks every member's CRC-32 and length. Concatenated
/// members are read one after another (as gzip(1) does); zero bytes after the last member (tape padding) are
/// ignored, anything else there is refused.
private final class GzipStream {
    private var stream = z_stream()
    private var input: [UInt8] = []
    private var inputUsed = 0
    private var memberOpen = false
    private var finished = false
    /// Compressed bytes consumed, for messages.
    private var consumed: UInt64 = 0

    init() throws {
        // windowBits 15 + 16: a gzip wrapper only.
        guard inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DiskImageError(.decompressionFailed, "gzip: cannot initialise zlib")
        }
    }

    deinit { inflateEnd(&stream) }

    /// Fills `output` with inflated bytes (fewer only at the end of the stream); `more` returns the next
    /// compressed bytes, empty at the end of the source.
    func inflate(into output: UnsafeMutableRawBufferPointer, more: () throws -> [UInt8]) throws -> Int {
        var produced = 0
        while produced < output.count && !finished {
            if inputUsed == input.count {
                input = try more()
                inputUsed = 0
                if input.isEmpty {
                    if memberOpen {
                        throw DiskImageError(
                            .truncatedImage, "gzip: the stream ends inside a member (after \(consumed) bytes)")
                    }
                    finished = true
                    break
                }
            }
            if !memberOpen {
                // Between members: only another member or zero padding may follow.
                let rest = input[inputUsed...]
                if rest.allSatisfy({ $0 == 0 }) {
                    consumed += UInt64(rest.count)
                    inputUsed = input.count
                    continue
                }
                guard rest.first == 0x1F else {
                    throw DiskImageError(
                        .decompressionFailed, "gzip: garbage after the member ending at offset \(consumed)")
                }
                guard inflateReset(&stream) == Z_OK else {
                    throw DiskImageError(.decompressionFailed, "gzip: cannot reset zlib")
                }
                memberOpen = true
            }
            let status: Int32 = input.withUnsafeBytes { inBytes in
                stream.next_in = UnsafeMutablePointer(
                    mutating: inBytes.baseAddress!.advanced(by: inputUsed).assumingMemoryBound(to: Bytef.self))
                stream.avail_in = uInt(input.count - inputUsed)
                stream.next_out = output.baseAddress!.advanced(by: produced).assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(output.count - produced)
                return CCompression.inflate(&stream, Z_NO_FLUSH)
            }
            let used = input.count - inputUsed - Int(stream.avail_in)
            inputUsed += used
            consumed += UInt64(used)
            produced = output.count - Int(stream.avail_out)
            switch status {
            case Z_OK, Z_BUF_ERROR: break
            case Z_STREAM_END: memberOpen = false
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "zlib status \(status)"
                throw DiskImageError(
                    .decompressionFailed, "gzip: \(message) (compressed offset \(consumed))")
            }
        }
        return produced
    }
}
