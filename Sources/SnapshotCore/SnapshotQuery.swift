public import Foundation

/// A selection of snapshots that a ``Catalog`` evaluates itself (issue 15): `DescribeSnapshots`'
/// `SnapshotId.N`, `Owner.N`, `RestorableBy.N` and `Filter.N`, and the console's filter box.
///
/// Every set condition must hold (AND); the values of one condition are alternatives (OR). A nil
/// condition selects everything. The selection always applies inside the caller's visibility (see
/// ``Catalog/snapshots(matching:visibleTo:after:limit:)``), so a query can narrow what a caller sees,
/// never widen it.
///
/// ```swift
/// var query = SnapshotQuery()
/// query.filters = [SnapshotFilter(.description, ["web*"])]
/// let page = try await service.snapshots(matching: query, caller: caller, after: nil, limit: 100)
/// ```
public struct SnapshotQuery: Hashable, Sendable {
    /// Only these snapshots (empty list: none).
    public var ids: [SnapshotID]?
    /// Only snapshots owned by one of these projects (empty list: none).
    public var owners: [ProjectRef]?
    /// Only snapshots restorable by one of these (empty list: none).
    public var restorableBy: [Restorer]?
    /// Only snapshots in one of these states.
    public var states: [SnapshotState]?
    /// Each filter must hold.
    public var filters: [SnapshotFilter]

    public init(
        ids: [SnapshotID]? = nil, owners: [ProjectRef]? = nil, restorableBy: [Restorer]? = nil,
        states: [SnapshotState]? = nil, filters: [SnapshotFilter] = []
    ) {
        self.ids = ids
        self.owners = owners
        self.restorableBy = restorableBy
        self.states = states
        self.filters = filters
    }

    /// The volume ID of a snapshot that was not made from a volume (EC2's placeholder), as the
    /// ``SnapshotFilter/Field/volumeID`` filter sees it.
    public static let noVolume = "vol-ffffffff"

    /// Who may create volumes from a snapshot (`RestorableBy.N`).
    public enum Restorer: Hashable, Sendable {
        /// Everyone: the snapshot is public (`all`).
        case everyone
        /// The project owns the snapshot or holds an explicit grant (`self`); public alone is not enough.
        case explicitly(ProjectRef)
        /// The project may use it: public, owned by it, or shared with it. A grant to another project
        /// counts only when the caller may read the grant list (the operator, the snapshot's owner) or
        /// the project is the caller itself, so another project's grants never leak.
        case project(ProjectRef)
    }

    /// Whether `snapshot` is selected when `caller` asks (the reference every catalog agrees with; it
    /// does not check visibility).
    public func matches(_ snapshot: SnapshotRecord, caller: Caller) -> Bool {
        if let ids, !ids.contains(snapshot.id) { return false }
        if let owners, !owners.contains(snapshot.owner) { return false }
        if let states, !states.contains(snapshot.state) { return false }
        if let restorableBy, !restorableBy.contains(where: { Self.restorable(snapshot, by: $0, caller) }) {
            return false
        }
        return filters.allSatisfy { $0.matches(snapshot) }
    }

    private static func restorable(_ s: SnapshotRecord, by restorer: Restorer, _ caller: Caller) -> Bool {
        switch restorer {
        case .everyone:
            return s.visibility == .public
        case .explicitly(let project):
            return s.owner == project || s.sharedWith.contains(project)
        case .project(let project):
            if s.visibility == .public || s.owner == project { return true }
            guard s.sharedWith.contains(project) else { return false }
            switch caller {
            case .operator: return true
            case .project(let me): return s.owner == me || project == me
            }
        }
    }
}

/// One `Filter.N` of DescribeSnapshots: a field and the patterns it may match (any of them).
public struct SnapshotFilter: Hashable, Sendable {
    /// The fields a filter can test; each is a text the catalog holds.
    public enum Field: String, Hashable, Sendable, CaseIterable {
        case description
        case snapshotID = "snapshot-id"
        /// The owner as `project@customer`.
        case ownerID = "owner-id"
        /// The source volume, or ``SnapshotQuery/noVolume``.
        case volumeID = "volume-id"
    }

    public var field: Field
    public var patterns: [WildcardPattern]

    public init(_ field: Field, _ patterns: [WildcardPattern]) {
        self.field = field
        self.patterns = patterns
    }

    /// Patterns parsed from EC2 filter values (see ``WildcardPattern``).
    public init(_ field: Field, _ values: [String]) {
        self.init(field, values.map(WildcardPattern.init))
    }

    public func matches(_ snapshot: SnapshotRecord) -> Bool {
        let text = value(of: snapshot)
        return patterns.contains { $0.matches(text) }
    }

    /// The text of this field in `snapshot`.
    public func value(of snapshot: SnapshotRecord) -> String {
        switch field {
        case .description: snapshot.description
        case .snapshotID: snapshot.id.rawValue
        case .ownerID: snapshot.owner.description
        case .volumeID:
            if case .volume(let id) = snapshot.source { id.rawValue } else { SnapshotQuery.noVolume }
        }
    }
}

/// An EC2 filter value: `*` matches any run of characters, `?` exactly one, and a backslash makes the
/// next character literal (`\*`, `\?`, `\\`). Matching is case-sensitive, as in EC2.
///
/// A catalog translates it with ``like`` (SQL `LIKE … ESCAPE '\'`) or ``glob`` (SQLite `GLOB`): every
/// character that is special in the target syntax is escaped, so a value can never inject a wildcard.
public struct WildcardPattern: Hashable, Sendable, CustomStringConvertible {
    public enum Token: Hashable, Sendable {
        case literal(Character)
        case anyRun
        case one
    }

    public let tokens: [Token]
    public let description: String

    public init(_ text: String) {
        description = text
        var tokens: [Token] = []
        var escaped = false
        for c in text {
            if escaped {
                tokens.append(.literal(c))
                escaped = false
                continue
            }
            switch c {
            case "\\": escaped = true
            case "*": tokens.append(.anyRun)
            case "?": tokens.append(.one)
            default: tokens.append(.literal(c))
            }
        }
        if escaped { tokens.append(.literal("\\")) }
        self.tokens = tokens
    }

    /// The pattern without wildcards, if it has none (a catalog can then compare with `=`).
    public var exactText: String? {
        var text = ""
        for token in tokens {
            guard case .literal(let c) = token else { return nil }
            text.append(c)
        }
        return text
    }

    /// A SQL `LIKE` pattern to use with `ESCAPE '\'`.
    public var like: String {
        var out = ""
        for token in tokens {
            switch token {
            case .anyRun: out += "%"
            case .one: out += "_"
            case .literal(let c):
                if c == "%" || c == "_" || c == "\\" { out += "\\" }
                out.append(c)
            }
        }
        return out
    }

    /// A SQLite `GLOB` pattern (case-sensitive; special characters go in brackets).
    public var glob: String {
        var out = ""
        for token in tokens {
            switch token {
            case .anyRun: out += "*"
            case .one: out += "?"
            case .literal(let c):
                if c == "*" || c == "?" || c == "[" { out += "[\(c)]" } else { out.append(c) }
            }
        }
        return out
    }

    /// Whether `text` matches (backtracking on the last `*`: linear in practice, never exponential).
    public func matches(_ text: String) -> Bool {
        let p = tokens, t = Array(text)
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count, p[pi] == .one || p[pi] == .literal(t[ti]) {
                pi += 1
                ti += 1
            } else if pi < p.count, p[pi] == .anyRun {
                star = pi
                mark = ti
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == .anyRun { pi += 1 }
        return pi == p.count
    }
}
