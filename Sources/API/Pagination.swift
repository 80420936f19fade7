public import Foundation
public import SnapshotCore

/// The opaque `NextToken` of DescribeSnapshots and DescribeVolumes: where the previous page ended
/// (creation time and ID, the catalog's keyset order), base64url-encoded with the listing's kind so
/// that a token of one listing is refused by another.
public struct PageToken: Equatable, Sendable {
    public var kind: String
    public var cursor: Position

    /// A keyset position: creation time in whole milliseconds and an ID.
    public struct Position: Equatable, Sendable {
        public var millis: Int64
        public var id: String
    }

    public init(kind: String, millis: Int64, id: String) {
        self.kind = kind
        cursor = Position(millis: millis, id: id)
    }

    /// The wire form.
    public var token: String {
        let raw = "v1|\(kind)|\(cursor.millis)|\(cursor.id)"
        return Data(raw.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Parses a token of listing `kind`. - Throws: `InvalidPaginationToken`.
    public init(parsing text: String, kind: String) throws {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard text.count <= 200, let data = Data(base64Encoded: base64), let raw = String(data: data, encoding: .utf8)
        else {
            throw EC2Error(.invalidPaginationToken, "The token \(quoted(text)) is invalid.")
        }
        let parts = raw.split(separator: "|", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "v1", parts[1] == kind, let millis = Int64(parts[2]) else {
            throw EC2Error(.invalidPaginationToken, "The token \(quoted(text)) is invalid.")
        }
        self.init(kind: kind, millis: millis, id: String(parts[3]))
    }

    /// The token after `snapshot`.
    public init(after snapshot: SnapshotRecord) {
        let cursor = SnapshotCursor(after: snapshot)
        self.init(
            kind: "snapshots", millis: Int64((cursor.createdAt.timeIntervalSince1970 * 1000).rounded()),
            id: cursor.id.rawValue)
    }

    /// The token of a snapshot page's cursor.
    public init(kind: String, cursor: SnapshotCursor) {
        self.init(kind: kind, millis: Int64((cursor.createdAt.timeIntervalSince1970 * 1000).rounded()), id: cursor.id.rawValue)
    }

    /// The catalog cursor of a snapshot token. - Throws: `InvalidPaginationToken`.
    public func snapshotCursor() throws -> SnapshotCursor {
        guard let id = SnapshotID(rawValue: cursor.id) else {
            throw EC2Error(.invalidPaginationToken, "The token \(quoted(token)) is invalid.")
        }
        return SnapshotCursor(createdAt: Date(timeIntervalSince1970: Double(cursor.millis) / 1000), id: id)
    }
}
