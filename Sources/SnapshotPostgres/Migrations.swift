import Logging
import PostgresNIO

/// Versioned, idempotent schema migrations.
///
/// All of them run in ONE transaction that first takes a transaction-scoped advisory lock
/// (`pg_advisory_xact_lock`), keyed by the schema name: when many workers start at once, one applies the
/// missing migrations and the others wait, then find nothing to do. The lock is released by COMMIT/ROLLBACK (or
/// by the server when a connection dies), so a crashed worker never leaves it held. DDL is transactional in
/// PostgreSQL, so a failed migration leaves the previous version intact.
enum Migrations {
    /// A numbered step; never edit a released one, append a new one.
    struct Migration {
        let version: Int
        let name: String
        let sql: [String]
    }

    /// The advisory lock key space: a fixed 32-bit class id ("snap") plus a hash of the schema name.
    static let lockClass: Int32 = 0x736E_6170

    static func apply(client: PostgresClient, schema: String?, logger: Logger) async throws {
        let all = CatalogSchema.migrations
        let latest = all.map(\.version).max() ?? 0
        do {
            try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: logger)
                do {
                    let key = Int32(truncatingIfNeeded: stableHash(schema ?? "public"))
                    try await connection.query("SELECT pg_advisory_xact_lock(\(lockClass), \(key))", logger: logger)
                    if let schema {
                        // Validated by PostgresCatalogConfiguration.isValidSchemaName: safe to splice unquoted.
                        try await connection.query(
                            PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"), logger: logger)
                    }
                    try await connection.query(
                        """
                        CREATE TABLE IF NOT EXISTS catalog_migrations (
                            version integer PRIMARY KEY,
                            name text NOT NULL,
                            applied_at timestamptz NOT NULL DEFAULT now())
                        """, logger: logger)
                    var applied = Set<Int>()
                    for try await version in try await connection.query(
                        "SELECT version FROM catalog_migrations", logger: logger
                    ).decode(Int.self) {
                        applied.insert(version)
                    }
                    if let newest = applied.max(), newest > latest {
                        throw PostgresCatalogError(
                            .schemaTooNew,
                            "catalog schema is at version \(newest), this build knows up to \(latest); upgrade snapimport")
                    }
                    for migration in all.sorted(by: { $0.version < $1.version }) where !applied.contains(migration.version) {
                        logger.info("applying catalog migration", metadata: [
                            "version": "\(migration.version)", "name": "\(migration.name)",
                        ])
                        for statement in migration.sql {
                            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                        }
                        try await connection.query(
                            "INSERT INTO catalog_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                            logger: logger)
                    }
                    try await connection.query("COMMIT", logger: logger)
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: logger)
                    throw error
                }
            }
        } catch let error as PostgresCatalogError {
            throw error
        } catch let error as PSQLError where error.serverInfo == nil {
            throw PostgresCatalogError(.connectionFailed, "cannot reach the catalog database", underlying: error)
        } catch {
            throw PostgresCatalogError(.migrationFailed, "creating the catalog tables failed", underlying: error)
        }
    }

    /// FNV-1a over UTF-8: stable across processes and builds (unlike `Hasher`), so all hosts agree on the key.
    static func stableHash(_ text: String) -> UInt32 {
        var hash: UInt32 = 0x811C_9DC5
        for byte in text.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 0x0100_0193
        }
        return hash
    }
}
