import Foundation
import ProcessTestSupport
import Testing

/// `snapimport serve` as a process on a real port, driven by the real aws CLI and boto3 (and a
/// hand-signed request where a client cannot send what is tested: a stale date, a wrong secret, no
/// signature), once over a SQLite catalog and once over PostgreSQL.
@Suite("snapimport serve with the aws CLI and boto3", .serialized)
struct EndToEndTests {
    static let postgresURL = ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_POSTGRES_URL"]

    @Test("SQLite catalog", .enabled(if: Tools.missing == nil, "\(Tools.missing ?? "")"))
    func sqlite() async throws {
        try await Session.with(catalog: nil) { try await $0.contract() }
    }

    @Test(
        "PostgreSQL catalog",
        .enabled(if: Tools.missing == nil, "\(Tools.missing ?? "")"),
        .enabled(if: postgresURL != nil, "SNAPIMPORT_TEST_POSTGRES_URL is unset (scripts/test sets it)"))
    func postgres() async throws {
        let schema = "api_" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let base = Self.postgresURL!
        let url = base + (base.contains("?") ? "&" : "?") + "schema=" + schema
        try await Session.with(catalog: url) { try await $0.contract() }
    }

    @Test(
        "TLS: with tls_cert/tls_key the server answers HTTPS (EC2 errors included); a lone tls_cert is exit 2",
        .enabled(if: Tools.binary != nil, "the snapimport executable is not built"),
        .enabled(if: Tools.which("openssl") != nil && Tools.which("curl") != nil, "openssl or curl is missing"))
    func tls() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let made = try Tools.run(
            Tools.which("openssl")!,
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", directory + "/key.pem", "-out",
                directory + "/cert.pem",
            ])
        try #require(made.status == 0, "\(made)")
        let config = directory + "/snapimport.toml"
        try """
        [store]
        path = "\(directory)/data"
        [api]
        tls_cert = "\(directory)/cert.pem"
        tls_key = "\(directory)/key.pem"
        """.write(toFile: config, atomically: false, encoding: .utf8)
        let server = try ServeProcess(binary: Tools.binary!, config: config, directory: directory)
        do {
            try await server.waitUntilListening()
            #expect(server.endpoint.hasPrefix("https://"), "\(server.endpoint)")
            let health = try Tools.run(
                Tools.which("curl")!, ["-s", "--cacert", directory + "/cert.pem", server.endpoint + "/healthz"])
            #expect(health.stdout == "ok\n", "\(health)")
            let unsigned = try Tools.run(
                Tools.which("curl")!,
                ["-s", "--cacert", directory + "/cert.pem", "-d", "Action=DescribeSnapshots", server.endpoint + "/"])
            #expect(unsigned.stdout.contains("<Code>MissingAuthenticationToken</Code>"), "\(unsigned)")
            let plain = try Tools.run(
                Tools.which("curl")!,
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    server.endpoint.replacingOccurrences(of: "https://", with: "http://") + "/healthz",
                ])
            #expect(plain.stdout != "200", "plain HTTP is not served on a TLS port")
        } catch {
            _ = await server.terminate()
            throw error
        }
        #expect(await server.terminate() == 0)
        try """
        [store]
        path = "\(directory)/data"
        [api]
        tls_cert = "\(directory)/cert.pem"
        """.write(toFile: config, atomically: false, encoding: .utf8)
        let lone = try Tools.run(Tools.binary!, ["serve", "--config", config, "--listen", "127.0.0.1:0"])
        #expect(lone.status == 2 && lone.stderr.contains("tls_cert and tls_key"), "\(lone)")
    }

    /// One store, its keys and a running server.
    struct Session {
        struct Key {
            var id: String
            var secret: String
        }

        let directory: String
        let config: String
        let binary: String
        var server: ServeProcess!
        var keys: [String: Key] = [:]

        static func with(
            catalog: String?, extraConfig: String = "", _ body: (Session) async throws -> Void
        ) async throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)")
                .path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            var toml = "[store]\npath = \"\(directory)/data\"\n"
            if let catalog { toml += "catalog = \"\(catalog)\"\n" }
            toml += extraConfig
            let config = directory + "/snapimport.toml"
            try toml.write(toFile: config, atomically: false, encoding: .utf8)
            var session = Session(directory: directory, config: config, binary: Tools.binary!)
            // serve creates the store; keys are then made by another process while it runs (each request
            // reads its key from the catalog).
            session.server = try ServeProcess(
                binary: session.binary, config: config, directory: directory, arguments: ["--metrics", "127.0.0.1:0"])
            do {
                try await session.server.waitUntilListening()
                for who in ["alice@acme", "bob@acme", "carol@other", "operator"] {
                    session.keys[who] = try session.createKey(who)
                }
                try await body(session)
            } catch {
                _ = await session.server.terminate()
                throw error
            }
            let status = await session.server.terminate()
            #expect(status == 0, "SIGTERM ends serve cleanly: \(session.server.log.suffix(2000))")
            let log = session.server.log
            #expect(log.contains("DescribeSnapshots 200"), "one debug line per request")
            for key in session.keys.values {
                #expect(!log.contains(key.secret), "the log never holds a secret")
            }
            #expect(!log.contains("Signature="), "the log never holds an Authorization header")
        }

        func snapimport(_ args: [String]) throws -> Tools.Result {
            try Tools.run(binary, args + ["--config", config])
        }

        func createKey(_ who: String) throws -> Key {
            let result = try snapimport(
                ["keys", "create"] + (who == "operator" ? ["--operator"] : ["--project", who]) + ["--json"])
            try #require(result.status == 0, "\(result)")
            let id = try #require(result.object["accessKeyId"] as? String, "\(result)")
            let secret = try #require(result.object["secretAccessKey"] as? String, "\(result)")
            return Key(id: id, secret: secret)
        }

        /// A local import of a small distinct disk; returns the snapshot ID.
        func importDisk(_ project: String, _ description: String, seed: Int) throws -> String {
            let path = directory + "/disk-\(seed).raw"
            var bytes = [UInt8](repeating: 0, count: 64 << 10)
            var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
            for i in bytes.indices {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                bytes[i] = UInt8(truncatingIfNeeded: state)
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let result = try snapimport(
                ["import", path, "--project", project, "--description", description, "--json"])
            try #require(result.status == 0, "\(result)")
            return try #require(result.object["id"] as? String, "\(result)")
        }

        /// `aws ec2 ARGS --output json` as `who`.
        func aws(_ who: String, _ args: [String]) throws -> Tools.Result {
            let key = keys[who]!
            return try Tools.run(
                Tools.aws!,
                ["ec2"] + args + ["--endpoint-url", server.endpoint, "--region", "croc", "--output", "json"],
                environment: [
                    "AWS_ACCESS_KEY_ID": key.id, "AWS_SECRET_ACCESS_KEY": key.secret, "AWS_CONFIG_FILE": "/dev/null",
                    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
                ])
        }

        /// `aws` that must succeed; its JSON output.
        func awsOK(_ who: String, _ args: [String]) throws -> [String: Any] {
            let result = try aws(who, args)
            try #require(result.status == 0, "aws ec2 \(args.joined(separator: " ")) as \(who): \(result)")
            return result.object
        }

        /// The boto3 fixture as `who`.
        func boto(_ who: String, _ args: [String]) throws -> Tools.Result {
            let key = keys[who]!
            return try Tools.run(
                Tools.python!, [Tools.fixture, server.endpoint, key.id, key.secret] + args,
                environment: ["AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"])
        }

        /// A hand-signed request: (status, code).
        func raw(
            _ who: String, _ query: String, date: String = "", secret: String? = nil
        ) throws -> (Int, String?) {
            var args = ["raw", query, date]
            if let secret { args.append(secret) }
            let result = try boto(who, args)
            try #require(result.status == 0, "\(result)")
            return (result.object["status"] as? Int ?? -1, result.object["code"] as? String)
        }

        static func ids(_ output: [String: Any]) -> [String] {
            (output["Snapshots"] as? [[String: Any]] ?? []).compactMap { $0["SnapshotId"] as? String }
        }

        /// DescribeSnapshots' filters, evaluated by the catalog, through the CLI: wildcards, pages of
        /// filtered results (`--page-size`/`--max-items`), filters with IDs and owners.
        func filtersInTheCatalog(alices: [String], bobs: String) throws {
            // Three matches, two per CLI page: the API's NextToken carries the filtered listing on.
            var seen: [String] = []
            var token: String?
            var pages = 0
            repeat {
                var args = [
                    "describe-snapshots", "--filters", "Name=description,Values=alice disk 1*", "--page-size", "5",
                    "--max-items", "2",
                ]
                if let token { args += ["--starting-token", token] }
                let page = try awsOK("alice@acme", args)
                #expect(Self.ids(page).count <= 2)
                seen += Self.ids(page)
                token = page["NextToken"] as? String
                pages += 1
            } while token != nil && pages < 10
            #expect(seen == [alices[1], alices[10], alices[11]] && pages == 2, "\(seen) in \(pages) pages")
            // `?` is one character: "alice disk 0" … "alice disk 9", in creation order, over pages of 5.
            let single = try awsOK(
                "alice@acme", ["describe-snapshots", "--filters", "Name=description,Values=alice disk ?", "--page-size", "5"])
            #expect(Self.ids(single) == Array(alices[0..<10]))
            // Literal text: no match for a `%` or `_` that LIKE would have taken as wildcards.
            let literal = try awsOK(
                "alice@acme", ["describe-snapshots", "--filters", "Name=description,Values=alice%,alice_disk_1"])
            #expect(Self.ids(literal).isEmpty, "\(literal)")
            let acme = try awsOK("bob@acme", ["describe-snapshots", "--filters", "Name=owner-id,Values=*@acme"])
            #expect(Set(Self.ids(acme)) == [alices[0], alices[1], bobs])
            let both = try awsOK(
                "alice@acme",
                [
                    "describe-snapshots", "--snapshot-ids", alices[0], alices[5], "--filters",
                    "Name=description,Values=*0",
                ])
            #expect(Self.ids(both) == [alices[0]])
            let noVolume = try awsOK(
                "alice@acme", ["describe-snapshots", "--owner-ids", "self", "--filters", "Name=volume-id,Values=vol-ffffffff"])
            #expect(Self.ids(noVolume) == alices, "imported snapshots carry EC2's placeholder volume")
            let badFilter = try aws("alice@acme", ["describe-snapshots", "--filters", "Name=size,Values=1"])
            #expect(badFilter.status == 255 && badFilter.awsErrorCode == "InvalidParameterValue", "\(badFilter)")
        }

        /// `serve --metrics`: `/metrics` counts API requests by action and HTTP status.
        func metricsCountRequests(alices: [String]) async throws {
            let before = try scrape()
            _ = try awsOK("alice@acme", ["describe-snapshots", "--snapshot-ids", alices[0]])
            let missing = try aws("carol@other", ["describe-snapshots", "--snapshot-ids", alices[0]])
            #expect(missing.awsErrorCode == "InvalidSnapshot.NotFound")
            let unknown = try raw("alice@acme", "Action=FlyToTheMoon&Version=2016-11-15")
            #expect(unknown.0 == 400 && unknown.1 == "InvalidAction", "\(unknown)")
            let after = try scrape()
            func delta(_ action: String, _ status: Int) -> Double {
                Self.requests(after, action, status) - Self.requests(before, action, status)
            }
            #expect(delta("DescribeSnapshots", 200) == 1, "\(after)")
            #expect(delta("DescribeSnapshots", 400) == 1, "\(after)")
            #expect(delta("unknown", 400) == 1, "\(after)")
            #expect(after.contains("snapimport_api_request_duration_seconds_bucket"), "\(after)")
            #expect(!after.contains("FlyToTheMoon"), "an unknown action gets no series of its own")
        }

        /// The text of `GET /metrics` (its port is on serve's stdout).
        func scrape() throws -> String {
            let out = (try? String(contentsOfFile: directory + "/serve.out", encoding: .utf8)) ?? ""
            let range = try #require(out.range(of: "metrics on "), "serve printed no metrics address: \(out)")
            let url = String(out[range.upperBound...].prefix { !$0.isWhitespace })
            let result = try Tools.run(
                Tools.python!, ["-c", "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())", url])
            try #require(result.status == 0, "\(result)")
            return result.stdout
        }

        /// The value of `snapimport_api_requests_total{action, status}` in a scrape (0 when absent).
        static func requests(_ text: String, _ action: String, _ status: Int) -> Double {
            for line in text.split(separator: "\n") where line.hasPrefix("snapimport_api_requests_total{") {
                guard line.contains("action=\"\(action)\""), line.contains("status=\"\(status)\"") else { continue }
                return Double(line.split(separator: " ").last ?? "") ?? -1
            }
            return 0
        }

        // MARK: - The contract

        func contract() async throws {
            // Snapshots made through the CLI (fast), then everything through the API.
            var alices: [String] = []
            for i in 0..<12 { alices.append(try importDisk("alice@acme", "alice disk \(i)", seed: i + 1)) }
            let bobs = try importDisk("bob@acme", "bob disk", seed: 100)

            // Own snapshots; the CLI adds MaxResults=1000 itself.
            let own = try awsOK("alice@acme", ["describe-snapshots", "--owner-ids", "self"])
            #expect(Self.ids(own) == alices)
            let first = (own["Snapshots"] as? [[String: Any]])?.first ?? [:]
            #expect(first["OwnerId"] as? String == "alice@acme")
            #expect(first["State"] as? String == "completed")
            #expect(first["Description"] as? String == "alice disk 0")
            #expect(first["VolumeSize"] as? Int == 1)

            // Paginated: the CLI follows NextToken with --page-size; --max-items stops and hands a token.
            let paged = try awsOK("alice@acme", ["describe-snapshots", "--owner-ids", "self", "--page-size", "5"])
            #expect(Self.ids(paged) == alices)
            var seen: [String] = []
            var token: String?
            var pages = 0
            repeat {
                var args = ["describe-snapshots", "--owner-ids", "self", "--page-size", "5", "--max-items", "5"]
                if let token { args += ["--starting-token", token] }
                let page = try awsOK("alice@acme", args)
                seen += Self.ids(page)
                token = page["NextToken"] as? String
                pages += 1
            } while token != nil && pages < 10
            #expect(seen == alices && pages == 3, "3 pages of 5, 5, 2: \(pages)")
            let botoPages = try boto("alice@acme", ["paginate", "self", "5"])
            #expect(botoPages.object["ids"] as? [String] == alices, "\(botoPages)")
            #expect(botoPages.object["pages"] as? Int == 3)

            // Sharing, both forms.
            _ = try awsOK(
                "alice@acme",
                [
                    "modify-snapshot-attribute", "--snapshot-id", alices[0], "--attribute", "createVolumePermission",
                    "--operation-type", "add", "--user-ids", "bob@acme",
                ])
            _ = try awsOK(
                "alice@acme",
                [
                    "modify-snapshot-attribute", "--snapshot-id", alices[1],
                    "--create-volume-permission", "Add=[{Group=all}]",
                ])
            let attribute = try awsOK(
                "alice@acme",
                ["describe-snapshot-attribute", "--snapshot-id", alices[0], "--attribute", "createVolumePermission"])
            let grants = attribute["CreateVolumePermissions"] as? [[String: Any]] ?? []
            #expect(grants.compactMap { $0["UserId"] as? String } == ["bob@acme"], "\(attribute)")
            let privateOne = try awsOK(
                "alice@acme",
                ["describe-snapshot-attribute", "--snapshot-id", alices[2], "--attribute", "createVolumePermission"])
            #expect((privateOne["CreateVolumePermissions"] as? [Any])?.isEmpty == true, "\(privateOne)")

            // What Bob sees: shared with him, public, his own.
            let shared = try awsOK("bob@acme", ["describe-snapshots", "--restorable-by-user-ids", "self"])
            #expect(Set(Self.ids(shared)) == [alices[0], bobs])
            let sharedFromAlice = try awsOK(
                "bob@acme", ["describe-snapshots", "--restorable-by-user-ids", "self", "--owner-ids", "alice@acme"])
            #expect(Self.ids(sharedFromAlice) == [alices[0]])
            let publicOnes = try awsOK("bob@acme", ["describe-snapshots", "--restorable-by-user-ids", "all"])
            #expect(Self.ids(publicOnes) == [alices[1]])
            let everything = try awsOK("bob@acme", ["describe-snapshots"])
            #expect(Set(Self.ids(everything)) == [alices[0], alices[1], bobs])
            let filtered = try awsOK(
                "alice@acme",
                [
                    "describe-snapshots", "--filters", "Name=description,Values=alice disk 1*",
                    "Name=status,Values=completed",
                ])
            #expect(Set(Self.ids(filtered)) == [alices[1], alices[10], alices[11]])
            try filtersInTheCatalog(alices: alices, bobs: bobs)
            try await metricsCountRequests(alices: alices)
            let operatorView = try awsOK("operator", ["describe-snapshots"])
            #expect(Self.ids(operatorView).count == 13)
            // Only the owner reads the grants.
            let peek = try aws(
                "bob@acme",
                ["describe-snapshot-attribute", "--snapshot-id", alices[0], "--attribute", "createVolumePermission"])
            #expect(peek.status == 255 && peek.awsErrorCode == "UnauthorizedOperation", "\(peek)")
            let notYours = try aws("carol@other", ["describe-snapshots", "--snapshot-ids", alices[0]])
            #expect(notYours.status == 255 && notYours.awsErrorCode == "InvalidSnapshot.NotFound", "\(notYours)")

            // Description.Value through boto3 with a before-call hook.
            let described = try boto("alice@acme", ["description", alices[3], "renamed <by> boto3 & co"])
            #expect(described.status == 0, "\(described)")
            let after = (described.json as? [[String: Any]])?.first
            #expect(after?["Description"] as? String == "renamed <by> boto3 & co", "\(described)")

            // A volume from a snapshot shared with Bob, then a snapshot of it, then deletes.
            let volume = try awsOK(
                "bob@acme", ["create-volume", "--snapshot-id", alices[0], "--availability-zone", "croc-1a"])
            let volumeID = try #require(volume["VolumeId"] as? String, "\(volume)")
            #expect(volume["SnapshotId"] as? String == alices[0])
            #expect(volume["State"] as? String == "available")
            let volumes = try awsOK("bob@acme", ["describe-volumes"])
            #expect((volumes["Volumes"] as? [[String: Any]])?.compactMap { $0["VolumeId"] as? String } == [volumeID])
            let fromVolume = try awsOK(
                "bob@acme", ["create-snapshot", "--volume-id", volumeID, "--description", "of vol"])
            let fromVolumeID = try #require(fromVolume["SnapshotId"] as? String)
            #expect(fromVolume["OwnerId"] as? String == "bob@acme")
            let copy = try awsOK(
                "bob@acme", ["copy-snapshot", "--source-region", "croc", "--source-snapshot-id", alices[1]])
            #expect((copy["SnapshotId"] as? String)?.hasPrefix("snap-") == true, "\(copy)")
            _ = try awsOK("bob@acme", ["delete-snapshot", "--snapshot-id", fromVolumeID])
            _ = try awsOK("bob@acme", ["delete-volume", "--volume-id", volumeID])
            _ = try awsOK("alice@acme", ["delete-snapshot", "--snapshot-id", alices[11]])
            let gone = try aws("alice@acme", ["describe-snapshots", "--snapshot-ids", alices[11]])
            #expect(gone.awsErrorCode == "InvalidSnapshot.NotFound", "\(gone)")
            let reset = try aws(
                "alice@acme",
                ["reset-snapshot-attribute", "--snapshot-id", alices[1], "--attribute", "createVolumePermission"])
            #expect(reset.status == 0, "\(reset)")
            #expect(Self.ids(try awsOK("bob@acme", ["describe-snapshots", "--restorable-by-user-ids", "all"])).isEmpty)

            // In use: a volume attached to an instance, a snapshot a template was made of.
            let attachable = try awsOK(
                "bob@acme", ["create-volume", "--snapshot-id", bobs, "--availability-zone", "croc-1a"])
            let attachedID = try #require(attachable["VolumeId"] as? String)
            let instance = try snapimport(["instance", "create", "--project", "bob@acme", "--json"])
            let instanceID = try #require(instance.object["id"] as? String, "\(instance)")
            let attach = try snapimport([
                "volume", "attach", attachedID, "--instance", instanceID, "--project", "bob@acme",
            ])
            try #require(attach.status == 0, "\(attach)")
            let busy = try raw("bob@acme", "Action=DeleteVolume&Version=2016-11-15&VolumeId=\(attachedID)")
            #expect(busy.0 == 400 && busy.1 == "VolumeInUse", "\(busy)")
            let template = try snapimport([
                "template", "create", "--instance", instanceID, "--project", "bob@acme", "--json",
            ])
            let templateSnapshot = try #require((template.object["snapshots"] as? [String])?.first, "\(template)")
            let inUse = try raw("bob@acme", "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=\(templateSnapshot)")
            #expect(inUse.0 == 400 && inUse.1 == "InvalidSnapshot.InUse", "\(inUse)")

            try errorPaths(alices: alices)
        }

        /// Every error of the contract with its code and HTTP status, as the client sees them.
        func errorPaths(alices: [String]) throws {
            let v = "Action=DescribeSnapshots&Version=2016-11-15"
            let stale = Date().addingTimeInterval(-3600)
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "UTC")
            formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
            let cases: [(String, String, Int, String?, String?)] = [
                ("alice@acme", v, 200, nil, nil),
                ("alice@acme", "Action=RunInstances&Version=2016-11-15", 400, "InvalidAction", nil),
                ("alice@acme", "Version=2016-11-15", 400, "MissingAction", nil),
                ("alice@acme", v, 401, "AuthFailure", "wrong-secret"),
                ("alice@acme", "Action=DeleteSnapshot&Version=2016-11-15", 400, "MissingParameter", nil),
                (
                    "alice@acme", "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=snap-zz", 400,
                    "InvalidSnapshotID.Malformed", nil
                ),
                (
                    "alice@acme", "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=snap-0000beef", 400,
                    "InvalidSnapshot.NotFound", nil
                ),
                (
                    "bob@acme", "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=\(alices[0])", 403,
                    "UnauthorizedOperation", nil
                ),
                (
                    "alice@acme", "Action=DeleteVolume&Version=2016-11-15&VolumeId=vol-0000beef", 400,
                    "InvalidVolume.NotFound", nil
                ),
                ("alice@acme", v + "&MaxResults=2", 400, "InvalidParameterValue", nil),
                ("alice@acme", v + "&NextToken=bogus", 400, "InvalidPaginationToken", nil),
                ("alice@acme", v + "&Filter.1.Name=nope&Filter.1.Value.1=x", 400, "InvalidParameterValue", nil),
                (
                    "alice@acme",
                    "Action=ModifySnapshotAttribute&Version=2016-11-15&SnapshotId=\(alices[2])"
                        + "&OperationType=add&UserGroup.1=everyone", 400, "InvalidParameterValue", nil
                ),
                (
                    "alice@acme", "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=\(alices[2])&DryRun=true", 412,
                    "DryRunOperation", nil
                ),
            ]
            for (who, query, status, code, secret) in cases {
                let (gotStatus, gotCode) = try raw(who, query, secret: secret)
                #expect(gotStatus == status && gotCode == code, "\(query): \(gotStatus) \(gotCode ?? "-")")
            }
            // A date an hour old: RequestExpired, even with the right secret.
            let (expired, expiredCode) = try raw("alice@acme", v, date: formatter.string(from: stale))
            #expect(expired == 400 && expiredCode == "RequestExpired")
            // No signature at all.
            let unsigned = try Tools.run(
                "/usr/bin/env",
                ["curl", "-s", "-o", "/dev/stderr", "-w", "%{http_code}", "-d", v, server.endpoint + "/"])
            #expect(
                unsigned.stdout == "403" && unsigned.stderr.contains("<Code>MissingAuthenticationToken</Code>"),
                "\(unsigned)")
            // boto3's view of an error: code, status and request ID parsed from EC2's error document.
            let viaBoto = try boto(
                "alice@acme", ["boto-error", "delete_snapshot", "{\"SnapshotId\": \"snap-0000beef\"}"])
            #expect(viaBoto.object["code"] as? String == "InvalidSnapshot.NotFound", "\(viaBoto)")
            #expect(viaBoto.object["status"] as? Int == 400)
            #expect((viaBoto.object["requestId"] as? String)?.isEmpty == false)
            // Health without a signature.
            let health = try Tools.run("/usr/bin/env", ["curl", "-s", server.endpoint + "/healthz"])
            #expect(health.stdout == "ok\n")
        }
    }
}
