import Foundation
import Logging
import SnapImportCLI
import SnapshotCore
import SnapshotStores
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `imports list` and `imports show` through the library, over a store holding an import in progress, a
/// failed one and an imported one (issue 14: the progress of every import).
@Suite("imports list and show", .serialized)
final class ImportsCommandTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("imports-\(UUID().uuidString)").path
    var config: String { directory + "/snapimport.toml" }
    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Runs the command with stdout sent to a file (scripts/test runs suites one at a time).
    func run(_ arguments: [String]) async throws -> (status: Int32, stdout: String) {
        let path = directory + "/stdout-\(UUID().uuidString)"
        FileManager.default.createFile(atPath: path, contents: nil)
        let file = open(path, O_WRONLY)
        #expect(file >= 0)
        fflush(nil)
        let saved = dup(STDOUT_FILENO)
        dup2(file, STDOUT_FILENO)
        let status = await SnapImport.execute(arguments + ["--config", config])
        fflush(nil)
        dup2(saved, STDOUT_FILENO)
        close(saved)
        close(file)
        return (status, String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self))
    }

    static let running = ImportKey(bucket: "images", key: "incoming/web@acme/big disk.raw", etag: "e1")
    static let failed = ImportKey(bucket: "images", key: "incoming/db@globex/bad.qcow2", etag: "e2")
    static let done = ImportKey(bucket: "user", key: "disks/ok.raw", etag: "e3")

    /// A store with three imports: one 30 % read, one rejected, one imported.
    func populate() async throws -> SnapshotID {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "[store]\npath = \"data\"\n".write(toFile: config, atomically: false, encoding: .utf8)
        let service = try LocalStore.open(path: directory + "/data", logger: Logger(label: "imports-test"))
        let a = try #require(
            try await service.claimImport(
                bucket: Self.running.bucket, key: Self.running.key, etag: "e1", owner: "web@acme", worker: "w1",
                leaseSeconds: 600))
        try await service.claims.recordImportProgress(a, bytesRead: 3_145_728, bytesTotal: 10_485_760)
        let b = try #require(
            try await service.claimImport(
                bucket: Self.failed.bucket, key: Self.failed.key, etag: "e2", owner: "db@globex", worker: "w2",
                leaseSeconds: 600))
        try await service.failImport(
            b, code: "BackingFileNotAllowed", message: "the image names a backing file", permanent: true)
        let c = try #require(
            try await service.claimImport(
                bucket: Self.done.bucket, key: Self.done.key, etag: "e3", owner: "web@acme", worker: "w3",
                leaseSeconds: 600))
        let writer = try await service.beginSnapshot(
            NewSnapshot(
                owner: try ProjectRef(parsing: "web@acme"),
                source: .object(bucket: "user", key: Self.done.key, etag: "e3"),
                format: "raw", virtualSize: 8192, claim: c),
            caller: .operator)
        try await writer.write(offset: 0, bytes: [UInt8](repeating: 7, count: 8192))
        let snapshot = try await writer.commit()
        try await service.claims.recordImportProgress(c, bytesRead: 8192, bytesTotal: 8192)
        try await service.catalog.close()
        return snapshot.id
    }

    func array(_ text: String) throws -> [[String: Any]] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]], "\(text)")
    }

    @Test("list --json: every import with its progress, error and snapshot; --state and --project filter")
    func list() async throws {
        let snapshot = try await populate()
        let (status, out) = try await run(["imports", "list", "--json"])
        #expect(status == 0)
        let all = try array(out)
        #expect(all.count == 3)
        let byKey = Dictionary(uniqueKeysWithValues: all.map { ($0["key"] as? String ?? "", $0) })
        let running = try #require(byKey[Self.running.key])
        #expect(running["state"] as? String == "claimed")
        #expect(running["bytesRead"] as? Int == 3_145_728 && running["bytesTotal"] as? Int == 10_485_760)
        #expect(running["id"] as? String == Self.running.id)
        #expect(running["error"] is NSNull && running["snapshot"] is NSNull)
        for field in [
            "id", "bucket", "key", "etag", "owner", "state", "attempts", "bytesRead", "bytesTotal", "snapshot",
            "error", "startedAt", "updatedAt",
        ] {
            #expect(running.keys.contains(field), "\(field)")
        }
        let failed = try #require(byKey[Self.failed.key])
        let error = try #require(failed["error"] as? [String: Any])
        #expect(error["code"] as? String == "BackingFileNotAllowed")
        #expect(error["message"] as? String == "the image names a backing file")
        #expect(failed["bytesTotal"] is NSNull)
        let done = try #require(byKey[Self.done.key])
        #expect(done["snapshot"] as? String == snapshot.rawValue && done["bytesRead"] as? Int == 8192)

        #expect(try array(try await run(["imports", "list", "--state", "failed", "--json"]).stdout).count == 1)
        let web = try array(try await run(["imports", "list", "--project", "web@acme", "--json"]).stdout)
        #expect(Set(web.compactMap { $0["key"] as? String }) == [Self.running.key, Self.done.key])
        #expect(try await run(["imports", "list", "--state", "nonsense"]).status == 2)
        #expect(try await run(["imports", "list", "--project", "Web"]).status == 2)

        // Human text (stdout is a file here: tab-separated, one import a line, no header).
        let human = try await run(["imports", "list"])
        #expect(human.status == 0)
        let lines = human.stdout.split(separator: "\n")
        #expect(lines.count == 3)
        let line = try #require(lines.first { $0.contains("big disk.raw") })
        #expect(line.split(separator: "\t").prefix(3) == [Substring(Self.running.id), "claimed", "30%"])
    }

    @Test("show ID or s3://bucket/key: one import; unknown is NotFound (1), malformed is usage (2)")
    func show() async throws {
        _ = try await populate()
        let (status, out) = try await run(["imports", "show", Self.failed.id, "--json"])
        #expect(status == 0)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        #expect(document["key"] as? String == Self.failed.key && document["state"] as? String == "failed")
        #expect((document["error"] as? [String: Any])?["code"] as? String == "BackingFileNotAllowed")

        let human = try await run(["imports", "show", "s3://images/incoming/web@acme/big disk.raw"])
        #expect(human.status == 0)
        #expect(human.stdout.contains("progress:  30% (3145728 of 10485760 bytes)"), "\(human.stdout)")
        #expect(human.stdout.contains("state:     claimed"))
        #expect(try await run(["imports", "show", "imp-0000000000000000"]).status == 1)
        #expect(try await run(["imports", "show", "s3://images/absent"]).status == 1)
        #expect(try await run(["imports", "show", "nonsense"]).status == 2)
    }
    @Test("list --limit/--after: keyset pages whose rows carry the cursor to continue after them")
    func listPages() async throws {
        _ = try await populate()
        let whole = try array(try await run(["imports", "list", "--json"]).stdout)
        #expect(whole.count == 3)
        let first = try await run(["imports", "list", "--json", "--limit", "2"])
        #expect(first.status == 0)
        let page1 = try array(first.stdout)
        #expect(page1.count == 2)
        let cursor = try #require(page1.last?["cursor"] as? String)
        #expect(cursor.hasSuffix("." + (page1.last?["id"] as? String ?? "?")))
        let page2 = try array(try await run(["imports", "list", "--json", "--limit", "2", "--after", cursor]).stdout)
        #expect(page2.count == 1)
        #expect((page1 + page2).compactMap { $0["id"] as? String } == whole.compactMap { $0["id"] as? String })
        let past = try array(
            try await run(["imports", "list", "--json", "--after", try #require(page2.last?["cursor"] as? String)])
                .stdout)
        #expect(past.isEmpty)
        // Filters combine with pages.
        let web = try array(try await run(["imports", "list", "--json", "--project", "web@acme", "--limit", "1"]).stdout)
        #expect(web.count == 1 && web.first?["owner"] as? String == "web@acme")
        #expect(try await run(["imports", "list", "--limit", "0"]).status == 2)
        #expect(try await run(["imports", "list", "--after", "yesterday"]).status == 2)
        let usage = try await run(["imports", "list", "--json", "--after", "12.snap-01234567"])
        #expect(usage.status == 2 && usage.stdout.contains("\"Usage\""), "\(usage.stdout)")
    }
}
