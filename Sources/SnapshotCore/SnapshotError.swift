/// The one error type of SnapshotCore.
///
/// `code` is stable (architecture.md, "Rejection codes"); `message` is for people and names the
/// object concerned, never a secret. Two errors are equal when their codes are equal.
public struct SnapshotError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A stable error code; `description` is the string printed in `{"error":{"code":…}}`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case invalidProject = "InvalidProject"
            case accessDenied = "AccessDenied"
            case notFound = "NotFound"
            case inUse = "InUse"
            case invalidArgument = "InvalidArgument"
            case invalidState = "InvalidState"
            case confirmationRequired = "ConfirmationRequired"
            case conflict = "Conflict"
            case leaseLost = "LeaseLost"
            case corruptBlock = "CorruptBlock"
            case missingBlock = "MissingBlock"
            case storage = "StorageError"
            case catalog = "CatalogError"
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// A project reference (`project@customer`) that breaks the grammar of ``ProjectRef``.
        public static let invalidProject = Code(.invalidProject)
        /// The caller may see the object but not change it (it is not the owner).
        public static let accessDenied = Code(.accessDenied)
        /// No such object, or one the caller may not see (never distinguished, so IDs do not leak).
        public static let notFound = Code(.notFound)
        /// The object is referenced (a snapshot by a template, a volume by an instance or a running snapshot).
        public static let inUse = Code(.inUse)
        /// A malformed ID, an over-long description, a block of the wrong size …
        public static let invalidArgument = Code(.invalidArgument)
        /// The operation does not fit the object's state (a running instance, a pending snapshot …).
        public static let invalidState = Code(.invalidState)
        /// Publishing a bootable snapshot without the explicit confirmation (`--confirm-bootable`).
        public static let confirmationRequired = Code(.confirmationRequired)
        /// A conditional catalog write lost a race (row version changed, unique constraint hit).
        /// The service retries these; callers normally never see one.
        public static let conflict = Code(.conflict)
        /// The import claim or snapshot writer lease was taken over or expired and recovered.
        public static let leaseLost = Code(.leaseLost)
        /// A stored block does not hash to its name (bit rot, truncation).
        public static let corruptBlock = Code(.corruptBlock)
        /// A block named by a manifest is absent from the block store.
        public static let missingBlock = Code(.missingBlock)
        /// The block store or volume files failed (I/O error, disk full).
        public static let storage = Code(.storage)
        /// The catalog database failed (I/O, schema, connection).
        public static let catalog = Code(.catalog)

        public var description: String { value.rawValue }
    }

    /// The stable code.
    public var code: Code
    /// A human message with context.
    public var message: String
    /// The error that caused this one, if any.
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying {
            return "\(code): \(message) (\(ErrorText.plain(underlying)))"
        }
        return "\(code): \(message)"
    }

    public static func == (lhs: SnapshotError, rhs: SnapshotError) -> Bool { lhs.code == rhs.code }

    package static func notFound(_ what: String) -> SnapshotError { SnapshotError(.notFound, "\(what) not found") }
    package static func conflict(_ what: String) -> SnapshotError { SnapshotError(.conflict, what) }
}
