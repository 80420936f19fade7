import Foundation
import Importer
import SnapshotCore
import Logging
import SnapshotStores
import Testing

/// The rules of import tasks that need no S3 server: who may import into which project, who sees which
/// task, client tokens, pages and cancellation (the runner is not started: tasks stay active).
@Suite("Import task rules")
final class ImportTaskRulesTests {
    let data = NSTemporaryDirectory() + "task-rules-\(UInt32.random(in: 0...UInt32.max))"
    deinit { try? FileManager.default.removeItem(atPath: data) }

    static let web = try! ProjectRef(parsing: "web@acme")
    static let db = try! ProjectRef(parsing: "db@globex")

    enum Kind: String, CaseIterable, CustomTestStringConvertible {
        case memory, sqlite
        var testDescription: String { rawValue }
    }

    func makeTasks(_ kind: Kind) throws -> ImportTasks {
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let catalog: any Catalog =
            kind == .memory ? MemoryCatalog() : try LocalStore.open(path: data, logger: Logger(label: "rules")).catalog
        return ImportTasks(catalog: catalog, settings: .init(bucket: "images"))
    }

    func expectCode<T>(
        _ code: SnapshotError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> T
    ) async {
        do {
            _ = try await body()
            Issue.record("expected \(code), got success", sourceLocation: sourceLocation)
        } catch let error as SnapshotError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test(
        "a project imports only into its own project; the operator names one; project folders belong to their project",
        arguments: Kind.allCases)
    func authorization(_ kind: Kind) async throws {
        let tasks = try makeTasks(kind)
        let mine = try await tasks.start(.init(bucket: "user", key: "d.raw"), caller: .project(Self.web))
        #expect(mine.owner == Self.web && mine.state == .active && mine.statusMessage == "pending")
        #expect(mine.requester == .project(Self.web))
        await expectCode(.accessDenied) {
            try await tasks.start(.init(bucket: "user", key: "d.raw", project: Self.db), caller: .project(Self.web))
        }
        await expectCode(.invalidArgument) {
            try await tasks.start(.init(bucket: "user", key: "d.raw"), caller: .operator)
        }
        let named = try await tasks.start(.init(bucket: "user", key: "d.raw", project: Self.db), caller: .operator)
        #expect(named.owner == Self.db)
        // The import bucket's project folders: incoming/, processed/ and failed/.
        for prefix in ["incoming", "processed", "failed"] {
            await expectCode(.accessDenied) {
                try await tasks.start(
                    .init(bucket: "images", key: "\(prefix)/db@globex/x.raw"), caller: .project(Self.web))
            }
        }
        let folder = try await tasks.start(.init(bucket: "images", key: "incoming/db@globex/x.raw"), caller: .operator)
        #expect(folder.owner == Self.db, "the operator's default is the folder's project")
        await expectCode(.accessDenied) {
            try await tasks.start(
                .init(bucket: "images", key: "incoming/db@globex/x.raw", project: Self.web), caller: .operator)
        }
        await expectCode(.invalidProject) {
            try await tasks.start(.init(bucket: "images", key: "incoming/Bad Folder/x.raw"), caller: .operator)
        }
        // The same path in another bucket is no project folder.
        _ = try await tasks.start(.init(bucket: "other", key: "incoming/db@globex/x.raw"), caller: .project(Self.web))
    }

    @Test("bad parameters are InvalidArgument, before anything is recorded", arguments: Kind.allCases)
    func parameters(_ kind: Kind) async throws {
        let tasks = try makeTasks(kind)
        let caller = Caller.project(Self.web)
        for request in [
            ImportTaskRequest(bucket: "", key: "k"), ImportTaskRequest(bucket: "b", key: ""),
            ImportTaskRequest(bucket: "b/c", key: "k"), ImportTaskRequest(bucket: "b", key: "k", format: "OVA2"),
            ImportTaskRequest(bucket: "b", key: "k", description: String(repeating: "x", count: 256)),
            ImportTaskRequest(bucket: "b", key: "k", description: "two\nlines"),
            ImportTaskRequest(bucket: "b", key: "k", clientToken: String(repeating: "t", count: 65)),
        ] {
            await expectCode(.invalidArgument) { try await tasks.start(request, caller: caller) }
        }
        #expect(try await tasks.tasks([], caller: .operator).tasks.isEmpty)
        for format in ["RAW", "vmdk", "VHD", "vpc", "QCOW2", "VHDX", "vdi", "ISO"] {
            _ = try await tasks.start(.init(bucket: "b", key: "k", format: format), caller: caller)
        }
    }

    @Test(
        "the same ClientToken from the same caller is the same task; another caller's is its own",
        arguments: Kind.allCases)
    func clientToken(_ kind: Kind) async throws {
        let tasks = try makeTasks(kind)
        let request = ImportTaskRequest(bucket: "b", key: "k.raw", clientToken: "tok-1")
        let first = try await tasks.start(request, caller: .project(Self.web))
        let again = try await tasks.start(request, caller: .project(Self.web))
        #expect(again.id == first.id)
        let other = try await tasks.start(request, caller: .project(Self.db))
        #expect(other.id != first.id && other.owner == Self.db)
        await expectCode(.invalidArgument) {
            try await tasks.start(
                .init(bucket: "b", key: "another.raw", clientToken: "tok-1"), caller: .project(Self.web))
        }
        // Racing starts with one token make one task.
        let ids = try await withThrowingTaskGroup(of: ImportTaskID.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    try await tasks.start(
                        .init(bucket: "b", key: "race.raw", clientToken: "race"), caller: .project(Self.web)
                    ).id
                }
            }
            return try await group.reduce(into: Set<ImportTaskID>()) { $0.insert($1) }
        }
        #expect(ids.count == 1)
    }

    @Test(
        "a project sees only its own tasks (another's ID is NotFound); the operator sees all, in pages",
        arguments: Kind.allCases)
    func visibility(_ kind: Kind) async throws {
        let tasks = try makeTasks(kind)
        var web: [ImportTaskID] = []
        for i in 0..<5 {
            web.append(try await tasks.start(.init(bucket: "b", key: "w\(i).raw"), caller: .project(Self.web)).id)
        }
        let db = try await tasks.start(.init(bucket: "b", key: "d.raw"), caller: .project(Self.db)).id
        // Ordered by ID: by creation, to the millisecond (tasks of one millisecond in random order).
        web.sort()
        #expect(try await tasks.tasks([], caller: .project(Self.web)).tasks.map(\.id) == web)
        #expect(try await tasks.tasks([], caller: .project(Self.db)).tasks.map(\.id) == [db])
        #expect(try await tasks.tasks([], caller: .operator).tasks.count == 6)
        await expectCode(.notFound) { try await tasks.tasks([web[0], db], caller: .project(Self.web)) }
        #expect(try await tasks.tasks([db, web[1]], caller: .operator).tasks.map(\.id) == [db, web[1]])
        await expectCode(.notFound) { try await tasks.task(ImportTaskID.make(), caller: .operator) }
        // Pages of two: the cursor is the last ID; the last page has no next.
        var seen: [ImportTaskID] = []
        var next: ImportTaskID?
        var pages = 0
        repeat {
            let page = try await tasks.tasks([], caller: .project(Self.web), after: next, limit: 2)
            seen += page.tasks.map(\.id)
            next = page.next
            pages += 1
        } while next != nil
        #expect(seen == web)
        #expect(pages == 3)
    }

    @Test(
        "cancel: an active task ends deleted at once; a finished one is InvalidState; another's is NotFound",
        arguments: Kind.allCases)
    func cancel(_ kind: Kind) async throws {
        let tasks = try makeTasks(kind)
        let task = try await tasks.start(.init(bucket: "b", key: "k.raw"), caller: .project(Self.web))
        await expectCode(.notFound) { try await tasks.cancel(task.id, caller: .project(Self.db)) }
        let cancelled = try await tasks.cancel(task.id, caller: .project(Self.web), reason: "user asked")
        #expect(cancelled.state == .deleted)
        #expect(cancelled.statusMessage == "Cancelled by the user: user asked")
        #expect(try await tasks.task(task.id, caller: .operator).state == .deleted)
        await expectCode(.invalidState) { try await tasks.cancel(task.id, caller: .operator) }
    }
}
