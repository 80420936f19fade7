import Logging
import PostgresNIO

/// SQLSTATE codes the catalog reacts to (PostgreSQL manual, Appendix A "PostgreSQL Error Codes").
enum SQLState {
    static let uniqueViolation = "23505"
    static let foreignKeyViolation = "23503"
    static let checkViolation = "23514"
    static let serializationFailure = "40001"
    static let deadlockDetected = "40P01"
    static let lockNotAvailable = "55P03"
}

extension Error {
    /// The SQLSTATE of a server error, looking through postgres-nio's transaction wrapper.
    var postgresSQLState: String? {
        if let error = self as? PSQLError { return error.serverInfo?[.sqlState] }
        if let error = self as? PostgresTransactionError {
            return (error.closureError ?? error.commitError ?? error.beginError)?.postgresSQLState
        }
        return nil
    }

    /// The server's primary message (no bind values: PostgreSQL does not echo parameters in messages).
    var postgresServerMessage: String? {
        if let error = self as? PSQLError { return error.serverInfo?[.message] }
        if let error = self as? PostgresTransactionError {
            return (error.closureError ?? error.commitError ?? error.beginError)?.postgresServerMessage
        }
        return nil
    }

    /// The constraint a 23xxx error names, if any.
    var postgresConstraint: String? {
        (self as? PSQLError)?.serverInfo?[.constraintName]
    }

    /// Whether retrying the whole transaction may succeed (serialization failure or deadlock).
    var isTransientConflict: Bool {
        let state = postgresSQLState
        return state == SQLState.serializationFailure || state == SQLState.deadlockDetected
    }
}

/// Transaction isolation levels the catalog uses.
enum IsolationLevel: String {
    case readCommitted = "READ COMMITTED"
    case repeatableRead = "REPEATABLE READ"
    case serializable = "SERIALIZABLE"
}

extension PostgresCatalog {
    /// How often a transaction that hit a serialization failure or deadlock is re-run.
    static let maximumAttempts = 12

    /// Runs `body` in one transaction on one pooled connection and commits it; rolls back when `body` throws.
    /// A serialization failure or deadlock (SQLSTATE 40001/40P01) re-runs the whole body after a short random
    /// back-off, so `body` must be free of side effects outside the database.
    ///
    /// - Parameters:
    ///   - isolation: The isolation level (`READ COMMITTED` unless the body relies on a stable snapshot).
    ///   - body: The statements; it gets the connection and must not keep it.
    func transaction<Result: Sendable>(
        _ isolation: IsolationLevel = .readCommitted,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await migrate()
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await client.withConnection { connection in
                    try await connection.query(
                        PostgresQuery(unsafeSQL: "BEGIN ISOLATION LEVEL \(isolation.rawValue)"), logger: logger)
                    do {
                        let result = try await body(connection)
                        try await connection.query("COMMIT", logger: logger)
                        return result
                    } catch {
                        // A failed ROLLBACK means the connection is broken; the pool discards it, so ignore it.
                        _ = try? await connection.query("ROLLBACK", logger: logger)
                        throw error
                    }
                }
            } catch where error.isTransientConflict && attempt < Self.maximumAttempts {
                logger.debug("transaction conflict, retrying", metadata: ["attempt": "\(attempt)"])
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...(5 << min(attempt, 6)))))
            } catch where error.isTransientConflict {
                throw PostgresCatalogError(
                    .retriesExhausted, "transaction still conflicting after \(attempt) attempts", underlying: error)
            }
        }
    }

    /// Runs a single statement outside an explicit transaction (autocommit) and returns all rows.
    @discardableResult
    func execute(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await migrate()
        return try await client.withConnection { connection in
            try await connection.query(query, logger: logger).collect()
        }
    }
}

extension PostgresConnection {
    /// Runs `query` and returns every row.
    @discardableResult
    func rows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        try await self.query(query, logger: logger).collect()
    }
}
