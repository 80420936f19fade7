import DiskImage
public import Foundation
public import SnapshotCore

/// What `ImportSnapshot` asks for.
public struct ImportTaskRequest: Sendable {
    /// `DiskContainer.UserBucket.S3Bucket` (or the bucket of `DiskContainer.Url`).
    public var bucket: String
    /// `DiskContainer.UserBucket.S3Key`, taken literally.
    public var key: String
    /// `DiskContainer.Format` (`RAW`, `VMDK`, `VHD`, `QCOW2`, also `VHDX`, `VDI`, `ISO`; any case).
    public var format: String?
    public var description: String?
    public var clientToken: String?
    /// The project the snapshot is for; nil: the caller's own project (the operator must name one, unless
    /// the key sits in a project's folder of the import bucket).
    public var project: ProjectRef?

    public init(
        bucket: String, key: String, format: String? = nil, description: String? = nil, clientToken: String? = nil,
        project: ProjectRef? = nil
    ) {
        self.bucket = bucket
        self.key = key
        self.format = format
        self.description = description
        self.clientToken = clientToken
        self.project = project
    }
}

/// Wakes the ``ImportTaskRunner`` when a task is started, so it need not wait for its next poll.
public final class ImportTaskWakeup: Sendable {
    let signals: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    public init() {
        (signals, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func wake() { continuation.yield() }
}

/// The import tasks of the EC2 API (`ImportSnapshot`, `DescribeImportSnapshotTasks`, `CancelImportTask`):
/// the requests and their rules. The work is done by the ``ImportTaskRunner``.
///
/// Rules:
/// - a project imports only into its own project (`AccessDenied` otherwise); the operator into any project
///   it names. A key in a project's folder of the import bucket (`incoming/`, `processed/`, `failed/` +
///   `<project>@<customer>/`) belongs to that project: importing it for another one is `AccessDenied`.
/// - the same `ClientToken` from the same caller returns the same task (another object with it is
///   `InvalidArgument`);
/// - a project sees only its own tasks; an ID it cannot see is `NotFound`, like one that does not exist;
/// - only an active task can be cancelled (`InvalidState` otherwise).
///
/// Errors are `SnapshotError`s with those codes.
public struct ImportTasks: Sendable {
    public struct Settings: Sendable {
        /// The configured import bucket (its project folders belong to their projects), if any.
        public var bucket: String?
        public var layout: BucketLayout
        /// Longest description, in characters (the snapshot's rule, checked up front).
        public var maxDescriptionLength: Int

        public init(bucket: String?, layout: BucketLayout = BucketLayout(), maxDescriptionLength: Int = 255) {
            self.bucket = bucket
            self.layout = layout
            self.maxDescriptionLength = maxDescriptionLength
        }
    }

    /// The longest `ClientToken` (EC2's limit).
    public static let maxClientTokenLength = 64
    /// The most tasks one page of ``tasks(_:caller:after:limit:)`` holds.
    public static let maxPageSize = 1000

    public let catalog: any Catalog
    public let settings: Settings
    public let wakeup: ImportTaskWakeup

    public init(catalog: any Catalog, settings: Settings, wakeup: ImportTaskWakeup = ImportTaskWakeup()) {
        self.catalog = catalog
        self.settings = settings
        self.wakeup = wakeup
    }

    // MARK: - ImportSnapshot

    /// Records a new task (state `active`, status `pending`) and returns at once; the runner imports it.
    ///
    /// - Returns: the new task, or the caller's earlier task with the same `clientToken`.
    /// - Throws: `SnapshotError` `.accessDenied`, `.invalidArgument`, `.invalidProject`.
    public func start(_ request: ImportTaskRequest, caller: Caller, now: Date = Date()) async throws
        -> ImportTaskRecord
    {
        try validate(request)
        let owner = try owner(of: request, caller: caller)
        if let token = request.clientToken, let existing = try await sameToken(token, request, owner, caller) {
            return existing
        }
        let stamp = Self.stamp(now)
        for _ in 0..<10 {
            let task = ImportTaskRecord(
                id: .make(at: stamp), owner: owner, requester: caller, bucket: request.bucket, key: request.key,
                format: request.format, description: request.description, clientToken: request.clientToken,
                createdAt: stamp, updatedAt: stamp)
            do {
                try await catalog.apply([.insertImportTask(task)])
                wakeup.wake()
                return task
            } catch let error as SnapshotError where error.code == .conflict {
                // The same token raced in from another request, or (rarely) the ID was taken: re-read, retry.
                if let token = request.clientToken, let existing = try await sameToken(token, request, owner, caller) {
                    return existing
                }
            }
        }
        throw SnapshotError(.conflict, "could not record the import task; try again")
    }

    private func sameToken(_ token: String, _ request: ImportTaskRequest, _ owner: ProjectRef, _ caller: Caller)
        async throws -> ImportTaskRecord?
    {
        guard let existing = try await catalog.importTask(requester: caller, clientToken: token) else { return nil }
        guard existing.bucket == request.bucket, existing.key == request.key, existing.owner == owner else {
            throw SnapshotError(
                .invalidArgument,
                "ClientToken \(quoted(token)) was used for another import (\(existing.id): s3://\(existing.bucket)/"
                    + "\(existing.key) for \(existing.owner))")
        }
        return try await withProgress(existing)
    }

    private func validate(_ request: ImportTaskRequest) throws {
        guard !request.bucket.isEmpty, request.bucket.utf8.count <= 255,
            !request.bucket.contains(where: { $0 == "/" || $0.isWhitespace })
        else { throw SnapshotError(.invalidArgument, "the S3 bucket \(quoted(request.bucket)) is not a bucket name") }
        guard !request.key.isEmpty, request.key.utf8.count <= 1024 else {
            throw SnapshotError(.invalidArgument, "the S3 key must be 1 to 1024 bytes long")
        }
        if let format = request.format {
            do {
                _ = try ImportPipeline.format(format, key: request.key)
            } catch {
                throw SnapshotError(
                    .invalidArgument,
                    "Format \(quoted(format)) is not one of RAW, VMDK, VHD, VHDX, QCOW2, VDI, ISO")
            }
        }
        if let text = request.description {
            guard text.count <= settings.maxDescriptionLength else {
                throw SnapshotError(
                    .invalidArgument,
                    "description is \(text.count) characters long; at most \(settings.maxDescriptionLength) are allowed"
                )
            }
            guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                throw SnapshotError(.invalidArgument, "description may not contain control characters")
            }
        }
        if let token = request.clientToken {
            guard !token.isEmpty, token.utf8.count <= Self.maxClientTokenLength,
                token.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
            else {
                throw SnapshotError(
                    .invalidArgument,
                    "ClientToken must be 1 to \(Self.maxClientTokenLength) printable ASCII characters")
            }
        }
    }

    /// The project the snapshot is for (see the type's rules).
    func owner(of request: ImportTaskRequest, caller: Caller) throws -> ProjectRef {
        let folder = try folderOwner(bucket: request.bucket, key: request.key)
        let owner: ProjectRef
        switch caller {
        case .project(let project):
            if let asked = request.project, asked != project {
                throw SnapshotError(
                    .accessDenied, "\(project) may import only into its own project, not into \(asked)")
            }
            owner = project
        case .operator:
            guard let named = request.project ?? folder else {
                throw SnapshotError(
                    .invalidArgument, "the operator must name the project the snapshot is for (project@customer)")
            }
            owner = named
        }
        if let folder, folder != owner {
            throw SnapshotError(
                .accessDenied,
                "s3://\(request.bucket)/\(request.key) is in the folder of \(folder); it cannot be imported for \(owner)"
            )
        }
        return owner
    }

    /// The project whose folder of the import bucket holds `key`, if any.
    private func folderOwner(bucket: String, key: String) throws -> ProjectRef? {
        guard bucket == settings.bucket else { return nil }
        let layout = settings.layout
        for prefix in [layout.incoming, layout.processed, layout.failed] where key.hasPrefix(prefix) {
            let rest = key.dropFirst(prefix.count)
            guard let slash = rest.firstIndex(of: "/") else { return nil }
            let text = String(rest[..<slash])
            do {
                return try ProjectRef(parsing: text)
            } catch {
                throw SnapshotError(
                    .invalidProject, "the folder of s3://\(bucket)/\(key) is not a project: \(error)", underlying: error
                )
            }
        }
        return nil
    }

    // MARK: - DescribeImportSnapshotTasks

    /// Tasks `caller` may see: the named ones (all of them, or `NotFound` for one it cannot see), or with
    /// no IDs every task of the caller (the operator: every task), oldest first, one page at a time.
    ///
    /// - Parameters:
    ///   - after: the last ID of the previous page (`NextToken`).
    ///   - limit: the page size, 1 to ``maxPageSize``.
    /// - Returns: the page, and the ID to continue after when there may be more.
    public func tasks(_ ids: [ImportTaskID], caller: Caller, after: ImportTaskID? = nil, limit: Int = 1000)
        async throws -> (tasks: [ImportTaskRecord], next: ImportTaskID?)
    {
        if !ids.isEmpty {
            var found: [ImportTaskRecord] = []
            for id in ids {
                found.append(try await withProgress(try await visibleTask(id, caller)))
            }
            return (found, nil)
        }
        let limit = min(max(1, limit), Self.maxPageSize)
        let owner: ProjectRef? = if case .project(let project) = caller { project } else { nil }
        var rows = try await catalog.importTasks(ownedBy: owner, after: after, limit: limit + 1)
        let next = rows.count > limit ? rows[limit - 1].id : nil
        rows = Array(rows.prefix(limit))
        var page: [ImportTaskRecord] = []
        for row in rows { page.append(try await withProgress(row)) }
        return (page, next)
    }

    /// One task `caller` may see. - Throws: `.notFound` (also for another project's task).
    public func task(_ id: ImportTaskID, caller: Caller) async throws -> ImportTaskRecord {
        try await withProgress(try await visibleTask(id, caller))
    }

    private func visibleTask(_ id: ImportTaskID, _ caller: Caller) async throws -> ImportTaskRecord {
        guard let task = try await catalog.importTask(id), Self.canSee(task, caller) else {
            throw SnapshotError.notFound("import task \(id)")
        }
        return task
    }

    static func canSee(_ task: ImportTaskRecord, _ caller: Caller) -> Bool {
        switch caller {
        case .operator: true
        case .project(let project): task.owner == project
        }
    }

    /// An active task's progress is on its import row (written by the import as it reads).
    private func withProgress(_ task: ImportTaskRecord) async throws -> ImportTaskRecord {
        guard task.state == .active, let etag = task.etag,
            let row = try await catalog.importRecord(ImportKey(bucket: task.bucket, key: task.key, etag: etag)),
            row.bytesTotal != nil
        else { return task }
        var task = task
        task.bytesRead = row.bytesRead
        task.bytesTotal = row.bytesTotal
        return task
    }

    // MARK: - CancelImportTask

    /// Cancels an active task: it ends `deleted` with `statusMessage` "Cancelled by the user" at once; the
    /// runner running it stops the import within a moment (its claim released, its pending snapshot
    /// dropped: nothing half-made stays).
    ///
    /// - Parameter reason: `CancelReason`, appended to the status message.
    /// - Returns: the task as cancelled.
    /// - Throws: `.notFound`; `.invalidState` when it is already completed or deleted.
    public func cancel(_ id: ImportTaskID, caller: Caller, reason: String? = nil, now: Date = Date()) async throws
        -> ImportTaskRecord
    {
        for _ in 0..<50 {
            var task = try await withProgress(try await visibleTask(id, caller))
            guard task.state == .active else {
                throw SnapshotError(
                    .invalidState, "import task \(id) is \(task.state.rawValue); only an active task can be cancelled")
            }
            task.state = .deleted
            var message = "Cancelled by the user"
            if let reason, !reason.isEmpty { message += ": " + String(reason.prefix(255)) }
            task.statusMessage = message
            task.updatedAt = Self.stamp(now)
            do {
                try await catalog.apply([.updateImportTask(task)])
                task.version += 1
                return task
            } catch let error as SnapshotError where error.code == .conflict {
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...20)))  // the runner renewed: re-read
            }
        }
        throw SnapshotError(.conflict, "import task \(id) kept changing; try again")
    }

    /// Whole milliseconds (what every catalog stores).
    static func stamp(_ date: Date) -> Date {
        Date(timeIntervalSince1970: (date.timeIntervalSince1970 * 1000).rounded(.down) / 1000)
    }

    private func quoted(_ text: String) -> String {
        let cut = text.count > 80 ? String(text.prefix(80)) + "…" : text
        return "\"" + cut.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : String($0) }.joined() + "\""
    }
}
