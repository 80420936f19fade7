public import Foundation

/// A CreateVolume `ClientToken` as the catalog keeps it: who sent it, the request's parameters and the
/// volume the first request made. Unique per (`requester`, `clientToken`), inserted in the same batch as
/// the volume, so a retry — after a restart, or to another server on the same catalog — answers the same
/// volume, and two racing requests with one token make one volume.
public struct VolumeTokenRecord: Hashable, Sendable {
    /// Who asked (tokens are scoped to it): the operator or a project.
    public var requester: Caller
    public var clientToken: String
    /// The request's parameters: the snapshot the volume is made from.
    public var snapshotID: SnapshotID
    /// The request's `Size` in GiB as given (nil when the request left it out).
    public var size: Int?
    /// The volume the first request made.
    public var volumeID: VolumeID
    public var createdAt: Date

    public init(
        requester: Caller, clientToken: String, snapshotID: SnapshotID, size: Int?, volumeID: VolumeID, createdAt: Date
    ) {
        self.requester = requester
        self.clientToken = clientToken
        self.snapshotID = snapshotID
        self.size = size
        self.volumeID = volumeID
        self.createdAt = createdAt
    }

    /// Whether `request` carries the same parameters as the one that made this record.
    public func matches(_ request: VolumeRequestToken) -> Bool {
        request.clientToken == clientToken && request.snapshotID == snapshotID && request.size == size
    }
}

/// The idempotency part of a CreateVolume request: its `ClientToken` and the parameters a repeat must
/// carry unchanged.
public struct VolumeRequestToken: Hashable, Sendable {
    public var clientToken: String
    public var snapshotID: SnapshotID
    public var size: Int?

    public init(clientToken: String, snapshotID: SnapshotID, size: Int?) {
        self.clientToken = clientToken
        self.snapshotID = snapshotID
        self.size = size
    }
}

/// A `ClientToken` repeated with other parameters than the request that first used it (EC2's
/// `IdempotentParameterMismatch`). Stable code: ``code``.
public struct ClientTokenMismatch: Error, Sendable, CustomStringConvertible {
    /// `IdempotentParameterMismatch`.
    public static let code = "IdempotentParameterMismatch"
    /// What the token was first used for.
    public var existing: VolumeTokenRecord

    public init(existing: VolumeTokenRecord) { self.existing = existing }

    public var description: String {
        "\(Self.code): the client token \(ProjectRef.quoted(existing.clientToken)) was already used with "
            + "different parameters (snapshot \(existing.snapshotID), "
            + "size \(existing.size.map { "\($0) GiB" } ?? "unset"))"
    }
}
