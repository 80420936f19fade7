public import Foundation

// MARK: - Import tasks (the EC2 API's ImportSnapshot, issue 15)

/// An import task's ID: `import-snap-` followed by 17 lower-case hexadecimal digits, like EC2's.
///
/// The first 11 digits are the creation time in milliseconds since 1970 and the last 6 are random, so
/// IDs sort by creation: the catalog pages tasks by ID alone (keyset pagination), oldest first. A
/// collision (same millisecond, same random part) is a primary-key conflict, retried with a new ID.
public struct ImportTaskID: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public static let prefix = "import-snap-"
    public let rawValue: String

    /// Validates `text`. - Returns: nil unless `import-snap-` + 17 lower-case hexadecimal digits.
    public init?(_ text: String) {
        let bytes = Array(text.utf8)
        let prefix = Array(Self.prefix.utf8)
        guard bytes.count == prefix.count + 17, bytes.starts(with: prefix),
            bytes.dropFirst(prefix.count).allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
        else { return nil }
        rawValue = text
    }

    /// A new ID for a task created at `now`.
    public static func make(at now: Date = Date()) -> ImportTaskID {
        let millis = UInt64(max(0, (now.timeIntervalSince1970 * 1000).rounded(.down))) & 0xFFF_FFFF_FFFF
        let random = UInt32.random(in: 0...0xFF_FFFF)
        func hex(_ value: UInt64, _ digits: Int) -> String {
            let text = String(value, radix: 16)
            return String(repeating: "0", count: max(0, digits - text.count)) + text
        }
        // Valid by construction.
        return ImportTaskID(Self.prefix + hex(millis, 11) + hex(UInt64(random), 6))!
    }

    public var description: String { rawValue }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = ImportTaskID(text) else {
            throw SnapshotError(
                .invalidArgument,
                "invalid import task ID \(ProjectRef.quoted(text)): expected import-snap- and 17 hexadecimal digits")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// An import task's status, with EC2's names (`DescribeImportSnapshotTasks` `status`).
public enum ImportTaskState: String, Sendable, Codable, CaseIterable {
    /// Waiting or running.
    case active
    /// The snapshot is committed (`snapshotID`).
    case completed
    /// Ended without a snapshot: rejected (`ClientError: <Code>: …`), given up (`ServerError: …`) or
    /// cancelled; `statusMessage` says which.
    case deleted
}

/// One import task row: an `ImportSnapshot` request and where it stands.
///
/// The task runs the same object import as `snapimport run` and `import s3://…` (the same claim on
/// (bucket, key, ETag)), so its progress lives on the import row while it runs; the task row keeps the
/// request, the outcome and the runner's lease.
public struct ImportTaskRecord: Hashable, Sendable {
    public var id: ImportTaskID
    /// The project the snapshot will belong to.
    public var owner: ProjectRef
    /// Who asked (`ClientToken`s are scoped to it): the operator or a project.
    public var requester: Caller
    public var bucket: String
    public var key: String
    /// The object version being imported, once the runner has seen it.
    public var etag: String?
    /// The requested format (`DiskContainer.Format`, as given); the content must be that format.
    public var format: String?
    public var description: String?
    public var clientToken: String?
    public var state: ImportTaskState
    /// `pending`, `downloading/converting`, or why the task was deleted (`ClientError: <Code>: <message>`,
    /// `ServerError: …`, `Cancelled by the user`).
    public var statusMessage: String?
    /// Bytes of the object read so far (and its size once known): progress = bytesRead × 100 ÷ bytesTotal.
    public var bytesRead: Int64
    public var bytesTotal: Int64?
    public var snapshotID: SnapshotID?
    public var createdAt: Date
    public var updatedAt: Date
    /// The runner holding the task (`host:pid:random`), nil when none does.
    public var worker: String?
    /// When that runner's hold ends unless renewed; a task held past it is taken over by another runner.
    public var leaseExpiresAt: Date?
    /// Attempts that failed transiently (the runner gives up after a few, ending the task deleted).
    public var attempts: Int
    public var version: Int64

    public init(
        id: ImportTaskID, owner: ProjectRef, requester: Caller, bucket: String, key: String, etag: String? = nil,
        format: String? = nil, description: String? = nil, clientToken: String? = nil,
        state: ImportTaskState = .active, statusMessage: String? = "pending", bytesRead: Int64 = 0,
        bytesTotal: Int64? = nil, snapshotID: SnapshotID? = nil, createdAt: Date, updatedAt: Date,
        worker: String? = nil, leaseExpiresAt: Date? = nil, attempts: Int = 0, version: Int64 = 1
    ) {
        self.id = id
        self.owner = owner
        self.requester = requester
        self.bucket = bucket
        self.key = key
        self.etag = etag
        self.format = format
        self.description = description
        self.clientToken = clientToken
        self.state = state
        self.statusMessage = statusMessage
        self.bytesRead = bytesRead
        self.bytesTotal = bytesTotal
        self.snapshotID = snapshotID
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.worker = worker
        self.leaseExpiresAt = leaseExpiresAt
        self.attempts = attempts
        self.version = version
    }

    /// Progress in percent (0–100), nil while the size is unknown.
    public var progressPercent: Int? {
        if state == .completed { return 100 }
        guard let total = bytesTotal else { return nil }
        guard total > 0 else { return 0 }
        return Int(min(100, max(0, bytesRead) * 100 / total))
    }
}

extension Caller {
    /// `operator` or `project@customer`: how a requester is stored.
    public var storedText: String { description }

    /// Parses ``storedText``. - Throws: `SnapshotError.invalidProject`.
    public init(storedText text: String) throws {
        self = text == "operator" ? .operator : .project(try ProjectRef(parsing: text))
    }
}

extension ImportKey {
    /// A short, stable name for the import of this object version: `imp-` and 16 hexadecimal digits of
    /// the SHA-256 of bucket, key and ETag (`snapimport imports show ID`).
    public var id: String {
        var bytes = Array(bucket.utf8)
        bytes.append(0)
        bytes.append(contentsOf: key.utf8)
        bytes.append(0)
        bytes.append(contentsOf: etag.utf8)
        return "imp-" + Blocks.hash(bytes).hex.prefix(16)
    }
}
