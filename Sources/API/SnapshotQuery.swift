public import SnapshotCore

/// DescribeSnapshots' selection: `Owner.N`, `RestorableBy.N` and `Filter.N`, checked once, then
/// applied to each snapshot the caller sees (docs/api.md, "DescribeSnapshots").
///
/// Values of one parameter are alternatives (OR); different parameters must all hold (AND).
public struct SnapshotQuery: Sendable {
    enum Owner: Equatable, Sendable {
        case caller
        case project(ProjectRef)
        /// `amazon`, `aws-marketplace`, `aws-backup`: owners that never exist here.
        case nobody
    }

    enum Restorable: Equatable, Sendable {
        case all
        case caller
        case project(ProjectRef)
    }

    var owners: [Owner] = []
    var restorableBy: [Restorable] = []
    /// Filter name → patterns (wildcards allowed).
    var filters: [(name: String, values: [String])] = []
    let caller: Caller

    /// The filter names DescribeSnapshots understands.
    public static let filterNames: Set<String> = ["status", "description", "snapshot-id", "owner-id", "volume-id"]

    /// Reads the selection from `call`'s parameters.
    /// - Throws: `InvalidParameterValue` for an unknown owner alias, a malformed project, an unknown
    ///   filter name or a filter without values.
    public init(_ call: EC2Call) throws {
        caller = call.caller
        let parameters = call.parameters
        for text in try parameters.list("Owner") {
            switch text {
            case "self": owners.append(.caller)
            case "amazon", "aws-marketplace", "aws-backup": owners.append(.nobody)
            default: owners.append(.project(try call.project(text, parameter: "Owner")))
            }
        }
        for text in try parameters.list("RestorableBy") {
            switch text {
            case "all": restorableBy.append(.all)
            case "self": restorableBy.append(.caller)
            default: restorableBy.append(.project(try call.project(text, parameter: "RestorableBy")))
            }
        }
        for filter in try parameters.structures("Filter") {
            let name = try filter.required("Name")
            guard Self.filterNames.contains(name) else {
                throw EC2Error(
                    .invalidParameterValue,
                    "The filter '\(name)' is invalid; DescribeSnapshots filters on "
                        + Self.filterNames.sorted().joined(separator: ", "))
            }
            let values = try filter.list("Value")
            guard !values.isEmpty else {
                throw EC2Error(.invalidParameterValue, "The filter '\(name)' needs at least one Value")
            }
            if name == "status" {
                for value in values where !["pending", "completed", "error"].contains(value) {
                    throw EC2Error(
                        .invalidParameterValue,
                        "Value (\(value)) for filter status is invalid. Expected pending, completed or error.")
                }
            }
            filters.append((name, values))
        }
    }

    /// Whether nothing narrows the listing (then every visible snapshot matches).
    public var isEmpty: Bool { owners.isEmpty && restorableBy.isEmpty && filters.isEmpty }

    /// Whether `snapshot` (one the caller sees) is selected.
    public func matches(_ snapshot: SnapshotRecord) -> Bool {
        if !owners.isEmpty, !owners.contains(where: { owner($0, snapshot) }) { return false }
        if !restorableBy.isEmpty, !restorableBy.contains(where: { restorable($0, snapshot) }) { return false }
        for filter in filters {
            let field = value(of: filter.name, snapshot)
            if !filter.values.contains(where: { wildcardMatch($0, field) }) { return false }
        }
        return true
    }

    private func owner(_ owner: Owner, _ s: SnapshotRecord) -> Bool {
        switch owner {
        case .caller:
            // The operator owns nothing but may act on everything: `self` selects every snapshot.
            if case .project(let me) = caller { return s.owner == me }
            return true
        case .project(let project): return s.owner == project
        case .nobody: return false
        }
    }

    /// RestorableBy: `all` = public; `self` = owned by or explicitly shared with the caller; a project
    /// X = public, owned by X, or shared with X — where the grant list is read only when the caller
    /// owns the snapshot (or is the operator), or X is the caller itself: another project's grants
    /// never leak.
    private func restorable(_ restorable: Restorable, _ s: SnapshotRecord) -> Bool {
        switch restorable {
        case .all:
            return s.visibility == .public
        case .caller:
            guard case .project(let me) = caller else { return true }
            return s.owner == me || s.sharedWith.contains(me)
        case .project(let x):
            if s.visibility == .public || s.owner == x { return true }
            guard s.sharedWith.contains(x) else { return false }
            switch caller {
            case .operator: return true
            case .project(let me): return s.owner == me || x == me
            }
        }
    }

    private func value(of filter: String, _ s: SnapshotRecord) -> String {
        switch filter {
        case "status": EC2Document.status(s.state)
        case "description": s.description
        case "snapshot-id": s.id.rawValue
        case "owner-id": s.owner.description
        case "volume-id": EC2Document.volumeID(of: s)
        default: ""
        }
    }
}
