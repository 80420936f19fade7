import Foundation
import SigV4
import Testing

/// AWS's Signature V4 test suite (Apache-2.0), copied into the repository at
/// `Tests/Fixtures/aws-sig-v4-test-suite` with its LICENSE and NOTICE (see test-peers.md for its traps).
@Suite("SigV4 AWS test suite")
struct SigV4SuiteTests {
    static let suiteDirectory: String = {
        if let dir = ProcessInfo.processInfo.environment["SNAPIMPORT_SIGV4_SUITE"] { return dir }
        // Tests/SigV4Tests/<this file> → Tests/Fixtures/aws-sig-v4-test-suite
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/aws-sig-v4-test-suite").path
    }()

    /// Every directory holding a `.req` file, relative to the suite root.
    static let cases: [String] = {
        guard let walker = FileManager.default.enumerator(atPath: suiteDirectory) else { return [] }
        var found: [String] = []
        for case let item as String in walker where item.hasSuffix(".req") {
            found.append((item as NSString).deletingLastPathComponent)
        }
        return found.sorted()
    }()

    static let credentials = SigV4Credentials(
        accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    static let token =
        "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
    /// 2015-08-30T12:36:00Z
    static let date = Date(timeIntervalSince1970: 1_440_938_160)

    @Test("the suite is present and complete")
    func suitePresent() {
        #expect(Self.cases.count == 31, "found \(Self.cases.count) cases in \(Self.suiteDirectory)")
    }

    @Test("canonical request, string to sign and Authorization match", arguments: cases)
    func vector(_ name: String) throws {
        let base = Self.suiteDirectory + "/" + name + "/" + (name as NSString).lastPathComponent
        let raw = try String(contentsOfFile: base + ".req", encoding: .utf8)
        let expectedCreq = try String(contentsOfFile: base + ".creq", encoding: .utf8)
        let expectedSts = try String(contentsOfFile: base + ".sts", encoding: .utf8)
        let expectedAuthz = try String(contentsOfFile: base + ".authz", encoding: .utf8)
        var request = try Self.parse(raw)

        var credentials = Self.credentials
        var placement = SigV4Signer.SessionTokenPlacement.signed
        if name.hasSuffix("post-sts-header-before") {
            credentials.sessionToken = Self.token
        } else if name.hasSuffix("post-sts-header-after") {
            credentials.sessionToken = Self.token
            placement = .unsigned
        }
        let signer = SigV4Signer(
            credentials: credentials, region: "us-east-1", service: "service", pathStyle: .normalized,
            sessionTokenPlacement: placement)
        let signed = signer.sign(request, date: Self.date)
        #expect(signed.canonicalRequest == expectedCreq)

        // Known traps (test-peers.md): in post-x-www-form-urlencoded the .creq lists content-length, but the
        // .sts/.authz were computed without it. In post-x-www-form-urlencoded-parameters the .sts and the
        // signature were computed without content-length *and* with `charset=utf8` (not `utf-8`), while
        // the .authz's SignedHeaders still name content-length (found by hashing the variants).
        if name == "post-x-www-form-urlencoded" || name == "post-x-www-form-urlencoded-parameters" {
            request.headers.removeAll { $0.name.lowercased() == "content-length" }
        }
        if name == "post-x-www-form-urlencoded-parameters" {
            request.headers = request.headers.map {
                ($0.name, $0.value.replacingOccurrences(of: "charset=utf-8", with: "charset=utf8"))
            }
            let forSts = signer.sign(request, date: Self.date)
            #expect(forSts.stringToSign == expectedSts)
            #expect(expectedAuthz.hasSuffix("Signature=" + forSts.signature))
            #expect(signed.authorization.components(separatedBy: ", Signature=").first
                == expectedAuthz.components(separatedBy: ", Signature=").first)
            return
        }
        let forSts = signer.sign(request, date: Self.date)
        #expect(forSts.stringToSign == expectedSts)
        #expect(forSts.authorization == expectedAuthz)
        if name.hasSuffix("post-sts-header-after") {
            #expect(forSts.headers.contains { $0.name == "X-Amz-Security-Token" && $0.value == Self.token })
        }
    }

    /// Parses a `.req` file: request line, headers (continuation lines become further values of
    /// the previous header, as the suite's .creq expects), blank line, body.
    static func parse(_ text: String) throws -> SigV4Request {
        var lines = text.components(separatedBy: "\n")
        let requestLine = lines.removeFirst()
        let method = String(requestLine.prefix { $0 != " " })
        var target = String(requestLine.dropFirst(method.count + 1))
        if let range = target.range(of: " HTTP/", options: .backwards) {
            target = String(target[..<range.lowerBound])
        }
        var path = target
        var query: [(name: String, value: String)] = []
        if let q = target.firstIndex(of: "?") {
            path = String(target[..<q])
            for pair in target[target.index(after: q)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query.append((String(parts[0]), parts.count > 1 ? String(parts[1]) : ""))
            }
        }
        var headers: [(name: String, value: String)] = []
        var bodyLines: [String] = []
        var inBody = false
        for line in lines {
            if inBody {
                bodyLines.append(line)
                continue
            }
            if line.isEmpty {
                inBody = true
                continue
            }
            if line.first == " " || line.first == "\t", let last = headers.last {
                headers.append((last.name, line))
                continue
            }
            let colon = try #require(line.firstIndex(of: ":"))
            headers.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
        }
        let body = bodyLines.joined(separator: "\n")
        var request = SigV4Request(
            method: method, path: path, query: query, headers: headers,
            payloadHash: SigV4Signer.hexSHA256(Array(body.utf8)))
        // The request line is the path as sent (`/example space/`, raw UTF-8): the signer takes it verbatim.
        request.pathIsEncoded = true
        return request
    }
}

/// S3's own documented examples (sig-v4-header-based-auth.html, "Examples of signature calculations"):
/// bucket `examplebucket`, key `AKIAIOSFODNN7EXAMPLE`, 2013-05-24T00:00:00Z, us-east-1.
@Suite("SigV4 S3 examples")
struct SigV4S3ExampleTests {
    static let signer = SigV4Signer(
        credentials: SigV4Credentials(
            accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1", service: "s3", pathStyle: .s3)
    static let date = Date(timeIntervalSince1970: 1_369_353_600)
    static let host = ("Host", "examplebucket.s3.amazonaws.com")

    @Test("GET /test.txt with Range")
    func getObjectWithRange() {
        let signed = Self.signer.sign(
            SigV4Request(
                method: "GET", path: "/test.txt",
                headers: [Self.host, ("Range", "bytes=0-9"), ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash)],
                payloadHash: SigV4Signer.emptyPayloadHash),
            date: Self.date)
        #expect(signed.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(signed.signature.hasPrefix("f0e8bdb87c96"))
        #expect(
            signed.authorization
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test("PUT /test$file.text with a body and a storage class")
    func putObject() {
        let body = "Welcome to Amazon S3."
        let hash = SigV4Signer.hexSHA256(Array(body.utf8))
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let signed = Self.signer.sign(
            SigV4Request(
                method: "PUT", path: "/test$file.text",
                headers: [
                    Self.host, ("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                    ("x-amz-content-sha256", hash),
                ],
                payloadHash: hash),
            date: Self.date)
        #expect(signed.encodedPath == "/test%24file.text")
        #expect(signed.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test("GET ?lifecycle (empty query value)")
    func getLifecycle() {
        let signed = Self.signer.sign(
            SigV4Request(
                method: "GET", path: "/", query: [("lifecycle", "")],
                headers: [Self.host, ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash)],
                payloadHash: SigV4Signer.emptyPayloadHash),
            date: Self.date)
        #expect(signed.encodedQuery == "lifecycle=")
        #expect(signed.signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    @Test("GET ?max-keys=2&prefix=J (sorted query)")
    func listObjects() {
        let signed = Self.signer.sign(
            SigV4Request(
                method: "GET", path: "/", query: [("prefix", "J"), ("max-keys", "2")],
                headers: [Self.host, ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash)],
                payloadHash: SigV4Signer.emptyPayloadHash),
            date: Self.date)
        #expect(signed.encodedQuery == "max-keys=2&prefix=J")
        #expect(signed.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }
}

@Suite("SigV4 S3 path encoding")
struct SigV4PathTests {
    @Test("S3 paths are encoded once and never normalized")
    func s3PathsEncodedOnce() {
        let signer = SigV4Signer(
            credentials: SigV4Credentials(accessKeyID: "A", secretAccessKey: "S"), region: "us-east-1")
        func path(_ raw: String) -> String {
            signer.sign(
                SigV4Request(method: "GET", path: raw, headers: [("Host", "h")], payloadHash: "x"),
                date: Date(timeIntervalSince1970: 0)
            ).encodedPath
        }
        #expect(path("/b/p@c/a b+c=d&e.qcow2") == "/b/p%40c/a%20b%2Bc%3Dd%26e.qcow2")
        #expect(path("/b/ü/日本/x") == "/b/%C3%BC/%E6%97%A5%E6%9C%AC/x")
        #expect(path("/b/a//b") == "/b/a//b")
        #expect(path("/b/%41") == "/b/%2541")
        #expect(path("/b/~tilde") == "/b/~tilde")
        #expect(path("/b/./x/../y") == "/b/./x/../y")
    }

    @Test("timestamps are UTC and zero-padded")
    func timestamps() {
        #expect(SigV4Signer.timestamps(Date(timeIntervalSince1970: 0)) == ("19700101T000000Z", "19700101"))
        #expect(SigV4Signer.timestamps(Date(timeIntervalSince1970: 1_440_938_160)) == ("20150830T123600Z", "20150830"))
        #expect(SigV4Signer.timestamps(Date(timeIntervalSince1970: 951_782_400)) == ("20000229T000000Z", "20000229"))
    }

    @Test("credentials never print their secret")
    func redaction() {
        let credentials = SigV4Credentials(accessKeyID: "AKID", secretAccessKey: "SECRETVALUE", sessionToken: "TOKENVALUE")
        for text in [String(describing: credentials), String(reflecting: credentials), "\(credentials)"] {
            #expect(!text.contains("SECRETVALUE"))
            #expect(!text.contains("TOKENVALUE"))
        }
        var dumped = ""
        dump(credentials, to: &dumped)
        #expect(!dumped.contains("SECRETVALUE"))
    }
}
