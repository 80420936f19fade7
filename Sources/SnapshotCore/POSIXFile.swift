package import Foundation

#if canImport(Glibc)
    package import Glibc
#elseif canImport(Darwin)
    package import Darwin
#endif

/// Thin, throwing wrappers over the POSIX calls the volumes (here) and the filesystem block store
/// (BlockStoreFS, which adds the Linux-only calls) need
/// (`pread`/`pwrite` at offsets, `fsync`, `rename`, sparse files). Errors become `.storage` with
/// the path and `errno` text.
package enum POSIX {
    package static func error(_ what: String, _ path: String, _ code: Int32 = errno) -> SnapshotError {
        SnapshotError(.storage, "\(what) \(path): \(String(cString: strerror(code)))")
    }

    package static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0o644) throws -> Int32 {
        while true {
            let fd = systemOpen(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw error("cannot open", path)
        }
    }

    /// - Returns: nil when the file does not exist.
    package static func openExisting(_ path: String, _ flags: Int32) throws -> Int32? {
        while true {
            let fd = systemOpen(path, flags | O_CLOEXEC, 0)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            if errno == ENOENT { return nil }
            throw error("cannot open", path)
        }
    }

    package static func close(_ fd: Int32) { _ = systemClose(fd) }

    /// Writes all of `bytes` at `offset`.
    package static func pwriteAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = systemPwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw error("cannot write", path)
            }
            done += n
        }
    }

    package static func pwriteAll(_ fd: Int32, _ bytes: [UInt8], at offset: UInt64, path: String) throws {
        guard !bytes.isEmpty else { return }
        try bytes.withUnsafeBytes { try pwriteAll(fd, $0, at: offset, path: path) }
    }

    /// Reads exactly `count` bytes at `offset`; bytes past the end of the file read as zeros.
    package static func preadFull(_ fd: Int32, count: Int, at offset: UInt64, path: String) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        try buffer.withUnsafeMutableBytes { raw in
            while done < count {
                let n = systemPread(fd, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw error("cannot read", path)
                }
                if n == 0 { break }
                done += n
            }
        }
        return buffer
    }

    package static func fsync(_ fd: Int32, path: String) throws {
        if systemFsync(fd) != 0 { throw error("cannot fsync", path) }
    }

    /// `fdatasync`: the file's data and size are durable (not its times).
    package static func fdatasync(_ fd: Int32, path: String) throws {
        if systemFdatasync(fd) != 0 { throw error("cannot sync", path) }
    }

    /// Takes an exclusive `flock` on the open file, waiting for it when `wait`.
    /// - Returns: false when another open file description holds it and `wait` is false.
    package static func lock(_ fd: Int32, wait: Bool, path: String) throws -> Bool {
        while systemFlock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0 {
            if errno == EINTR { continue }
            if errno == EWOULDBLOCK { return false }
            throw error("cannot lock", path)
        }
        return true
    }

    /// The file's size.
    package static func size(_ fd: Int32, path: String) throws -> UInt64 {
        let end = systemLseek(fd, 0, SEEK_END)
        if end < 0 { throw error("cannot size", path) }
        return UInt64(end)
    }

    /// fsync of a file or directory by path.
    package static func fsync(path: String, directory: Bool = false) throws {
        let fd = try open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY)
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    package static func ftruncate(_ fd: Int32, _ size: UInt64, path: String) throws {
        if systemFtruncate(fd, off_t(size)) != 0 { throw error("cannot set the size of", path) }
    }

    /// - Returns: false when `from` does not exist.
    @discardableResult
    package static func rename(_ from: String, _ to: String) throws -> Bool {
        if systemRename(from, to) == 0 { return true }
        if errno == ENOENT { return false }
        throw error("cannot rename", from)
    }

    /// - Returns: false when the file does not exist.
    @discardableResult
    package static func unlink(_ path: String) throws -> Bool {
        if systemUnlink(path) == 0 { return true }
        if errno == ENOENT { return false }
        throw error("cannot remove", path)
    }

    /// Size and modification time, or nil when absent.
    package static func stat(_ path: String) throws -> (size: Int, modified: Date)? {
        var info = SystemStat()
        if systemStat(path, &info) != 0 {
            if errno == ENOENT { return nil }
            throw error("cannot stat", path)
        }
        #if canImport(Darwin)
            let ts = info.st_mtimespec
        #else
            let ts = info.st_mtim
        #endif
        return (Int(info.st_size), Date(timeIntervalSince1970: Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9))
    }

    /// The offset of the first data at or after `offset` (`SEEK_DATA`), nil when only holes follow.
    /// Filesystems without hole support report everything as data, which is merely slower.
    package static func nextData(_ fd: Int32, from offset: UInt64) -> UInt64? {
        #if canImport(Darwin)
            let seekData: Int32 = 4  // SEEK_DATA on Darwin
        #else
            let seekData: Int32 = 3  // SEEK_DATA on Linux (glibc hides it without _GNU_SOURCE)
        #endif
        let result = systemLseek(fd, off_t(offset), seekData)
        if result >= 0 { return UInt64(result) }
        return errno == ENXIO ? nil : offset
    }

    package static func makeDirectory(_ path: String) throws {
        if systemMkdir(path, 0o755) == 0 || errno == EEXIST { return }
        throw error("cannot create directory", path)
    }
}

// Unambiguous names for the C functions (the enum's own static members shadow them).
private func systemOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 { open(path, flags, mode) }
private func systemLseek(_ fd: Int32, _ o: off_t, _ w: Int32) -> off_t { lseek(fd, o, w) }
private func systemClose(_ fd: Int32) -> Int32 { close(fd) }
private func systemPwrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int, _ o: off_t) -> Int { pwrite(fd, p, n, o) }
private func systemPread(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int, _ o: off_t) -> Int { pread(fd, p, n, o) }
private func systemFsync(_ fd: Int32) -> Int32 { fsync(fd) }
private func systemFdatasync(_ fd: Int32) -> Int32 { fdatasync(fd) }
private func systemFlock(_ fd: Int32, _ operation: Int32) -> Int32 { flock(fd, operation) }
private func systemFtruncate(_ fd: Int32, _ size: off_t) -> Int32 { ftruncate(fd, size) }
private func systemRename(_ a: String, _ b: String) -> Int32 { rename(a, b) }
private func systemUnlink(_ path: String) -> Int32 { unlink(path) }
private func systemMkdir(_ path: String, _ mode: mode_t) -> Int32 { mkdir(path, mode) }
private typealias SystemStat = stat
private func systemStat(_ path: String, _ info: UnsafeMutablePointer<stat>) -> Int32 { stat(path, info) }
