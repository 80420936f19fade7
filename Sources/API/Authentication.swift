public import SnapshotCore

/// A request as its signature covers it: method, path, raw query string, headers and body bytes.
public struct SignedRequest: Sendable {
    public var method: String
    public var path: String
    /// The raw (still percent-encoded) query string, without `?`; empty when none.
    public var query: String
    /// Header names as sent (lookups are case-insensitive), in order.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(method: String, path: String, query: String, headers: [(name: String, value: String)], body: [UInt8]) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }
}

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
    func authenticate(_ request: SignedRequest) async throws -> Authenticated
}
