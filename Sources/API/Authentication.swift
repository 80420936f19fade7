public import SigV4
public import SnapshotCore

/// Who signed a request: the caller it acts as, and the access key ID (for the request log).
public struct Authenticated: Sendable, Equatable {
    public var caller: Caller
    public var accessKeyID: String

    public init(caller: Caller, accessKeyID: String) {
        self.caller = caller
        self.accessKeyID = accessKeyID
    }
}

/// Verifies a request's signature and names its caller.
///
/// - Throws: an ``EC2Error`` — `MissingAuthenticationToken`, `IncompleteSignature`, `AuthFailure`,
///   `RequestExpired` — for every request it refuses.
public protocol EC2Authenticator: Sendable {
    func authenticate(_ request: SigV4IncomingRequest) async throws -> Authenticated
}
