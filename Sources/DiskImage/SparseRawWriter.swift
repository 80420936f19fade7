#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a raw disk file sparsely: the file is created (or truncated) and sized with `ftruncate`, then
/// only data is written with `pwrite`, so everything not written reads as zero and occupies no blocks.
public final class SparseRawWriter {
    private var fd: Int32
    public let path: String

    /// Creates or truncates `path` and sizes it to `size` bytes.
    public init(path: String, size: UInt64) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw DiskImageError(.ioError, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        guard ftruncate(fd, off_t(size)) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw DiskImageError(.ioError, "cannot size \(path) to \(size) bytes: \(message)")
        }
        self.fd = fd
        self.path = path
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Writes `bytes` at `offset`.
    public func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw DiskImageError(
                        .ioError, "write to \(path) at \(offset) failed: \(String(cString: strerror(errno)))")
                }
                done += n
            }
        }
    }

    /// Closes the file, reporting a failed close (delayed write errors).
    public func finish() throws {
        guard fd >= 0 else { return }
        let status = close(fd)
        fd = -1
        guard status == 0 else {
            throw DiskImageError(.ioError, "closing \(path) failed: \(String(cString: strerror(errno)))")
        }
    }
}
