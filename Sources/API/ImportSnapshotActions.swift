public import Foundation
public import Importer
public import SnapshotCore

/// ImportSnapshot, DescribeImportSnapshotTasks and CancelImportTask over the import-task engine
/// (``ImportTasks``; the ``ImportTaskRunner`` does the work in the same process).
public struct ImportSnapshotActions: ImportTaskActions {
    public let tasks: ImportTasks

    public init(tasks: ImportTasks) {
        self.tasks = tasks
    }

    /// Starts a task importing `DiskContainer.UserBucket.S3Bucket`/`S3Key` (or `DiskContainer.Url=s3://…`)
    /// into the caller's project and answers at once (`active`, `pending`). A bad image does not fail the
    /// call: its task ends `deleted` with `ClientError: <Code>: <message>`.
    public func importSnapshot(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        var bucket = p["DiskContainer.UserBucket.S3Bucket"]
        var key = p["DiskContainer.UserBucket.S3Key"]
        if let url = p["DiskContainer.Url"] {
            guard bucket == nil, key == nil else {
                throw EC2Error(
                    .invalidParameterCombination, "DiskContainer.Url cannot be combined with DiskContainer.UserBucket")
            }
            (bucket, key) = try Self.parseS3URL(url)
        }
        guard let bucket, !bucket.isEmpty else {
            throw EC2Error(
                .missingParameter, "The request must contain the parameter DiskContainer.UserBucket.S3Bucket")
        }
        guard let key, !key.isEmpty else {
            throw EC2Error(.missingParameter, "The request must contain the parameter DiskContainer.UserBucket.S3Key")
        }
        if try p.bool("Encrypted") == true {
            throw EC2Error(.unsupportedOperation, "encrypted snapshots are not supported")
        }
        let request = ImportTaskRequest(
            bucket: bucket, key: key, format: p["DiskContainer.Format"],
            description: p["Description"] ?? p["DiskContainer.Description"], clientToken: p["ClientToken"])
        try call.checkDryRun()
        let task = try await Self.mapping { try await tasks.start(request, caller: call.caller) }
        return EC2Document.response("ImportSnapshot", requestID: call.requestID) { xml in
            xml.text("description", ifPresent: task.description)
            xml.text("importTaskId", task.id.rawValue)
            Self.writeDetail(task, into: &xml)
            xml.list("tagSet", [String]()) { _, _ in }
        }
    }

    /// The caller's tasks (`ImportTaskId.N`, `Filters.N` — plural, as the CLI sends it — with
    /// `task-state`, `MaxResults`, `NextToken`).
    public func describeImportSnapshotTasks(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        let ids = try p.list("ImportTaskId").map(Self.taskID)
        var states: [String]?
        for filter in try p.structures("Filters") {
            let name = try filter.required("Name")
            guard name == "task-state" else {
                throw EC2Error(.invalidParameterValue, "The filter '\(name)' is invalid; the filter is task-state")
            }
            states = (states ?? []) + (try filter.list("Value"))
        }
        let maxResults = try p.int("MaxResults", in: 1...1000)
        let after = try p["NextToken"].map { token -> ImportTaskID in
            let position = try PageToken(parsing: token, kind: "import-tasks")
            guard let id = ImportTaskID(position.cursor.id) else {
                throw EC2Error(.invalidPaginationToken, "The token \(quoted(token)) is invalid.")
            }
            return id
        }
        try call.checkDryRun()
        let caller = call.caller
        let (page, next) = try await Self.mapping {
            try await tasks.tasks(ids, caller: caller, after: after, limit: maxResults ?? 1000)
        }
        let shown = page.filter { states?.contains($0.state.rawValue) ?? true }
        return EC2Document.response("DescribeImportSnapshotTasks", requestID: call.requestID) { xml in
            xml.list("importSnapshotTaskSet", shown) { xml, task in
                xml.text("description", ifPresent: task.description)
                xml.text("importTaskId", task.id.rawValue)
                Self.writeDetail(task, into: &xml)
                xml.list("tagSet", [String]()) { _, _ in }
            }
            xml.text(
                "nextToken", ifPresent: next.map { PageToken(kind: "import-tasks", millis: 0, id: $0.rawValue).token })
        }
    }

    /// Cancels an active task (nothing half-made stays: the runner drops its pending snapshot).
    public func cancelImportTask(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        let id = try Self.taskID(try p.required("ImportTaskId"))
        let caller = call.caller
        if p["DryRun"] != nil {
            _ = try await Self.mapping { try await tasks.task(id, caller: caller) }
            try call.checkDryRun()
        }
        let task = try await Self.mapping { try await tasks.cancel(id, caller: caller, reason: p["CancelReason"]) }
        return EC2Document.response("CancelImportTask", requestID: call.requestID) { xml in
            xml.text("importTaskId", task.id.rawValue)
            xml.text("previousState", "active")
            xml.text("state", task.state.rawValue)
        }
    }

    // MARK: - Helpers

    /// `snapshotTaskDetail`: `diskImageSize` in bytes (0.0 until known), `progress` "0"–"100" while
    /// active, `snapshotId` once committed (never an empty element), `statusMessage`.
    static func writeDetail(_ task: ImportTaskRecord, into xml: inout XMLWriter) {
        xml.element("snapshotTaskDetail") { xml in
            xml.text("description", ifPresent: task.description)
            xml.text("diskImageSize", "\(Double(task.bytesTotal ?? 0))")
            xml.bool("encrypted", false)
            xml.text("format", ifPresent: task.format?.uppercased())
            if task.state == .active {
                let percent = task.bytesTotal.map { $0 > 0 ? min(100, task.bytesRead * 100 / $0) : 0 } ?? 0
                xml.text("progress", String(percent))
            }
            xml.text("snapshotId", ifPresent: task.snapshotID?.rawValue)
            xml.text("status", task.state.rawValue)
            xml.text("statusMessage", task.statusMessage ?? (task.state == .active ? "pending" : ""))
            xml.element("userBucket") { xml in
                xml.text("s3Bucket", task.bucket)
                xml.text("s3Key", task.key)
            }
        }
    }

    static func taskID(_ text: String) throws -> ImportTaskID {
        guard let id = ImportTaskID(text) else {
            throw EC2Error(
                .importTaskIDMalformed, "Invalid id: \(quoted(text)) (expecting \"import-snap-\" + 17 hex digits)")
        }
        return id
    }

    /// `s3://bucket/key` (the key taken literally, as `snapimport import s3://…` does).
    static func parseS3URL(_ url: String) throws -> (String, String) {
        guard url.hasPrefix("s3://") else {
            throw EC2Error(
                .invalidParameterValue,
                "Value (\(url)) for parameter DiskContainer.Url is invalid: only s3://bucket/key URLs are imported")
        }
        let rest = url.dropFirst(5)
        guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex, rest.index(after: slash) != rest.endIndex
        else {
            throw EC2Error(
                .invalidParameterValue,
                "Value (\(url)) for parameter DiskContainer.Url is invalid: expected s3://bucket/key")
        }
        return (String(rest[..<slash]), String(rest[rest.index(after: slash)...]))
    }

    /// The core's errors in EC2's terms, a missing task as `InvalidConversionTaskId`.
    static func mapping<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as SnapshotError where error.code == .notFound {
            throw EC2Error(.importTaskNotFound, error.message)
        } catch let error as SnapshotError {
            throw EC2Error(error, resource: .other)
        }
    }
}
