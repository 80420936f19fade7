import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

/// Issue 15: DescribeSnapshots' selection (IDs, owners, restorable-by, states, wildcard filters) evaluated
/// by every catalog, page by page, equal to the reference ``SnapshotQuery/matches(_:caller:)`` and to
/// hand-written expectations (so the reference itself cannot hide an escaping bug).
@Suite("Snapshot queries (contract, every catalog)")
struct SnapshotQueryContractTests {
    static let alice = ProjectRef.make("web@acme")
    static let bob = ProjectRef.make("db@acme")
    static let carol = ProjectRef.make("ops@other")
    static let volume = VolumeID(unchecked: "vol-0123abcd")

    /// Descriptions chosen to break a careless translation: LIKE's `%` and `_`, GLOB's `[`, a literal
    /// `*` and `?`, a backslash, and case.
    static let descriptions = [
        "web-1", "web_2", "Web-3", "100% done", "a*b", "[x]y", "db", "web?", #"back\slash"#, "webXserver",
    ]

    /// Makes one snapshot per description (owners in turn alice, bob, carol), shares and publishes a
    /// few, adds a pending one and one made from a volume; returns the service and the descriptions' IDs.
    static func populate(_ h: Harness) async throws -> [String: SnapshotID] {
        let s = h.service
        var ids: [String: SnapshotID] = [:]
        let owners = [alice, bob, carol]
        for (i, text) in descriptions.enumerated() {
            let made = try await h.snapshot(
                owner: owners[i % 3], disk: [UInt8](repeating: UInt8(i + 1), count: Harness.blockSize),
                description: text)
            ids[text] = made.id
        }
        _ = try await s.share(ids["web_2"]!, with: alice.description, caller: .project(bob))  // bob → alice
        _ = try await s.share(ids["web_2"]!, with: carol.description, caller: .project(bob))  // and → carol
        _ = try await s.share(ids["Web-3"]!, with: bob.description, caller: .project(carol))  // carol → bob
        _ = try await s.share(ids["a*b"]!, with: carol.description, caller: .project(bob))  // bob → carol
        _ = try await s.publish(ids["db"]!, confirmBootable: false, caller: .project(alice))
        _ = try await s.publish(ids["100% done"]!, confirmBootable: false, caller: .project(alice))
        let pending = try await s.beginSnapshot(
            NewSnapshot(owner: bob, description: "web pending", source: .file(path: "/p"), format: "raw", virtualSize: 4096),
            caller: .operator)
        ids["web pending"] = pending.id
        var fromVolume = try #require(try await s.catalog.snapshot(ids["web-1"]!))
        fromVolume.id = SnapshotID(unchecked: "snap-0f0f0f0f")
        fromVolume.description = "from volume"
        fromVolume.source = .volume(volume)
        fromVolume.createdAt = fromVolume.createdAt.addingTimeInterval(0.5)
        try await s.catalog.apply([.insertSnapshot(fromVolume)])
        ids["from volume"] = fromVolume.id
        return ids
    }

    /// Every page (size 2) of `query` for `caller`, concatenated.
    static func paged(_ s: SnapshotService, _ query: SnapshotQuery, _ caller: Caller) async throws -> [SnapshotID] {
        var found: [SnapshotID] = []
        var cursor: SnapshotCursor?
        repeat {
            let page = try await s.snapshots(matching: query, caller: caller, after: cursor, limit: 2)
            #expect(page.snapshots.count <= 2)
            found += page.snapshots.map(\.id)
            cursor = page.next
        } while cursor != nil
        return found
    }

    static func description(_ pattern: String...) -> SnapshotQuery {
        SnapshotQuery(filters: [SnapshotFilter(.description, pattern)])
    }

    @Test("wildcard filters match literally what they say, escaped for LIKE and GLOB", arguments: CatalogFactory.all)
    func wildcards(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let ids = try await Self.populate(h)
            let s = h.service
            func names(_ query: SnapshotQuery) async throws -> Set<String> {
                let found = Set(try await Self.paged(s, query, .operator))
                return Set(ids.filter { found.contains($0.value) }.map(\.key))
            }
            #expect(try await names(Self.description("web*")) == ["web-1", "web_2", "web?", "webXserver", "web pending"])
            #expect(try await names(Self.description("web?2")) == ["web_2"])
            #expect(try await names(Self.description("web_2")) == ["web_2"])
            #expect(try await names(Self.description("web_*")) == ["web_2"])  // `_` is no wildcard
            #expect(try await names(Self.description("100%*")) == ["100% done"])
            #expect(try await names(Self.description("%")) == [])
            #expect(try await names(Self.description(#"a\*b"#)) == ["a*b"])
            #expect(try await names(Self.description(#"web\?"#)) == ["web?"])
            #expect(try await names(Self.description("[x]*")) == ["[x]y"])
            #expect(try await names(Self.description(#"*\\*"#)) == [#"back\slash"#])
            #expect(try await names(Self.description("WEB*", "*-3")) == ["Web-3"])  // case-sensitive, OR
            #expect(try await names(Self.description("?")) == [])
            #expect(try await names(Self.description("??")) == ["db"])
            let volume = SnapshotQuery(filters: [SnapshotFilter(.volumeID, [Self.volume.rawValue])])
            #expect(try await names(volume) == ["from volume"])
            let noVolume = SnapshotQuery(filters: [SnapshotFilter(.volumeID, ["vol-ffffffff"])])
            #expect(try await names(noVolume).count == ids.count - 1)
            let ownerAndText = SnapshotQuery(
                filters: [SnapshotFilter(.ownerID, ["*@acme"]), SnapshotFilter(.description, ["web*"])])
            #expect(try await names(ownerAndText) == ["web-1", "web_2", "web?", "webXserver", "web pending"])
            #expect(try await names(SnapshotQuery(states: [.pending])) == ["web pending"])
            #expect(try await names(SnapshotQuery(ids: [ids["db"]!, ids["a*b"]!])) == ["db", "a*b"])
            #expect(try await names(SnapshotQuery(ids: [])) == [])
            #expect(try await names(SnapshotQuery(owners: [Self.carol])) == ["Web-3", "[x]y", #"back\slash"#])
        }
    }

    @Test(
        "every query, for every caller, pages to exactly the visible snapshots the reference selects",
        arguments: CatalogFactory.all)
    func agreesWithReference(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let ids = try await Self.populate(h)
            let s = h.service
            let queries: [SnapshotQuery] = [
                SnapshotQuery(),
                Self.description("web*", "*y"),
                SnapshotQuery(owners: [Self.alice, Self.bob]),
                SnapshotQuery(owners: []),
                SnapshotQuery(restorableBy: [.everyone]),
                SnapshotQuery(restorableBy: [.explicitly(Self.alice)]),
                SnapshotQuery(restorableBy: [.project(Self.alice)]),
                SnapshotQuery(restorableBy: [.project(Self.bob)]),
                SnapshotQuery(restorableBy: [.project(Self.carol), .everyone]),
                SnapshotQuery(restorableBy: []),
                SnapshotQuery(states: [.available, .error]),
                SnapshotQuery(ids: [ids["web_2"]!, ids["Web-3"]!, ids["web pending"]!]),
                SnapshotQuery(
                    owners: [Self.bob], restorableBy: [.project(Self.carol)], states: [.available],
                    filters: [SnapshotFilter(.snapshotID, ["snap-*"]), SnapshotFilter(.description, ["a*"])]),
                SnapshotQuery(filters: [SnapshotFilter(.volumeID, ["vol-0*"]), SnapshotFilter(.ownerID, ["web@acme"])]),
            ]
            let all = try await s.catalog.snapshots()
            for caller in [Caller.operator, .project(Self.alice), .project(Self.bob), .project(Self.carol)] {
                for query in queries {
                    let expected = all.filter {
                        SnapshotService.canSee($0, caller) && $0.state != .deleting && query.matches($0, caller: caller)
                    }.map(\.id)
                    #expect(try await Self.paged(s, query, caller) == expected, "\(caller) \(query)")
                }
            }
            // Grants stay private: alice sees web_2 (shared with her) but asking whether carol may restore it
            // must not reveal bob's grant to carol; bob (the owner) and carol (the grantee) see it.
            let asCarol = SnapshotQuery(restorableBy: [.project(Self.carol)])
            #expect(try await Self.paged(s, SnapshotQuery(), .project(Self.alice)).contains(ids["web_2"]!))
            #expect(!(try await Self.paged(s, asCarol, .project(Self.alice))).contains(ids["web_2"]!))
            #expect(try await Self.paged(s, asCarol, .project(Self.bob)).contains(ids["web_2"]!))
            #expect(try await Self.paged(s, asCarol, .project(Self.carol)).contains(ids["web_2"]!))
        }
    }
}
