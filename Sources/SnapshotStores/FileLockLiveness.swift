import Foundation
public import SnapshotCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Proof of life for workers on one host sharing one store: each worker holds, for its lifetime, an
/// exclusive `flock` on `<directory>/<worker-id>.lock` (normally `<store>/workers/`). The kernel drops
/// the lock when the process ends, however it ends (`kill -9` included), and process IDs are never
/// trusted alone: the file is named by the whole ``WorkerID``, nonce included.
///
/// Another worker proves a holder dead by taking the same lock without waiting (`LOCK_EX|LOCK_NB`):
/// success means no process holds it any more. The free file stays as the proof for the dead worker's
/// other claims (removed by a later worker's start once a day old). A missing file proves nothing
/// (a worker on another host or with another store never had one here): that is "unknown", and the lease
/// decides. `flock` locks belong to the open file, so a second open in this same process also finds its
/// own worker's lock taken.
///
/// Every call here is a short system call that never waits (`open`, `flock` with `LOCK_NB`, `unlink`), so
/// they run inline rather than on the blocking executor.
public final class FileLockLiveness: WorkerLiveness {
    /// Where the lock files live.
    public let directory: String
    /// Descriptors of the workers registered by this process (kept open: closing one drops its lock).
    private let held = Mutex<[WorkerID: Int32]>([:])

    /// - Parameter directory: the folder of lock files, created on ``register(_:)``.
    public init(directory: String) {
        self.directory = directory
    }

    /// `<store>/workers`: the lock folder of the store at `storePath`.
    public convenience init(storePath: String) {
        self.init(directory: "\(storePath)/workers")
    }

    /// The lock file of `worker`.
    /// How long a crashed worker's (free) lock file stays as the proof of its death: a day, longer than
    /// any lease; after that its claims are recovered by their expired leases.
    static let staleAfter: TimeInterval = 86_400

    public func path(of worker: WorkerID) -> String {
        let name = worker.rawValue.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." ? $0 : "_" }
        return "\(directory)/\(String(name)).lock"
    }

    public func register(_ worker: WorkerID) async throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw SnapshotError(.storage, "cannot create the worker lock folder \(directory)", underlying: error)
        }
        removeStaleFiles()
        let path = path(of: worker)
        let fd = Self.retrying { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
        guard fd >= 0 else { throw Self.error("cannot create the worker lock", path) }
        guard Self.retrying({ flock(fd, LOCK_EX | LOCK_NB) }) == 0 else {
            let error = Self.error("cannot lock the worker lock", path)
            close(fd)
            throw error
        }
        // For people looking at the folder: who holds it.
        let text = "\(worker.rawValue)\n"
        _ = text.withCString { ftruncate(fd, 0) == 0 ? write(fd, $0, strlen($0)) : -1 }
        held.withLock { $0[worker] = fd }
    }

    public func isProvablyDead(_ worker: WorkerID) async -> Bool {
        if held.withLock({ $0[worker] != nil }) { return false }
        let path = path(of: worker)
        let fd = Self.retrying { open(path, O_RDWR | O_CLOEXEC) }
        guard fd >= 0 else { return false }  // no lock file here: unknown (another host or store)
        defer { close(fd) }
        // Held: alive. Free: its worker ended. The file stays, so that every claim of the dead worker is
        // proven (a pass takes them over one by one); stale files go after a day (``register(_:)``).
        return Self.retrying({ flock(fd, LOCK_EX | LOCK_NB) }) == 0
    }

    public func release(_ worker: WorkerID) async {
        guard let fd = held.withLock({ $0.removeValue(forKey: worker) }) else { return }
        unlink(path(of: worker))
        close(fd)
    }

    /// Removes the lock files of workers that crashed (a clean exit removes its own): free locks on files
    /// older than ``staleAfter``, by when every lease they could prove has ended anyway. Keeps the folder
    /// at one file per live worker plus the crashes of the last day.
    private func removeStaleFiles() {
        let cutoff = Date().addingTimeInterval(-Self.staleAfter)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        where name.hasSuffix(".lock") {
            let path = "\(directory)/\(name)"
            guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
                modified < cutoff
            else { continue }
            let fd = Self.retrying { open(path, O_RDWR | O_CLOEXEC) }
            guard fd >= 0 else { continue }
            if Self.retrying({ flock(fd, LOCK_EX | LOCK_NB) }) == 0 { unlink(path) }
            close(fd)
        }
    }

    private static func retrying(_ call: () -> Int32) -> Int32 {
        while true {
            let result = call()
            if result >= 0 || errno != EINTR { return result }
        }
    }

    private static func error(_ what: String, _ path: String) -> SnapshotError {
        SnapshotError(.storage, "\(what) \(path): \(String(cString: strerror(errno)))")
    }
}
