import Logging
import PostgresNIO
public import SnapshotCore
import Synchronization

/// Proof of life for workers on any host sharing one PostgreSQL catalog: each worker holds, for its
/// lifetime, a session-level advisory lock (`pg_advisory_lock(key)`) on a connection of its own, outside
/// the pool. The server drops the lock when that session ends: the process died (its socket closed) or
/// the host vanished (TCP keepalive, or `tcp_keepalives_*`/`idle_session_timeout` on the server).
///
/// Another worker proves a holder dead with `pg_try_advisory_lock(key)` on a pooled connection: when it
/// gets the lock, no session holds it, so the worker's connection is gone; it unlocks at once.
///
/// `key` is a 64-bit FNV-1a hash of the catalog's schema and the ``WorkerID`` (nonce included), so
/// catalogs in different schemas of one database never see each other's workers.
///
/// When the worker's own connection drops while it lives (a network blip), others may take its claims
/// over: it then learns at its next lease renewal (`LeaseLost`) and stops; the catalog's versioned claims
/// keep every object imported exactly once.
public final class PostgresWorkerLiveness: WorkerLiveness {
    private let catalog: PostgresCatalog
    /// The dedicated connection of each worker this process registered.
    private let held = Mutex<[WorkerID: PostgresConnection]>([:])

    /// - Parameter catalog: the catalog whose server (and schema) the workers share.
    public init(catalog: PostgresCatalog) {
        self.catalog = catalog
    }

    /// The advisory lock key of `worker` in this catalog.
    public func key(of worker: WorkerID) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "snapimport-worker:\(catalog.configuration.schema ?? "public"):\(worker.rawValue)".utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return Int64(bitPattern: hash)
    }

    public func register(_ worker: WorkerID) async throws {
        let key = key(of: worker)
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(
                configuration: try catalog.configuration.connectionConfiguration(), id: Int(truncatingIfNeeded: key),
                logger: catalog.logger)
        } catch {
            throw PostgresCatalogError(
                .connectionFailed,
                "cannot open the worker's liveness connection to \(catalog.configuration.redactedURL)",
                underlying: error)
        }
        do {
            let rows = try await connection.rows("SELECT pg_try_advisory_lock(\(key))", logger: catalog.logger)
            guard try rows.first?.decode(Bool.self) == true else {
                throw PostgresCatalogError(
                    .database, "the advisory lock of worker \(worker) is held by another session")
            }
        } catch {
            try? await connection.close()
            if error is PostgresCatalogError { throw error }
            throw PostgresCatalogError(.database, "taking the worker's advisory lock failed", underlying: error)
        }
        held.withLock { $0[worker] = connection }
    }

    public func isProvablyDead(_ worker: WorkerID) async -> Bool {
        if held.withLock({ $0[worker] != nil }) { return false }
        let key = key(of: worker)
        do {
            try await catalog.migrate()
            return try await catalog.client.withConnection { connection in
                let rows = try await connection.rows("SELECT pg_try_advisory_lock(\(key))", logger: catalog.logger)
                guard try rows.first?.decode(Bool.self) == true else { return false }
                // Free: no session holds it. Give it back at once (this pooled session must not keep it).
                try await connection.query("SELECT pg_advisory_unlock(\(key))", logger: catalog.logger)
                return true
            }
        } catch {
            catalog.logger.warning(
                "testing a worker's advisory lock failed: \(error)", metadata: ["worker": "\(worker)"])
            return false
        }
    }

    public func release(_ worker: WorkerID) async {
        guard let connection = held.withLock({ $0.removeValue(forKey: worker) }) else { return }
        // A session the server already ended (its locks went with it) takes no more requests: a query or
        // close on it would wait for ever.
        guard !connection.isClosed else { return }
        // Unlock first (the server frees a closed session's locks only as its backend exits), then close.
        _ = try? await connection.query("SELECT pg_advisory_unlock(\(key(of: worker)))", logger: catalog.logger)
        try? await connection.close()
    }
}
