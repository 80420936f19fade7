public import Foundation
public import SnapshotCore

/// The three groups of the Snapshots page.
public enum SnapshotGroup: String, Sendable, CaseIterable {
    /// Owned by the caller (everything, for the operator).
    case mine
    /// Another project's, granted to the caller.
    case shared
    /// Another project's, public, and not granted to the caller.
    case `public`

    /// Which group `snapshot` falls in for `caller`.
    public static func of(_ snapshot: SnapshotRecord, for caller: Caller) -> SnapshotGroup? {
        if snapshot.isOwned(by: caller) { return .mine }
        if case .project(let project) = caller, snapshot.sharedWith.contains(project) { return .shared }
        if snapshot.visibility == .public { return .public }
        return nil
    }
}

/// One page of a group: its rows and where the next page starts (nil: no more).
public struct SnapshotListingPage: Sendable {
    public var snapshots: [SnapshotRecord]
    public var next: SnapshotCursor?
}

/// The console's snapshot query: one group, filtered by a text found (case-insensitively) in the ID or
/// the description, one page at a time.
///
/// The group is selected by the catalog (``SnapshotQuery``: the caller's own snapshots, those restorable
/// by it explicitly, the public ones), one keyset page at a time, oldest first; the text filter (an OR of
/// ID and description, case-insensitive, which EC2's filters cannot say) and the group's exclusions (a
/// public snapshot granted to the caller shows under "shared") are applied here, reading at most
/// `scanLimit` rows per call: a request never reads the whole catalog; when the budget runs out before the
/// page is full, the page ends early with a cursor and "Next page" goes on from there.
public struct SnapshotListing: Sendable {
    public let service: SnapshotService
    public var scanLimit = 2000
    public var catalogPageSize = 200

    public init(service: SnapshotService) {
        self.service = service
    }

    public func page(
        _ group: SnapshotGroup, matching filter: String?, caller: Caller, after cursor: SnapshotCursor?, limit: Int
    ) async throws -> SnapshotListingPage {
        let needle = filter?.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() ?? ""
        var rows: [SnapshotRecord] = []
        var cursor = cursor
        var scanned = 0
        while scanned < scanLimit {
            let page = try await service.snapshots(
                matching: Self.query(group, caller), caller: caller, after: cursor,
                limit: min(catalogPageSize, scanLimit - scanned))
            for snapshot in page.snapshots {
                scanned += 1
                cursor = SnapshotCursor(after: snapshot)
                guard SnapshotGroup.of(snapshot, for: caller) == group, Self.matches(snapshot, needle) else { continue }
                rows.append(snapshot)
                if rows.count == limit {
                    // Whether anything follows is learnt on the next page; an empty last page is rare.
                    return SnapshotListingPage(
                        snapshots: rows, next: page.next == nil && snapshot == page.snapshots.last ? nil : cursor)
                }
            }
            guard page.next != nil else { return SnapshotListingPage(snapshots: rows, next: nil) }
        }
        return SnapshotListingPage(snapshots: rows, next: cursor)
    }

    /// The catalog's selection for a group; ``SnapshotGroup/of(_:for:)`` still decides each row.
    static func query(_ group: SnapshotGroup, _ caller: Caller) -> SnapshotQuery {
        switch (group, caller) {
        case (_, .operator): SnapshotQuery()  // the operator owns every snapshot: all are "mine"
        case (.mine, .project(let me)): SnapshotQuery(owners: [me])
        case (.shared, .project(let me)): SnapshotQuery(restorableBy: [.explicitly(me)])
        case (.public, .project): SnapshotQuery(restorableBy: [.everyone])
        }
    }

    static func matches(_ snapshot: SnapshotRecord, _ needle: String) -> Bool {
        needle.isEmpty || snapshot.id.rawValue.lowercased().contains(needle)
            || snapshot.description.lowercased().contains(needle)
    }
}

/// A ``SnapshotCursor`` in a URL: the creation time's exact bits and the ID.
enum CursorToken {
    static func encode(_ cursor: SnapshotCursor) -> String {
        String(cursor.createdAt.timeIntervalSinceReferenceDate.bitPattern, radix: 16) + "." + cursor.id.rawValue
    }

    static func decode(_ text: String?) -> SnapshotCursor? {
        guard let text, let dot = text.firstIndex(of: "."), let bits = UInt64(text[..<dot], radix: 16),
            let id = SnapshotID(rawValue: String(text[text.index(after: dot)...]))
        else { return nil }
        return SnapshotCursor(createdAt: Date(timeIntervalSinceReferenceDate: Double(bitPattern: bits)), id: id)
    }
}
