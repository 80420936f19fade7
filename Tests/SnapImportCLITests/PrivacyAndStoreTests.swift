import Foundation
import ProcessTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 13's contract through the built binary: who reads grants and sources, where the store is, what
/// a command on a missing store does, template deletion, and interrupted manual imports.
@Suite("snapimport: privacy, the store's place, templates, interrupts", .serialized)
struct PrivacyAndStoreTests {
    typealias CLI = CommandLineTests

    /// A temporary folder with a config (`[store] path = "data"`, relative) and a bootable 2 MiB raw disk.
    struct Place {
        let directory: String
        let config: String
        let image: String

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("cli13-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            config = directory + "/snapimport.toml"
            try "[store]\npath = \"data\"\nblock_size = 65536\n".write(toFile: config, atomically: false, encoding: .utf8)
            var disk = [UInt8](repeating: 0, count: 2 << 20)
            disk[510] = 0x55
            disk[511] = 0xAA
            for i in 0..<100_000 { disk[300_000 + i] = UInt8(truncatingIfNeeded: i &* 13 &+ 1) }
            image = directory + "/disk.raw"
            try Data(disk).write(to: URL(fileURLWithPath: image))
        }

        func remove() { try? FileManager.default.removeItem(atPath: directory) }
    }

    static func binary() throws -> String {
        try #require(CLI.binary, "the snapimport executable is not built (swift build first)")
    }

    @Test("sharedWith and source: the owner and the operator read them; a grantee, a public viewer and anyone else get null")
    func visibilityMatrix() throws {
        let binary = try Self.binary()
        let place = try Place()
        defer { place.remove() }
        func cli(_ args: String...) throws -> CLI.Result { try CLI.run(binary, args, config: place.config) }
        let imported = try cli("import", place.image, "--project", "web@acme", "--json")
        try #require(imported.status == 0, "\(imported.stderr)")
        let id = try #require(imported.object["id"] as? String)
        #expect(try cli("snapshot", "share", id, "--with", "db@acme", "--project", "web@acme").status == 0)
        #expect(try cli("snapshot", "publish", id, "--confirm-bootable", "--project", "web@acme").status == 0)

        // (caller, sees the details)
        let callers: [(arguments: [String], details: Bool)] = [
            (["--project", "web@acme"], true),  // owner
            ([], true),  // operator
            (["--project", "db@acme"], false),  // grantee
            (["--project", "ops@globex"], false),  // public viewer
        ]
        for (arguments, details) in callers {
            let show = try CLI.run(binary, ["snapshot", "show", id, "--json"] + arguments, config: place.config)
            #expect(show.status == 0, "\(arguments): \(show.stderr)")
            #expect(Set(show.object.keys).isSuperset(of: ["sharedWith", "source", "failure"]), "fields always present")
            let list = try CLI.run(binary, ["snapshot", "list", "--json"] + arguments, config: place.config)
            let listed = try #require((list.json as? [[String: Any]])?.first { $0["id"] as? String == id })
            let human = try CLI.run(binary, ["snapshot", "list"] + arguments, config: place.config)
            let humanShow = try CLI.run(binary, ["snapshot", "show", id] + arguments, config: place.config)
            for document in [show.object, listed] {
                if details {
                    #expect(document["sharedWith"] as? [String] == ["db@acme"], "\(arguments)")
                    #expect((document["source"] as? [String: Any])?["kind"] as? String == "file", "\(arguments)")
                } else {
                    #expect(document["sharedWith"] is NSNull, "\(arguments): \(document)")
                    #expect(document["source"] is NSNull, "\(arguments): \(document)")
                }
            }
            #expect(human.stdout.contains("db@acme") == details, "\(arguments): \(human.stdout)")
            #expect(humanShow.stdout.contains(place.image) == details, "\(arguments): \(humanShow.stdout)")
        }
        // Once private again, a stranger sees nothing at all.
        #expect(try cli("snapshot", "unpublish", id, "--project", "web@acme").status == 0)
        #expect(try cli("snapshot", "show", id, "--project", "ops@globex", "--json").errorCode == "NotFound")
    }

    @Test("a relative [store] path belongs to the config file: two working directories find one store")
    func storeFollowsTheConfig() throws {
        let binary = try Self.binary()
        let place = try Place()
        defer { place.remove() }
        let elsewhere = place.directory + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let imported = try CLI.run(
            binary, ["import", place.image, "--project", "web@acme", "--json"], config: place.config,
            directory: place.directory)
        try #require(imported.status == 0, "\(imported.stderr)")
        let listed = try CLI.run(binary, ["snapshot", "list", "--json"], config: place.config, directory: elsewhere)
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect((listed.json as? [[String: Any]])?.map { $0["id"] as? String } == [imported.object["id"] as? String])
        #expect(FileManager.default.fileExists(atPath: place.directory + "/data/catalog.sqlite"))
        #expect(!FileManager.default.fileExists(atPath: elsewhere + "/data"), "no second store")
    }

    @Test("a command other than run/watch/import on a missing store fails with NotFound naming it and creates nothing")
    func missingStore() throws {
        let binary = try Self.binary()
        let place = try Place()
        defer { place.remove() }
        for arguments in [["snapshot", "list"], ["volume", "list"], ["imports", "list"], ["template", "list"]] {
            let result = try CLI.run(binary, arguments + ["--json"], config: place.config)
            #expect(result.status == 2, "\(arguments)")
            #expect(result.errorCode == "NotFound", "\(arguments): \(result.stdout)")
            #expect(result.stderr.contains(place.directory + "/data"), "the message names the path")
        }
        #expect(!FileManager.default.fileExists(atPath: place.directory + "/data"), "nothing was created")
    }

    @Test("template delete (owner or operator) frees its snapshots for deletion")
    func templateDelete() throws {
        let binary = try Self.binary()
        let place = try Place()
        defer { place.remove() }
        func cli(_ args: String...) throws -> CLI.Result { try CLI.run(binary, args, config: place.config) }
        let id = try #require(try cli("import", place.image, "--project", "db@acme", "--json").object["id"] as? String)
        let volume = try #require(
            try cli("volume", "create", "--snapshot", id, "--project", "db@acme", "--json").object["id"] as? String)
        let instance = try #require(try cli("instance", "create", "--project", "db@acme", "--json").object["id"] as? String)
        #expect(try cli("volume", "attach", volume, "--instance", instance, "--project", "db@acme").status == 0)
        let template = try cli("template", "create", "--instance", instance, "--project", "db@acme", "--json")
        let templateID = try #require(template.object["id"] as? String)
        let made = try #require((template.object["snapshots"] as? [String])?.first)
        #expect(try cli("snapshot", "delete", made, "--project", "db@acme", "--json").errorCode == "InUse")
        #expect(try cli("template", "delete", templateID, "--project", "web@acme", "--json").errorCode == "NotFound")
        let deleted = try cli("template", "delete", templateID, "--project", "db@acme", "--json")
        #expect(deleted.status == 0, "\(deleted.stderr)")
        #expect(deleted.object["deleted"] as? Bool == true)
        #expect((try cli("template", "list", "--json").json as? [Any])?.isEmpty == true)
        #expect(try cli("snapshot", "delete", made, "--project", "db@acme").status == 0)
    }

    @Test("SIGINT, SIGTERM and SIGHUP abort a manual import: no pending snapshot, exit 128 + signal", arguments: [
        SIGINT, SIGTERM, SIGHUP,
    ])
    func interrupted(signal: Int32) async throws {
        let binary = try Self.binary()
        let place = try Place()
        defer { place.remove() }
        // Big enough (random, 256 MiB) that the import is still writing when the signal comes.
        let big = place.directory + "/big.raw"
        _ = FileManager.default.createFile(atPath: big, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: big))
        let random = try #require(FileHandle(forReadingAtPath: "/dev/urandom"))
        for _ in 0..<16 { handle.write(random.readData(ofLength: 16 << 20)) }
        try handle.close()
        try random.close()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["import", big, "--project", "web@acme", "--json", "--config", place.config]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Wait until its pending snapshot exists (the import is under way), then interrupt it.
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(60)
        var pending = false
        while !pending, process.isRunning, clock.now < deadline {
            let list = try CLI.run(binary, ["snapshot", "list", "--json"], config: place.config)
            pending = (list.json as? [[String: Any]])?.contains { $0["state"] as? String == "pending" } == true
            if !pending { try await Task.sleep(for: .milliseconds(50)) }
        }
        try #require(pending, "the import never showed a pending snapshot (finished too fast?)")
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 128 + signal)
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(output.contains("\"Interrupted\""))
        let after = try CLI.run(binary, ["snapshot", "list", "--json"], config: place.config)
        #expect((after.json as? [Any])?.isEmpty == true, "nothing of the import remains: \(after.stdout)")
    }
}
