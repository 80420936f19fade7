import Foundation
import Synchronization

/// Who a worker process is, as import claims and pending snapshots name it: `<name>:<pid>:<nonce>`.
///
/// `name` is the host (or `SNAPIMPORT_WORKER_NAME`), `pid` the process, and `nonce` 16 random hex digits
/// drawn at start: process IDs are reused, the nonce never is, so a proof of life keyed by the ID can
/// never be mistaken for a later process's. A claim or writer token is `<id>/<attempt>`
/// (``attemptToken()``); ``init(token:)`` reads the worker back from one.
public struct WorkerID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// A new identity for this process.
    /// - Parameters:
    ///   - name: the host name or an operator's name for the worker (`/` is replaced, it separates tokens).
    ///   - pid: the process ID (for people reading claims; the nonce makes the ID unique).
    public init(name: String, pid: Int32) {
        let cleaned = name.isEmpty ? "worker" : name.replacingOccurrences(of: "/", with: "_")
        let nonce = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        rawValue = "\(cleaned):\(pid):\(String(repeating: "0", count: 16 - nonce.count))\(nonce)"
    }

    /// Parses an ID made by ``init(name:pid:)``. - Returns: nil for any other text.
    public init?(rawValue: String) {
        let parts = rawValue.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count >= 3, !rawValue.contains("/"), let nonce = parts.last, nonce.count == 16,
            nonce.allSatisfy(\.isHexDigit), Int32(parts[parts.count - 2]) != nil
        else { return nil }
        self.rawValue = rawValue
    }

    /// The worker of a claim or writer token made by ``attemptToken()``. - Returns: nil for tokens of
    /// another form (random UUIDs, tokens of older versions): their owner cannot be proven dead, only
    /// their lease can expire.
    public init?(token: String) {
        guard let slash = token.lastIndex(of: "/") else { return nil }
        self.init(rawValue: String(token[..<slash]))
    }

    /// A token for one claim or writer of this worker: `<id>/<random>`.
    public func attemptToken() -> String {
        "\(rawValue)/\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }

    public var description: String { rawValue }
}

/// Proof of a worker's life that other workers can test at once, without waiting for a lease to end.
///
/// A worker ``register(_:)``s when it starts and holds the proof for its whole life (a file lock, a
/// database session lock): the kernel or the database server gives it up when the process dies, however
/// it dies. Another worker that finds a claim or pending snapshot under an unexpired lease asks
/// ``isProvablyDead(_:)`` about its owner and takes it over at once when the answer is yes. "No" means
/// alive *or unknown* (a worker on another host whose lock this one cannot see): the lease stays the
/// fallback for what cannot be proven.
public protocol WorkerLiveness: Sendable {
    /// Starts holding `worker`'s proof of life, until ``release(_:)`` or the process ends.
    /// - Throws: when the proof cannot be taken (then the worker must not claim anything).
    func register(_ worker: WorkerID) async throws
    /// Whether `worker` provably no longer runs: its proof of life is free. False while it lives and
    /// whenever this implementation cannot tell. A worker this process registered is never dead.
    func isProvablyDead(_ worker: WorkerID) async -> Bool
    /// Gives the proof up (a clean exit; a crash gives it up by itself).
    func release(_ worker: WorkerID) async
}

/// Several proofs at once (a file lock for this host, a database lock for all hosts): registering takes
/// every one; a worker is provably dead when any one proves it.
public struct CombinedWorkerLiveness: WorkerLiveness {
    public let parts: [any WorkerLiveness]

    public init(_ parts: [any WorkerLiveness]) {
        self.parts = parts
    }

    public func register(_ worker: WorkerID) async throws {
        var done: [any WorkerLiveness] = []
        do {
            for part in parts {
                try await part.register(worker)
                done.append(part)
            }
        } catch {
            for part in done { await part.release(worker) }
            throw error
        }
    }

    public func isProvablyDead(_ worker: WorkerID) async -> Bool {
        for part in parts where await part.isProvablyDead(worker) { return true }
        return false
    }

    public func release(_ worker: WorkerID) async {
        for part in parts.reversed() { await part.release(worker) }
    }
}

/// Liveness within one process, for tests: a registered worker lives until ``kill(_:)`` or
/// ``release(_:)``; one never registered here is unknown (not provably dead).
public final class MemoryWorkerLiveness: WorkerLiveness {
    private enum Life { case alive, dead }
    // The only mutable state, behind the mutex.
    private let workers = Mutex<[WorkerID: Life]>([:])

    public init() {}

    public func register(_ worker: WorkerID) async throws {
        workers.withLock { $0[worker] = .alive }
    }

    public func isProvablyDead(_ worker: WorkerID) async -> Bool {
        workers.withLock { $0[worker] == .dead }
    }

    public func release(_ worker: WorkerID) async {
        kill(worker)
    }

    /// Ends `worker` as a crash would (its proof of life is free from now on).
    public func kill(_ worker: WorkerID) {
        workers.withLock { $0[worker] = .dead }
    }
}

/// This process's worker identity and the proof of life it holds (see ``SnapshotService/forWorker(_:)``).
public struct LiveWorker: Sendable {
    public let id: WorkerID
    public let liveness: any WorkerLiveness

    public init(id: WorkerID, liveness: any WorkerLiveness) {
        self.id = id
        self.liveness = liveness
    }

    /// Whether the holder of `token` (a claim's worker or a snapshot's writer) provably died: a token of
    /// this same worker never is; one of unknown form never is either.
    public func provesDeath(ofHolder token: String) async -> Bool {
        guard let holder = WorkerID(token: token), holder != id else { return false }
        return await liveness.isProvablyDead(holder)
    }
}
