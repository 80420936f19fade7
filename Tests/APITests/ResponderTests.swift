import API
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SigV4
import SnapshotCore
import Testing

/// The server in process (Hummingbird's router test framework, no socket) over an in-memory catalog,
/// with a stand-in authenticator (`Authorization: Test <project>|operator`) so that the action logic,
/// the pagination, the privacy rules and the error paths are tested without signing. The real SigV4
/// path is exercised by the end-to-end suite with the aws CLI and boto3.
@Suite("EC2 responder in process")
struct ResponderTests {
    struct TestAuthenticator: EC2Authenticator {
        func authenticate(_ request: SigV4IncomingRequest) async throws -> Authenticated {
            guard let header = request.headers.first(where: { $0.name.lowercased() == "authorization" })?.value else {
                throw EC2Error(.missingAuthenticationToken, "Request is missing Authentication Token")
            }
            guard header.hasPrefix("Test ") else { throw EC2Error(.authFailure, "bad credentials") }
            let who = String(header.dropFirst(5))
            if who == "operator" { return Authenticated(caller: .operator, accessKeyID: "AKOP") }
            return Authenticated(caller: .project(try ProjectRef(parsing: who)), accessKeyID: "AK-\(who)")
        }
    }

    static let alice = try! ProjectRef(parsing: "alice@acme")
    static let bob = try! ProjectRef(parsing: "bob@acme")
    static let carol = try! ProjectRef(parsing: "carol@other")

    struct Fixture: Sendable {
        let service: SnapshotService
        let client: any TestClientProtocol

        /// POSTs `body` as `who`; returns status and the parsed answer.
        func call(_ body: String, as who: String? = "alice@acme") async throws -> (Int, XMLTextCollector, String) {
            var headers: HTTPFields = [.contentType: "application/x-www-form-urlencoded; charset=utf-8"]
            if let who { headers[.authorization] = "Test \(who)" }
            return try await client.execute(uri: "/", method: .post, headers: headers, body: ByteBuffer(string: body)) {
                response in
                let text = String(buffer: response.body)
                #expect(response.headers[.contentType]?.hasPrefix("text/xml") == true, "\(text)")
                let parsed = XMLTextCollector.collect(text)
                #expect(!parsed.failed, "not XML: \(text)")
                return (Int(response.status.code), parsed, text)
            }
        }

        /// The error code of a failing call, checking the status.
        func error(_ body: String, as who: String? = "alice@acme", status: Int = 400) async throws -> String {
            let (code, parsed, text) = try await call(body, as: who)
            #expect(code == status, "\(text)")
            #expect(parsed.values["RequestID"]?.isEmpty == false)
            return parsed.values["Code"] ?? "<none: \(text)>"
        }

        @discardableResult
        func snapshot(_ owner: ProjectRef, _ description: String = "disk", size: Int = 8192) async throws
            -> SnapshotRecord
        {
            let writer = try await service.beginSnapshot(
                NewSnapshot(
                    owner: owner, description: description, source: .file(path: "/images/\(description)"),
                    format: "raw", virtualSize: UInt64(size)),
                caller: .operator)
            try await writer.write(offset: 0, bytes: (0..<size).map { UInt8(truncatingIfNeeded: $0 * 31 + 7) })
            return try await writer.commit()
        }
    }

    static func with(_ body: @Sendable (Fixture) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("api-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "test.api")
        logger.logLevel = .critical
        let service = try SnapshotService(
            catalog: MemoryCatalog(), blocks: MemoryBlockStore(), volumesDirectory: directory + "/volumes",
            options: SnapshotServiceOptions(blockSize: 4096), logger: logger)
        let actions = EC2Actions(
            snapshots: SnapshotActions(service: service), volumes: VolumeActions(service: service), imports: nil)
        let responder = EC2Responder(actions: actions, authenticator: TestAuthenticator(), logger: logger)
        let app = try APIServer.application(
            responder: responder, settings: .init(host: "127.0.0.1", port: 0), logger: logger)
        try await app.test(.router) { client in
            try await body(Fixture(service: service, client: client))
        }
    }

    @Test("an unexpected failure inside the server is EC2's InternalError (500) as XML, never an HTML page")
    func internalError() async throws {
        struct Broken: EC2Authenticator {
            struct Boom: Error {}
            func authenticate(_ request: SigV4IncomingRequest) async throws -> Authenticated { throw Boom() }
        }
        var logger = Logger(label: "test.api")
        logger.logLevel = .critical
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("api-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let service = try SnapshotService(
            catalog: MemoryCatalog(), blocks: MemoryBlockStore(), volumesDirectory: directory, logger: logger)
        let actions = EC2Actions(
            snapshots: SnapshotActions(service: service), volumes: VolumeActions(service: service), imports: nil)
        let app = try APIServer.application(
            responder: EC2Responder(actions: actions, authenticator: Broken(), logger: logger),
            settings: .init(host: "127.0.0.1", port: 0), logger: logger)
        try await app.test(.router) { client in
            try await client.execute(
                uri: "/", method: .post, body: ByteBuffer(string: "Action=DescribeSnapshots&Version=2016-11-15")
            ) { response in
                #expect(response.status == .internalServerError)
                #expect(response.headers[.contentType]?.hasPrefix("text/xml") == true)
                let parsed = XMLTextCollector.collect(String(buffer: response.body))
                #expect(!parsed.failed && parsed.values["Code"] == "InternalError")
                #expect(parsed.values["RequestID"]?.isEmpty == false)
            }
        }
    }

    @Test("health check, paths, verbs, missing action, unknown action, version, authentication")
    func plumbing() async throws {
        try await Self.with { f in
            try await f.client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == "ok\n")
            }
            try await f.client.execute(uri: "/nope", method: .get) { response in
                #expect(response.status.code == 404)
                #expect(XMLTextCollector.parse(String(buffer: response.body))["Code"] == "InvalidURI")
            }
            try await f.client.execute(uri: "/", method: .put, headers: [.authorization: "Test alice@acme"]) {
                response in
                #expect(response.status.code == 405)
                #expect(XMLTextCollector.parse(String(buffer: response.body))["Code"] == "UnsupportedHttpVerb")
            }
            #expect(try await f.error("Version=2016-11-15") == "MissingAction")
            #expect(try await f.error("Action=RunInstances&Version=2016-11-15") == "InvalidAction")
            #expect(try await f.error("Action=DescribeSnapshots&Version=2014-01-01") == "InvalidParameterValue")
            #expect(
                try await f.error("Action=DescribeSnapshots&Version=2016-11-15", as: nil, status: 403)
                    == "MissingAuthenticationToken")
            #expect(
                try await f.error("Action=DescribeSnapshots&Version=2016-11-15&Owner.1=%ZZ") == "MalformedQueryString")
            // GET with a query string works like POST.
            try await f.client.execute(
                uri: "/?Action=DescribeSnapshots&Version=2016-11-15", method: .get,
                headers: [.authorization: "Test alice@acme"]
            ) { response in
                #expect(response.status == .ok)
                #expect(
                    String(buffer: response.body).contains(
                        "<DescribeSnapshotsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"))
            }
            #expect(
                try await f.error("Action=ImportSnapshot&Version=2016-11-15&DiskContainer.Url=s3%3A%2F%2Fb%2Fk")
                    == "UnsupportedOperation")
        }
    }

    @Test("DescribeSnapshots: own, shared with me, public, Owner/RestorableBy/filters, privacy")
    func describe() async throws {
        try await Self.with { f in
            let a1 = try await f.snapshot(Self.alice, "alpha one")
            let a2 = try await f.snapshot(Self.alice, "alpha two")
            let b1 = try await f.snapshot(Self.bob, "bravo")
            let c1 = try await f.snapshot(Self.carol, "carol public")
            _ = try await f.service.share(a2.id, with: "bob@acme", caller: .project(Self.alice))
            _ = try await f.service.share(a2.id, with: "carol@other", caller: .project(Self.alice))
            _ = try await f.service.publish(c1.id, confirmBootable: false, caller: .project(Self.carol))
            let d = "Action=DescribeSnapshots&Version=2016-11-15"

            func ids(_ query: String, as who: String) async throws -> Set<String> {
                let (status, parsed, text) = try await f.call(d + query, as: who)
                #expect(status == 200, "\(text)")
                return Set(parsed.texts("snapshotId"))
            }
            #expect(try await ids("", as: "bob@acme") == [a2.id.rawValue, b1.id.rawValue, c1.id.rawValue])
            #expect(try await ids("&Owner.1=self", as: "alice@acme") == [a1.id.rawValue, a2.id.rawValue])
            #expect(try await ids("&RestorableBy.1=self", as: "bob@acme") == [a2.id.rawValue, b1.id.rawValue])
            #expect(try await ids("&RestorableBy.1=self&Owner.1=alice%40acme", as: "bob@acme") == [a2.id.rawValue])
            #expect(try await ids("&RestorableBy.1=all", as: "bob@acme") == [c1.id.rawValue])
            // Alice asks who can restore hers; Bob cannot learn Alice's other grants.
            #expect(try await ids("&RestorableBy.1=carol%40other&Owner.1=self", as: "alice@acme") == [a2.id.rawValue])
            #expect(try await ids("&RestorableBy.1=carol%40other&Owner.1=alice%40acme", as: "bob@acme") == [])
            #expect(
                try await ids("&Filter.1.Name=description&Filter.1.Value.1=alpha*", as: "alice@acme")
                    == [a1.id.rawValue, a2.id.rawValue])
            #expect(
                try await ids("&Filter.1.Name=owner-id&Filter.1.Value.1=carol%40other", as: "alice@acme")
                    == [c1.id.rawValue])
            #expect(
                try await ids(
                    "&Filter.1.Name=status&Filter.1.Value.1=completed&Filter.2.Name=snapshot-id"
                        + "&Filter.2.Value.1=\(b1.id)", as: "operator") == [b1.id.rawValue])
            #expect(try await ids("&SnapshotId.1=\(a2.id)", as: "bob@acme") == [a2.id.rawValue])
            #expect(try await ids("", as: "operator").count == 4)
            #expect(try await ids("&Owner.1=self", as: "operator").count == 4)

            // The answer carries EC2's Snapshot members.
            let (_, one, _) = try await f.call(d + "&SnapshotId.1=\(a1.id)")
            #expect(one.values["status"] == "completed")
            #expect(one.values["ownerId"] == "alice@acme")
            #expect(one.values["volumeSize"] == "1")
            #expect(one.values["progress"] == "100%")
            #expect(one.values["description"] == "alpha one")
            #expect(one.values["volumeId"] == "vol-ffffffff")

            // Errors.
            #expect(try await f.error(d + "&SnapshotId.1=\(a1.id)", as: "bob@acme") == "InvalidSnapshot.NotFound")
            #expect(try await f.error(d + "&SnapshotId.1=snap-XYZ") == "InvalidSnapshotID.Malformed")
            #expect(try await f.error(d + "&SnapshotId.1=\(a1.id)&MaxResults=5") == "InvalidParameterCombination")
            #expect(try await f.error(d + "&MaxResults=4") == "InvalidParameterValue")
            #expect(try await f.error(d + "&MaxResults=1001") == "InvalidParameterValue")
            #expect(try await f.error(d + "&NextToken=bogus") == "InvalidPaginationToken")
            #expect(try await f.error(d + "&Filter.1.Name=tag-key&Filter.1.Value.1=x") == "InvalidParameterValue")
            #expect(try await f.error(d + "&Filter.1.Name=status&Filter.1.Value.1=done") == "InvalidParameterValue")
            #expect(try await f.error(d + "&Owner.1=not-a-project") == "InvalidParameterValue")
            #expect(try await f.error(d + "&DryRun=true", status: 412) == "DryRunOperation")
        }
    }

    @Test("DescribeSnapshots pages with MaxResults/NextToken, filtered and not, each snapshot once")
    func pagination() async throws {
        try await Self.with { f in
            var made: [String] = []
            for i in 0..<23 {
                made.append(try await f.snapshot(i % 2 == 0 ? Self.alice : Self.bob, "d\(i)").id.rawValue)
            }
            for (query, expected) in [
                ("", made), ("&Owner.1=self", made.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)),
            ] {
                var seen: [String] = []
                var token: String?
                var pages = 0
                repeat {
                    var body = "Action=DescribeSnapshots&Version=2016-11-15&MaxResults=5" + query
                    if let token { body += "&NextToken=" + token }
                    let (status, parsed, text) = try await f.call(body, as: query.isEmpty ? "operator" : "alice@acme")
                    #expect(status == 200, "\(text)")
                    let page = parsed.texts("snapshotId")
                    #expect(page.count <= 5)
                    seen += page
                    token = parsed.texts("nextToken").first
                    pages += 1
                } while token != nil && pages < 20
                #expect(seen == expected, "every snapshot once, in creation order")
                #expect(pages == (expected.count + 4) / 5)
            }
        }
    }

    @Test("attributes: both ModifySnapshotAttribute forms, Description.Value, reset, owner-only reads")
    func attributes() async throws {
        try await Self.with { f in
            let s = try await f.snapshot(Self.alice, "shared")
            let m = "Action=ModifySnapshotAttribute&Version=2016-11-15&SnapshotId=\(s.id)"
            let read =
                "Action=DescribeSnapshotAttribute&Version=2016-11-15&SnapshotId=\(s.id)&Attribute=createVolumePermission"

            var (status, parsed, text) = try await f.call(
                m + "&Attribute=createVolumePermission&OperationType=add&UserId.1=bob%40acme&UserId.2=carol%40other")
            #expect(status == 200, "\(text)")
            #expect(parsed.values["return"] == "true")
            (status, parsed, text) = try await f.call(m + "&CreateVolumePermission.Add.1.Group=all")
            #expect(status == 200, "\(text)")
            (_, parsed, _) = try await f.call(read)
            #expect(Set(parsed.texts("userId")) == ["bob@acme", "carol@other"])
            #expect(parsed.texts("group") == ["all"])
            (status, _, text) = try await f.call(
                m + "&CreateVolumePermission.Remove.1.UserId=carol%40other&CreateVolumePermission.Remove.2.Group=all")
            #expect(status == 200, "\(text)")
            (_, parsed, _) = try await f.call(read)
            #expect(parsed.texts("userId") == ["bob@acme"])
            #expect(parsed.texts("group") == [])

            // Description.Value (the reference cloud's extension), read back both ways.
            (status, _, text) = try await f.call(m + "&Description.Value=new+%3Cdesc%3E")
            #expect(status == 200, "\(text)")
            (_, parsed, _) = try await f.call(
                "Action=DescribeSnapshotAttribute&Version=2016-11-15&SnapshotId=\(s.id)&Attribute=description")
            #expect(parsed.values["value"] == "new <desc>")

            // Only the owner reads or changes permissions; a grantee sees the snapshot but not its grants.
            #expect(try await f.error(read, as: "bob@acme", status: 403) == "UnauthorizedOperation")
            #expect(
                try await f.error(m + "&OperationType=add&UserGroup.1=all", as: "bob@acme", status: 403)
                    == "UnauthorizedOperation")
            #expect(try await f.error(read, as: "carol@other") == "InvalidSnapshot.NotFound")

            // Bad values change nothing.
            #expect(try await f.error(m + "&OperationType=add&UserGroup.1=everyone") == "InvalidParameterValue")
            #expect(
                try await f.error(m + "&OperationType=add&UserId.1=dave%40acme&UserId.2=bad") == "InvalidParameterValue"
            )
            #expect(try await f.error(m + "&OperationType=grant&UserId.1=dave%40acme") == "InvalidParameterValue")
            #expect(try await f.error(m + "&UserId.1=dave%40acme") == "MissingParameter")
            #expect(try await f.error(m) == "MissingParameter")
            #expect(try await f.error(m + "&OperationType=add&UserId.1=alice%40acme") == "InvalidParameterValue")
            #expect(
                try await f.error(
                    m
                        + "&CreateVolumePermission.Add.1.UserId=dave%40acme&CreateVolumePermission.Remove.1.UserId=dave%40acme"
                ) == "InvalidParameterCombination")
            (_, parsed, _) = try await f.call(read)
            #expect(parsed.texts("userId") == ["bob@acme"], "nothing changed")
            #expect(
                try await f.error(
                    m.replacingOccurrences(of: "\(s.id)", with: "snap-0000beef") + "&OperationType=add&UserGroup.1=all")
                    == "InvalidSnapshot.NotFound")

            // Reset: private and shared with nobody.
            (status, _, text) = try await f.call(
                "Action=ResetSnapshotAttribute&Version=2016-11-15&SnapshotId=\(s.id)&Attribute=createVolumePermission")
            #expect(status == 200, "\(text)")
            (_, parsed, text) = try await f.call(read)
            #expect(parsed.texts("userId") == [] && text.contains("<createVolumePermission/>"))
            #expect(
                try await f.error(
                    "Action=ResetSnapshotAttribute&Version=2016-11-15&SnapshotId=\(s.id)&Attribute=description")
                    == "InvalidParameterValue")
            #expect(
                try await f.error("Action=DescribeSnapshotAttribute&Version=2016-11-15&SnapshotId=\(s.id)")
                    == "MissingParameter")
        }
    }

    @Test(
        "volumes and snapshot lifecycle: CreateVolume (ClientToken), DescribeVolumes, CreateSnapshot, CopySnapshot, deletes"
    )
    func lifecycle() async throws {
        try await Self.with { f in
            let s = try await f.snapshot(Self.alice, "base")
            let create =
                "Action=CreateVolume&Version=2016-11-15&AvailabilityZone=any&SnapshotId=\(s.id)&ClientToken=tok-1"
            var (status, parsed, text) = try await f.call(create)
            #expect(status == 200, "\(text)")
            let volume = try #require(parsed.values["volumeId"])
            #expect(parsed.values["status"] == "available")
            #expect(parsed.values["snapshotId"] == s.id.rawValue)
            (_, parsed, _) = try await f.call(create)
            #expect(parsed.values["volumeId"] == volume, "the same ClientToken answers the same volume")
            #expect(
                try await f.error(create.replacingOccurrences(of: "any", with: "x") + "&Size=2")
                    == "InvalidParameterValue")
            #expect(try await f.error("Action=CreateVolume&Version=2016-11-15&Size=1") == "MissingParameter")
            #expect(
                try await f.error("Action=CreateVolume&Version=2016-11-15&SnapshotId=\(s.id)&ClientToken=tok-1&Size=1")
                    == "IdempotentParameterMismatch")
            #expect(
                try await f.error("Action=CreateVolume&Version=2016-11-15&SnapshotId=\(s.id)", as: "carol@other")
                    == "InvalidSnapshot.NotFound")

            (_, parsed, _) = try await f.call("Action=DescribeVolumes&Version=2016-11-15")
            #expect(parsed.texts("volumeId") == [volume])
            (_, parsed, _) = try await f.call("Action=DescribeVolumes&Version=2016-11-15", as: "bob@acme")
            #expect(parsed.texts("volumeId") == [])
            #expect(
                try await f.error("Action=DescribeVolumes&Version=2016-11-15&VolumeId.1=vol-0000beef")
                    == "InvalidVolume.NotFound")
            #expect(
                try await f.error("Action=DescribeVolumes&Version=2016-11-15&VolumeId.1=v")
                    == "InvalidVolumeID.Malformed")

            (status, parsed, text) = try await f.call(
                "Action=CreateSnapshot&Version=2016-11-15&VolumeId=\(volume)&Description=from+vol")
            #expect(status == 200, "\(text)")
            #expect(parsed.values["volumeId"] == volume)
            #expect(parsed.values["description"] == "from vol")
            let fromVolume = try #require(parsed.values["snapshotId"])

            // A public snapshot copied into Bob's project.
            _ = try await f.service.publish(s.id, confirmBootable: false, caller: .project(Self.alice))
            (status, parsed, text) = try await f.call(
                "Action=CopySnapshot&Version=2016-11-15&SourceRegion=any&SourceSnapshotId=\(s.id)"
                    + "&PresignedUrl=https%3A%2F%2Fx&DestinationRegion=any", as: "bob@acme")
            #expect(status == 200, "\(text)")
            let copy = try #require(parsed.values["snapshotId"])
            let copied = try await f.service.snapshot(try SnapshotID(parsing: copy), caller: .project(Self.bob))
            #expect(copied.owner == Self.bob && copied.checksum == s.checksum && copied.state == .available)
            #expect(
                try await f.service.listVolumes(caller: .project(Self.bob)).isEmpty, "the copy's scratch volume is gone"
            )

            #expect(
                try await f.error(
                    "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=\(s.id)", as: "bob@acme", status: 403)
                    == "UnauthorizedOperation")
            (status, _, text) = try await f.call("Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=\(fromVolume)")
            #expect(status == 200, "\(text)")
            #expect(
                try await f.error("Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=\(fromVolume)")
                    == "InvalidSnapshot.NotFound")
            (status, _, text) = try await f.call("Action=DeleteVolume&Version=2016-11-15&VolumeId=\(volume)")
            #expect(status == 200, "\(text)")
            #expect(
                try await f.error("Action=DeleteVolume&Version=2016-11-15&VolumeId=\(volume)")
                    == "InvalidVolume.NotFound")
            #expect(try await f.error("Action=DeleteSnapshot&Version=2016-11-15") == "MissingParameter")
        }
    }
}
