public import Foundation
import Logging

/// An API access key (`snapimport keys create`): an ID, its secret, and whom it acts as.
///
/// The secret is kept in the catalog **in plain text**: the API server computes the SigV4 signature of
/// every request with it (HMAC over the request needs the key itself; a hash of the secret cannot verify a
/// signature). Its protection is the catalog's: the SQLite file and its WAL are created mode 0600, and a
/// PostgreSQL catalog relies on the database's access control. (Encryption at rest would need a key the
/// server can read beside the catalog, so it would not stop anyone who can read the store.) The secret
/// never appears in `description`, `debugDescription`, a reflection dump or a log line.
public struct AccessKey: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// `AKIA` + 16 upper-case base32 characters (20 in all, like AWS's).
    public var id: String
    /// 40 characters of the base64 alphabet, from the system's CSPRNG.
    public var secret: String
    /// A project (`.project`) or the operator.
    public var caller: Caller
    public var createdAt: Date

    public init(id: String, secret: String, caller: Caller, createdAt: Date) {
        self.id = id
        self.secret = secret
        self.caller = caller
        self.createdAt = createdAt
    }

    public var description: String { "AccessKey(id: \(id), caller: \(caller), secret: <redacted>)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }

    /// The ID prefix, as AWS's long-term keys.
    public static let idPrefix = "AKIA"
    /// The characters after the prefix (RFC 4648 base32).
    static let idAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)
    /// The length of an ID and of a secret.
    public static let idLength = 20
    public static let secretLength = 40

    /// Whether `text` has the form of an access key ID (`AKIA` + 16 base32 characters).
    public static func isValidID(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.count == idLength && bytes.starts(with: idPrefix.utf8)
            && bytes.dropFirst(idPrefix.utf8.count).allSatisfy { idAlphabet.contains($0) }
    }

    /// A new random ID and secret from `generator` (the system CSPRNG by default).
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> (id: String, secret: String) {
        let suffix = (0..<(idLength - idPrefix.count)).map { _ in idAlphabet[Int.random(in: 0..<32, using: &generator)]
        }
        // 30 random bytes are exactly 40 base64 characters (no padding).
        let bytes = (0..<30).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return (idPrefix + String(decoding: suffix, as: UTF8.self), Data(bytes).base64EncodedString())
    }
}

/// API access keys (issue 15, "Identity"): created for a project or for the operator, listed, looked up
/// by the API server for every request, deleted. Keys never change once created.
public struct AccessKeys: LedgerBacked {
    let ledger: Ledger

    /// Creates a key acting as `caller`, with a random ID and secret (a colliding ID is retried).
    /// - Returns: the key, secret included — the only time a command shows it.
    public func createAccessKey(for caller: Caller, now: Date = Date()) async throws -> AccessKey {
        var generator = SystemRandomNumberGenerator()
        let key = try await retrying("create access key") {
            let (id, secret) = AccessKey.random(using: &generator)
            let key = AccessKey(id: id, secret: secret, caller: caller, createdAt: Self.stamp(now))
            try await catalog.apply([.insertAccessKey(key)])
            return key
        }
        logger.info("access key created", metadata: ["accessKeyID": "\(key.id)", "caller": "\(caller)"])
        return key
    }

    /// The key with this ID, nil when unknown or malformed (the API answers both alike).
    public func accessKey(_ id: String) async throws -> AccessKey? {
        guard AccessKey.isValidID(id) else { return nil }
        return try await catalog.accessKey(id)
    }

    /// Every key, oldest first, secrets included (the CLI never prints them).
    public func listAccessKeys() async throws -> [AccessKey] {
        try await catalog.accessKeys()
    }

    /// Deletes a key; requests signed with it fail from then on.
    /// - Throws: `.invalidArgument` for a malformed ID, `.notFound` when there is no such key.
    public func deleteAccessKey(_ id: String) async throws {
        guard AccessKey.isValidID(id) else {
            throw SnapshotError(
                .invalidArgument,
                "invalid access key ID \(ProjectRef.quoted(id)): expected AKIA followed by 16 characters A-Z, 2-7")
        }
        guard try await catalog.accessKey(id) != nil else { throw SnapshotError.notFound("access key \(id)") }
        do {
            try await catalog.apply([.deleteAccessKey(id)])
        } catch let error as SnapshotError where error.code == .conflict {
            // Deleted meanwhile by someone else.
            throw SnapshotError.notFound("access key \(id)")
        }
        logger.info("access key deleted", metadata: ["accessKeyID": "\(id)"])
    }
}

extension SnapshotService {
    /// Creates an API access key acting as `caller` (see ``AccessKeys/createAccessKey(for:now:)``).
    public func createAccessKey(for caller: Caller, now: Date = Date()) async throws -> AccessKey {
        try await accessKeys.createAccessKey(for: caller, now: now)
    }

    /// The access key with this ID, nil when unknown.
    public func accessKey(_ id: String) async throws -> AccessKey? {
        try await accessKeys.accessKey(id)
    }

    /// Every access key, oldest first, secrets included.
    public func listAccessKeys() async throws -> [AccessKey] {
        try await accessKeys.listAccessKeys()
    }

    /// Deletes an access key. - Throws: `.notFound` when unknown, `.invalidArgument` when malformed.
    public func deleteAccessKey(_ id: String) async throws {
        try await accessKeys.deleteAccessKey(id)
    }
}
