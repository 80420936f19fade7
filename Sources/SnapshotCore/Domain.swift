public import Foundation

// MARK: - Project references

/// A project reference, written `<project>@<customer>` (issue 4, architecture.md).
///
/// Grammar (both parts): `[a-z0-9][a-z0-9._-]{0,62}` — 1 to 63 characters, lower-case ASCII letters,
/// digits, `.`, `_`, `-`, starting with a letter or digit. Upper case is refused rather than folded,
/// so that one project never has two spellings (and bucket keys, which are case-sensitive, match the
/// catalog byte for byte). The whole reference is therefore at most 127 characters. Exactly one `@`.
public struct ProjectRef: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    /// The maximum length of each part.
    public static let maxPartLength = 63

    public let project: String
    public let customer: String

    /// Validates both parts. - Throws: `SnapshotError.invalidProject`.
    public init(project: String, customer: String) throws {
        try Self.checkPart(project, "project", whole: "\(project)@\(customer)")
        try Self.checkPart(customer, "customer", whole: "\(project)@\(customer)")
        self.project = project
        self.customer = customer
    }

    /// Parses `project@customer`. - Throws: `SnapshotError.invalidProject` naming what is wrong.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw SnapshotError(
                .invalidProject, "invalid project reference \(Self.quoted(text)): expected <project>@<customer>")
        }
        try self.init(project: String(parts[0]), customer: String(parts[1]))
    }

    public var description: String { "\(project)@\(customer)" }

    public static func < (lhs: ProjectRef, rhs: ProjectRef) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    private static func checkPart(_ part: String, _ name: String, whole: String) throws {
        let bytes = Array(part.utf8)
        func fail(_ why: String) -> SnapshotError {
            SnapshotError(.invalidProject, "invalid project reference \(quoted(whole)): \(name) \(why)")
        }
        guard !bytes.isEmpty else { throw fail("is empty") }
        guard bytes.count <= maxPartLength else { throw fail("is longer than \(maxPartLength) characters") }
        func isAlnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) }
        guard isAlnum(bytes[0]) else { throw fail("must start with a lower-case letter or a digit") }
        for b in bytes where !(isAlnum(b) || b == 0x2E || b == 0x5F || b == 0x2D) {
            if b >= 0x41 && b <= 0x5A { throw fail("must be lower case") }
            throw fail("may hold only a-z, 0-9, '.', '_' and '-'")
        }
    }

    /// Quotes untrusted text for a message, cut short and with control characters escaped.
    static func quoted(_ text: String) -> String {
        let cut = text.count > 80 ? String(text.prefix(80)) + "…" : text
        return "\"" + cut.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : String($0) }.joined() + "\""
    }
}

/// Who performs an operation: the operator (all rights) or a project (its own rights only).
public enum Caller: Hashable, Sendable, CustomStringConvertible {
    case `operator`
    case project(ProjectRef)

    public var description: String {
        switch self {
        case .operator: "operator"
        case .project(let p): p.description
        }
    }
}

// MARK: - IDs

/// An ID of the form `<prefix>-` followed by 8 lower-case hexadecimal digits, random and unique by a
/// catalog constraint (a collision is retried with a new random ID).
public protocol ResourceID: RawRepresentable, Hashable, Comparable, Sendable, Codable, CustomStringConvertible
where RawValue == String {
    /// `snap`, `vol`, `i`, `tmpl`.
    static var prefix: String { get }
    /// Wraps an already validated string.
    init(unchecked: String)
}

extension ResourceID {
    /// Validates `text`. - Throws: `SnapshotError.invalidArgument` naming the expected form.
    public init(parsing text: String) throws {
        guard Self.isValid(text) else {
            throw SnapshotError(
                .invalidArgument,
                "invalid ID \(ProjectRef.quoted(text)): expected \(Self.prefix)- followed by 8 hexadecimal digits")
        }
        self.init(unchecked: text)
    }

    public init?(rawValue: String) {
        guard Self.isValid(rawValue) else { return nil }
        self.init(unchecked: rawValue)
    }

    /// A new random ID.
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> Self {
        let value = UInt32.random(in: 0...UInt32.max, using: &generator)
        let hex = String(value, radix: 16)
        return Self(unchecked: "\(prefix)-" + String(repeating: "0", count: 8 - hex.count) + hex)
    }

    public static func random() -> Self {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    static func isValid(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        let prefix = Array((Self.prefix + "-").utf8)
        guard bytes.count == prefix.count + 8, bytes.starts(with: prefix) else { return false }
        return bytes.dropFirst(prefix.count).allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    public var description: String { rawValue }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        try self.init(parsing: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// `snap-` + 8 hex digits.
public struct SnapshotID: ResourceID {
    public static let prefix = "snap"
    public let rawValue: String
    public init(unchecked: String) { rawValue = unchecked }
}

/// `vol-` + 8 hex digits.
public struct VolumeID: ResourceID {
    public static let prefix = "vol"
    public let rawValue: String
    public init(unchecked: String) { rawValue = unchecked }
}

/// `i-` + 8 hex digits.
public struct InstanceID: ResourceID {
    public static let prefix = "i"
    public let rawValue: String
    public init(unchecked: String) { rawValue = unchecked }
}

/// `tmpl-` + 8 hex digits.
public struct TemplateID: ResourceID {
    public static let prefix = "tmpl"
    public let rawValue: String
    public init(unchecked: String) { rawValue = unchecked }
}

// MARK: - Snapshots

/// The life of a snapshot (architecture.md, `snapshot show --json` `state`).
public enum SnapshotState: String, Sendable, Codable, CaseIterable {
    /// Being written; invisible to volume creation; never becomes available partially.
    case pending
    /// Committed: manifest and checksum recorded.
    case available
    /// The writer failed or vanished (lease expired); holds no manifest.
    case error
    /// Being deleted (a transient state between the catalog decision and the row's removal).
    case deleting
}

/// `private` (owner and granted projects) or `public` (every project).
public enum Visibility: String, Sendable, Codable, CaseIterable {
    case `private`
    case `public`
}

/// Where a snapshot's bytes came from (architecture.md, `source`).
public enum SnapshotSource: Hashable, Sendable, Codable {
    /// An object in the import bucket, pinned to its ETag.
    case object(bucket: String, key: String, etag: String)
    /// A manual import of a local file.
    case file(path: String)
    /// A volume (`snapshot create --volume`).
    case volume(VolumeID)
    /// One of the snapshots a template made of its instance's volumes.
    case template(TemplateID)

    private enum Keys: String, CodingKey { case kind, bucket, key, etag, path, volumeId, templateId }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        switch try c.decode(String.self, forKey: .kind) {
        case "object":
            self = .object(
                bucket: try c.decode(String.self, forKey: .bucket), key: try c.decode(String.self, forKey: .key),
                etag: try c.decode(String.self, forKey: .etag))
        case "file": self = .file(path: try c.decode(String.self, forKey: .path))
        case "volume": self = .volume(try c.decode(VolumeID.self, forKey: .volumeId))
        case "template": self = .template(try c.decode(TemplateID.self, forKey: .templateId))
        case let other:
            throw DecodingError.dataCorruptedError(
                forKey: .kind, in: c, debugDescription: "unknown source kind \(other)")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        switch self {
        case .object(let bucket, let key, let etag):
            try c.encode("object", forKey: .kind)
            try c.encode(bucket, forKey: .bucket)
            try c.encode(key, forKey: .key)
            try c.encode(etag, forKey: .etag)
        case .file(let path):
            try c.encode("file", forKey: .kind)
            try c.encode(path, forKey: .path)
        case .volume(let id):
            try c.encode("volume", forKey: .kind)
            try c.encode(id, forKey: .volumeId)
        case .template(let id):
            try c.encode("template", forKey: .kind)
            try c.encode(id, forKey: .templateId)
        }
    }
}

/// One snapshot row of the catalog.
///
/// `version` is the optimistic-concurrency counter: every conditional write names the version it
/// read and the catalog bumps it by one (see ``CatalogWrite``).
public struct SnapshotRecord: Hashable, Sendable {
    public var id: SnapshotID
    public var owner: ProjectRef
    public var description: String
    public var state: SnapshotState
    public var visibility: Visibility
    /// Projects granted access, sorted, without duplicates.
    public var sharedWith: [ProjectRef]
    /// The virtual disk size in bytes.
    public var virtualSize: UInt64
    /// Bytes of the non-zero blocks the snapshot's manifest names (before deduplication).
    public var storedBytes: UInt64
    /// The source image format (`raw`, `qcow2`, …; `raw` for volumes).
    public var format: String
    /// Detected as an OS boot image (publishing it needs a confirmation).
    public var bootable: Bool
    public var source: SnapshotSource
    /// Hex SHA-256 over the SHA-256 of every block in order (LINEAR), nil until committed.
    public var checksum: String?
    /// The block size the snapshot was cut with.
    public var blockSize: Int
    public var createdAt: Date
    /// The token of the writer holding a pending snapshot, nil once committed.
    public var writer: String?
    /// When the writer's lease ends; a pending snapshot past it is recovered to `error`.
    public var leaseExpiresAt: Date?
    /// Why the snapshot is in `error`.
    public var failure: String?
    public var version: Int64

    public init(
        id: SnapshotID, owner: ProjectRef, description: String, state: SnapshotState, visibility: Visibility,
        sharedWith: [ProjectRef], virtualSize: UInt64, storedBytes: UInt64, format: String, bootable: Bool,
        source: SnapshotSource, checksum: String?, blockSize: Int, createdAt: Date, writer: String?,
        leaseExpiresAt: Date?, failure: String?, version: Int64
    ) {
        self.id = id
        self.owner = owner
        self.description = description
        self.state = state
        self.visibility = visibility
        self.sharedWith = sharedWith
        self.virtualSize = virtualSize
        self.storedBytes = storedBytes
        self.format = format
        self.bootable = bootable
        self.source = source
        self.checksum = checksum
        self.blockSize = blockSize
        self.createdAt = createdAt
        self.writer = writer
        self.leaseExpiresAt = leaseExpiresAt
        self.failure = failure
        self.version = version
    }
}

// MARK: - Volumes, instances, templates

/// A volume: a sparse raw file in the data directory, an independent copy of a snapshot.
extension SnapshotRecord {
    /// Whether `caller` is the owner or the operator: who may change the snapshot and read its grants
    /// and its source.
    public func isOwned(by caller: Caller) -> Bool {
        switch caller {
        case .operator: true
        case .project(let project): project == owner
        }
    }
}

public struct VolumeRecord: Hashable, Sendable {
    public var id: VolumeID
    public var owner: ProjectRef
    /// The snapshot it was created from (may since have been deleted).
    public var snapshotID: SnapshotID?
    public var size: UInt64
    /// The file's name relative to the volumes directory.
    public var fileName: String
    public var attachedTo: InstanceID?
    /// A pending snapshot currently reading this volume (instance start and attach to a running
    /// instance are refused meanwhile).
    public var snapshotInProgress: SnapshotID?
    public var createdAt: Date
    public var version: Int64

    public init(
        id: VolumeID, owner: ProjectRef, snapshotID: SnapshotID?, size: UInt64, fileName: String,
        attachedTo: InstanceID?, snapshotInProgress: SnapshotID?, createdAt: Date, version: Int64
    ) {
        self.id = id
        self.owner = owner
        self.snapshotID = snapshotID
        self.size = size
        self.fileName = fileName
        self.attachedTo = attachedTo
        self.snapshotInProgress = snapshotInProgress
        self.createdAt = createdAt
        self.version = version
    }
}

/// Running or stopped.
public enum InstanceState: String, Sendable, Codable, CaseIterable {
    case running
    case stopped
}

/// An instance; its attached volumes are the volumes whose `attachedTo` names it.
public struct InstanceRecord: Hashable, Sendable {
    public var id: InstanceID
    public var owner: ProjectRef
    public var state: InstanceState
    public var createdAt: Date
    public var version: Int64

    public init(id: InstanceID, owner: ProjectRef, state: InstanceState, createdAt: Date, version: Int64) {
        self.id = id
        self.owner = owner
        self.state = state
        self.createdAt = createdAt
        self.version = version
    }
}

/// A template made from a stopped instance: one snapshot per attached volume.
public struct TemplateRecord: Hashable, Sendable {
    public var id: TemplateID
    public var owner: ProjectRef
    public var instanceID: InstanceID
    /// The snapshots it was made of (each has source `.template(id)`), in volume order.
    public var snapshots: [SnapshotID]
    public var createdAt: Date
    public var version: Int64

    public init(
        id: TemplateID, owner: ProjectRef, instanceID: InstanceID, snapshots: [SnapshotID], createdAt: Date,
        version: Int64
    ) {
        self.id = id
        self.owner = owner
        self.instanceID = instanceID
        self.snapshots = snapshots
        self.createdAt = createdAt
        self.version = version
    }
}

// MARK: - Imports

/// The object an import is about: exactly one snapshot per (bucket, key, ETag).
public struct ImportKey: Hashable, Sendable, Codable, CustomStringConvertible {
    public var bucket: String
    public var key: String
    public var etag: String

    public init(bucket: String, key: String, etag: String) {
        self.bucket = bucket
        self.key = key
        self.etag = etag
    }

    public var description: String { "s3://\(bucket)/\(key) (\(etag))" }
}

/// Where an import stands.
public enum ImportState: String, Sendable, Codable, CaseIterable {
    /// A worker holds the lease (or held it and it expired: claimable again).
    case claimed
    /// A transient failure: claimable again by anyone; `attempts` counts the tries.
    case retry
    /// Done: `snapshotID` names the snapshot. Never claimable again.
    case imported
    /// Rejected for good (moved to failed/). Never claimable again.
    case failed
}

/// One import row (`snapimport imports list`).
public struct ImportRecord: Hashable, Sendable {
    public var key: ImportKey
    /// The owner project text from the key (may be malformed: such imports fail with InvalidProject).
    public var owner: String
    public var state: ImportState
    public var worker: String?
    public var leaseExpiresAt: Date?
    /// How many times the import was claimed.
    public var attempts: Int
    public var snapshotID: SnapshotID?
    public var errorCode: String?
    public var errorMessage: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var version: Int64
    /// Bytes of the object read so far by the current (or last) attempt. Written only by
    /// ``Catalog/recordImportProgress(_:worker:bytesRead:bytesTotal:)`` (a versioned update of the row
    /// leaves it as stored) and reset to 0 by a new claim.
    public var bytesRead: Int64
    /// The object's size once the attempt knows it.
    public var bytesTotal: Int64?

    public init(
        key: ImportKey, owner: String, state: ImportState, worker: String?, leaseExpiresAt: Date?, attempts: Int,
        snapshotID: SnapshotID?, errorCode: String?, errorMessage: String?, createdAt: Date, updatedAt: Date,
        version: Int64, bytesRead: Int64 = 0, bytesTotal: Int64? = nil
    ) {
        self.bytesRead = bytesRead
        self.bytesTotal = bytesTotal
        self.key = key
        self.owner = owner
        self.state = state
        self.worker = worker
        self.leaseExpiresAt = leaseExpiresAt
        self.attempts = attempts
        self.snapshotID = snapshotID
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.version = version
    }
}

/// A claim held by one worker on one object; pass it back to renew, complete or fail.
public struct ImportClaim: Hashable, Sendable {
    public var key: ImportKey
    public var owner: String
    public var worker: String
    /// Including this claim.
    public var attempts: Int
    public var leaseExpiresAt: Date

    public init(key: ImportKey, owner: String, worker: String, attempts: Int, leaseExpiresAt: Date) {
        self.key = key
        self.owner = owner
        self.worker = worker
        self.attempts = attempts
        self.leaseExpiresAt = leaseExpiresAt
    }
}
