import Foundation
import ProcessTestSupport
import Testing

/// The console in a real browser: `snapimport serve` as a process (SQLite catalog, SeaweedFS for the
/// import), the access keys and snapshots made with the CLI, and Fixtures/console_e2e.py driving Debian's
/// Chromium through Playwright for Python as an owner, a grantee and a stranger. The screenshots of every page
/// are kept in the test's work folder (printed), under `screenshots/`.
@Suite("The console in headless Chromium", .serialized)
struct BrowserTests {
    @Test(
        "owner, grantee and stranger: groups, description, grant/revoke, shared access, volume, import, delete, CSRF",
        .enabled(if: Browser.missing == nil, "\(Browser.missing ?? "")"))
    func walkThrough() async throws {
        // The test's work folder (scripts/test's SNAPIMPORT_TEST_WORK, else the temporary directory); kept so that the
        // screenshots can be looked at.
        let root =
            ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_WORK"] ?? FileManager.default.temporaryDirectory.path
        let work = root + "/console-e2e-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: work + "/screenshots", withIntermediateDirectories: true)
        print("console e2e work folder: \(work)")
        let bucket = "console-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let made = try Browser.s3(["s3api", "create-bucket", "--bucket", bucket])
        try #require(made.status == 0, "\(made)")
        let config = work + "/snapimport.toml"
        try """
        [store]
        path = "\(work)/data"
        [s3]
        endpoint = "\(Browser.s3Endpoint!)"
        region = "us-east-1"
        bucket = "\(bucket)"
        """.write(toFile: config, atomically: false, encoding: .utf8)
        func cli(_ args: [String]) throws -> Browser.Result {
            let result = try Browser.run(
                Browser.binary!, args + ["--config", config], environment: Browser.s3Environment)
            try #require(result.status == 0, "snapimport \(args.joined(separator: " ")): \(result)")
            return result
        }
        func disk(_ name: String, seed: UInt64, bootable: Bool = false, size: Int = 256 << 10) throws -> String {
            var bytes = [UInt8](repeating: 0, count: size)
            var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
            for i in bytes.indices {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                bytes[i] = UInt8(truncatingIfNeeded: state)
            }
            bytes[510] = bootable ? 0x55 : 0
            bytes[511] = bootable ? 0xAA : 0
            let path = work + "/" + name
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            return path
        }
        func importDisk(_ project: String, _ description: String, seed: UInt64, bootable: Bool = false) throws
            -> String
        {
            let result = try cli([
                "import", try disk("d\(seed).raw", seed: seed, bootable: bootable), "--project", project,
                "--description", description, "--json",
            ])
            return try #require(result.object["id"] as? String, "\(result)")
        }

        let server = try ServeProcess(
            binary: Browser.binary!, config: config, directory: work, environment: Browser.s3Environment)
        do {
            try await server.waitUntilListening()
            var keys: [String: [String: String]] = [:]
            for who in ["alice@acme", "bob@acme", "carol@other"] {
                let key = try cli(["keys", "create", "--project", who, "--json"]).object
                keys[who] = [
                    "id": try #require(key["accessKeyId"] as? String),
                    "secret": try #require(key["secretAccessKey"] as? String),
                ]
            }
            let plain = try importDisk("alice@acme", "web <script>alert('x')</script>", seed: 1)
            let bootable = try importDisk("alice@acme", "bootable disk", seed: 2, bootable: true)
            let bobShared = try importDisk("bob@acme", "bob's shared disk", seed: 3)
            _ = try cli(["snapshot", "share", bobShared, "--with", "alice@acme", "--project", "bob@acme"])
            let carolPublic = try importDisk("carol@other", "carol's public disk", seed: 4)
            _ = try cli(["snapshot", "publish", carolPublic, "--project", "carol@other"])
            // A snapshot that is part of a template (deleting it is InUse).
            let base = try importDisk("alice@acme", "template base", seed: 5)
            let volume = try #require(
                try cli(["volume", "create", "--snapshot", base, "--project", "alice@acme", "--json"]).object["id"]
                    as? String)
            let instance = try #require(
                try cli(["instance", "create", "--project", "alice@acme", "--json"]).object["id"] as? String)
            _ = try cli(["volume", "attach", volume, "--instance", instance, "--project", "alice@acme"])
            let template = try cli(["template", "create", "--instance", instance, "--project", "alice@acme", "--json"])
            let inTemplate = try #require((template.object["snapshots"] as? [String])?.first, "\(template)")
            // What the console imports: a disk (1 MiB) and a text file (UnknownFormat).
            let put = try Browser.s3([
                "s3", "cp", try disk("upload.raw", seed: 6, size: 1 << 20), "s3://\(bucket)/disks/console.raw",
            ])
            try #require(put.status == 0, "\(put)")
            try String(repeating: "not a disk image\n", count: 400).write(
                toFile: work + "/notes.txt", atomically: false, encoding: .utf8)
            let putText = try Browser.s3(["s3", "cp", work + "/notes.txt", "s3://\(bucket)/disks/notes.txt"])
            try #require(putText.status == 0, "\(putText)")

            let scenario: [String: Any] = [
                "endpoint": server.endpoint, "chromium": Browser.chromium!, "screenshots": work + "/screenshots",
                "keys": keys,
                "snapshots": [
                    "plain": plain, "bootable": bootable, "bobShared": bobShared, "carolPublic": carolPublic,
                    "inTemplate": inTemplate,
                ],
                "importKey": "disks/console.raw", "badKey": "disks/notes.txt", "badCode": "UnknownFormat",
            ]
            let scenarioPath = work + "/scenario.json"
            try JSONSerialization.data(withJSONObject: scenario).write(to: URL(fileURLWithPath: scenarioPath))
            let walk = try Browser.run(Browser.python!, [Browser.fixture, scenarioPath])
            #expect(walk.status == 0, "\(walk)\nserve log tail: \(server.log.suffix(3000))")
            let shots = (try? FileManager.default.contentsOfDirectory(atPath: work + "/screenshots")) ?? []
            #expect(shots.filter { $0.hasSuffix(".png") }.count >= 20, "screenshots: \(shots.sorted())")
            // The console's own log lines, and never a secret.
            let log = server.log
            #expect(log.contains("console sign-in"), "sign-ins are logged")
            #expect(log.contains("console action"), "actions are logged")
            #expect(log.contains("CSRF token"), "a refused CSRF request is logged")
            for key in keys.values { #expect(!log.contains(key["secret"]!), "the log never holds a secret") }
        } catch {
            _ = await server.terminate()
            throw error
        }
        #expect(await server.terminate() == 0)
    }
}
