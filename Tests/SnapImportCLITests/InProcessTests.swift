import Foundation
import SnapImportCLI
import Testing

/// The command line called as a library (no process): exit statuses of the contract — 0 success, 1 the
/// work failed, 2 bad usage or configuration — come back from `SnapImport.execute` without anything
/// ending the test process.
@Suite("snapimport through the library")
struct InProcessTests {
    /// A folder with a config naming a store that does not exist yet.
    static func place() throws -> (directory: String, config: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lib-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = directory + "/snapimport.toml"
        try "[store]\npath = \"data\"\n".write(toFile: config, atomically: false, encoding: .utf8)
        return (directory, config)
    }

    @Test("help is success; an unknown command or flag is usage (2)")
    func usage() async {
        #expect(await SnapImport.execute(["--help"]) == 0)
        #expect(await SnapImport.execute(["snapshot", "--help"]) == 0)
        #expect(await SnapImport.execute(["no-such-command"]) == 2)
        #expect(await SnapImport.execute(["snapshot", "list", "--no-such-flag"]) == 2)
        #expect(await SnapImport.execute(["import", "disk.raw"]) == 2, "a local file needs --project")
    }

    @Test("a configuration that is missing or malformed is exit 2")
    func configuration() async throws {
        let (directory, config) = try Self.place()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(await SnapImport.execute(["snapshot", "list", "--config", directory + "/absent.toml"]) == 2)
        let bad = directory + "/bad.toml"
        try "[store]\nno_such_key = 1\n".write(toFile: bad, atomically: false, encoding: .utf8)
        #expect(await SnapImport.execute(["snapshot", "list", "--config", bad]) == 2)
        #expect(await SnapImport.execute(["snapshot", "list", "--config", config]) == 2, "missing store: NotFound")
        #expect(!FileManager.default.fileExists(atPath: directory + "/data"))
    }

    @Test("a local import makes the store; then a stranger's show is NotFound (1) and a malformed ID is usage (2)")
    func importThenShow() async throws {
        let (directory, config) = try Self.place()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let image = directory + "/d.raw"
        // Binary content (a disk), not text: a text file is not a disk image.
        try Data((0..<(64 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }).write(
            to: URL(fileURLWithPath: image))
        #expect(await SnapImport.execute(["import", image, "--project", "web@acme", "--config", config]) == 0)
        #expect(await SnapImport.execute(["snapshot", "list", "--config", config]) == 0)
        #expect(await SnapImport.execute(["snapshot", "show", "snap-0000abcd", "--config", config]) == 1)
        #expect(await SnapImport.execute(["snapshot", "show", "snap-XYZ", "--config", config]) == 2)
    }
}
