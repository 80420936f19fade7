public import SnapshotCore

extension SnapshotQuery {
    /// The filter names DescribeSnapshots understands.
    public static let filterNames: Set<String> = Set(SnapshotFilter.Field.allCases.map(\.rawValue) + ["status"])

    /// DescribeSnapshots' selection read from `call`: `SnapshotId.N`, `Owner.N`, `RestorableBy.N` and
    /// `Filter.N` (docs/api.md, "DescribeSnapshots"), checked once; the catalog evaluates it.
    ///
    /// Values of one parameter are alternatives (OR); different parameters must all hold (AND).
    /// - Throws: `InvalidParameterValue` for an unknown owner alias, a malformed project, an unknown
    ///   filter name, a filter without values or an unknown status.
    public init(_ call: EC2Call) throws {
        self.init()
        let parameters = call.parameters
        let ids = try parameters.list("SnapshotId").map(call.snapshotID)
        if !ids.isEmpty { self.ids = ids }
        var owners: [ProjectRef] = []
        var anyOwner = false
        let ownerTexts = try parameters.list("Owner")
        for text in ownerTexts {
            switch text {
            case "self":
                // The operator owns nothing but may act on everything: `self` selects every snapshot.
                if case .project(let me) = call.caller { owners.append(me) } else { anyOwner = true }
            case "amazon", "aws-marketplace", "aws-backup": break  // owners that never exist here
            default: owners.append(try call.project(text, parameter: "Owner"))
            }
        }
        if !ownerTexts.isEmpty, !anyOwner { self.owners = owners }
        var restorers: [Restorer] = []
        var anyRestorer = false
        let restorerTexts = try parameters.list("RestorableBy")
        for text in restorerTexts {
            switch text {
            case "all": restorers.append(.everyone)
            case "self":
                if case .project(let me) = call.caller { restorers.append(.explicitly(me)) } else { anyRestorer = true }
            default: restorers.append(.project(try call.project(text, parameter: "RestorableBy")))
            }
        }
        if !restorerTexts.isEmpty, !anyRestorer { restorableBy = restorers }
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
                var selected: Set<SnapshotState> = []
                for value in values {
                    switch value {
                    case "pending": selected.insert(.pending)
                    case "completed": selected.insert(.available)
                    case "error": selected.insert(.error)
                    default:
                        throw EC2Error(
                            .invalidParameterValue,
                            "Value (\(value)) for filter status is invalid. Expected pending, completed or error.")
                    }
                }
                // Several status filters must all hold: intersect.
                let narrowed = states.map { Set($0).intersection(selected) } ?? selected
                states = SnapshotState.allCases.filter(narrowed.contains)
            } else if let field = SnapshotFilter.Field(rawValue: name) {
                filters.append(SnapshotFilter(field, values))
            }
        }
    }
}
