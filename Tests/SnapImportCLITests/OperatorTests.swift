import ArgumentParser
import BuildInfo
import Foundation
import ProcessTestSupport
import Importer
import Logging
import Observability
@testable import SnapImportCLI
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 14's operator contract through the CLI library (`SnapImport.execute`, stdout and stderr captured
/// around the call): `--version`, usage errors as JSON, `--config` before the subcommand, human `import`
/// text, readable listings and their filters, `inspect` of a rejected image, `convert --output -`, plain
/// error messages, JSON log lines. The S3 items (a failed `s3 get`, orphan sidecars, refused credentials)
/// need SeaweedFS and are skipped with a reason without it.
///
/// Serialized: the capture redirects the process's file descriptors 1 and 2.
@Suite("snapimport operator experience (issue 14)", .serialized)
struct OperatorTests {
    struct Captured {
        var status: Int32
        var stdout: Data
        var stderr: String
        var text: String { String(decoding: stdout, as: UTF8.self) }
        var json: Any? { try? JSONSerialization.jsonObject(with: stdout) }
        var object: [String: Any] { json as? [String: Any] ?? [:] }
        var errorCode: String? { (object["error"] as? [String: Any])?["code"] as? String }
        /// The stderr lines that look like JSON objects (the test runner may write its own lines to stderr).
        var jsonLogLines: [String] { stderr.split(separator: "\n").map(String.init).filter { $0.hasPrefix("{") } }
    }

    /// Runs the command line in-process with stdout and stderr redirected into files.
    static func execute(_ arguments: [String]) async throws -> Captured {
        let base = FileManager.default.temporaryDirectory.path + "/capture-\(UUID().uuidString)"
        let outFD = open(base + ".out", O_CREAT | O_TRUNC | O_RDWR, 0o600)
        let errFD = open(base + ".err", O_CREAT | O_TRUNC | O_RDWR, 0o600)
        try #require(outFD >= 0 && errFD >= 0)
        defer {
            unlink(base + ".out")
            unlink(base + ".err")
        }
        fflush(nil)
        let (savedOut, savedErr) = (dup(1), dup(2))
        dup2(outFD, 1)
        dup2(errFD, 2)
        let status = await SnapImport.execute(arguments)
        fflush(nil)
        dup2(savedOut, 1)
        dup2(savedErr, 2)
        for fd in [savedOut, savedErr, outFD, errFD] { close(fd) }
        return Captured(
            status: status, stdout: try Data(contentsOf: URL(fileURLWithPath: base + ".out")),
            stderr: try String(contentsOfFile: base + ".err", encoding: .utf8))
    }

    /// A folder with a config (`[store] path = "data"`, `extra` appended) and a 64 KiB raw disk.
    struct Place {
        let directory: String
        let config: String
        let image: String

        init(_ extra: String = "") throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("ops-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            config = directory + "/snapimport.toml"
            try "[store]\npath = \"data\"\n\(extra)".write(toFile: config, atomically: false, encoding: .utf8)
            image = directory + "/disk.raw"
            try Data((0..<(64 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }).write(
                to: URL(fileURLWithPath: image))
        }

        func remove() { try? FileManager.default.removeItem(atPath: directory) }
    }

    static func git(_ arguments: [String]) -> String? {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path
        guard let result = try? ChildProcess.run("/usr/bin/env", ["git"] + arguments, directory: directory),
            result.status == 0
        else { return nil }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: - Version, usage, global options

    @Test("--version prints snapimport X.Y.Z and the commit of this checkout")
    func version() async throws {
        let result = try await Self.execute(["--version"])
        #expect(result.status == 0)
        let line = result.text.trimmingCharacters(in: .newlines)
        #expect(line == BuildInfo.versionLine)
        #expect(line.wholeMatch(of: /snapimport \d+\.\d+\.\d+( \(commit [0-9a-f]{12}(-dirty)?\))?/) != nil, "\(line)")
        // From a git checkout, the build names a commit of it (HEAD when it was built); from a source archive
        // (or without git) it names none.
        guard Self.git(["rev-parse", "HEAD"]) != nil else {
            #expect(BuildInfo.commit == nil, "not a git checkout, yet the build names a commit")
            return
        }
        let commit = try #require(BuildInfo.commit, "a build from a checkout records its commit")
        let bare = commit.hasSuffix("-dirty") ? String(commit.dropLast("-dirty".count)) : commit
        #expect(Self.git(["cat-file", "-e", bare + "^{commit}"]) != nil, "\(commit) is a commit of this repository")
    }

    @Test("the committed man page (scripts/install's fallback) names every subcommand")
    func manualIsCurrent() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let page = try String(contentsOf: root.appendingPathComponent("docs/man/snapimport.1"), encoding: .utf8)
        #expect(page.contains(".Dt SNAPIMPORT 1"))
        for command in SnapImport.configuration.subcommands {
            let name = command._commandName
            #expect(page.contains(".It Em \(name)\n"), "\(name) is missing: run scripts/gen-manual")
        }
        #expect(page.contains(".It Fl -log-format Ar log-format"), "the global options are in the page")
    }

    @Test("usage errors honour --json: {\"error\":{\"code\":\"Usage\"}} on stdout, exit 2")
    func usageAsJSON() async throws {
        for arguments in [
            ["snapshot", "list", "--no-such-flag", "--json"], ["--json", "snapshot", "list", "--no-such-flag"],
            ["snapshot", "list", "--state", "bogus", "--json"], ["watch", "--metrics", "nowhere", "--json"],
            ["import", "disk.raw", "--json"],
        ] {
            let result = try await Self.execute(arguments)
            #expect(result.status == 2, "\(arguments)")
            #expect(result.errorCode == "Usage", "\(arguments): \(result.text)")
            let message = (result.object["error"] as? [String: Any])?["message"] as? String
            #expect(message?.isEmpty == false, "\(arguments)")
            #expect(result.stderr.contains("Error:") || result.stderr.contains("error:"), "\(arguments)")
        }
        // Without --json stdout stays empty.
        let plain = try await Self.execute(["snapshot", "list", "--no-such-flag"])
        #expect(plain.status == 2)
        #expect(plain.stdout.isEmpty)
    }

    @Test("global options before the subcommand: --config, --json, --log-format")
    func optionsBeforeSubcommand() async throws {
        let place = try Place()
        defer { place.remove() }
        #expect(
            try await Self.execute(["import", place.image, "--project", "web@acme", "--config", place.config]).status
                == 0)
        let listed = try await Self.execute(["--config", place.config, "--json", "snapshot", "list"])
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect((listed.json as? [[String: Any]])?.count == 1)
        let equals = try await Self.execute(["--config=\(place.config)", "--log-format", "json", "volume", "list"])
        #expect(equals.status == 0, "\(equals.stderr)")
        #expect(
            GlobalOptions.movingLeadingOptions(["--config", "c", "s3", "ls", "s3://b/", "--", "-x"])
                == ["s3", "ls", "s3://b/", "--config", "c", "--", "-x"])
        #expect(GlobalOptions.movingLeadingOptions(["--json", "nonsense"]) == ["--json", "nonsense"])
    }

    @Test("an unknown command is reported as one, with --json before it too; the root help lists the global options")
    func unknownCommandAndRootHelp() async throws {
        for arguments in [["--json", "no-such"], ["no-such", "--json"], ["--config", "x.toml", "--json", "no-such"]] {
            let result = try await Self.execute(arguments)
            #expect(result.status == 2, "\(arguments)")
            #expect(result.errorCode == "Usage", "\(arguments): \(result.text)")
            let message = (result.object["error"] as? [String: Any])?["message"] as? String ?? ""
            #expect(message.contains("Unknown command 'no-such'"), "\(arguments): \(message)")
            #expect(message.contains("snapshot"), "the message lists the commands: \(message)")
        }
        let plain = try await Self.execute(["lst"])
        #expect(plain.status == 2)
        #expect(plain.stdout.isEmpty)
        #expect(plain.stderr.contains("Unknown command 'lst'"), "\(plain.stderr)")
        // Options, `help` and real subcommands are not taken for unknown commands.
        #expect(GlobalOptions.unknownCommand(["--json", "snapshot", "list"]) == nil)
        #expect(GlobalOptions.unknownCommand(["help", "run"]) == nil)
        #expect(GlobalOptions.unknownCommand(["--version"]) == nil)

        let help = try await Self.execute(["--help"])
        #expect(help.status == 0)
        // Every global option, as the subcommands' own help names it, is in the root help.
        let names = GlobalOptions.helpMessage().matches(of: /--[a-z][a-z-]*/).map { String($0.output) }
        #expect(Set(names).isSuperset(of: ["--config", "--json", "--verbose", "--log-format"]), "\(names)")
        for name in Set(names) where name != "--help" {
            #expect(help.text.contains(name), "root help lacks \(name)")
        }
    }

    // MARK: - Human output and listings

    @Test("import without --json prints human text; with --json the snapshot document")
    func importText() async throws {
        let place = try Place()
        defer { place.remove() }
        let human = try await Self.execute(["import", place.image, "--project", "web@acme", "--config", place.config])
        #expect(human.status == 0, "\(human.stderr)")
        #expect(human.json == nil, "not JSON: \(human.text)")
        #expect(human.text.wholeMatch(of: /imported snap-[0-9a-f]{8}\n[\s\S]*/) != nil, "\(human.text)")
        #expect(human.text.contains("virtual size: 64.0 KiB (65536 bytes)"), "\(human.text)")
        #expect(human.text.contains("project:      web@acme"))
        #expect(human.text.contains("source:       \(place.image)"))
        let json = try await Self.execute([
            "import", place.image, "--project", "web@acme", "--json", "--config", place.config,
        ])
        #expect(json.status == 0)
        #expect(json.object["virtualSize"] as? Int == 65536)
        #expect((json.object["id"] as? String)?.hasPrefix("snap-") == true)
    }

    @Test(
        "snapshot list and volume list: a header, aligned columns, qemu-img sizes, creation time, filters; bytes in --json"
    )
    func listings() async throws {
        let place = try Place()
        defer { place.remove() }
        func cli(_ arguments: String...) async throws -> Captured {
            try await Self.execute(arguments + ["--config", place.config])
        }
        let first = try await cli(
            "import", place.image, "--project", "web@acme", "--description", "first disk", "--json")
        let id = try #require(first.object["id"] as? String)
        let second = try await cli("import", place.image, "--project", "db@acme", "--json")
        let other = try #require(second.object["id"] as? String)
        #expect(try await cli("snapshot", "share", id, "--with", "db@acme", "--project", "web@acme").status == 0)
        #expect(try await cli("snapshot", "publish", other, "--project", "db@acme").status == 0)

        let table = try await cli("snapshot", "list")
        #expect(table.status == 0)
        let lines = table.text.split(separator: "\n")
        try #require(lines.count == 3, "\(table.text)")
        #expect(lines[0].hasPrefix("ID "))
        for title in ["PROJECT", "STATE", "VISIBILITY", "SIZE", "FORMAT", "CREATED", "SHARED WITH", "DESCRIPTION"] {
            #expect(lines[0].contains(title), "\(title)")
        }
        // Aligned: every row has its project where the header has PROJECT, its state under STATE.
        let projectColumn = try #require(lines[0].range(of: "PROJECT")).lowerBound.utf16Offset(in: lines[0])
        let createdColumn = try #require(lines[0].range(of: "CREATED")).lowerBound.utf16Offset(in: lines[0])
        let sizeEnd = try #require(lines[0].range(of: "SIZE")).upperBound.utf16Offset(in: lines[0])
        for row in lines.dropFirst() {
            let project = row.dropFirst(projectColumn).prefix(8)
            #expect(project.hasPrefix("web@acme") || project.hasPrefix("db@acme"), "\(row)")
            #expect(String(row.dropFirst(createdColumn).prefix(11)).wholeMatch(of: /\d{4}-\d\d-\d\dT/) != nil, "\(row)")
            #expect(String(row.prefix(sizeEnd)).hasSuffix("64.0 KiB (65536 bytes)"), "size right-aligned: \(row)")
        }
        #expect(table.text.contains("first disk"))
        #expect(table.text.contains("db@acme"), "the grant, shown to the operator")

        // Filters.
        func ids(_ result: Captured) -> [String] {
            (result.json as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
        }
        #expect(ids(try await cli("snapshot", "list", "--public", "--json")) == [other])
        #expect(ids(try await cli("snapshot", "list", "--shared", "--json")) == [id])
        #expect(ids(try await cli("snapshot", "list", "--owner", "web@acme", "--json")) == [id])
        #expect(Set(ids(try await cli("snapshot", "list", "--state", "available", "--json"))) == [id, other])
        #expect(ids(try await cli("snapshot", "list", "--state", "error", "--json")).isEmpty)
        // As db@acme: its own public one and web's, granted to it; --shared keeps the grant only.
        #expect(ids(try await cli("snapshot", "list", "--project", "db@acme", "--shared", "--json")) == [id])
        let bytes = try await cli("snapshot", "list", "--json")
        #expect((bytes.json as? [[String: Any]])?.allSatisfy { $0["virtualSize"] as? Int == 65536 } == true)
        #expect(try await cli("snapshot", "list", "--owner", "Bad Project").status == 2)

        // Volumes.
        let volume = try await cli("volume", "create", "--snapshot", id, "--json")
        let volumeID = try #require(volume.object["id"] as? String)
        let volumes = try await cli("volume", "list")
        let volumeLines = volumes.text.split(separator: "\n")
        try #require(volumeLines.count == 2, "\(volumes.text)")
        for title in ["ID", "PROJECT", "STATE", "SIZE", "SNAPSHOT", "ATTACHED TO", "CREATED", "PATH"] {
            #expect(volumeLines[0].contains(title), "\(title)")
        }
        #expect(volumeLines[1].hasPrefix(volumeID))
        #expect(volumeLines[1].contains("available"))
        #expect(volumeLines[1].contains("64.0 KiB (65536 bytes)"))
        #expect(try await cli("volume", "list", "--state", "in-use", "--json").json as? [Any] != nil)
        #expect((try await cli("volume", "list", "--state", "in-use", "--json").json as? [Any])?.isEmpty == true)
        #expect((try await cli("volume", "list", "--state", "available", "--json").json as? [Any])?.count == 1)
        #expect((try await cli("volume", "list", "--snapshot", other, "--json").json as? [Any])?.isEmpty == true)
        #expect((try await cli("volume", "list", "--json").json as? [[String: Any]])?.first?["size"] as? Int == 65536)
        #expect(try await cli("volume", "list", "--state", "attached").status == 2)
    }

    @Test("sizes are written the way qemu-img writes them")
    func sizes() {
        #expect(ByteCount.human(1_073_741_824) == "1.0 GiB (1073741824 bytes)")
        #expect(ByteCount.human(512) == "512 bytes")
        #expect(ByteCount.human(1536) == "1.5 KiB (1536 bytes)")
        #expect(ByteCount.human(16 << 40) == "16.0 TiB (17592186044416 bytes)")
        #expect(ByteCount.human((1 << 20) - 1) == "1024.0 KiB (1048575 bytes)")
    }

    // MARK: - inspect, convert, errors in words

    @Test("inspect of an image rejected for its size still shows the size (text and --json), exit 1")
    func inspectRejected() async throws {
        let place = try Place("[limits]\nmax_virtual_size = \"32KiB\"\n")
        defer { place.remove() }
        let json = try await Self.execute(["inspect", place.image, "--json", "--config", place.config])
        #expect(json.status == 1)
        #expect(json.object["verdict"] as? String == "rejected")
        #expect(json.object["virtualSize"] as? Int == 65536)
        #expect((json.object["reasons"] as? [[String: Any]])?.first?["code"] as? String == "VirtualSizeTooLarge")
        let text = try await Self.execute(["inspect", place.image, "--config", place.config])
        #expect(text.status == 1)
        #expect(text.text.contains("virtual size:   64.0 KiB (65536 bytes)"), "\(text.text)")
        #expect(text.text.contains("image size:     64.0 KiB (65536 bytes)"))
        #expect(text.stderr.contains("VirtualSizeTooLarge"))
        // A qcow2 from qemu-img declaring 1 GiB: its header's size, though refused.
        guard let qemu = ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_QEMU_IMG"], !qemu.isEmpty else { return }
        let qcow2 = place.directory + "/big.qcow2"
        try ChildProcess.run(qemu, ["create", "-q", "-f", "qcow2", qcow2, "1G"])
        let big = try await Self.execute(["inspect", qcow2, "--json", "--config", place.config])
        #expect(big.status == 1)
        #expect(big.object["format"] as? String == "qcow2")
        #expect(big.object["virtualSize"] as? Int == 1 << 30)
    }

    @Test("convert --output - writes the raw disk to stdout, the summary to stderr")
    func convertToStdout() async throws {
        let place = try Place()
        defer { place.remove() }
        let raw = try await Self.execute(["convert", place.image, "--output", "-", "--config", place.config])
        #expect(raw.status == 0, "\(raw.stderr)")
        #expect(raw.stdout == (try Data(contentsOf: URL(fileURLWithPath: place.image))))
        #expect(raw.stderr.contains("raw → raw stdout: 64.0 KiB (65536 bytes) virtual"))
        let json = try await Self.execute(["convert", place.image, "--output", "-", "--json", "--config", place.config])
        #expect(json.stdout.count == 65536, "stdout holds only the disk")
        #expect(json.stderr.contains("\"virtualSize\":65536"))
        // A sparse qcow2 (qemu-img): the stream equals qemu-img's raw conversion, zeros included.
        guard let qemu = ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_QEMU_IMG"], !qemu.isEmpty else { return }
        let qcow2 = place.directory + "/d.qcow2"
        let reference = place.directory + "/reference.raw"
        for arguments in [
            ["create", "-q", "-f", "qcow2", qcow2, "8M"],
            ["convert", "-q", "-n", "-O", "qcow2", place.image, qcow2],
            ["convert", "-q", "-O", "raw", qcow2, reference],
        ] {
            let made = try ChildProcess.run(qemu, arguments)
            try #require(made.status == 0, "qemu-img \(arguments): \(made.stderr)")
        }
        let streamed = try await Self.execute(["convert", qcow2, "--output", "-", "--config", place.config])
        #expect(streamed.status == 0, "\(streamed.stderr)")
        #expect(streamed.stdout.count == 8 << 20)
        #expect(streamed.stdout == (try Data(contentsOf: URL(fileURLWithPath: reference))))
    }

    @Test("no Foundation error internals reach the user: the message says what failed with which path")
    func plainErrors() async throws {
        let place = try Place()
        defer { place.remove() }
        // A configuration that is a directory; a store path under a regular file.
        let folder = try await Self.execute(["snapshot", "list", "--config", place.directory, "--json"])
        #expect(folder.status == 2)
        #expect(folder.errorCode == "InvalidConfiguration")
        #expect(
            folder.stderr.contains("cannot read configuration \(place.directory): Is a directory"), "\(folder.stderr)")
        let underFile = place.directory + "/under-file.toml"
        try "[store]\npath = \"\(place.image)/data\"\n".write(toFile: underFile, atomically: false, encoding: .utf8)
        let store = try await Self.execute(["import", place.image, "--project", "web@acme", "--config", underFile])
        #expect(store.status == 2)
        #expect(store.stderr.contains("\(place.image)/data"), "\(store.stderr)")
        #expect(store.stderr.contains("Not a directory") || store.stderr.contains("File exists"), "\(store.stderr)")
        let missing = try await Self.execute([
            "convert", place.image, "--output", "/nonexistent-dir/x.raw", "--config", place.config,
        ])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("/nonexistent-dir/x.raw"))
        for result in [folder, store, missing] {
            for leak in ["NSCocoaErrorDomain", "NSPOSIXErrorDomain", "UserInfo=", "NSUnderlyingError"] {
                #expect(!result.stderr.contains(leak), "\(result.stderr)")
                #expect(!result.text.contains(leak))
            }
        }
    }

    @Test("--log-format json: every log line one JSON object with time, level, label, message and plain fields")
    func jsonLogsInProcess() async throws {
        let place = try Place()
        defer { place.remove() }
        let result = try await Self.execute([
            "import", place.image, "--project", "web@acme", "--log-format", "json", "--verbose", "--config",
            place.config,
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.jsonLogLines
        #expect(lines.count >= 3, "\(result.stderr)")
        var sawSource = false
        for line in lines {
            let object = try #require(
                try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
            #expect(object["time"] is String && object["level"] is String && object["message"] is String, "\(line)")
            #expect((object["time"] as? String)?.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil)
            #expect(!line.contains("object(bucket:") && !line.contains("file(path:"), "\(line)")
            if let source = object["source"] as? [String: Any] {
                #expect(source["kind"] as? String == "file")
                #expect(source["path"] as? String == place.image)
                sawSource = true
            }
        }
        #expect(sawSource, "the 'snapshot begun' line carries the source as an object")
        // The handler itself: escapes, nested values, reserved names.
        let line = JSONLogHandler.line(
            time: "2026-12-01T00:00:00.000Z", level: .info, label: "t", message: "a \"quoted\"\nline\u{1}",
            metadata: ["message": "clash", "n": .stringConvertible(42), "list": ["x", .dictionary(["k": "v"])]])
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(parsed["message"] as? String == "a \"quoted\"\nline\u{1}")
        #expect(parsed["metadata.message"] as? String == "clash")
        #expect(parsed["n"] as? String == "42")
        #expect(((parsed["list"] as? [Any])?.last as? [String: String])?["k"] == "v")
    }
}

// MARK: - With SeaweedFS

/// The S3 side of issue 14: `s3 get` failures, `s3 ls` as a table, orphan sidecars reported by `run`,
/// refused credentials exit 2, and one `watch` process with `--metrics` and `--log-format json`.
/// Nested in ``OperatorTests`` so that its `.serialized` covers both: the captures must never overlap.
extension OperatorTests {
    @Suite(
        "snapimport operator experience with S3 (issue 14)",
        .enabled(
            if: !(ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_S3_ENDPOINT"] ?? "").isEmpty,
            "SNAPIMPORT_TEST_S3_ENDPOINT is not set (run scripts/test)"))
    struct WithS3 {
        typealias Op = OperatorTests

        /// A place whose config names the test S3 server and a fresh bucket (created through `s3 mb`).
        struct S3Place {
            let place: OperatorTests.Place
            let bucket: String

            init() async throws {
                let endpoint = ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_S3_ENDPOINT"] ?? ""
                bucket = "ops14-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
                place = try OperatorTests.Place(
                    "[s3]\nendpoint = \"\(endpoint)\"\nbucket = \"\(bucket)\"\nregion = \"us-east-1\"\n")
                let made = try await Op.execute(["s3", "mb", "s3://\(bucket)", "--config", place.config])
                try #require(made.status == 0, "\(made.stderr)")
            }

            func cli(_ arguments: String...) async throws -> OperatorTests.Captured {
                try await Op.execute(arguments + ["--config", place.config])
            }
        }

        @Test("a failed s3 get leaves no file; a good one leaves only the file; s3 ls is a table with sizes")
        func s3GetAndList() async throws {
            let s3 = try await S3Place()
            defer { s3.place.remove() }
            let target = s3.place.directory + "/out.raw"
            let missing = try await s3.cli("s3", "get", "s3://\(s3.bucket)/no/such/key", target, "--json")
            #expect(missing.status == 1)
            #expect(missing.errorCode == "NotFound")
            #expect(!FileManager.default.fileExists(atPath: target), "no empty file after a failed get")
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: s3.place.directory).allSatisfy {
                    !$0.contains("partial")
                })

            #expect(try await s3.cli("s3", "put", s3.place.image, "s3://\(s3.bucket)/images/disk.raw").status == 0)
            let got = try await s3.cli("s3", "get", "s3://\(s3.bucket)/images/disk.raw", target)
            #expect(got.status == 0, "\(got.stderr)")
            #expect(
                try Data(contentsOf: URL(fileURLWithPath: target))
                    == Data(contentsOf: URL(fileURLWithPath: s3.place.image)))
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: s3.place.directory).allSatisfy {
                    !$0.contains("partial")
                })

            // A destination that is no regular file (here a FIFO; /dev/null alike) is written in place: renaming
            // a downloaded file over it would replace the pipe or the device with a plain file.
            let fifo = s3.place.directory + "/pipe"
            try #require(mkfifo(fifo, 0o600) == 0)
            let copied = s3.place.directory + "/from-pipe.raw"
            try #require(FileManager.default.createFile(atPath: copied, contents: nil))
            let reader = Process()
            reader.executableURL = URL(fileURLWithPath: "/bin/cat")
            reader.arguments = [fifo]
            reader.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: copied))
            try reader.run()
            let piped = try await s3.cli("s3", "get", "s3://\(s3.bucket)/images/disk.raw", fifo)
            let type = try FileManager.default.attributesOfItem(atPath: fifo)[.type] as? FileAttributeType
            #expect(type != nil && type != .typeRegular, "the FIFO is still a FIFO, not a file renamed over it")
            // Its writer never came (the FIFO was replaced): do not wait forever (SIGKILL: a child of the test
            // runner may have SIGTERM blocked).
            if type == .typeRegular { kill(reader.processIdentifier, SIGKILL) }
            reader.waitUntilExit()
            #expect(piped.status == 0, "\(piped.stderr)")
            #expect(
                try Data(contentsOf: URL(fileURLWithPath: copied))
                    == Data(contentsOf: URL(fileURLWithPath: s3.place.image)))

            let listed = try await s3.cli("s3", "ls", "s3://\(s3.bucket)/")
            let lines = listed.text.split(separator: "\n")
            try #require(lines.count == 2, "\(listed.text)")
            #expect(lines[0].contains("SIZE") && lines[0].contains("LAST MODIFIED") && lines[0].hasSuffix("KEY"))
            #expect(lines[1].contains("64.0 KiB (65536 bytes)") && lines[1].hasSuffix("images/disk.raw"))
            let json = try await s3.cli("s3", "ls", "s3://\(s3.bucket)/", "--json")
            #expect((json.json as? [[String: Any]])?.first?["size"] as? Int == 65536)
        }

        @Test("an orphan sidecar (a .json without its image) is reported once per pass as skipped, with the reason")
        func orphanSidecar() async throws {
            let s3 = try await S3Place()
            defer { s3.place.remove() }
            let sidecar = s3.place.directory + "/notes.json"
            try #"{"description":"x"}"#.write(toFile: sidecar, atomically: false, encoding: .utf8)
            let key = "incoming/web@acme/notes.json"
            #expect(try await s3.cli("s3", "put", sidecar, "s3://\(s3.bucket)/\(key)").status == 0)
            for _ in 1...2 {
                let pass = try await s3.cli("run", "--json")
                #expect(pass.status == 0, "an orphan needs no person: \(pass.stderr)")
                let skipped = try #require(pass.object["skipped"] as? [[String: Any]])
                let orphan = skipped.filter { $0["key"] as? String == key }
                #expect(orphan.count == 1, "\(pass.text)")
                #expect((orphan.first?["reason"] as? String)?.contains("without an image") == true)
                #expect((pass.object["imported"] as? [Any])?.isEmpty == true)
            }
            // Human run output names it too with --verbose.
            let verbose = try await s3.cli("run", "--verbose")
            #expect(verbose.text.contains("skipped   \(key): a .json object without an image"), "\(verbose.text)")
            // The object is left alone.
            let listed = try await s3.cli("s3", "ls", "s3://\(s3.bucket)/incoming/", "--json")
            #expect((listed.json as? [[String: Any]])?.map { $0["key"] as? String } == [key])
        }

        /// Runs the built binary with `environment` changes (credentials are read from the environment, which
        /// an in-process call cannot change for itself alone).
        static func binary(_ arguments: [String], environment changes: [String: String]) throws
            -> CommandLineTests.Result
        {
            let binary = try #require(
                CommandLineTests.binary, "the snapimport executable is not built (swift build first)")
            return try ChildProcess.run(binary, arguments, environment: ChildProcess.environment(adding: changes))
        }

        @Test("refused credentials are a configuration error: exit 2 (s3 ls, s3 get, import, run)")
        func badCredentials() async throws {
            let s3 = try await S3Place()
            defer { s3.place.remove() }
            #expect(
                try await s3.cli("s3", "put", s3.place.image, "s3://\(s3.bucket)/incoming/web@acme/d.raw").status == 0)
            let wrong = ["AWS_SECRET_ACCESS_KEY": "not-the-secret"]
            let config = ["--config", s3.place.config]
            let ls = try Self.binary(["s3", "ls", "s3://\(s3.bucket)/", "--json"] + config, environment: wrong)
            #expect(ls.status == 2, "\(ls.stderr)")
            #expect(ls.errorCode == "AccessDenied")
            let target = s3.place.directory + "/x.raw"
            let get = try Self.binary(
                ["s3", "get", "s3://\(s3.bucket)/incoming/web@acme/d.raw", target] + config, environment: wrong)
            #expect(get.status == 2)
            #expect(!FileManager.default.fileExists(atPath: target))
            let imported = try Self.binary(
                ["import", "s3://\(s3.bucket)/incoming/web@acme/d.raw"] + config, environment: wrong)
            #expect(imported.status == 2, "\(imported.stderr)")
            let run = try Self.binary(["run"] + config, environment: wrong)
            #expect(run.status == 2, "\(run.stdout) \(run.stderr)")
            // The same commands with the right secret work.
            #expect(try Self.binary(["s3", "ls", "s3://\(s3.bucket)/"] + config, environment: [:]).status == 0)
        }

        /// Prometheus text as `name{labels}` → value.
        static func samples(_ text: String) -> [String: Double] {
            var result: [String: Double] = [:]
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                    continue
                }
                result[String(line[..<space])] = value
            }
            return result
        }

        static func scrape(_ port: Int) throws -> (status: Int32, body: String) {
            let result = try ChildProcess.run(
                "/usr/bin/env", ["curl", "-sS", "-f", "-m", "5", "http://127.0.0.1:\(port)/metrics"])
            return (result.status, result.stdout)
        }

        @Test("watch --metrics --log-format json: /metrics counts an import; every stderr line is a JSON object")
        func watchMetricsAndLogs() async throws {
            let s3 = try await S3Place()
            defer { s3.place.remove() }
            let binary = try #require(
                CommandLineTests.binary, "the snapimport executable is not built (swift build first)")
            let orphan = s3.place.directory + "/orphan.json"
            try "{}".write(toFile: orphan, atomically: false, encoding: .utf8)
            #expect(
                try await s3.cli("s3", "put", orphan, "s3://\(s3.bucket)/incoming/web@acme/gone.raw.json").status == 0)

            let errPath = s3.place.directory + "/watch.err"
            _ = FileManager.default.createFile(atPath: errPath, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = [
                "watch", "--interval", "1", "--metrics", "127.0.0.1:0", "--log-format", "json", "--verbose",
                "--config", s3.place.config,
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
            let started = Date().timeIntervalSince1970
            try process.run()
            defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
            func logLines() -> [String] {
                ((try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
            func waitFor(_ what: String, seconds: Double, _ condition: () throws -> Bool) async throws {
                let deadline = Date().addingTimeInterval(seconds)
                while Date() < deadline {
                    if try condition() { return }
                    try await Task.sleep(for: .milliseconds(200))
                }
                Issue.record("timed out waiting for \(what); log:\n\(logLines().joined(separator: "\n"))")
                throw CancellationError()
            }
            // The listener logs its port (chosen free: 127.0.0.1:0).
            var port = 0
            try await waitFor("the metrics listener", seconds: 60) {
                for line in logLines() {
                    if let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                        (object["message"] as? String)?.hasPrefix("serving metrics") == true,
                        let text = object["port"] as? String, let value = Int(text)
                    {
                        port = value
                        return true
                    }
                }
                return false
            }
            #expect(port > 0)
            // A second daemon on the same address: a configuration error naming it, exit 2.
            let clash = try Self.binary(
                ["watch", "--metrics", "127.0.0.1:\(port)", "--json", "--config", s3.place.config], environment: [:])
            #expect(clash.status == 2, "\(clash.stderr)")
            #expect(clash.errorCode == "InvalidConfiguration")
            #expect(clash.stderr.contains("cannot serve metrics at 127.0.0.1:\(port): Address already in use"))
            // A first idle pass: nothing imported, the orphan skipped.
            try await waitFor("an idle pass", seconds: 60) {
                (Self.samples(try Self.scrape(port).body)["snapimport_passes_total"] ?? 0) >= 1
            }
            let before = Self.samples(try Self.scrape(port).body)
            #expect(before[#"snapimport_imports_total{result="imported"}"#] == 0)
            #expect((before[#"snapimport_imports_total{result="skipped"}"#] ?? 0) >= 1, "the orphan sidecar")

            // An image arrives: the counters move.
            #expect(
                try await s3.cli("s3", "put", s3.place.image, "s3://\(s3.bucket)/incoming/web@acme/disk.raw").status
                    == 0)
            try await waitFor("the import", seconds: 90) {
                Self.samples(try Self.scrape(port).body)[#"snapimport_imports_total{result="imported"}"#] == 1
            }
            let scraped = try Self.scrape(port)
            #expect(scraped.status == 0)
            let after = Self.samples(scraped.body)
            #expect(after["snapimport_import_bytes_total"] == 65536)
            #expect(after["snapimport_imports_in_flight"] == 0)
            let last = try #require(after["snapimport_last_pass_timestamp_seconds"])
            #expect(last >= started && last <= Date().timeIntervalSince1970 + 1)
            #expect((after["snapimport_pass_duration_seconds_count"] ?? 0) >= 2)
            #expect(scraped.body.contains("# TYPE snapimport_imports_total counter"))
            #expect(scraped.body.contains("# TYPE snapimport_imports_in_flight gauge"))
            #expect(scraped.body.contains("# TYPE snapimport_pass_duration_seconds histogram"))
            // Anything else is 404.
            let other = try ChildProcess.run(
                "/usr/bin/env", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/"])
            #expect(other.stdout == "404")

            // Stop it (SIGTERM) and read every line it wrote.
            kill(process.processIdentifier, SIGTERM)
            try await waitFor("the daemon to stop", seconds: 60) { !process.isRunning }
            #expect(process.terminationStatus == 0)
            let lines = logLines()
            #expect(lines.count >= 5)
            var messages: [String: [String: Any]] = [:]
            for line in lines {
                let object = try #require(
                    try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    "not a JSON object: \(line)")
                #expect(object["time"] is String && object["level"] is String && object["message"] is String, "\(line)")
                #expect(!line.contains("object(bucket:"), "a Swift description in \(line)")
                if let message = object["message"] as? String { messages[message] = object }
            }
            let imported = try #require(messages["imported"], "an 'imported' line")
            #expect(imported["key"] as? String == "incoming/web@acme/disk.raw")
            #expect(imported["project"] as? String == "web@acme")
            #expect((imported["etag"] as? String)?.isEmpty == false)
            #expect((imported["snapshot"] as? String)?.hasPrefix("snap-") == true)
            let begun = try #require(messages["snapshot begun"])
            let source = try #require(begun["source"] as? [String: Any], "the source as an object")
            #expect(source["kind"] as? String == "object")
            #expect(source["bucket"] as? String == s3.bucket)
            #expect(messages.keys.contains { $0.hasPrefix("heartbeat") }, "an idle pass logs a heartbeat (debug)")
            #expect(
                messages.keys.contains { $0.hasPrefix("skipped: a .json object without an image") },
                "the orphan is reported")
        }
    }
}

@Suite("run's live lines on a terminal")
struct LiveImportLinesTests {
    @Test("one line per import in flight, oldest first, cut to the terminal's width; redrawn in place")
    func lines() throws {
        let inFlight = InFlightImports()
        let a = ImportProgress(total: 700 << 20)
        a.add(245 << 20)
        let b = ImportProgress()
        b.add(3 << 20)
        inFlight.begin("incoming/web@acme/disk.qcow2", progress: a)
        inFlight.begin("incoming/db@acme/" + String(repeating: "long-", count: 30) + "name.vmdk", progress: b)
        let lines = LiveImportLines.lines(inFlight.entries, columns: 100)
        #expect(lines.count == 2)
        #expect(lines[0].hasPrefix("incoming/web@acme/disk.qcow2  [=======             ]  35%"), "\(lines[0])")
        #expect(lines[0].hasSuffix("245.0 MiB of 700.0 MiB"), "\(lines[0])")
        #expect(lines[1].hasPrefix("…"), "a long key keeps its end: \(lines[1])")
        #expect(lines[1].contains("name.vmdk  ["))
        #expect(lines[1].contains("?%") && lines[1].hasSuffix("3.0 MiB"), "unknown total: \(lines[1])")
        #expect(lines.allSatisfy { $0.count < 100 }, "no line wraps")
        #expect(LiveImportLines.lines(inFlight.entries, columns: 60).allSatisfy { $0.count < 60 })

        // Replacing 2 drawn lines: back 2 lines, clear below, the new ones; the last redraw erases.
        #expect(LiveImportLines.redraw(previous: 0, lines: ["x"]) == "x\n")
        #expect(LiveImportLines.redraw(previous: 2, lines: ["x"]) == "\u{1B}[2F\u{1B}[Jx\n")
        #expect(LiveImportLines.redraw(previous: 1, lines: []) == "\u{1B}[1F\u{1B}[J")
        inFlight.end("incoming/web@acme/disk.qcow2")
        #expect(inFlight.entries.map(\.key).count == 1)
    }
}
