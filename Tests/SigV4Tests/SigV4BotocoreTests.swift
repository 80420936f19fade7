import Foundation
import SigV4
import Testing

/// Requests signed by botocore itself (the library under the aws CLI and boto3), verified here: EC2's
/// form POST, a GET with an encoded path and an encoded query, a presigned query (`SigV4QueryAuth`),
/// and S3's signer (`S3SigV4Auth`, with its `X-Amz-Content-SHA256`). Skipped, with the reason, when
/// `python3` cannot import botocore (`pip install awscli boto3` provides it).
@Suite("SigV4 verifier: requests signed by botocore", .enabled(if: Botocore.available, Botocore.skipReason))
struct SigV4BotocoreTests {
    static let accessKeyID = "AKIABOTOCORE00000001"
    static let secret = "bOtOcOrE/sEcReT+kEy0123456789abcdefghijk"

    /// One request for botocore to sign.
    struct Spec: Encodable {
        var method: String
        var url: String
        var body: String = ""
        var params: [String: String]? = nil
        var headers: [String: String]? = nil
        var auth: String
        var service: String = "ec2"
        var region: String = "croc"
        var expires: Int? = nil
    }

    struct Signed: Decodable {
        var method: String
        var path: String
        var query: String
        var headers: [[String]]
        var body: String

        var request: SigV4IncomingRequest {
            SigV4IncomingRequest(
                method: method, path: path, query: query, headers: headers.map { ($0[0], $0[1]) },
                body: Array(Data(base64Encoded: body) ?? Data()))
        }
    }

    static let specs: [Spec] = [
        Spec(
            method: "POST", url: "http://127.0.0.1:8773/",
            body: "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=snap-0123abcd",
            headers: ["Content-Type": "application/x-www-form-urlencoded; charset=utf-8"], auth: "header"),
        Spec(
            method: "POST", url: "http://localhost/", body: "Action=DescribeSnapshots&Owner.1=self", auth: "header",
            region: "US-WEST-2"),
        Spec(
            method: "GET", url: "http://127.0.0.1:8773/some%20path/x%2Fy",
            params: ["Filter.1.Value.1": "a b+c/d=é", "Action": "DescribeSnapshots"], auth: "header"),
        Spec(
            method: "GET", url: "http://127.0.0.1:8773/", params: ["Action": "CopySnapshot", "SourceRegion": "croc"],
            auth: "query", expires: 3600),
        Spec(method: "PUT", url: "http://127.0.0.1:8333/bucket/a%20b%40c.txt", body: "hello", auth: "s3", region: "us-east-1"),
    ]

    @Test("every request botocore signs is accepted as its key; a body, query or path byte changed is refused")
    func botocoreSigned() async throws {
        let signed = try Botocore.sign(Self.specs, accessKeyID: Self.accessKeyID, secret: Self.secret)
        try #require(signed.count == Self.specs.count)
        let keys = [Self.accessKeyID: Self.secret]
        for (spec, signed) in zip(Self.specs, signed) {
            let service = spec.auth == "s3" ? "s3" : spec.service
            let request = signed.request
            let result = await verify(request, service: service, now: Date(), keys: keys)
            #expect(result.accepted, "\(spec.url) \(spec.auth): \(String(describing: result.error))")
            if case .success(let identity) = result {
                #expect(identity.accessKeyID == Self.accessKeyID && identity.region == spec.region)
            }
            if !request.body.isEmpty {
                var changed = request
                changed.body[0] ^= 1
                #expect(await verify(changed, service: service, now: Date(), keys: keys).error == .signatureMismatch)
            }
            var path = request
            path.path += "x"
            #expect(await verify(path, service: service, now: Date(), keys: keys).error == .signatureMismatch)
            var query = request
            query.query += query.query.isEmpty ? "a=1" : "&a=1"
            #expect(await verify(query, service: service, now: Date(), keys: keys).error == .signatureMismatch)
            #expect(await verify(request, service: service, now: Date().addingTimeInterval(7200), keys: keys).error != nil)
        }
    }
}

/// Runs botocore's signers in `python3`.
enum Botocore {
    static let available: Bool = {
        (try? run(["-c", "import botocore.auth"], input: Data()).status) == 0
    }()
    static let skipReason: Comment = "python3 cannot import botocore (pip install awscli boto3)"

    static let script = """
        import base64, json, sys
        from urllib.parse import urlsplit
        from botocore.auth import SigV4Auth, SigV4QueryAuth, S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        creds = Credentials(sys.argv[1], sys.argv[2])
        out = []
        for spec in json.loads(sys.stdin.read()):
            request = AWSRequest(method=spec["method"], url=spec["url"], data=spec.get("body", "").encode(),
                                 params=spec.get("params") or {}, headers=spec.get("headers") or {})
            if spec["auth"] == "header":
                SigV4Auth(creds, spec["service"], spec["region"]).add_auth(request)
            elif spec["auth"] == "s3":
                S3SigV4Auth(creds, "s3", spec["region"]).add_auth(request)
            else:
                SigV4QueryAuth(creds, spec["service"], spec["region"], expires=spec["expires"]).add_auth(request)
            prepared = request.prepare()
            url = urlsplit(prepared.url)
            headers = [[k, v] for k, v in prepared.headers.items()]
            if not any(k.lower() == "host" for k, _ in headers):
                headers.append(["Host", url.netloc])
            body = prepared.body or b""
            if isinstance(body, str):
                body = body.encode()
            out.append({"method": prepared.method, "path": url.path, "query": url.query, "headers": headers,
                        "body": base64.b64encode(body).decode()})
        print(json.dumps(out))
        """

    static func sign(_ specs: [SigV4BotocoreTests.Spec], accessKeyID: String, secret: String) throws
        -> [SigV4BotocoreTests.Signed]
    {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sign-\(UUID().uuidString).py")
        try script.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let (status, output, errors) = try run(
            [file.path, accessKeyID, secret], input: try JSONEncoder().encode(specs))
        try #require(status == 0, "botocore signing failed: \(errors)")
        return try JSONDecoder().decode([SigV4BotocoreTests.Signed].self, from: output)
    }

    static func run(_ arguments: [String], input: Data) throws -> (status: Int32, output: Data, errors: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let stdin = Pipe()
        let stdout = FileManager.default.temporaryDirectory.appendingPathComponent("botocore-\(UUID().uuidString)")
        let stderr = FileManager.default.temporaryDirectory.appendingPathComponent("botocore-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: stdout.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderr.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: stdout)
            try? FileManager.default.removeItem(at: stderr)
        }
        process.standardInput = stdin
        process.standardOutput = try FileHandle(forWritingTo: stdout)
        process.standardError = try FileHandle(forWritingTo: stderr)
        try process.run()
        stdin.fileHandleForWriting.write(input)
        try stdin.fileHandleForWriting.close()
        process.waitUntilExit()
        return (
            process.terminationStatus, try Data(contentsOf: stdout),
            (try? String(contentsOf: stderr, encoding: .utf8)) ?? ""
        )
    }
}
