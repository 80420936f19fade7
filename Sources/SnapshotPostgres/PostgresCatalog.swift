public import Logging
public import Foundation
import PostgresNIO
import Synchronization

/// The PostgreSQL implementation of SnapshotCore's catalog: one database shared by many import workers and
/// CLI calls on many hosts. Every racy operation is made atomic in the database (primary keys and unique
/// indexes, conditional `UPDATE/DELETE … WHERE version = … RETURNING`, `SELECT … FOR UPDATE`, one transaction
/// per batch, deadlocks re-run), never by a lock held in this process, so two instances (two hosts) obey the
/// same rules as two tasks of one process. See `PostgresCatalog+Catalog.swift`.
///
/// ## Lifecycle
/// The catalog owns a connection pool (`PostgresClient`) that only works while ``run()`` is running. Three ways:
/// - Drop-in for `SQLiteCatalog`: ``open(url:logger:)`` returns a ready catalog; ``close()`` stops its pool.
/// - Short-lived commands: ``withPostgresCatalog(url:logger:_:)`` starts the pool, creates/upgrades the tables,
///   runs the body and shuts the pool down.
/// - Long-running services: create the catalog with ``init(url:logger:)``, run ``run()`` in a task group or as a
///   swift-service-lifecycle `Service` (`extension PostgresCatalog: Service {}` in the executable: ``run()`` has the
///   required signature and stops on graceful shutdown). Tables are created/upgraded by the first operation (or
///   call ``migrate()`` up front to fail fast).
public final class PostgresCatalog: Sendable {
    /// The parsed connection settings (the password is never logged; use ``PostgresCatalogConfiguration/redactedURL``).
    public let configuration: PostgresCatalogConfiguration
    let client: PostgresClient
    let logger: Logger
    /// Set once the migrations have been applied by this instance; further operations skip the check.
    private let migrated = Atomic<Bool>(false)
    /// Set by ``run()`` just before the pool starts, so the first operation can wait for it.
    private let running = Atomic<Bool>(false)
    /// The pool task started by ``open(url:logger:)``, cancelled by ``close()``; nil otherwise.
    let ownedRun = Mutex<Task<Void, Never>?>(nil)

    /// Creates a catalog for `configuration`. No connection is made until ``run()`` runs and an operation needs one.
    /// - Parameters:
    ///   - configuration: Where the database is.
    ///   - logger: Receives connection and migration messages (never the password).
    public init(configuration: PostgresCatalogConfiguration, logger: Logger) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "catalog"] = "\(configuration.redactedURL)"
        self.logger = logger
        self.client = PostgresClient(configuration: configuration.clientConfiguration, backgroundLogger: logger)
    }

    /// Creates a catalog from a URL (see ``PostgresCatalogConfiguration`` for the accepted form).
    /// - Throws: ``PostgresCatalogError`` `.invalidURL`.
    public convenience init(url: String, logger: Logger) throws {
        self.init(configuration: try PostgresCatalogConfiguration(url: url), logger: logger)
    }

    /// Runs the connection pool until the surrounding task is cancelled (or, under swift-service-lifecycle, until
    /// graceful shutdown). Call exactly once per instance. Operations made while it is not running wait.
    public func run() async throws {
        running.store(true, ordering: .releasing)
        await client.run()
    }

    /// Creates or upgrades the tables (idempotent; safe when many workers start at once: see `Migrations.swift`).
    /// Operations call it implicitly the first time; call it directly to fail fast on a bad URL or server.
    public func migrate() async throws {
        if migrated.load(ordering: .acquiring) { return }
        // The pool's task may not have started yet (a task group schedules it concurrently); give it a moment
        // rather than leasing from a pool that is not running.
        for _ in 0..<200 where !running.load(ordering: .acquiring) {
            try await Task.sleep(for: .milliseconds(5))
        }
        try await probe()
        try await Migrations.apply(client: client, schema: configuration.schema, logger: logger)
        migrated.store(true, ordering: .releasing)
    }

    /// Opens one connection outside the pool and closes it: a wrong host, port, password or database fails
    /// here at once with the server's reason, where the pool would retry with back-off for about a minute.
    private func probe() async throws {
        do {
            let connection = try await PostgresConnection.connect(
                configuration: try configuration.connectionConfiguration(), id: 0, logger: logger)
            try? await connection.close()
        } catch {
            throw PostgresCatalogError(
                .connectionFailed, "cannot connect to the catalog \(configuration.redactedURL)", underlying: error)
        }
    }
}

extension PostgresCatalog {
    /// Opens the catalog at `url` as a drop-in for `SQLiteCatalog(path:)`: starts the pool in a task the catalog
    /// owns, creates/upgrades the tables, and returns; ``close()`` stops the pool. For code that holds an
    /// `any Catalog` and closes it when done (the CLI's context). Prefer ``withPostgresCatalog(url:logger:_:)``
    /// or ``run()`` under a service group where structured lifetimes fit.
    ///
    /// - Parameters:
    ///   - url: `postgres://user[:password]@host[:port]/database[?sslmode=…&schema=…]`.
    ///   - logger: Receives connection and migration messages (never the password).
    /// - Throws: ``PostgresCatalogError`` (`.invalidURL`, `.connectionFailed`, `.schemaTooNew`, `.migrationFailed`).
    public static func open(url: String, logger: Logger) async throws -> PostgresCatalog {
        let catalog = try PostgresCatalog(url: url, logger: logger)
        // An unstructured task because the caller's lifetime is not a scope: close() cancels and awaits it.
        let task = Task<Void, Never> { _ = try? await catalog.run() }
        catalog.ownedRun.withLock { $0 = task }
        do {
            try await catalog.migrate()
        } catch {
            try? await catalog.close()
            throw error
        }
        return catalog
    }
}

/// Opens the PostgreSQL catalog at `url` for the duration of `body`: starts the connection pool, creates or
/// upgrades the tables, runs `body`, then closes every connection. For CLI commands and other short-lived work.
///
/// - Parameters:
///   - url: `postgres://user[:password]@host[:port]/database[?sslmode=…&schema=…]`.
///   - logger: Receives connection and migration messages.
///   - body: Uses the catalog; it must not keep it beyond its return.
/// - Returns: What `body` returns.
public func withPostgresCatalog<Result: Sendable>(
    url: String,
    logger: Logger,
    _ body: (PostgresCatalog) async throws -> Result
) async throws -> Result {
    let catalog = try PostgresCatalog(url: url, logger: logger)
    return try await withPostgresCatalog(catalog, body)
}

/// Runs `catalog`'s pool for the duration of `body` (see ``withPostgresCatalog(url:logger:_:)``).
public func withPostgresCatalog<Result: Sendable>(
    _ catalog: PostgresCatalog,
    _ body: (PostgresCatalog) async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await catalog.run() }
        defer { group.cancelAll() }
        try await catalog.migrate()
        return try await body(catalog)
    }
}

extension PostgresCatalog {
    /// Drops this catalog's schema with every table in it. Only for tests that made a throw-away schema.
    func dropSchemaForTesting() async throws {
        guard let schema = configuration.schema, schema.hasPrefix("test_") else {
            throw PostgresCatalogError(.database, "refusing to drop a schema not named test_…")
        }
        _ = try await client.withConnection { connection in
            // Validated identifier (PostgresCatalogConfiguration.isValidSchemaName): safe to splice.
            try await connection.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE"), logger: logger)
        }
    }
}

extension PostgresCatalog {
    /// Runs one statement and returns the first column of the first row as an integer. Only for tests.
    @discardableResult
    func scalarForTesting(_ sql: String) async throws -> Int64? {
        try await client.withConnection { connection in
            try await connection.rows(PostgresQuery(unsafeSQL: sql), logger: logger).first?.decode(Int64?.self)
        }
    }
}

extension PostgresCatalog {
    /// The database server's clock (`clock_timestamp()`), rounded to milliseconds: one time source for every
    /// host. Leases and GC cutoffs compare times written by different hosts; passing this as `now:` to the
    /// service's lease and recovery calls removes host clock skew from those decisions.
    public func databaseTime() async throws -> Date {
        do {
            let rows = try await execute("SELECT clock_timestamp()")
            guard let date = try rows.first?.decode(Date.self) else {
                throw PostgresCatalogError(.database, "clock_timestamp() returned no row")
            }
            return Self.millis(date)
        } catch {
            throw Self.catalogError("reading the database clock failed", error)
        }
    }
}

extension PostgresCatalog {
    /// The plan of one statement (`EXPLAIN`), its lines joined. Only for tests.
    func explainForTesting(_ sql: String) async throws -> String {
        try await client.withConnection { connection in
            try await connection.query("SET enable_seqscan = off", logger: logger)
            let rows = try await connection.rows(PostgresQuery(unsafeSQL: "EXPLAIN " + sql), logger: logger)
            return try rows.map { try $0.decode(String.self) }.joined(separator: "\n")
        }
    }
}
