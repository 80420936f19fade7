import API
import SnapshotCore

extension AppContext {
    /// The request authenticator of `serve`: SigV4 (service `ec2`, any region, 5 minutes of skew) with
    /// the catalog's access keys (`snapimport keys create`).
    func authenticator(service: SnapshotService) -> any EC2Authenticator {
        SigV4Authenticator(maxClockSkew: 300) { id in
            try await service.accessKey(id).map { SigV4Authenticator.Key(secret: $0.secret, caller: $0.caller) }
        }
    }
}
