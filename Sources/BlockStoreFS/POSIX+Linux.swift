import CFileSystem
import SnapshotCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The Linux file calls only the pack store needs (direct I/O, early writeback, hole punching), through
/// the CFileSystem shim: glibc declares them only under `_GNU_SOURCE`.
extension POSIX {

    /// Opens an existing file for direct writes (`O_DIRECT`: no page cache; offsets, lengths and
    /// buffers aligned to 4 KiB). - Returns: nil where unsupported (tmpfs, non-Linux).
    static func openDirect(_ path: String) -> Int32? {
        #if os(Linux)
            let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC | snapimport_o_direct(), 0)
            return fd >= 0 ? fd : nil
        #else
            return nil
        #endif
    }

    /// Starts writing a range's dirty pages to disk now, without waiting (Linux `sync_file_range`),
    /// so a later `fdatasync` finds most of the work done. A hint: durability still comes from the
    /// sync; failures are ignored.
    static func startWriteback(_ fd: Int32, offset: UInt64, length: Int) {
        _ = snapimport_start_writeback(fd, off_t(offset), off_t(length))
    }

    /// Allocates a range of a file (`fallocate`, mode 0: the file grows to cover it; the range reads as
    /// zeros). - Returns: false where the filesystem cannot preallocate (the caller simply appends).
    static func preallocate(_ fd: Int32, offset: UInt64, length: UInt64) -> Bool {
        guard length > 0 else { return true }
        while snapimport_preallocate(fd, off_t(offset), off_t(length)) != 0 {
            if errno == EINTR { continue }
            return false
        }
        return true
    }

    /// Frees a range of a file, which then reads as zeros; the file keeps its size. On a filesystem
    /// without hole punching this does nothing: the space comes back only when the whole file goes.
    static func punchHole(_ fd: Int32, offset: UInt64, length: UInt64, path: String) throws {
        guard length > 0 else { return }
        while snapimport_punch_hole(fd, off_t(offset), off_t(length)) != 0 {
            if errno == EINTR { continue }
            if errno == EOPNOTSUPP || errno == ENOSYS { return }
            throw error("cannot free a range of", path)
        }
    }
}
