public import SnapshotCore

/// The import-task actions (ImportSnapshot, DescribeImportSnapshotTasks, CancelImportTask), provided
/// by the import-task engine; absent, those actions answer `UnsupportedOperation`.
public protocol ImportTaskActions: Sendable {
    func importSnapshot(_ call: EC2Call) async throws -> String
    func describeImportSnapshotTasks(_ call: EC2Call) async throws -> String
    func cancelImportTask(_ call: EC2Call) async throws -> String
}

/// Every action this server answers, by its `Action` name.
public struct EC2Actions: Sendable {
    public let snapshots: SnapshotActions
    public let volumes: VolumeActions
    public let imports: (any ImportTaskActions)?

    public init(snapshots: SnapshotActions, volumes: VolumeActions, imports: (any ImportTaskActions)?) {
        self.snapshots = snapshots
        self.volumes = volumes
        self.imports = imports
    }

    /// The action names, for `InvalidAction` messages and docs.
    public static let names: [String] = [
        "DescribeSnapshots", "DescribeSnapshotAttribute", "ModifySnapshotAttribute", "ResetSnapshotAttribute",
        "DeleteSnapshot", "CreateSnapshot", "CopySnapshot", "CreateVolume", "DescribeVolumes", "DeleteVolume",
        "ImportSnapshot", "DescribeImportSnapshotTasks", "CancelImportTask",
    ]

    /// Runs `call` and returns the XML answer. - Throws: ``EC2Error`` (or an error the server maps to
    /// `InternalError`).
    public func handle(_ call: EC2Call) async throws -> String {
        switch call.action {
        case "DescribeSnapshots": return try await snapshots.describeSnapshots(call)
        case "DescribeSnapshotAttribute": return try await snapshots.describeSnapshotAttribute(call)
        case "ModifySnapshotAttribute": return try await snapshots.modifySnapshotAttribute(call)
        case "ResetSnapshotAttribute": return try await snapshots.resetSnapshotAttribute(call)
        case "DeleteSnapshot": return try await snapshots.deleteSnapshot(call)
        case "CreateSnapshot": return try await snapshots.createSnapshot(call)
        case "CopySnapshot": return try await snapshots.copySnapshot(call)
        case "CreateVolume": return try await volumes.createVolume(call)
        case "DescribeVolumes": return try await volumes.describeVolumes(call)
        case "DeleteVolume": return try await volumes.deleteVolume(call)
        case "ImportSnapshot": return try await importTasks().importSnapshot(call)
        case "DescribeImportSnapshotTasks": return try await importTasks().describeImportSnapshotTasks(call)
        case "CancelImportTask": return try await importTasks().cancelImportTask(call)
        default:
            throw EC2Error(.invalidAction, "The action \(quoted(call.action)) is not valid for this web service.")
        }
    }

    private func importTasks() throws -> any ImportTaskActions {
        guard let imports else {
            throw EC2Error(.unsupportedOperation, "import tasks are not available on this server")
        }
        return imports
    }
}
