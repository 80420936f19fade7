import API
import SnapshotCore

extension AppContext {
    /// The request authenticator of `serve`: SigV4 with the catalog's access keys.
    func authenticator(service: SnapshotService) -> any EC2Authenticator {
        UnavailableAuthenticator()
    }
}

/// Refuses every request until access keys exist (the identity work is merged separately).
struct UnavailableAuthenticator: EC2Authenticator {
    func authenticate(_ request: SignedRequest) async throws -> Authenticated {
        throw EC2Error(.authFailure, "AWS was not able to validate the provided access credentials")
    }
}
