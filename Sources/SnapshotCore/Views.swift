public import Foundation
public import Logging

/// The snapshot document (`snapshot show --json`, `snapshot list --json` elements, the importer's
/// `.snapshot.json` receipt; docs/cli.md): exactly these field names, `checksum` null until committed,
/// `failure` null unless the snapshot is `error`.
///
/// Privacy (as EC2, where only the owner reads `createVolumePermission`): `sharedWith` (other projects'
/// names) and `source` (the owner's bucket, key and ETag, or a host path) are the owner's and the
/// operator's. A project that sees the snapshot through a grant, or because it is public, gets both
/// as null.
public struct SnapshotView: Codable, Equatable, Sendable {
    public var id: String
    public var project: String
    public var description: String
    public var state: String
    public var visibility: String
    public var sharedWith: [String]?
    public var virtualSize: UInt64
    public var storedBytes: UInt64
    public var format: String
    public var bootable: Bool
    public var source: SnapshotSource?
    public var checksum: String?
    /// RFC 3339, UTC.
    public var createdAt: String
    /// Why the snapshot is `error` (a vanished writer, an interrupted import), else null.
    public var failure: String?

    /// The document as `caller` may read it (the operator, by default, reads everything).
    public init(_ s: SnapshotRecord, caller: Caller = .operator) {
        let details = s.isOwned(by: caller)
        id = s.id.rawValue
        project = s.owner.description
        description = s.description
        state = s.state.rawValue
        visibility = s.visibility.rawValue
        sharedWith = details ? s.sharedWith.map(\.description) : nil
        virtualSize = s.virtualSize
        storedBytes = s.storedBytes
        format = s.format
        bootable = s.bootable
        source = details ? s.source : nil
        checksum = s.checksum
        createdAt = RFC3339.string(s.createdAt)
        failure = s.failure
    }

    private enum CodingKeys: String, CodingKey {
        case id, project, description, state, visibility, sharedWith, virtualSize, storedBytes, format, bootable
        case source, checksum, createdAt, failure
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(project, forKey: .project)
        try c.encode(description, forKey: .description)
        try c.encode(state, forKey: .state)
        try c.encode(visibility, forKey: .visibility)
        try c.encode(sharedWith, forKey: .sharedWith)
        try c.encode(virtualSize, forKey: .virtualSize)
        try c.encode(storedBytes, forKey: .storedBytes)
        try c.encode(format, forKey: .format)
        try c.encode(bootable, forKey: .bootable)
        try c.encode(source, forKey: .source)
        try c.encode(checksum, forKey: .checksum)  // null while pending
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(failure, forKey: .failure)
    }
}

/// `volume create|list --json`.
public struct VolumeView: Codable, Equatable, Sendable {
    public var id: String
    public var project: String
    public var snapshotId: String?
    public var size: UInt64
    public var attachedTo: String?
    /// The volume's raw file.
    public var path: String
    public var createdAt: String

    public init(_ v: VolumeRecord, path: String) {
        id = v.id.rawValue
        project = v.owner.description
        snapshotId = v.snapshotID?.rawValue
        size = v.size
        attachedTo = v.attachedTo?.rawValue
        self.path = path
        createdAt = RFC3339.string(v.createdAt)
    }
}

/// `instance create|list --json`.
public struct InstanceView: Codable, Equatable, Sendable {
    public var id: String
    public var project: String
    public var state: String
    public var volumes: [String]
    public var createdAt: String

    public init(_ i: InstanceRecord, volumes: [VolumeID]) {
        id = i.id.rawValue
        project = i.owner.description
        state = i.state.rawValue
        self.volumes = volumes.map(\.rawValue)
        createdAt = RFC3339.string(i.createdAt)
    }
}

/// `template create --json`: the template and the snapshots it made.
public struct TemplateView: Codable, Equatable, Sendable {
    public var id: String
    public var project: String
    public var instanceId: String
    public var snapshots: [String]
    public var createdAt: String

    public init(_ t: TemplateRecord) {
        id = t.id.rawValue
        project = t.owner.description
        instanceId = t.instanceID.rawValue
        snapshots = t.snapshots.map(\.rawValue)
        createdAt = RFC3339.string(t.createdAt)
    }
}

/// RFC 3339 timestamps in UTC with milliseconds (`2026-11-24T22:31:19.123Z`).
public enum RFC3339 {
    public static func string(_ date: Date) -> String {
        date.formatted(
            .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }
}

/// JSON encoding used for every document: sorted keys, no escaped slashes.
public enum SnapshotJSON {
    public static func encode(_ value: some Encodable, pretty: Bool = true) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting =
            pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(value)
    }
}
