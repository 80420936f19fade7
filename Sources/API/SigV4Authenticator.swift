public import Foundation
public import SigV4
public import SnapshotCore

/// SigV4 authentication of EC2 requests (service `ec2`, any region, 5 minutes of clock skew) against
/// the catalog's access keys.
public struct SigV4Authenticator: EC2Authenticator {
    /// An access key: its secret and the caller it acts as.
    public struct Key: Sendable {
        public var secret: String
        public var caller: Caller

        public init(secret: String, caller: Caller) {
            self.secret = secret
            self.caller = caller
        }
    }

    let verifier: SigV4Verifier
    let lookup: @Sendable (String) async throws -> Key?
    let clock: @Sendable () -> Date

    /// - Parameters:
    ///   - maxClockSkew: seconds `X-Amz-Date` may be from the server's clock.
    ///   - lookup: the key of an access key ID, nil when unknown.
    public init(
        maxClockSkew: TimeInterval = 300, clock: @escaping @Sendable () -> Date = { Date() },
        lookup: @escaping @Sendable (String) async throws -> Key?
    ) {
        verifier = SigV4Verifier(service: "ec2", maxClockSkew: maxClockSkew)
        self.lookup = lookup
        self.clock = clock
    }

    public func authenticate(_ request: SigV4IncomingRequest) async throws -> Authenticated {
        var found: Key?
        let identity: SigV4Identity
        do {
            identity = try await verifier.verify(request, now: clock()) { accessKeyID in
                found = try await lookup(accessKeyID)
                return found?.secret
            }
        } catch let error as SigV4VerificationError {
            throw EC2Error(Self.code(error), error.message)
        }
        guard let key = found else {
            throw EC2Error(.authFailure, "AWS was not able to validate the provided access credentials")
        }
        return Authenticated(caller: key.caller, accessKeyID: identity.accessKeyID)
    }

    static func code(_ error: SigV4VerificationError) -> EC2Error.Code {
        switch error {
        case .missingAuthentication: .missingAuthenticationToken
        case .incompleteSignature: .incompleteSignature
        case .unknownAccessKey, .signatureMismatch, .wrongService: .authFailure
        case .requestExpired: .requestExpired
        }
    }
}
