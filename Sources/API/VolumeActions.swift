public import Foundation
public import SnapshotCore

/// The volume actions: CreateVolume (from a snapshot, idempotent by `ClientToken`), DescribeVolumes,
/// DeleteVolume.
public struct VolumeActions: Sendable {
    public let service: SnapshotService
    /// The one availability zone this store is (`[api]` has no zones; volumes live beside the store).
    public var availabilityZone: String

    public init(service: SnapshotService, availabilityZone: String = "snapimport-1a") {
        self.service = service
        self.availabilityZone = availabilityZone
    }

    /// A volume from `SnapshotId` (required: volumes are made from snapshots). `Size`, when given, must
    /// be the snapshot's size in GiB (volumes are not grown). The aws CLI sends a fresh `ClientToken`
    /// on every call; a repeated one (same caller, same parameters) answers the volume the first call made, and
    /// one with other parameters is `IdempotentParameterMismatch`. Tokens are kept in the catalog with their
    /// volume, so this holds across restarts and between servers sharing a catalog.
    public func createVolume(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        guard let snapshotText = p["SnapshotId"], !snapshotText.isEmpty else {
            throw EC2Error(.missingParameter, "The request must contain the parameter SnapshotId")
        }
        let snapshotID = try call.snapshotID(snapshotText)
        let size = try p.int("Size", in: 1...65_536)
        if try p.bool("Encrypted") == true {
            throw EC2Error(.unsupportedOperation, "encrypted volumes are not supported")
        }
        let caller = call.caller
        let snapshot = try await SnapshotActions(service: service).visible(snapshotID, caller)
        if let size, UInt64(size) != EC2Document.gibibytes(snapshot.virtualSize) {
            throw EC2Error(
                .invalidParameterValue,
                "Value (\(size)) for parameter Size is invalid: a volume has its snapshot's size, "
                    + "\(EC2Document.gibibytes(snapshot.virtualSize)) GiB")
        }
        try call.checkDryRun()
        var clientToken: VolumeRequestToken?
        if let token = p["ClientToken"], !token.isEmpty {
            guard token.count <= 64 else {
                throw EC2Error(.invalidParameterValue, "ClientToken is longer than 64 characters")
            }
            clientToken = VolumeRequestToken(clientToken: token, snapshotID: snapshotID, size: size)
        }
        let volumeID: VolumeID
        do {
            volumeID = try await mapping(.snapshot) {
                try await service.createVolume(from: snapshotID, caller: caller, clientToken: clientToken).id
            }
        } catch let mismatch as ClientTokenMismatch {
            throw EC2Error(
                .idempotentParameterMismatch,
                "The client token \(quoted(mismatch.existing.clientToken)) was already used with different parameters")
        } catch let error as EC2Error where error.code == .snapshotNotFound {
            // The token's volume was deleted since: say so, not that the (visible) snapshot is missing.
            if let token = clientToken?.clientToken,
                let known = try await service.catalog.volumeToken(requester: caller, clientToken: token)
            {
                throw EC2Error(.volumeNotFound, "The volume '\(known.volumeID)' does not exist.")
            }
            throw error
        }
        let volume = try await mapping(.volume) { try await service.volume(volumeID, caller: caller) }
        return EC2Document.response("CreateVolume", requestID: call.requestID) { xml in
            EC2Document.writeVolume(volume, availabilityZone: availabilityZone, into: &xml)
        }
    }

    /// The caller's volumes (`VolumeId.N`, `Filter.N` status/volume-id/snapshot-id/availability-zone,
    /// `MaxResults`/`NextToken`).
    public func describeVolumes(_ call: EC2Call) async throws -> String {
        let p = call.parameters
        let ids = try p.list("VolumeId").map(call.volumeID)
        let maxResults = try p.int("MaxResults", in: 5...1000)
        if !ids.isEmpty, maxResults != nil || p["NextToken"] != nil {
            throw EC2Error(
                .invalidParameterCombination, "The parameter VolumeId cannot be used with MaxResults or NextToken")
        }
        let names: Set<String> = ["status", "volume-id", "snapshot-id", "availability-zone"]
        var filters: [(String, [String])] = []
        for filter in try p.structures("Filter") {
            let name = try filter.required("Name")
            guard names.contains(name) else {
                throw EC2Error(
                    .invalidParameterValue,
                    "The filter '\(name)' is invalid; DescribeVolumes filters on "
                        + names.sorted().joined(separator: ", "))
            }
            filters.append((name, try filter.list("Value")))
        }
        let start = try p["NextToken"].map { try PageToken(parsing: $0, kind: "volumes") }
        try call.checkDryRun()
        let caller = call.caller
        var volumes: [VolumeRecord]
        if !ids.isEmpty {
            volumes = []
            for id in ids {
                do {
                    volumes.append(try await service.volume(id, caller: caller))
                } catch let error as SnapshotError where error.code == .notFound {
                    throw EC2Error(.volumeNotFound, "The volume '\(id)' does not exist.")
                }
            }
        } else {
            volumes = try await mapping(.volume) { try await service.listVolumes(caller: caller) }
        }
        volumes = volumes.filter { volume in
            filters.allSatisfy { name, values in
                let field: String =
                    switch name {
                    case "status": volume.attachedTo == nil ? "available" : "in-use"
                    case "volume-id": volume.id.rawValue
                    case "snapshot-id": volume.snapshotID?.rawValue ?? ""
                    default: availabilityZone
                    }
                return values.contains { WildcardPattern($0).matches(field) }
            }
        }
        if let start {
            volumes = volumes.filter {
                Self.millis($0.createdAt) > start.cursor.millis
                    || (Self.millis($0.createdAt) == start.cursor.millis && $0.id.rawValue > start.cursor.id)
            }
        }
        var next: String?
        let limit = ids.isEmpty ? (maxResults ?? 1000) : volumes.count
        if volumes.count > limit {
            volumes.removeLast(volumes.count - limit)
            if let last = volumes.last {
                next = PageToken(kind: "volumes", millis: Self.millis(last.createdAt), id: last.id.rawValue).token
            }
        }
        return EC2Document.response("DescribeVolumes", requestID: call.requestID) { xml in
            xml.list("volumeSet", volumes) { xml, v in
                EC2Document.writeVolume(v, availabilityZone: availabilityZone, into: &xml)
            }
            xml.text("nextToken", ifPresent: next)
        }
    }

    public func deleteVolume(_ call: EC2Call) async throws -> String {
        let id = try call.volumeID(try call.parameters.required("VolumeId"))
        let caller = call.caller
        if call.parameters["DryRun"] != nil {
            _ = try await mapping(.volume) { try await service.volume(id, caller: caller) }
            try call.checkDryRun()
        }
        do {
            try await service.deleteVolume(id, caller: caller)
        } catch let error as SnapshotError where error.code == .notFound {
            throw EC2Error(.volumeNotFound, "The volume '\(id)' does not exist.")
        } catch let error as SnapshotError {
            throw EC2Error(error, resource: .volume)
        }
        return EC2Document.returnTrue("DeleteVolume", requestID: call.requestID)
    }

    static func millis(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
}
