import Foundation
import ProcessTestSupport
import SnapImportCLI
import Testing

/// `snapimport keys create|list|delete` (issue 15, "Identity"): exit statuses in-process through
/// `SnapImport.execute`, and what is printed through the built binary (stdout cannot be told apart
/// in-process while other suites print).
@Suite("snapimport keys")
struct KeysCommandTests {
    typealias CLI = CommandLineTests

    /// A place with a store (made by a local import: only run, watch, import and serve create one).
    static func placeWithStore() async throws -> (directory: String, config: String) {
        let (directory, config) = try InProcessTests.place()
        let image = directory + "/d.raw"
        try Data((0..<(64 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }).write(
            to: URL(fileURLWithPath: image))
        let status = await SnapImport.execute(["import", image, "--project", "web@acme", "--config", config])
        try #require(status == 0)
        return (directory, config)
    }

    @Test(
        "exit statuses: 0 for create, list and delete; 2 for usage, a bad project or a malformed ID; 1 for an unknown key"
    )
    func statuses() async throws {
        let (directory, config) = try await Self.placeWithStore()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func run(_ arguments: String...) async -> Int32 { await SnapImport.execute(arguments + ["--config", config]) }
        #expect(await SnapImport.execute(["keys", "--help"]) == 0)
        #expect(await run("keys", "create", "--project", "web@acme") == 0)
        #expect(await run("keys", "create", "--operator", "--json") == 0)
        #expect(await run("keys", "list") == 0)
        #expect(await run("keys", "list", "--json") == 0)
        #expect(await run("keys", "create") == 2, "neither --project nor --operator")
        #expect(await run("keys", "create", "--project", "web@acme", "--operator") == 2, "both")
        #expect(await run("keys", "create", "--project", "Web@Acme") == 2, "InvalidProject")
        #expect(await run("keys", "create", "--project", "nobody") == 2, "InvalidProject")
        #expect(await run("keys", "delete", "not-a-key") == 2, "malformed ID")
        #expect(await run("keys", "delete", "AKIAAAAAAAAAAAAAAAAA") == 1, "NotFound")
        #expect(await run("keys", "delete") == 2, "missing argument")
    }

    @Test("on a missing store every keys command is NotFound (2) and creates nothing")
    func missingStore() async throws {
        let (directory, config) = try InProcessTests.place()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(await SnapImport.execute(["keys", "create", "--operator", "--config", config]) == 2)
        #expect(await SnapImport.execute(["keys", "list", "--config", config]) == 2)
        #expect(!FileManager.default.fileExists(atPath: directory + "/data"))
    }

    @Test(
        "create prints the ID and the secret once; list shows ID, principal and time but never a secret; delete removes"
    )
    func output() async throws {
        let binary = try #require(CLI.binary, "the snapimport executable is not built (swift build first)")
        let (directory, config) = try await Self.placeWithStore()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func cli(_ args: String...) throws -> CLI.Result { try CLI.run(binary, args, config: config) }

        let project = try cli("keys", "create", "--project", "web@acme", "--json")
        try #require(project.status == 0, "\(project.stderr)")
        let projectID = try #require(project.object["accessKeyId"] as? String)
        let projectSecret = try #require(project.object["secretAccessKey"] as? String)
        #expect(project.object["project"] as? String == "web@acme")
        #expect(project.object["operator"] == nil)
        #expect(projectID.count == 20 && projectID.hasPrefix("AKIA") && projectSecret.count == 40)

        let operatorKey = try cli("keys", "create", "--operator", "--json")
        try #require(operatorKey.status == 0, "\(operatorKey.stderr)")
        let operatorID = try #require(operatorKey.object["accessKeyId"] as? String)
        let operatorSecret = try #require(operatorKey.object["secretAccessKey"] as? String)
        #expect(operatorKey.object["operator"] as? Bool == true)
        #expect(operatorKey.object["project"] == nil)

        let human = try cli("keys", "create", "--project", "db@acme")
        try #require(human.status == 0, "\(human.stderr)")
        let lines = human.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 3, "\(human.stdout)")
        let humanID = try #require(lines.first { $0.hasPrefix("Access key ID:") }).split(separator: " ").last.map(
            String.init)
        let humanSecret = try #require(lines.first { $0.hasPrefix("Secret access key:") }).split(separator: " ").last
            .map(String.init)
        #expect(humanID?.count == 20 && humanSecret?.count == 40)
        #expect(human.stdout.contains("AWS_ACCESS_KEY_ID") && human.stdout.contains("aws configure"))
        #expect(!human.stderr.contains(humanSecret ?? "-"), "the secret goes to stdout only")
        let secrets = [projectSecret, operatorSecret, humanSecret ?? ""]

        let list = try cli("keys", "list", "--json")
        #expect(list.status == 0)
        let listed = try #require(list.json as? [[String: Any]])
        #expect(listed.compactMap { $0["accessKeyId"] as? String } == [projectID, operatorID, humanID ?? ""])
        #expect(listed.allSatisfy { $0["secretAccessKey"] == nil && $0["createdAt"] is String })
        #expect(listed.first?["project"] as? String == "web@acme" && listed[1]["operator"] as? Bool == true)
        let humanList = try cli("keys", "list", "--verbose")
        #expect(humanList.status == 0)
        #expect(humanList.stdout.split(separator: "\n").count == 3)
        #expect(humanList.stdout.contains("\(operatorID)  operator"))
        #expect(humanList.stdout.contains("\(projectID)  web@acme"))
        for secret in secrets {
            for text in [list.stdout, list.stderr, humanList.stdout, humanList.stderr, project.stderr] {
                #expect(!text.contains(secret), "a secret was printed again")
            }
        }

        let deleted = try cli("keys", "delete", projectID, "--json")
        #expect(deleted.status == 0 && deleted.object["deleted"] as? Bool == true)
        let after = try cli("keys", "list", "--json")
        #expect(
            (after.json as? [[String: Any]])?.compactMap { $0["accessKeyId"] as? String } == [
                operatorID, humanID ?? "",
            ])
        let again = try cli("keys", "delete", projectID, "--json")
        #expect(again.status == 1 && again.errorCode == "NotFound")
        let usage = try cli("keys", "create", "--json")
        #expect(usage.status == 2 && usage.errorCode == "Usage")
        let invalid = try cli("keys", "create", "--project", "x", "--json")
        #expect(invalid.status == 2 && invalid.errorCode == "InvalidProject")

        // The catalog holding the secrets is readable by its owner only.
        let mode = try FileManager.default.attributesOfItem(atPath: directory + "/data/catalog.sqlite")[
            .posixPermissions]
        #expect((mode as? NSNumber)?.intValue == 0o600)
    }
}
