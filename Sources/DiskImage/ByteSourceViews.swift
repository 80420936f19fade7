#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A byte range of another source, read in place: a member of an uncompressed tar (no copy, no temporary
/// file; over S3 every read is a ranged GET of the member's bytes).
struct WindowByteSource: ByteSource {
    let base: any ByteSource
    let start: UInt64
    let size: UInt64

    /// - Throws: `TruncatedImage` when the range ends past the end of `base`.
    init(base: any ByteSource, start: UInt64, size: UInt64, what: @autoclosure () -> String) throws {
        let (end, overflow) = start.addingReportingOverflow(size)
        guard !overflow, end <= base.size else {
            throw DiskImageError(
                .truncatedImage,
                "\(what()) at offset \(start) (+\(size) bytes) lies past the end of the container (\(base.size) bytes)")
        }
        self.base = base
        self.start = start
        self.size = size
    }

    func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard offset < size, count > 0 else { return [] }
        return try base.read(at: start + offset, count: Int(min(UInt64(count), size - offset)))
    }
}

/// Writes a decompressed member into an unlinked temporary file, sparsely: all-zero blocks are seeked over
/// (they stay holes), so the file takes the space of the data only. The file is unlinked right after it is
/// created, so nothing is left behind whatever happens; it lives as long as the `FileByteSource` that
/// `finish()` returns.
final class SpillWriter {
    /// Granularity of the zero check: a block of this many zero bytes is not written.
    static let zeroBlock = 64 << 10

    private var fd: Int32
    private let path: String
    private(set) var size: UInt64 = 0
    private let limit: UInt64

    /// Creates the temporary file in `directory` (default `$TMPDIR`, else `/tmp`).
    ///
    /// - Parameter limit: the most bytes the file may hold; more is `VirtualSizeTooLarge`.
    init(directory: String?, limit: UInt64) throws {
        let dir = directory ?? getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array("\(dir)/snapimport-spill-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw DiskImageError(
                .ioError, "cannot create a temporary file in \(dir): \(String(cString: strerror(errno)))")
        }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        unlink(path)
        self.fd = fd
        self.limit = limit
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Writes `bytes` at `offset`, skipping all-zero blocks.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(bytes.count))
        guard !overflow, end <= limit else {
            throw DiskImageError(
                .virtualSizeTooLarge, "the decompressed image exceeds the limit of \(limit) bytes")
        }
        var start = 0
        while start < bytes.count {
            // Align pieces to the file's zero-block grid so holes line up with whole blocks.
            let fileOffset = offset + UInt64(start)
            let toGrid = SpillWriter.zeroBlock - Int(fileOffset % UInt64(SpillWriter.zeroBlock))
            let count = min(toGrid, bytes.count - start)
            let piece = UnsafeRawBufferPointer(rebasing: bytes[start..<start + count])
            if !FieldReader.isAllZero(piece) { try writeAll(piece, at: fileOffset) }
            start += count
        }
        size = max(size, end)
    }

    private func writeAll(_ piece: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < piece.count {
            let n = pwrite(fd, piece.baseAddress! + done, piece.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw DiskImageError(
                    .ioError, "write to the temporary file \(path) failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// Sizes the file to at least `size` bytes (trailing holes) and hands it over as a read-only source.
    func finish(size minimum: UInt64? = nil) throws -> FileByteSource {
        if let minimum {
            guard minimum <= limit else {
                throw DiskImageError(
                    .virtualSizeTooLarge, "the decompressed image exceeds the limit of \(limit) bytes")
            }
            size = max(size, minimum)
        }
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw DiskImageError(.ioError, "cannot size the temporary file: \(String(cString: strerror(errno)))")
        }
        let source = FileByteSource(adopting: fd, size: size, path: "\(path) (deleted)")
        fd = -1
        return source
    }
}
