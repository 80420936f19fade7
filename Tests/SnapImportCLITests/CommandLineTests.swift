import Foundation
import ProcessTestSupport
import Synchronization
import Testing

/// The snapshot, volume, instance and template commands as a script calls them (architecture.md,
/// "Command-line contract"): JSON fields, error documents and exit statuses.
@Suite("snapimport snapshot/volume/instance/template commands")
struct CommandLineTests {
    typealias Result = ProcessOutput

    /// The built executable, or nil (the test then records why it cannot run).
    static let binary = ChildProcess.snapimportBinary

    static func run(_ binary: String, _ args: [String], config: String, directory: String? = nil) throws -> Result {
        let environment = ChildProcess.environment(
            removing: ["SNAPIMPORT_CATALOG", "SNAPIMPORT_STORE", "SNAPIMPORT_BLOCKS"], adding: ["SNAPIMPORT_CONFIG": config])
        return try ChildProcess.run(binary, args, environment: environment, directory: directory)
    }

    @Test("8 processes at once on one SQLite catalog: every command succeeds, every ID is distinct")
    func parallelProcesses() throws {
        guard let binary = Self.binary else {
            Issue.record("the snapimport executable is not built (swift build first)")
            return
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/snapimport.toml"
        try "[store]\npath = \"\(directory)/data\"\n".write(toFile: config, atomically: false, encoding: .utf8)
        // Only run, watch and import create a store: make it with an import first.
        let image = directory + "/one.raw"
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: image))
        let created = try Self.run(binary, ["import", image, "--project", "p@acme"], config: config)
        try #require(created.status == 0, "\(created.stderr)")
        let results = Mutex([Result?](repeating: nil, count: 8))
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let result = try? Self.run(binary, ["instance", "create", "--project", "p\(i)@acme", "--json"], config: config)
            results.withLock { $0[i] = result }
        }
        let all = results.withLock { $0 }
        #expect(all.allSatisfy { $0?.status == 0 }, "\(all.compactMap { $0?.stderr })")
        #expect(Set(all.compactMap { $0?.object["id"] as? String }).count == 8)
        let listed = try Self.run(binary, ["instance", "list", "--json"], config: config)
        #expect((listed.json as? [Any])?.count == 8)
    }

    @Test("a whole life through the CLI: import, show, share, publish, volume, instance, template, delete")
    func life() throws {
        guard let binary = Self.binary else {
            Issue.record("the snapimport executable is not built (swift build first)")
            return
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/snapimport.toml"
        try "[store]\npath = \"\(directory)/data\"\nblock_size = 65536\n".write(
            toFile: config, atomically: false, encoding: .utf8)
        // A 4 MiB raw disk with an MBR boot signature and some data.
        var disk = [UInt8](repeating: 0, count: 4 << 20)
        disk[510] = 0x55
        disk[511] = 0xAA
        for i in 0..<200_000 { disk[1_000_000 + i] = UInt8(truncatingIfNeeded: i * 31 + 7) }
        let image = directory + "/disk.raw"
        try Data(disk).write(to: URL(fileURLWithPath: image))
        func cli(_ args: String...) throws -> Result { try Self.run(binary, args, config: config) }

        let imported = try cli("import", image, "--project", "web@acme", "--format", "raw", "--json")
        try #require(imported.status == 0, "\(imported.stderr)")
        let id = try #require(imported.object["id"] as? String)

        let show = try cli("snapshot", "show", id, "--project", "web@acme", "--json")
        #expect(show.status == 0)
        #expect(
            Set(show.object.keys) == [
                "id", "project", "description", "state", "visibility", "sharedWith", "virtualSize", "storedBytes",
                "format", "bootable", "source", "checksum", "createdAt", "failure",
            ])
        #expect(show.object["state"] as? String == "available")
        #expect(show.object["virtualSize"] as? Int == 4 << 20)
        #expect(show.object["bootable"] as? Bool == true)
        #expect((show.object["source"] as? [String: String])?["kind"] == "file")

        // Isolation: a stranger sees nothing, and the error says NotFound on stdout (JSON) with exit 1.
        let hidden = try cli("snapshot", "show", id, "--project", "evil@initech", "--json")
        #expect(hidden.status == 1)
        #expect(hidden.errorCode == "NotFound")
        #expect(hidden.stderr.contains("NotFound"))
        #expect((try cli("snapshot", "list", "--project", "evil@initech", "--json").json as? [Any])?.isEmpty == true)

        // Bad usage exits 2.
        #expect(try cli("snapshot", "show", "snap-XYZ", "--json").errorCode == "InvalidArgument")
        #expect(try cli("snapshot", "show", "snap-XYZ").status == 2)
        #expect(try cli("snapshot", "list", "--project", "Web@Acme").status == 2)
        let selfShare = try cli("snapshot", "share", id, "--with", "web@acme", "--project", "web@acme", "--json")
        #expect(selfShare.errorCode == "InvalidArgument")

        // Sharing and publishing (bootable: needs the flag, exit 1 naming it).
        #expect(try cli("snapshot", "share", id, "--with", "db@acme", "--project", "web@acme").status == 0)
        let granted = try cli("snapshot", "list", "--project", "db@acme", "--json")
        #expect((granted.json as? [[String: Any]])?.first?["id"] as? String == id)
        #expect((granted.json as? [[String: Any]])?.first?["sharedWith"] is NSNull, "grants are the owner's")
        let denied = try cli("snapshot", "set-description", id, "mine", "--project", "db@acme", "--json")
        #expect(denied.status == 1)
        #expect(denied.errorCode == "AccessDenied")
        let unconfirmed = try cli("snapshot", "publish", id, "--project", "web@acme")
        #expect(unconfirmed.status == 1)
        #expect(unconfirmed.stderr.contains("--confirm-bootable"))
        #expect(try cli("snapshot", "publish", id, "--confirm-bootable", "--project", "web@acme").status == 0)
        #expect(try cli("snapshot", "show", id, "--project", "ops@globex").status == 0)
        #expect(try cli("snapshot", "unpublish", id, "--project", "web@acme").status == 0)
        #expect(try cli("snapshot", "show", id, "--project", "ops@globex").status == 1)

        // A volume from it (granted project), byte-identical; an instance; a template; InUse on delete.
        let output = directory + "/volume.raw"
        let volume = try cli("volume", "create", "--snapshot", id, "--output", output, "--project", "db@acme", "--json")
        try #require(volume.status == 0, "\(volume.stderr)")
        let volumeID = try #require(volume.object["id"] as? String)
        #expect(volumeID.hasPrefix("vol-"))
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: output))) == disk)
        let instance = try cli("instance", "create", "--project", "db@acme", "--json")
        let instanceID = try #require(instance.object["id"] as? String)
        #expect(instanceID.hasPrefix("i-"))
        #expect(try cli("volume", "attach", volumeID, "--instance", instanceID, "--project", "db@acme").status == 0)
        #expect(try cli("instance", "start", instanceID, "--project", "db@acme").status == 0)
        let running = try cli("snapshot", "create", "--volume", volumeID, "--project", "db@acme", "--json")
        #expect(running.errorCode == "InvalidState")
        #expect(try cli("template", "create", "--instance", instanceID, "--project", "db@acme").status == 1)
        #expect(try cli("instance", "stop", instanceID, "--project", "db@acme").status == 0)
        let template = try cli("template", "create", "--instance", instanceID, "--project", "db@acme", "--json")
        try #require(template.status == 0, "\(template.stderr)")
        #expect((template.object["id"] as? String)?.hasPrefix("tmpl-") == true)
        let made = try #require(template.object["snapshots"] as? [String])
        #expect(made.count == 1)
        let inUse = try cli("snapshot", "delete", made[0], "--project", "db@acme", "--json")
        #expect(inUse.status == 1)
        #expect(inUse.errorCode == "InUse")
        let copy = try cli("snapshot", "show", made[0], "--project", "db@acme", "--json")
        #expect(copy.object["checksum"] as? String == show.object["checksum"] as? String)

        // The owner deletes the original while the volume exists.
        #expect(try cli("snapshot", "delete", id, "--project", "db@acme").status == 1)
        #expect(try cli("snapshot", "delete", id, "--project", "web@acme").status == 0)
        #expect(try cli("snapshot", "show", id, "--json").errorCode == "NotFound")
        #expect(try cli("volume", "delete", volumeID, "--project", "db@acme", "--json").errorCode == "InUse")
        #expect(try cli("volume", "detach", volumeID, "--project", "db@acme").status == 0)
        #expect(try cli("volume", "delete", volumeID, "--project", "db@acme").status == 0)
    }
}
