import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

/// Issue 11: the import history (`imports list` / `imports show`) is read page by page through an index,
/// never whole, on every catalog.
@Suite("Import history pages (contract, every catalog)")
struct ImportHistoryContractTests {
    /// 9 imports over two buckets and two owners, in three states; three of them share one `createdAt`
    /// (the cursor's tie-break is the import ID).
    static func populate(_ s: SnapshotService) async throws -> [ImportRecord] {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        for i in 0..<9 {
            let owner = i % 3 == 0 ? "db@globex" : "web@acme"
            let at = start.addingTimeInterval(i < 3 ? 0 : Double(i))
            let claim = try #require(
                try await s.claimImport(
                    bucket: i % 2 == 0 ? "images" : "other", key: "incoming/\(owner)/disk-\(i).raw", etag: "e\(i)",
                    owner: owner, worker: "w\(i)", leaseSeconds: 600, now: at))
            if i % 4 == 1 {
                try await s.failImport(claim, code: "CorruptImage", message: "bad", permanent: true, now: at)
            } else if i % 4 == 2 {
                try await s.failImport(claim, code: "StorageUnavailable", message: "later", permanent: false, now: at)
            }
        }
        return try await s.catalog.imports()
    }

    /// Every page of `filter` at page size `limit`, following the cursors (and their tokens).
    static func pages(_ s: SnapshotService, _ filter: ImportFilter, limit: Int) async throws -> [[ImportRecord]] {
        var pages: [[ImportRecord]] = []
        var cursor: ImportCursor?
        repeat {
            let page = try await s.listImports(filter, after: cursor, limit: limit)
            #expect(page.imports.count <= limit)
            pages.append(page.imports)
            if let next = page.next {
                #expect(ImportCursor(token: next.token) == next)
                #expect(next == ImportCursor(after: try #require(page.imports.last)))
            }
            cursor = page.next
        } while cursor != nil
        return pages
    }

    @Test("pages of every filter equal the whole history filtered, in (createdAt, ID) order", arguments: CatalogFactory.all)
    func pagesMatchTheFilter(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let all = try await Self.populate(h.service)
            #expect(all.count == 9)
            let ordered = all.sorted { ($0.createdAt, $0.key.id) < ($1.createdAt, $1.key.id) }
            let filters = [
                ImportFilter(), ImportFilter(state: .failed), ImportFilter(state: .claimed),
                ImportFilter(owner: "web@acme"), ImportFilter(state: .retry, owner: "web@acme"),
                ImportFilter(owner: "nobody@nowhere"),
            ]
            for filter in filters {
                let expected = ordered.filter {
                    (filter.state == nil || $0.state == filter.state) && (filter.owner == nil || $0.owner == filter.owner)
                }
                for limit in [1, 2, 4, 100] {
                    let pages = try await Self.pages(h.service, filter, limit: limit)
                    #expect(pages.flatMap { $0 }.map(\.key) == expected.map(\.key), "\(filter) limit \(limit)")
                    // A page is full unless it is the last; the last holds the rest (or nothing when empty).
                    #expect(pages.dropLast().allSatisfy { $0.count == limit }, "\(filter) limit \(limit)")
                }
                #expect(try await h.service.listImports(filter).map(\.key) == expected.map(\.key))
            }
        }
    }

    @Test("an import by its ID and the imports of one object, without the rest", arguments: CatalogFactory.all)
    func lookups(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let all = try await Self.populate(s)
            for row in all {
                #expect(try await s.catalog.imports(id: row.key.id).map(\.key) == [row.key])
            }
            #expect(try await s.catalog.imports(id: "imp-0000000000000000").isEmpty)
            // A second version (ETag) of one object: the object's lookup returns both, the latest first.
            let first = try #require(all.first { $0.key.bucket == "images" })
            let later = first.createdAt.addingTimeInterval(100)
            _ = try #require(
                try await s.claimImport(
                    bucket: first.key.bucket, key: first.key.key, etag: "e-new", owner: first.owner, worker: "w",
                    leaseSeconds: 600, now: later))
            let versions = try await s.catalog.imports(bucket: first.key.bucket, key: first.key.key)
            #expect(versions.map(\.key.etag) == ["e-new", first.key.etag])
            #expect(try await s.latestImport(bucket: first.key.bucket, key: first.key.key)?.key.etag == "e-new")
            #expect(try await s.catalog.imports(bucket: "images", key: "incoming/none").isEmpty)
            // Not a prefix match: the key is taken literally.
            #expect(try await s.catalog.imports(bucket: "images", key: "incoming/").isEmpty)
        }
    }

    @Test("cursor tokens: <milliseconds>.<import ID>; malformed ones are refused")
    func tokens() throws {
        let cursor = ImportCursor(createdAt: Date(timeIntervalSince1970: 1_800_000_000.123), id: "imp-0123456789abcdef")
        #expect(cursor.token == "1800000000123.imp-0123456789abcdef")
        #expect(ImportCursor(token: cursor.token) == cursor)
        for bad in ["", "1800000000123", "x.imp-0123456789abcdef", "1800000000123.snap-01234567", "12.imp-XYZ"] {
            #expect(ImportCursor(token: bad) == nil, "\(bad)")
        }
    }
}
