import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

/// Import tasks and import progress in the catalog (issues 14 and 15), against every catalog.
@Suite("Import tasks and progress (contract, every catalog)")
struct ImportTaskContractTests {
    static let web = ProjectRef.make("web@acme")
    static let db = ProjectRef.make("db@globex")
    static let base = Date(timeIntervalSince1970: 1_800_000_000)

    static func task(
        _ owner: ProjectRef, requester: Caller? = nil, token: String? = nil, at offset: TimeInterval = 0,
        key: String = "disks/a.raw"
    ) -> ImportTaskRecord {
        let at = base.addingTimeInterval(offset)
        return ImportTaskRecord(
            id: .make(at: at), owner: owner, requester: requester ?? .project(owner), bucket: "user-bucket", key: key,
            format: "RAW", description: "disk one", clientToken: token, createdAt: at, updatedAt: at)
    }

    @Test("IDs: import-snap- and 17 hex digits, ordered by creation; malformed ones refused")
    func ids() {
        let a = ImportTaskID.make(at: Self.base)
        let b = ImportTaskID.make(at: Self.base.addingTimeInterval(0.002))
        #expect(a.rawValue.count == "import-snap-".count + 17)
        #expect(a < b)
        #expect(ImportTaskID(a.rawValue) == a)
        for bad in ["import-snap-0123", "import-snap-0123456789ABCDEF0", "import-ami-0123456789abcdef0", "", "snap-1"] {
            #expect(ImportTaskID(bad) == nil, "\(bad)")
        }
    }

    @Test("a task reads back field for field; updates are versioned", arguments: CatalogFactory.all)
    func roundTrip(_ factory: CatalogFactory) async throws {
        try await factory.open(try Self.directory()) { catalog in
            var task = Self.task(Self.web, requester: .operator, token: "tok-1")
            try await catalog.apply([.insertImportTask(task)])
            #expect(try await catalog.importTask(task.id) == task)
            task.etag = "\"e1\""
            task.state = .completed
            task.statusMessage = nil
            task.bytesRead = 10_000_000_000
            task.bytesTotal = 10_000_000_000
            task.snapshotID = SnapshotID(rawValue: "snap-0000abcd")
            task.worker = "host:1:ab"
            task.leaseExpiresAt = Self.base.addingTimeInterval(60)
            task.attempts = 2
            task.updatedAt = Self.base.addingTimeInterval(5)
            try await catalog.apply([.updateImportTask(task)])
            var stored = try #require(try await catalog.importTask(task.id))
            #expect(stored.version == 2)
            stored.version = 1
            #expect(stored == task)
            // A stale version is a conflict and changes nothing.
            task.statusMessage = "stale"
            await expectCode(.conflict) { try await catalog.apply([.updateImportTask(task)]) }
            #expect(try await catalog.importTask(task.id)?.statusMessage == nil)
            // The same ID twice is a conflict.
            var duplicate = Self.task(Self.db, at: 50)
            duplicate.id = task.id
            await expectCode(.conflict) { try await catalog.apply([.insertImportTask(duplicate)]) }
        }
    }

    @Test("a client token is unique per requester; another requester may use it", arguments: CatalogFactory.all)
    func clientTokens(_ factory: CatalogFactory) async throws {
        try await factory.open(try Self.directory()) { catalog in
            let first = Self.task(Self.web, token: "tok", at: 0)
            try await catalog.apply([.insertImportTask(first)])
            await expectCode(.conflict) {
                try await catalog.apply([.insertImportTask(Self.task(Self.web, token: "tok", at: 1))])
            }
            let other = Self.task(Self.db, token: "tok", at: 2)
            try await catalog.apply([.insertImportTask(other)])
            let byOperator = Self.task(Self.web, requester: .operator, token: "tok", at: 3)
            try await catalog.apply([.insertImportTask(byOperator)])
            #expect(try await catalog.importTask(requester: .project(Self.web), clientToken: "tok")?.id == first.id)
            #expect(try await catalog.importTask(requester: .project(Self.db), clientToken: "tok")?.id == other.id)
            #expect(try await catalog.importTask(requester: .operator, clientToken: "tok")?.id == byOperator.id)
            #expect(try await catalog.importTask(requester: .project(Self.web), clientToken: "nope") == nil)
            // Tasks without a token never collide.
            try await catalog.apply([
                .insertImportTask(Self.task(Self.web, at: 4)), .insertImportTask(Self.task(Self.web, at: 5)),
            ])
        }
    }

    @Test("tasks by owner and by state, oldest first, in keyset pages", arguments: CatalogFactory.all)
    func pages(_ factory: CatalogFactory) async throws {
        try await factory.open(try Self.directory()) { catalog in
            var web: [ImportTaskRecord] = []
            for i in 0..<7 {
                var task = Self.task(Self.web, at: TimeInterval(i))
                if i % 2 == 1 { task.state = .completed }
                web.append(task)
            }
            let db = (0..<3).map { Self.task(Self.db, at: 100 + TimeInterval($0)) }
            try await catalog.apply((web + db).shuffled().map { .insertImportTask($0) })

            var seen: [ImportTaskID] = []
            var cursor: ImportTaskID?
            repeat {
                let page = try await catalog.importTasks(ownedBy: Self.web, after: cursor, limit: 3)
                #expect(page.count <= 3)
                seen += page.map(\.id)
                cursor = page.count == 3 ? page.last?.id : nil
            } while cursor != nil
            #expect(seen == web.map(\.id))
            #expect(
                try await catalog.importTasks(ownedBy: nil, after: nil, limit: 100).map(\.id) == (web + db).map(\.id))
            #expect(
                try await catalog.importTasks(ownedBy: Self.db, after: db[0].id, limit: 100).map(\.id) == [
                    db[1].id, db[2].id,
                ])
            let active = try await catalog.importTasks(in: .active, after: nil, limit: 100).map(\.id)
            #expect(active == (web.filter { $0.state == .active } + db).map(\.id))
            #expect(try await catalog.importTasks(in: .completed, after: web[1].id, limit: 1).map(\.id) == [web[3].id])
            #expect(try await catalog.importTasks(in: .deleted, after: nil, limit: 10).isEmpty)
        }
    }

    @Test(
        "import progress: written by the claim's worker only, kept by versioned updates, reset by a new claim",
        arguments: CatalogFactory.all)
    func progress(_ factory: CatalogFactory) async throws {
        try await factory.open(try Self.directory()) { catalog in
            let key = ImportKey(bucket: "images", key: "incoming/web@acme/d ?#.raw", etag: "\"e\"")
            let now = Self.base
            var row = try #require(
                try await catalog.claimImport(
                    key, owner: "web@acme", worker: "w1", leaseExpiresAt: now.addingTimeInterval(60), now: now))
            #expect(row.bytesRead == 0 && row.bytesTotal == nil)
            #expect(try await catalog.recordImportProgress(key, worker: "w1", bytesRead: 4096, bytesTotal: 1 << 40))
            #expect(!(try await catalog.recordImportProgress(key, worker: "intruder", bytesRead: 1, bytesTotal: 2)))
            var stored = try #require(try await catalog.importRecord(key))
            #expect(stored.bytesRead == 4096 && stored.bytesTotal == 1 << 40)
            #expect(stored.version == row.version, "progress leaves the version alone")
            // A versioned update (a lease renewal) carries stale progress: the stored progress stays.
            row.leaseExpiresAt = now.addingTimeInterval(120)
            try await catalog.apply([.updateImport(row)])
            stored = try #require(try await catalog.importRecord(key))
            #expect(stored.bytesRead == 4096 && stored.bytesTotal == 1 << 40)
            // Once the attempt ends (no worker), its last figure may still be written.
            stored.state = .retry
            stored.worker = nil
            try await catalog.apply([.updateImport(stored)])
            #expect(try await catalog.recordImportProgress(key, worker: "w1", bytesRead: 8192, bytesTotal: 1 << 40))
            #expect(try await catalog.importRecord(key)?.bytesRead == 8192)
            // A new claim starts from zero.
            let again = try #require(
                try await catalog.claimImport(
                    key, owner: "web@acme", worker: "w2", leaseExpiresAt: now.addingTimeInterval(60), now: now))
            #expect(again.bytesRead == 0 && again.bytesTotal == nil)
            #expect(try await catalog.importRecord(key)?.bytesRead == 0)
            #expect(try await catalog.imports().first?.bytesTotal == nil)
        }
    }

    static func directory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tasks-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }
}
