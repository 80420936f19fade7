import PostgresNIO

/// Why the PostgreSQL catalog could not be opened or used: a bad URL, an unreachable server, a schema newer
/// than this build, or a database error that is not a catalog rule. Rule violations (`NotFound`, `InUse`, …) are
/// reported with SnapshotCore's own error type, exactly as the SQLite catalog reports them.
///
/// Messages never contain the password of the connection URL.
public struct PostgresCatalogError: Error, CustomStringConvertible, Sendable {
    /// A stable, machine-readable code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case invalidURL = "InvalidCatalogURL"
            case connectionFailed = "CatalogConnectionFailed"
            case schemaTooNew = "CatalogSchemaTooNew"
            case migrationFailed = "CatalogMigrationFailed"
            case database = "CatalogDatabaseError"
            case corruptRow = "CatalogCorruptRow"
            case retriesExhausted = "CatalogRetriesExhausted"
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The stable name, e.g. `"InvalidCatalogURL"`.
        public var name: String { value.rawValue }
        public var description: String { value.rawValue }

        /// The catalog URL is malformed or names an unsupported option.
        public static let invalidURL = Code(.invalidURL)
        /// The server could not be reached or refused the login.
        public static let connectionFailed = Code(.connectionFailed)
        /// The database was migrated by a newer snapimport; this build refuses to touch it.
        public static let schemaTooNew = Code(.schemaTooNew)
        /// Creating or upgrading the tables failed.
        public static let migrationFailed = Code(.migrationFailed)
        /// A statement failed for a reason that is not a catalog rule.
        public static let database = Code(.database)
        /// A stored row holds a value this build cannot interpret.
        public static let corruptRow = Code(.corruptRow)
        /// A serializable transaction kept conflicting with concurrent writers.
        public static let retriesExhausted = Code(.retriesExhausted)
    }

    public let code: Code
    public let message: String
    public let underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        guard let underlying else { return "\(code): \(message)" }
        return "\(code): \(message) (\(Self.describe(underlying)))"
    }

    /// A short description of a database error: SQLSTATE and the server's message, or the connection
    /// failure's cause; never bind values or the password.
    static func describe(_ error: any Error) -> String {
        if let sqlState = error.postgresSQLState {
            return "SQLSTATE \(sqlState): \(error.postgresServerMessage ?? "")"
        }
        if let error = error as? PSQLError {
            // PSQLError's own description is deliberately generic; its code and cause are safe to show.
            guard let cause = error.underlying else { return "PostgreSQL client error \(error.code)" }
            return "PostgreSQL client error \(error.code): \(describe(cause))"
        }
        return String(describing: error)
    }
}

extension PostgresCatalogError: Equatable {
    /// Errors compare by code only (house style): tests assert the reason, not the wording.
    public static func == (lhs: PostgresCatalogError, rhs: PostgresCatalogError) -> Bool { lhs.code == rhs.code }
}
