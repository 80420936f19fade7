/// Why an import did not produce a snapshot. The `code` is stable: it lands in `.error.json`, in
/// `snapimport run --json` and in the import history (architecture.md, "Rejection codes").
///
/// An error is either a *rejection* (a property of the object: it will never import, so it goes
/// to `failed/`) or *transient* (the network, the S3 server, a lost lease, an object replaced
/// while it was read: the object stays in `incoming/` for the next pass).
public struct ImporterError: Error, CustomStringConvertible, Sendable {
    /// A stable, machine-readable code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case invalidProject = "InvalidProject"
            case formatMismatch = "FormatMismatch"
            case invalidSidecar = "InvalidSidecar"
            case objectChanged = "ObjectChanged"
            case leaseLost = "LeaseLost"
            case storageUnavailable = "StorageUnavailable"
            case cancelled = "Cancelled"
            case notFound = "NotFound"
            case accessDenied = "AccessDenied"
            case ownerMismatch = "OwnerMismatch"
            case internalError = "InternalError"
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The stable name, e.g. `"InvalidProject"`.
        public var name: String { value.rawValue }
        public var description: String { value.rawValue }

        /// The key is not under `incoming/<project>@<customer>/`, or the project is malformed.
        public static let invalidProject = Code(.invalidProject)
        /// The sidecar (or `--format`) claims a format the content is not.
        public static let formatMismatch = Code(.formatMismatch)
        /// The sidecar `<key>.json` is not a JSON object with the documented fields.
        public static let invalidSidecar = Code(.invalidSidecar)
        /// The object changed (new ETag) while it was being read: If-Match failed. Transient.
        public static let objectChanged = Code(.objectChanged)
        /// Another worker took over the import (the lease expired). Transient.
        public static let leaseLost = Code(.leaseLost)
        /// The S3 server or the network failed. Transient.
        public static let storageUnavailable = Code(.storageUnavailable)
        /// The worker was shut down before the import finished. Transient.
        public static let cancelled = Code(.cancelled)
        /// The source object or file does not exist.
        public static let notFound = Code(.notFound)
        /// A manual import names another project than the `incoming/<project>@<customer>/` folder the
        /// object sits in: the folder's project owns it.
        public static let ownerMismatch = Code(.ownerMismatch)
        /// The S3 server refused the credentials or the operation.
        public static let accessDenied = Code(.accessDenied)
        /// A bug or an unexpected failure of the store; treated as transient.
        public static let internalError = Code(.internalError)
    }

    public let code: Code
    public let message: String
    public let underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String { "\(code): \(message)" }
}

extension ImporterError: Equatable {
    /// Errors compare by code only (house style).
    public static func == (lhs: ImporterError, rhs: ImporterError) -> Bool { lhs.code == rhs.code }
}
