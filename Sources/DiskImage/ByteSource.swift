#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Random-access bytes: the seam that lets every reader work on a local file (`pread`) or an
/// S3 object (ranged GETs) alike.
///
/// Conformers are safe to call from several threads at once (readers may prefetch in
/// parallel).
public protocol ByteSource: Sendable {
    /// Total length in bytes.
    var size: UInt64 { get }

    /// Reads `count` bytes starting at `offset`.
    ///
    /// - Returns: exactly `count` bytes, or fewer only when the source ends before
    ///   `offset + count` (an empty array at or past the end).
    func read(at offset: UInt64, count: Int) throws -> [UInt8]
}

extension ByteSource {
    /// Reads exactly `count` bytes or throws `TruncatedImage` naming `what` was being read.
    public func readExactly(at offset: UInt64, count: Int, what: @autoclosure () -> String) throws -> [UInt8] {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= size else {
            throw DiskImageError(
                .truncatedImage,
                "\(what()) at offset \(offset) (+\(count) bytes) lies past the end of the image (\(size) bytes)")
        }
        let bytes = try read(at: offset, count: count)
        guard bytes.count == count else {
            throw DiskImageError(.truncatedImage, "\(what()) at offset \(offset): short read (\(bytes.count) of \(count))")
        }
        return bytes
    }
}

/// A local file read with `pread`.
public final class FileByteSource: ByteSource {
    // `fd` is immutable after init and `pread` takes an explicit offset, so concurrent reads
    // never share a file position: the class is safe to share between threads.
    private let fd: Int32
    public let size: UInt64
    public let path: String

    /// Opens `path` read-only.
    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            throw DiskImageError(code == ENOENT ? .notFound : .ioError, "cannot open \(path): \(String(cString: strerror(code)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            close(fd)
            throw DiskImageError(.ioError, "cannot stat \(path): \(String(cString: strerror(code)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw DiskImageError(.ioError, "\(path) is not a regular file")
        }
        self.fd = fd
        self.size = UInt64(st.st_size)
        self.path = path
    }

    /// Takes ownership of an open descriptor (a temporary file written by `SpillWriter`).
    init(adopting fd: Int32, size: UInt64, path: String) {
        self.fd = fd
        self.size = size
        self.path = path
    }

    deinit { close(fd) }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard offset < size, count > 0 else { return [] }
        let wanted = Int(min(UInt64(count), size - offset))
        return try [UInt8](unsafeUninitializedCapacity: wanted) { buffer, initialized in
            var done = 0
            while done < wanted {
                let n = pread(fd, buffer.baseAddress! + done, wanted - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw DiskImageError(.ioError, "read of \(path) at \(offset) failed: \(String(cString: strerror(errno)))")
                }
                if n == 0 { break }
                done += n
            }
            initialized = done
        }
    }
}

/// Bytes held in memory (tests, sidecars, fuzzing).
public struct MemoryByteSource: ByteSource {
    public let bytes: [UInt8]
    public var size: UInt64 { UInt64(bytes.count) }

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard offset < size, count > 0 else { return [] }
        let start = Int(offset)
        let end = start + min(count, bytes.count - start)
        return Array(bytes[start..<end])
    }
}
