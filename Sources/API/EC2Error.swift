public import SnapshotCore

/// An error as the EC2 API answers it: a code the client's SDK keys on, a message for people and
/// the HTTP status (docs/api.md, "Errors"). Rendered as
/// `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`.
public struct EC2Error: Error, Equatable, Sendable, CustomStringConvertible {
    /// The EC2 error codes this server sends, each with its HTTP status.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public let status: Int

        public init(_ rawValue: String, _ status: Int) {
            self.rawValue = rawValue
            self.status = status
        }

        public var description: String { rawValue }

        // Request and parameters
        public static let missingAction = Code("MissingAction", 400)
        public static let invalidAction = Code("InvalidAction", 400)
        public static let missingParameter = Code("MissingParameter", 400)
        public static let invalidParameterValue = Code("InvalidParameterValue", 400)
        public static let invalidParameterCombination = Code("InvalidParameterCombination", 400)
        public static let invalidParameter = Code("InvalidParameter", 400)
        public static let malformedQueryString = Code("MalformedQueryString", 400)
        public static let invalidPaginationToken = Code("InvalidPaginationToken", 400)
        public static let idempotentParameterMismatch = Code("IdempotentParameterMismatch", 400)
        public static let dryRunOperation = Code("DryRunOperation", 412)
        public static let unsupportedOperation = Code("UnsupportedOperation", 400)
        public static let requestTooLarge = Code("RequestEntityTooLarge", 413)
        public static let unsupportedHTTPVerb = Code("UnsupportedHttpVerb", 405)
        public static let notFoundPath = Code("InvalidURI", 404)
        // Authentication and rights
        public static let authFailure = Code("AuthFailure", 401)
        public static let missingAuthenticationToken = Code("MissingAuthenticationToken", 403)
        public static let incompleteSignature = Code("IncompleteSignature", 400)
        public static let requestExpired = Code("RequestExpired", 400)
        public static let unauthorizedOperation = Code("UnauthorizedOperation", 403)
        // Resources
        public static let snapshotNotFound = Code("InvalidSnapshot.NotFound", 400)
        public static let snapshotIDMalformed = Code("InvalidSnapshotID.Malformed", 400)
        public static let snapshotInUse = Code("InvalidSnapshot.InUse", 400)
        public static let volumeNotFound = Code("InvalidVolume.NotFound", 400)
        public static let volumeIDMalformed = Code("InvalidVolumeID.Malformed", 400)
        public static let volumeInUse = Code("VolumeInUse", 400)
        public static let importTaskNotFound = Code("InvalidConversionTaskId", 400)
        public static let importTaskIDMalformed = Code("InvalidConversionTaskId.Malformed", 400)
        public static let incorrectState = Code("IncorrectState", 400)
        public static let operationNotPermitted = Code("OperationNotPermitted", 400)
        // Server
        public static let internalError = Code("InternalError", 500)
        public static let unavailable = Code("Unavailable", 503)
        public static let requestLimitExceeded = Code("RequestLimitExceeded", 503)
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var status: Int { code.status }
    public var description: String { "\(code.rawValue) (\(code.status)): \(message)" }

    /// The error document.
    public func xml(requestID: String) -> String {
        var xml = XMLWriter()
        xml.start("Response")
        xml.element("Errors") { xml in
            xml.element("Error") { xml in
                xml.text("Code", code.rawValue)
                xml.text("Message", message)
            }
        }
        xml.text("RequestID", requestID)
        xml.end()
        return xml.document
    }
}

/// What a request acts on, for the resource-specific EC2 codes (`InvalidSnapshot.NotFound` vs
/// `InvalidVolume.NotFound`).
public enum EC2Resource: Sendable {
    case snapshot
    case volume
    case other
}

extension EC2Error {
    /// The one table from the core's ``SnapshotError`` codes to EC2's (docs/api.md, "Code mapping").
    ///
    /// | SnapshotError | EC2 code | HTTP |
    /// |---|---|---|
    /// | NotFound | InvalidSnapshot.NotFound / InvalidVolume.NotFound | 400 |
    /// | InvalidArgument, InvalidProject | InvalidParameterValue | 400 |
    /// | AccessDenied | UnauthorizedOperation | 403 |
    /// | InUse | InvalidSnapshot.InUse / VolumeInUse | 400 |
    /// | InvalidState | IncorrectState | 400 |
    /// | ConfirmationRequired | OperationNotPermitted | 400 |
    /// | Conflict | Unavailable (retried by SDKs) | 503 |
    /// | LeaseLost, CorruptBlock, MissingBlock, StorageError, CatalogError | InternalError | 500 |
    public init(_ error: SnapshotError, resource: EC2Resource) {
        switch error.code {
        case .notFound:
            switch resource {
            case .volume: self.init(.volumeNotFound, error.message)
            case .snapshot, .other: self.init(.snapshotNotFound, error.message)
            }
        case .invalidArgument, .invalidProject:
            self.init(.invalidParameterValue, error.message)
        case .accessDenied:
            self.init(.unauthorizedOperation, error.message)
        case .inUse:
            self.init(resource == .volume ? .volumeInUse : .snapshotInUse, error.message)
        case .invalidState:
            self.init(.incorrectState, error.message)
        case .confirmationRequired:
            self.init(.operationNotPermitted, error.message)
        case .conflict:
            self.init(.unavailable, "the request raced another change; retry it")
        default:
            // Storage, catalog, lease and integrity failures: the message stays in the server's log.
            self.init(.internalError, "An internal error has occurred (\(error.code))")
        }
    }
}
