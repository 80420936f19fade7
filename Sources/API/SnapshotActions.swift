public import Foundation
public import SnapshotCore

/// The snapshot actions: DescribeSnapshots, DescribeSnapshotAttribute, ModifySnapshotAttribute,
/// ResetSnapshotAttribute, DeleteSnapshot, CreateSnapshot, CopySnapshot. Each reads its parameters,
/// calls the ``SnapshotService`` with the caller's rights and writes EC2's answer.
public struct SnapshotActions: Sendable {
    public let service: SnapshotService

    public init(service: SnapshotService) {
        self.service = service
    }

    // MARK: - DescribeSnapshots

    /// One page of the snapshots the caller sees that the query selects: one catalog query per page,
    /// filters evaluated by the catalog (never the whole catalog read).
    public func describeSnapshots(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        let query = try SnapshotQuery(call)
        let maxResults = try p.int("MaxResults", in: 5...1000)
        if query.ids != nil, maxResults != nil || p["NextToken"] != nil {
            throw EC2Error(
                .invalidParameterCombination, "The parameter SnapshotId cannot be used with MaxResults or NextToken")
        }
        try call.checkDryRun()
        let start = try p["NextToken"].map { try PageToken(parsing: $0, kind: "snapshots").snapshotCursor() }
        let page = try await mapping(.snapshot) {
            try await service.snapshots(matching: query, caller: call.caller, after: start, limit: maxResults ?? 1000)
        }
        if let ids = query.ids {
            // EC2 names an ID the caller cannot see, even when filters would have dropped it anyway.
            let found = Set(page.snapshots.map(\.id))
            for id in ids where !found.contains(id) { _ = try await visible(id, call.caller) }
        }
        return EC2Document.response("DescribeSnapshots", requestID: call.requestID) { xml in
            xml.list("snapshotSet", page.snapshots) { xml, s in EC2Document.writeSnapshot(s, into: &xml) }
            xml.text("nextToken", ifPresent: page.next.map { PageToken(kind: "snapshots", cursor: $0).token })
        }
    }

    // MARK: - Attributes

    /// `createVolumePermission` (owner and operator only: who else may use the snapshot is the
    /// owner's business), `productCodes` (always empty) and `description`.
    public func describeSnapshotAttribute(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        let id = try call.snapshotID(try p.required("SnapshotId"))
        let attribute = try p.required("Attribute")
        guard ["createVolumePermission", "productCodes", "description"].contains(attribute) else {
            throw invalidAttribute(attribute)
        }
        let snapshot = try await visible(id, call.caller)
        if attribute == "createVolumePermission", !snapshot.isOwned(by: call.caller) {
            throw EC2Error(
                .unauthorizedOperation,
                "You are not authorized to read the createVolumePermission of snapshot \(id): only its owner is.")
        }
        try call.checkDryRun()
        return EC2Document.response("DescribeSnapshotAttribute", requestID: call.requestID) { xml in
            xml.text("snapshotId", id.rawValue)
            switch attribute {
            case "createVolumePermission":
                var grants: [(String, String)] = snapshot.visibility == .public ? [("group", "all")] : []
                grants += snapshot.sharedWith.map { ("userId", $0.description) }
                xml.list("createVolumePermission", grants) { xml, grant in xml.text(grant.0, grant.1) }
            case "productCodes":
                xml.list("productCodes", [String]()) { _, _ in }
            default:
                xml.element("description") { $0.text("value", snapshot.description) }
            }
        }
    }

    /// Both forms EC2 clients send — `Attribute=createVolumePermission&OperationType=add|remove` with
    /// `UserId.N`/`UserGroup.N`, and `CreateVolumePermission.Add|Remove.N.UserId|Group` — and the
    /// reference cloud's `Description.Value`. Every value is checked before anything changes.
    public func modifySnapshotAttribute(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        let id = try call.snapshotID(try p.required("SnapshotId"))
        let change = try PermissionChange(call)
        let description = p["Description.Value"]
        if let attribute = p["Attribute"], !["createVolumePermission", "description"].contains(attribute) {
            throw invalidAttribute(attribute)
        }
        if p["Attribute"] == "description", description == nil {
            throw EC2Error(.missingParameter, "The request must contain the parameter Description.Value")
        }
        guard !change.isEmpty || description != nil else {
            throw EC2Error(
                .missingParameter,
                "The request must contain UserId.N or UserGroup.N with OperationType, "
                    + "CreateVolumePermission.Add|Remove.N.UserId|Group, or Description.Value")
        }
        if call.parameters["DryRun"] != nil {
            let snapshot = try await visible(id, call.caller)
            if !snapshot.isOwned(by: call.caller) {
                throw EC2Error(.unauthorizedOperation, "only the owner of snapshot \(id) may change it")
            }
            try call.checkDryRun()
        }
        let caller = call.caller
        try await mapping(.snapshot) {
            if let description { _ = try await service.setDescription(id, description, caller: caller) }
            for project in change.addUsers {
                _ = try await service.share(id, with: project.description, caller: caller)
            }
            for project in change.removeUsers {
                _ = try await service.unshare(id, with: project.description, caller: caller)
            }
            if change.addAll { _ = try await service.publish(id, confirmBootable: false, caller: caller) }
            if change.removeAll { _ = try await service.unpublish(id, caller: caller) }
        }
        return EC2Document.returnTrue("ModifySnapshotAttribute", requestID: call.requestID)
    }

    /// `Attribute=createVolumePermission`: the snapshot becomes private and shared with nobody.
    public func resetSnapshotAttribute(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        let id = try call.snapshotID(try p.required("SnapshotId"))
        let attribute = try p.required("Attribute")
        guard attribute == "createVolumePermission" else {
            throw EC2Error(
                .invalidParameterValue,
                "Value (\(attribute)) for parameter Attribute is invalid. Only createVolumePermission can be reset.")
        }
        let caller = call.caller
        let snapshot = try await visible(id, caller)
        guard snapshot.isOwned(by: caller) else {
            throw EC2Error(.unauthorizedOperation, "only the owner of snapshot \(id) may reset its permissions")
        }
        try call.checkDryRun()
        try await mapping(.snapshot) {
            _ = try await service.unpublish(id, caller: caller)
            for project in snapshot.sharedWith {
                _ = try await service.unshare(id, with: project.description, caller: caller)
            }
        }
        return EC2Document.returnTrue("ResetSnapshotAttribute", requestID: call.requestID)
    }

    // MARK: - Lifecycle

    public func deleteSnapshot(_ call: EC2Call) async throws -> String {
        let id = try call.snapshotID(try call.parameters.required("SnapshotId"))
        if call.parameters["DryRun"] != nil {
            let snapshot = try await visible(id, call.caller)
            guard snapshot.isOwned(by: call.caller) else {
                throw EC2Error(.unauthorizedOperation, "only the owner of snapshot \(id) may delete it")
            }
            try call.checkDryRun()
        }
        let caller = call.caller
        try await mapping(.snapshot) { _ = try await service.deleteSnapshot(id, caller: caller) }
        return EC2Document.returnTrue("DeleteSnapshot", requestID: call.requestID)
    }

    /// A snapshot of a volume the caller owns (the flat Snapshot shape; `completed` at once: the
    /// volume is read before the answer).
    public func createSnapshot(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        let volume = try call.volumeID(try p.required("VolumeId"))
        let description = p["Description"] ?? ""
        if p["DryRun"] != nil {
            _ = try await mapping(.volume) { try await service.volume(volume, caller: call.caller) }
            try call.checkDryRun()
        }
        let caller = call.caller
        let snapshot = try await mapping(.volume) {
            try await service.snapshotVolume(volume, description: description, caller: caller)
        }
        return EC2Document.response("CreateSnapshot", requestID: call.requestID) { xml in
            EC2Document.writeSnapshot(snapshot, into: &xml)
        }
    }

    /// A copy of a snapshot the caller sees, owned by the caller (a project: the operator owns
    /// nothing). The blocks are shared with the source by the block store's deduplication.
    /// `SourceRegion`, `DestinationRegion` and `PresignedUrl` are accepted and ignored (one region).
    public func copySnapshot(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        let sourceID = try call.snapshotID(try p.required("SourceSnapshotId"))
        guard case .project = call.caller else {
            throw EC2Error(
                .unauthorizedOperation, "the operator owns no snapshots; copy with a project's access key")
        }
        if try p.bool("Encrypted") == true {
            throw EC2Error(.unsupportedOperation, "encrypted snapshots are not supported")
        }
        let source = try await visible(sourceID, call.caller)
        guard source.state == .available else {
            throw EC2Error(.incorrectState, "Snapshot \(sourceID) is not in the 'completed' state")
        }
        try call.checkDryRun()
        let description = p["Description"] ?? "[Copied \(sourceID)] \(source.description)"
        let caller = call.caller
        let copy = try await mapping(.snapshot) { () -> SnapshotRecord in
            let volume = try await service.createVolume(from: sourceID, caller: caller)
            do {
                let copy = try await service.snapshotVolume(
                    volume.id, description: String(description.prefix(255)), caller: caller)
                try await service.deleteVolume(volume.id, caller: caller)
                return copy
            } catch {
                try? await service.deleteVolume(volume.id, caller: caller)
                throw error
            }
        }
        return EC2Document.response("CopySnapshot", requestID: call.requestID) { xml in
            xml.text("snapshotId", copy.id.rawValue)
            xml.list("tagSet", [String]()) { _, _ in }
        }
    }

    // MARK: - Helpers

    /// A snapshot the caller sees, or `InvalidSnapshot.NotFound` in EC2's words.
    func visible(_ id: SnapshotID, _ caller: Caller) async throws -> SnapshotRecord {
        do {
            let snapshot = try await service.snapshot(id, caller: caller)
            guard snapshot.state != .deleting else { throw SnapshotError(.notFound, "") }
            return snapshot
        } catch let error as SnapshotError where error.code == .notFound {
            throw EC2Error(.snapshotNotFound, "The snapshot '\(id)' does not exist.")
        } catch let error as SnapshotError {
            throw EC2Error(error, resource: .snapshot)
        }
    }

    private func invalidAttribute(_ attribute: String) -> EC2Error {
        EC2Error(
            .invalidParameterValue,
            "Value (\(attribute)) for parameter Attribute is invalid. Expected createVolumePermission, "
                + "productCodes or description.")
    }
}

/// Runs `body`, turning the core's errors into EC2's through the one mapping table.
func mapping<T: Sendable>(_ resource: EC2Resource, _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as SnapshotError {
        throw EC2Error(error, resource: resource)
    }
}

/// The createVolumePermission change of one ModifySnapshotAttribute call, in either wire form.
struct PermissionChange {
    var addUsers: [ProjectRef] = []
    var removeUsers: [ProjectRef] = []
    var addAll = false
    var removeAll = false

    var isEmpty: Bool { addUsers.isEmpty && removeUsers.isEmpty && !addAll && !removeAll }

    init(_ call: EC2Call) throws {
        let p = call.parameters
        // Form 1: OperationType + UserId.N / UserGroup.N.
        let users = try p.list("UserId")
        let groups = try p.list("UserGroup")
        if !users.isEmpty || !groups.isEmpty || p["OperationType"] != nil {
            let operation = try p.required("OperationType")
            guard operation == "add" || operation == "remove" else {
                throw EC2Error(
                    .invalidParameterValue,
                    "Value (\(operation)) for parameter OperationType is invalid. Expected add or remove.")
            }
            if let attribute = p["Attribute"], attribute != "createVolumePermission" {
                throw EC2Error(
                    .invalidParameterCombination, "UserId and UserGroup go with Attribute=createVolumePermission")
            }
            guard !users.isEmpty || !groups.isEmpty else {
                throw EC2Error(.missingParameter, "The request must contain the parameter UserId.N or UserGroup.N")
            }
            let projects = try users.map { try call.project($0, parameter: "UserId") }
            let all = try Self.groups(groups, parameter: "UserGroup")
            if operation == "add" {
                addUsers = projects
                addAll = all
            } else {
                removeUsers = projects
                removeAll = all
            }
        }
        // Form 2: CreateVolumePermission.Add.N.UserId|Group and .Remove.N.….
        let adds = try p.structures("CreateVolumePermission.Add")
        let removes = try p.structures("CreateVolumePermission.Remove")
        if !adds.isEmpty || !removes.isEmpty {
            guard isEmpty, p["OperationType"] == nil else {
                throw EC2Error(
                    .invalidParameterCombination,
                    "CreateVolumePermission cannot be combined with OperationType, UserId or UserGroup")
            }
            for item in adds {
                try Self.read(item, call, users: &addUsers, all: &addAll, parameter: "CreateVolumePermission.Add")
            }
            for item in removes {
                try Self.read(
                    item, call, users: &removeUsers, all: &removeAll, parameter: "CreateVolumePermission.Remove")
            }
        }
        let both = Set(addUsers).intersection(removeUsers)
        if !both.isEmpty || (addAll && removeAll) {
            throw EC2Error(
                .invalidParameterCombination, "The same permission cannot be added and removed in one request")
        }
    }

    private static func read(
        _ item: QueryParameters, _ call: EC2Call, users: inout [ProjectRef], all: inout Bool, parameter: String
    ) throws {
        let user = item["UserId"], group = item["Group"]
        guard (user == nil) != (group == nil) else {
            throw EC2Error(.invalidParameterValue, "Each \(parameter).N holds exactly one of UserId or Group")
        }
        if let user { users.append(try call.project(user, parameter: "\(parameter).N.UserId")) }
        if let group { all = try groups([group], parameter: "\(parameter).N.Group") || all }
    }

    private static func groups(_ groups: [String], parameter: String) throws -> Bool {
        for group in groups where group != "all" {
            throw EC2Error(
                .invalidParameterValue,
                "Value (\(group)) for parameter \(parameter) is invalid. The only group is 'all'.")
        }
        return !groups.isEmpty
    }
}
