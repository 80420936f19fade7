public import Foundation
import Logging

/// Snapshots and their sharing: what a caller sees, descriptions, grants, public/private, deletion
/// (issue 4, "Rules").
///
/// - Only the owner (or the operator) changes a description, sharing or visibility, or deletes.
/// - A project sees its own snapshots, those shared with it and public ones (available only);
///   anything else is `NotFound`, never `AccessDenied`, so IDs do not leak.
/// - A snapshot a template was made of is `InUse` for deletion.
/// - Publishing a bootable snapshot needs `confirmBootable`.
/// - Sharing with the owner's own project or a malformed name is refused.
public struct Snapshots: LedgerBacked {
    let ledger: Ledger
    let collector: BlockCollector


    /// Snapshots the caller may see, oldest first (the operator sees all, including pending ones),
    /// read page by page from the catalog's visibility query.
    public func listSnapshots(caller: Caller) async throws -> [SnapshotRecord] {
        var all: [SnapshotRecord] = []
        var cursor: SnapshotCursor?
        while true {
            let page = try await listSnapshots(caller: caller, after: cursor, limit: Self.pageSize)
            all += page.snapshots
            guard let next = page.next else { return all }
            cursor = next
        }
    }

    /// One page of the snapshots the caller may see, oldest first (`DescribeSnapshots` with
    /// `MaxResults`/`NextToken`).
    /// - Parameters:
    ///   - cursor: where the previous page ended (its ``SnapshotPage/next``), nil for the first page.
    ///   - limit: the page size, 1 to 1,000 (clamped).
    /// - Returns: the page; `next` is nil on the last one.
    public func listSnapshots(caller: Caller, after cursor: SnapshotCursor?, limit: Int) async throws -> SnapshotPage {
        try await snapshots(matching: SnapshotQuery(), caller: caller, after: cursor, limit: limit)
    }

    /// One page of the snapshots the caller may see that `query` selects, oldest first; the catalog
    /// evaluates the query (one indexed statement per page, never the whole catalog).
    /// - Parameters:
    ///   - query: the selection (`SnapshotQuery()` selects everything visible).
    ///   - cursor: where the previous page ended (its ``SnapshotPage/next``), nil for the first page.
    ///   - limit: the page size, 1 to 1,000 (clamped).
    /// - Returns: the page; `next` is nil on the last one.
    public func snapshots(matching query: SnapshotQuery, caller: Caller, after cursor: SnapshotCursor?, limit: Int)
        async throws -> SnapshotPage
    {
        let limit = min(max(limit, 1), Self.pageSize)
        // One row more than asked tells whether another page follows without a second query.
        var rows = try await catalog.snapshots(matching: query, visibleTo: caller, after: cursor, limit: limit + 1)
        let more = rows.count > limit
        if more { rows.removeLast(rows.count - limit) }
        return SnapshotPage(snapshots: rows, next: more ? rows.last.map(SnapshotCursor.init(after:)) : nil)
    }

    /// The largest page read from the catalog at once.
    static let pageSize = 1000

    /// One snapshot. - Throws: `.notFound` when absent or invisible to the caller.
    public func snapshot(_ id: SnapshotID, caller: Caller) async throws -> SnapshotRecord {
        try await visibleSnapshot(id, caller)
    }

    /// Changes the description (owner only; at most `maxDescriptionLength` characters, no control characters).
    public func setDescription(_ id: SnapshotID, _ text: String, caller: Caller) async throws -> SnapshotRecord {
        try checkDescription(text)
        return try await updateOwnedSnapshot(id, caller, "change the description of") { snapshot in
            snapshot.description = text
        }
    }

    /// Grants `project` use of the snapshot (owner only; the snapshot must be available).
    /// - Throws: `.invalidProject` for a malformed name, `.invalidArgument` for the owner's own project.
    public func share(_ id: SnapshotID, with project: String, caller: Caller) async throws -> SnapshotRecord {
        let grantee = try ProjectRef(parsing: project)
        return try await updateOwnedSnapshot(id, caller, "share") { snapshot in
            guard grantee != snapshot.owner else {
                throw SnapshotError(.invalidArgument, "\(grantee) owns snapshot \(id); it cannot be shared with itself")
            }
            try Self.requireAvailable(snapshot, "shared")
            if !snapshot.sharedWith.contains(grantee) {
                snapshot.sharedWith = (snapshot.sharedWith + [grantee]).sorted()
            }
        }
    }

    /// Revokes a grant (owner only; revoking a grant that does not exist changes nothing).
    public func unshare(_ id: SnapshotID, with project: String, caller: Caller) async throws -> SnapshotRecord {
        let grantee = try ProjectRef(parsing: project)
        return try await updateOwnedSnapshot(id, caller, "unshare") { snapshot in
            snapshot.sharedWith.removeAll { $0 == grantee }
        }
    }

    /// Makes the snapshot public (owner only). A bootable snapshot needs `confirmBootable`: its quality
    /// and security (no preset administrator password) must have been checked by a person.
    public func publish(_ id: SnapshotID, confirmBootable: Bool, caller: Caller) async throws -> SnapshotRecord {
        try await updateOwnedSnapshot(id, caller, "publish") { snapshot in
            try Self.requireAvailable(snapshot, "published")
            if snapshot.bootable && !confirmBootable {
                throw SnapshotError(
                    .confirmationRequired,
                    "snapshot \(id) is bootable: check that it holds no preset administrator password, then "
                        + "publish it with --confirm-bootable")
            }
            snapshot.visibility = .public
        }
    }

    /// Makes the snapshot private again (owner only).
    public func unpublish(_ id: SnapshotID, caller: Caller) async throws -> SnapshotRecord {
        try await updateOwnedSnapshot(id, caller, "unpublish") { snapshot in
            snapshot.visibility = .private
        }
    }


    private func updateOwnedSnapshot(
        _ id: SnapshotID, _ caller: Caller, _ action: String, _ change: (inout SnapshotRecord) throws -> Void
    ) async throws -> SnapshotRecord {
        try await retrying(action) {
            let current = try await ownedSnapshot(id, caller, action)
            guard current.state != .deleting else { throw SnapshotError.notFound("snapshot \(id)") }
            var updated = current
            try change(&updated)
            if updated == current { return current }
            try await catalog.apply([.updateSnapshot(updated)])
            updated.version += 1
            return updated
        }
    }

    /// Deletes a snapshot (owner only) and frees the blocks no other snapshot uses.
    ///
    /// Allowed while volumes made from it exist (a volume is an independent copy); refused (`InUse`)
    /// while a template references it, and (`InvalidState`) while it is being written.
    /// - Parameter now: the current time (see ``collectGarbage(now:)``).
    /// - Returns: what the block collection did.
    @discardableResult
    public func deleteSnapshot(_ id: SnapshotID, caller: Caller, now: Date = Date()) async throws -> CollectionReport {
        let marked = try await retrying("delete") { () -> SnapshotRecord in
            var snapshot = try await ownedSnapshot(id, caller, "delete")
            if case .template(let templateID) = snapshot.source, try await catalog.template(templateID) != nil {
                throw SnapshotError(.inUse, "snapshot \(id) is part of template \(templateID)")
            }
            switch snapshot.state {
            case .pending:
                throw SnapshotError(.invalidState, "snapshot \(id) is still being written")
            case .deleting:
                return snapshot
            case .available, .error:
                snapshot.state = .deleting
                try await catalog.apply([.updateSnapshot(snapshot)])
                snapshot.version += 1
                return snapshot
            }
        }
        return try await collector.finishDeletion(marked, now: now)
    }
}

/// One page of a snapshot listing (``Snapshots/listSnapshots(caller:after:limit:)``).
public struct SnapshotPage: Sendable, Equatable {
    public var snapshots: [SnapshotRecord]
    /// Where the next page starts; nil when this is the last page.
    public var next: SnapshotCursor?

    public init(snapshots: [SnapshotRecord], next: SnapshotCursor?) {
        self.snapshots = snapshots
        self.next = next
    }
}
