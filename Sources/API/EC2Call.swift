public import SnapshotCore

/// One authenticated call: who makes it, what it asks, and the request ID its answer carries.
public struct EC2Call: Sendable {
    public var action: String
    public var parameters: QueryParameters
    public var caller: Caller
    public var requestID: String

    public init(action: String, parameters: QueryParameters, caller: Caller, requestID: String) {
        self.action = action
        self.parameters = parameters
        self.caller = caller
        self.requestID = requestID
    }

    /// `DryRun=true`: after the parameters and the caller's rights were checked, answer
    /// `DryRunOperation` (412) instead of acting.
    public func checkDryRun() throws {
        if try parameters.bool("DryRun") == true {
            throw EC2Error(.dryRunOperation, "Request would have succeeded, but DryRun flag is set.")
        }
    }

    /// A snapshot ID parameter. - Throws: `InvalidSnapshotID.Malformed` for a malformed one.
    public func snapshotID(_ text: String) throws -> SnapshotID {
        guard let id = SnapshotID(rawValue: text) else {
            throw EC2Error(.snapshotIDMalformed, "Invalid id: \(quoted(text)) (expecting \"snap-...\")")
        }
        return id
    }

    /// A volume ID parameter. - Throws: `InvalidVolumeID.Malformed` for a malformed one.
    public func volumeID(_ text: String) throws -> VolumeID {
        guard let id = VolumeID(rawValue: text) else {
            throw EC2Error(.volumeIDMalformed, "Invalid id: \(quoted(text)) (expecting \"vol-...\")")
        }
        return id
    }

    /// A project reference (`project@customer`) given as an EC2 user ID.
    public func project(_ text: String, parameter: String) throws -> ProjectRef {
        do {
            return try ProjectRef(parsing: text)
        } catch let error as SnapshotError {
            throw EC2Error(
                .invalidParameterValue,
                "Value (\(text)) for parameter \(parameter) is invalid: \(error.message)")
        }
    }
}
