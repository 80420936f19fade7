import Foundation
import SigV4
import Testing

/// A signed request of the suite (`.sreq`) as a server receives it.
struct SuiteRequest {
    var name: String
    var request: SigV4IncomingRequest

    static let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    /// 2015-08-30T12:36:00Z, the suite's X-Amz-Date.
    static let date = Date(timeIntervalSince1970: 1_440_938_160)

    init(_ name: String) throws {
        self.name = name
        let base = SigV4SuiteTests.suiteDirectory + "/" + name + "/" + (name as NSString).lastPathComponent
        let raw = try String(contentsOfFile: base + ".sreq", encoding: .utf8)
        let signed = try SigV4SuiteTests.parse(raw)
        let body = raw.components(separatedBy: "\n\n").dropFirst().joined(separator: "\n\n")
        let requestLine = raw.prefix { $0 != "\n" }
        var target = String(requestLine.split(separator: " ", maxSplits: 1)[1])
        if let range = target.range(of: " HTTP/", options: .backwards) { target = String(target[..<range.lowerBound]) }
        let query = target.firstIndex(of: "?").map { String(target[target.index(after: $0)...]) } ?? ""
        var headers = signed.headers.map { (name: $0.name, value: $0.value) }
        if name.hasSuffix("post-x-www-form-urlencoded-parameters") {
            // The suite's trap (see SigV4SuiteTests): this vector's signature was computed over
            // `charset=utf8`, while its .sreq shows `charset=utf-8`. Verify the bytes that were signed.
            headers = headers.map {
                ($0.name, $0.value.replacingOccurrences(of: "charset=utf-8", with: "charset=utf8"))
            }
        }
        request = SigV4IncomingRequest(
            method: signed.method, path: signed.path, query: query, headers: headers, body: Array(body.utf8))
    }

    /// The signed header names, from the Authorization header.
    var signedHeaders: [String] {
        let authorization = request.headers.first { $0.name.lowercased() == "authorization" }?.value ?? ""
        guard let range = authorization.range(of: "SignedHeaders=") else { return [] }
        return authorization[range.upperBound...].prefix { $0 != "," }.split(separator: ";").map(String.init)
    }
}

/// Runs the verifier with the suite's key (or `secret`), expecting `expected` (nil: success).
func verify(
    _ request: SigV4IncomingRequest, service: String = "service", now: Date = SuiteRequest.date,
    keys: [String: String] = ["AKIDEXAMPLE": SuiteRequest.secret]
) async -> Result<SigV4Identity, SigV4VerificationError> {
    do {
        let identity = try await SigV4Verifier(service: service).verify(request, now: now) { keys[$0] }
        return .success(identity)
    } catch let error as SigV4VerificationError {
        return .failure(error)
    } catch {
        Issue.record("unexpected error \(error)")
        return .failure(.signatureMismatch)
    }
}

extension Result where Failure == SigV4VerificationError {
    var error: SigV4VerificationError? {
        if case .failure(let error) = self { return error }
        return nil
    }
    var accepted: Bool { error == nil }
}

/// Changes one byte of `text`: its last non-space character becomes a different one of the same kind
/// (a digit stays a digit, so a date stays a date).
func changingOneByte(_ text: String, at position: Int? = nil) -> String {
    var bytes = Array(text.utf8)
    guard let index = position ?? bytes.lastIndex(where: { $0 != UInt8(ascii: " ") }) else { return text + "x" }
    let b = bytes[index]
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "8"): bytes[index] = b + 1
    case UInt8(ascii: "9"): bytes[index] = UInt8(ascii: "0")
    case UInt8(ascii: "a"): bytes[index] = UInt8(ascii: "b")
    default: bytes[index] = b == UInt8(ascii: "x") ? UInt8(ascii: "y") : UInt8(ascii: "x")
    }
    return String(decoding: bytes, as: UTF8.self)
}

@Suite("SigV4 verifier: AWS test suite")
struct SigV4VerifierSuiteTests {
    static let cases = SigV4SuiteTests.cases

    @Test("every signed request of the suite is accepted with its key at its time", arguments: cases)
    func accepted(_ name: String) async throws {
        let vector = try SuiteRequest(name)
        let result = await verify(vector.request)
        #expect(result.accepted, "\(name): \(String(describing: result.error))")
        if case .success(let identity) = result {
            #expect(
                identity
                    == SigV4Identity(
                        accessKeyID: "AKIDEXAMPLE", region: "us-east-1", service: "service", date: SuiteRequest.date))
        }
    }

    @Test("one byte of the signature changed is a mismatch, at every position", arguments: cases)
    func signatureChanged(_ name: String) async throws {
        let vector = try SuiteRequest(name)
        let index = try #require(vector.request.headers.firstIndex { $0.name == "Authorization" })
        let authorization = vector.request.headers[index].value
        let signatureStart = try #require(authorization.range(of: "Signature=")).upperBound
        let offset = authorization.utf8.distance(from: authorization.startIndex, to: signatureStart)
        for position in offset..<authorization.utf8.count {
            var request = vector.request
            request.headers[index].value = changingOneByte(authorization, at: position)
            #expect(await verify(request).error == .signatureMismatch, "\(name) position \(position)")
        }
    }

    @Test("one byte of any signed header value changed is a mismatch", arguments: cases)
    func signedHeaderChanged(_ name: String) async throws {
        let vector = try SuiteRequest(name)
        #expect(!vector.signedHeaders.isEmpty)
        for header in vector.signedHeaders {
            var request = vector.request
            let index = try #require(
                request.headers.firstIndex { $0.name.lowercased() == header }, "\(name): \(header)")
            let value = request.headers[index].value
            // A date stays a well-formed date (its seconds change): the signature, not the parser, must refuse it.
            let digit = header == "x-amz-date" ? value.utf8.count - 2 : nil
            request.headers[index].value = changingOneByte(value, at: digit)
            #expect(await verify(request).error == .signatureMismatch, "\(name): \(header) changed")
        }
    }

    @Test("one byte of the body changed (or a byte added) is a mismatch", arguments: cases)
    func bodyChanged(_ name: String) async throws {
        let vector = try SuiteRequest(name)
        var request = vector.request
        if request.body.isEmpty {
            request.body = [0x78]
        } else {
            request.body[request.body.count / 2] ^= 0x01
        }
        #expect(await verify(request).error == .signatureMismatch, "\(name)")
    }

    @Test("the path, the query or the method changed is a mismatch", arguments: cases)
    func targetChanged(_ name: String) async throws {
        let vector = try SuiteRequest(name)
        var path = vector.request
        path.path += "x"
        #expect(await verify(path).error == .signatureMismatch, "\(name): path")
        var query = vector.request
        query.query += query.query.isEmpty ? "extra=1" : "&extra=1"
        #expect(await verify(query).error == .signatureMismatch, "\(name): query")
        if !vector.request.query.isEmpty {
            var value = vector.request
            value.query = changingOneByte(value.query)
            #expect(await verify(value).error == .signatureMismatch, "\(name): query value")
        }
        var method = vector.request
        method.method = method.method == "GET" ? "POST" : "GET"
        #expect(await verify(method).error == .signatureMismatch, "\(name): method")
    }

    @Test("outside the 5-minute window is RequestExpired; at its edges it is accepted", arguments: cases)
    func staleDate(_ name: String) async throws {
        let vector = try SuiteRequest(name)
        for skew in [-301.0, 301, 3600, -86_400] {
            let error = await verify(vector.request, now: SuiteRequest.date.addingTimeInterval(skew)).error
            guard case .requestExpired(let message) = error else {
                Issue.record("\(name) at \(skew) s: \(String(describing: error))")
                continue
            }
            #expect(message.contains("20150830T123600Z"))
        }
        for skew in [-300.0, 300] {
            #expect(await verify(vector.request, now: SuiteRequest.date.addingTimeInterval(skew)).accepted)
        }
    }

    @Test("an unknown key, a wrong secret and another service are refused", arguments: cases)
    func wrongIdentity(_ name: String) async throws {
        let vector = try SuiteRequest(name)
        #expect(await verify(vector.request, keys: [:]).error == .unknownAccessKey)
        #expect(await verify(vector.request, keys: ["AKIDOTHER": SuiteRequest.secret]).error == .unknownAccessKey)
        #expect(
            await verify(vector.request, keys: ["AKIDEXAMPLE": changingOneByte(SuiteRequest.secret)]).error
                == .signatureMismatch)
        let error = await verify(vector.request, service: "ec2").error
        guard case .wrongService(let message) = error else {
            Issue.record("\(name): \(String(describing: error))")
            return
        }
        #expect(message.contains("\"service\"") && message.contains("ec2"))
        #expect(error?.awsCode == "AuthFailure" && error?.httpStatus == 401)
    }
}

/// The request the aws CLI 1.45.11 sent (ec2-api.md §3), with the headers botocore adds but does not sign.
@Suite("SigV4 verifier: the captured aws CLI request")
struct SigV4VerifierCLITests {
    static let body = "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=snap-1234567890abcdef0"
    static let signature = "c245e5ea9e6de1423d9cf7e0f416cdffd03ac762fd289d698acf93679f34bafd"
    /// 2026-11-30T16:28:12Z
    static let date = Date(timeIntervalSince1970: 1_796_056_092)

    static func request(signature: String = signature, body: String = body) -> SigV4IncomingRequest {
        SigV4IncomingRequest(
            method: "POST", path: "/", query: "",
            headers: [
                ("Host", "127.0.0.1:5056"),
                ("Accept-Encoding", "identity"),
                ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
                ("User-Agent", "aws-cli/1.45.11 md/Botocore#1.41.11 ua/2.1 os/linux"),
                ("X-Amz-Date", "20261130T162812Z"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/croc/ec2/aws4_request, "
                        + "SignedHeaders=content-type;host;x-amz-date, Signature=\(signature)"
                ),
                ("Content-Length", String(body.utf8.count)),
            ],
            body: Array(body.utf8))
    }

    @Test("the date is what the vector says")
    func date() {
        #expect(SigV4Signer.timestamps(Self.date).amzDate == "20261130T162812Z")
        #expect(SigV4Verifier.parseAmzDate("20261130T162812Z") == Self.date)
        #expect(
            SigV4Signer.hexSHA256(Array(Self.body.utf8))
                == "b46a73448343285fd5f3d3e37e05afb43d261587d868233943faf020124c2322")
    }

    @Test("accepted as the caller AKIDEXAMPLE in region croc")
    func accepted() async {
        let result = await verify(Self.request(), service: "ec2", now: Self.date.addingTimeInterval(42))
        #expect(
            (try? result.get())
                == SigV4Identity(accessKeyID: "AKIDEXAMPLE", region: "croc", service: "ec2", date: Self.date))
    }

    @Test("every byte of the signature and of the body changed, one at a time, is refused")
    func oneByteChanged() async {
        for position in 0..<Self.signature.utf8.count {
            let request = Self.request(signature: changingOneByte(Self.signature, at: position))
            #expect(await verify(request, service: "ec2", now: Self.date).error == .signatureMismatch, "\(position)")
        }
        for position in 0..<Self.body.utf8.count {
            let request = Self.request(body: changingOneByte(Self.body, at: position))
            #expect(await verify(request, service: "ec2", now: Self.date).error == .signatureMismatch, "\(position)")
        }
        var host = Self.request()
        host.headers[0].value = "127.0.0.1:5057"
        #expect(await verify(host, service: "ec2", now: Self.date).error == .signatureMismatch, "another port")
    }

    @Test("the signer computes the same signature (one canonicalization)")
    func signerAgrees() {
        let signer = SigV4Signer(
            credentials: SigV4Credentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: SuiteRequest.secret),
            region: "croc", service: "ec2", pathStyle: .normalized)
        let signed = signer.sign(
            SigV4Request(
                method: "POST", path: "/",
                headers: [
                    ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"), ("Host", "127.0.0.1:5056"),
                ],
                payloadHash: SigV4Signer.hexSHA256(Array(Self.body.utf8))),
            date: Self.date)
        #expect(signed.signature == Self.signature)
        #expect(
            signed.stringToSign
                == "AWS4-HMAC-SHA256\n20261130T162812Z\n20261130/croc/ec2/aws4_request\n"
                + "c1ee7503a980b1edbfc0982e016de50074d117580d3bfa23daf63cc417ca03f8")
    }
}

@Suite("SigV4 verifier: malformed requests, presigned requests, round trips")
struct SigV4VerifierFormTests {
    static let credentials = SigV4Credentials(
        accessKeyID: "AKIAEXAMPLE0000000001", secretAccessKey: "s3cr3t/with+chars")
    static let keys = [credentials.accessKeyID: credentials.secretAccessKey]
    static let now = Date(timeIntervalSince1970: 1_796_056_092)

    static func ec2Request(headers: [(name: String, value: String)]) -> SigV4IncomingRequest {
        SigV4IncomingRequest(method: "POST", path: "/", query: "", headers: headers, body: Array("Action=X".utf8))
    }

    @Test("no Authorization and no X-Amz-Signature is MissingAuthenticationToken (403)")
    func missing() async {
        let error = await verify(Self.ec2Request(headers: [("Host", "h")]), service: "ec2", keys: Self.keys).error
        #expect(error == .missingAuthentication)
        #expect(error?.awsCode == "MissingAuthenticationToken" && error?.httpStatus == 403)
    }

    @Test(
        "a malformed Authorization header or scope is IncompleteSignature (400)",
        arguments: [
            "AWS4-HMAC-SHA256",
            "AWS AKIAEXAMPLE0000000001:abc",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/20261130/croc/ec2/aws4_request, SignedHeaders=host;x-amz-date",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/20261130/croc/ec2, SignedHeaders=host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/2026-11-30/croc/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/20261130/croc/ec2/aws5_request, SignedHeaders=host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/20261129/croc/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/20261130/croc/ec2/aws4_request, SignedHeaders=x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/20261130/croc/ec2/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/20261130/croc/ec2/aws4_request, SignedHeaders=Host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/20261130/croc/ec2/aws4_request, SignedHeaders, Signature=00",
        ])
    func incomplete(_ authorization: String) async {
        let request = Self.ec2Request(headers: [
            ("Host", "h"), ("X-Amz-Date", "20261130T162812Z"), ("Authorization", authorization),
        ])
        let error = await verify(request, service: "ec2", now: Self.now, keys: Self.keys).error
        guard case .incompleteSignature(let message) = error else {
            Issue.record("\(authorization): \(String(describing: error))")
            return
        }
        #expect(!message.isEmpty)
        #expect(error?.awsCode == "IncompleteSignature" && error?.httpStatus == 400)
    }

    @Test("a missing or malformed X-Amz-Date is IncompleteSignature")
    func badDate() async {
        let authorization =
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0000000001/20261130/croc/ec2/aws4_request, "
            + "SignedHeaders=host;x-amz-date, Signature=00"
        for date in [nil, "2026-11-30T16:28:12Z", "20261130T162812", "20261131T162812Z", "20261130T246012Z"] {
            var headers: [(name: String, value: String)] = [("Host", "h"), ("Authorization", authorization)]
            if let date { headers.append(("X-Amz-Date", date)) }
            let error = await verify(Self.ec2Request(headers: headers), service: "ec2", now: Self.now, keys: Self.keys)
                .error
            guard case .incompleteSignature = error else {
                Issue.record("\(date ?? "nil"): \(String(describing: error))")
                continue
            }
        }
        #expect(SigV4Verifier.parseAmzDate("20000229T000000Z") == Date(timeIntervalSince1970: 951_782_400))
        #expect(SigV4Verifier.parseAmzDate("19000229T000000Z") == nil)
    }

    static func ec2Signer(region: String = "croc") -> SigV4Signer {
        SigV4Signer(credentials: credentials, region: region, service: "ec2", pathStyle: .normalized)
    }

    /// What a server receives for a signed request.
    static func received(_ signed: SigV4SignedRequest, method: String, body: [UInt8]) -> SigV4IncomingRequest {
        SigV4IncomingRequest(
            method: method, path: signed.encodedPath, query: signed.encodedQuery, headers: signed.headers, body: body)
    }

    @Test("signer → verifier round trip: odd paths, queries, header case, repeated headers, any region")
    func roundTrip() async throws {
        let paths = ["/", "/a b/c", "/ü/日本", "/x/./y/../z", "//double//", "/%41", "/a+b=c&d", "/~tilde-_."]
        let queries: [[(name: String, value: String)]] = [
            [], [("Action", "DescribeSnapshots"), ("Version", "2016-11-15")],
            [("b", "2"), ("a", "1"), ("a", "0")], [("space key", "v a+l/u=e"), ("ü", "")], [("empty", "")],
        ]
        for (i, path) in paths.enumerated() {
            for (j, query) in queries.enumerated() {
                let body = Array("Action=DescribeSnapshots&Owner.1=self&n=\(i)-\(j)".utf8)
                let region = ["croc", "us-east-1", "US-WEST-2", "region-1"][(i + j) % 4]
                let signed = Self.ec2Signer(region: region).sign(
                    SigV4Request(
                        method: "POST", path: path, query: query,
                        headers: [
                            ("Host", "127.0.0.1:8773"), ("content-TYPE", "application/x-www-form-urlencoded"),
                            ("X-Custom", "  one   two "), ("x-custom", "three"),
                        ],
                        payloadHash: SigV4Signer.hexSHA256(body)),
                    date: Self.now)
                let request = Self.received(signed, method: "POST", body: body)
                let identity = try await verify(request, service: "ec2", now: Self.now, keys: Self.keys).get()
                #expect(identity.region == region && identity.accessKeyID == Self.credentials.accessKeyID)
                var changed = request
                changed.body.append(0x20)
                #expect(
                    await verify(changed, service: "ec2", now: Self.now, keys: Self.keys).error == .signatureMismatch)
                changed = request
                changed.headers.append(("X-Custom", "four"))
                #expect(
                    await verify(changed, service: "ec2", now: Self.now, keys: Self.keys).error == .signatureMismatch,
                    "a further value of a signed header")
                changed = request
                changed.headers.append(("X-Unsigned", "anything"))
                #expect(
                    await verify(changed, service: "ec2", now: Self.now, keys: Self.keys).accepted, "unsigned header")
            }
        }
    }

    @Test("a signed X-Amz-Content-SHA256 gives the payload hash: UNSIGNED-PAYLOAD, or a hash the body must match")
    func contentHashHeader() async throws {
        let body = Array("Action=DescribeSnapshots".utf8)
        for hash in [SigV4Signer.unsignedPayload, SigV4Signer.hexSHA256(body)] {
            let signed = Self.ec2Signer().sign(
                SigV4Request(
                    method: "POST", path: "/", headers: [("Host", "h"), ("X-Amz-Content-SHA256", hash)],
                    payloadHash: hash),
                date: Self.now)
            let request = Self.received(signed, method: "POST", body: body)
            #expect(await verify(request, service: "ec2", now: Self.now, keys: Self.keys).accepted)
            var changed = request
            changed.body[0] ^= 1
            let error = await verify(changed, service: "ec2", now: Self.now, keys: Self.keys).error
            if hash == SigV4Signer.unsignedPayload {
                #expect(error == nil, "the client chose not to sign the body")
            } else {
                #expect(error == .signatureMismatch, "the body no longer matches its signed hash")
            }
        }
        // An unsigned X-Amz-Content-SHA256 is ignored: the body is hashed.
        let signed = Self.ec2Signer().sign(
            SigV4Request(method: "POST", path: "/", headers: [("Host", "h")], payloadHash: SigV4Signer.hexSHA256(body)),
            date: Self.now)
        var request = Self.received(signed, method: "POST", body: body)
        request.headers.append(("X-Amz-Content-SHA256", SigV4Signer.unsignedPayload))
        #expect(await verify(request, service: "ec2", now: Self.now, keys: Self.keys).accepted)
        request.body[0] ^= 1
        #expect(await verify(request, service: "ec2", now: Self.now, keys: Self.keys).error == .signatureMismatch)
    }

    @Test(
        "S3's documented presigned URL: the signer's presign reproduces it and the verifier accepts it until it expires"
    )
    func presignedS3Example() async throws {
        let credentials = SigV4Credentials(
            accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
        let signer = SigV4Signer(credentials: credentials, region: "us-east-1", service: "s3", pathStyle: .s3)
        let date = Date(timeIntervalSince1970: 1_369_353_600)
        let presigned = signer.presign(
            SigV4Request(
                method: "GET", path: "/test.txt", headers: [("Host", "examplebucket.s3.amazonaws.com")],
                payloadHash: SigV4Signer.unsignedPayload),
            date: date, expires: 86_400)
        #expect(presigned.signature == "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
        #expect(
            presigned.encodedQuery
                == "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
                + "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
                + "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
        let request = Self.received(presigned, method: "GET", body: [])
        let keys = [credentials.accessKeyID: credentials.secretAccessKey]
        let identity = try await verify(request, service: "s3", now: date.addingTimeInterval(86_400), keys: keys).get()
        #expect(identity.date == date && identity.service == "s3")
        guard
            case .requestExpired = await verify(
                request, service: "s3", now: date.addingTimeInterval(86_401), keys: keys
            ).error
        else {
            Issue.record("a presigned URL past X-Amz-Expires must be RequestExpired")
            return
        }
        guard
            case .requestExpired = await verify(request, service: "s3", now: date.addingTimeInterval(-301), keys: keys)
                .error
        else {
            Issue.record("a presigned URL from the future must be RequestExpired")
            return
        }
        var changed = request
        changed.query = changed.query.replacingOccurrences(of: "X-Amz-Expires=86400", with: "X-Amz-Expires=86401")
        #expect(await verify(changed, service: "s3", now: date, keys: keys).error == .signatureMismatch)
        changed = request
        changed.path = "/test.txu"
        #expect(await verify(changed, service: "s3", now: date, keys: keys).error == .signatureMismatch)
    }

    @Test(
        "an EC2 presigned query (CopySnapshot's PresignedUrl form) round-trips; tampering and bad parameters are refused"
    )
    func presignedEC2() async throws {
        let query: [(name: String, value: String)] = [
            ("Action", "CopySnapshot"), ("Version", "2016-11-15"), ("SourceSnapshotId", "snap-0123abcd"),
            ("SourceRegion", "croc"),
        ]
        let presigned = Self.ec2Signer().presign(
            SigV4Request(
                method: "GET", path: "/", query: query, headers: [("Host", "ec2.example:8773")],
                payloadHash: SigV4Signer.emptyPayloadHash),
            date: Self.now, expires: 3600)
        let request = Self.received(presigned, method: "GET", body: [])
        #expect(await verify(request, service: "ec2", now: Self.now.addingTimeInterval(3599), keys: Self.keys).accepted)
        var changed = request
        changed.query = changed.query.replacingOccurrences(of: "snap-0123abcd", with: "snap-0123abce")
        #expect(await verify(changed, service: "ec2", now: Self.now, keys: Self.keys).error == .signatureMismatch)
        changed = request
        changed.headers = [("Host", "ec2.example:8774")]
        #expect(await verify(changed, service: "ec2", now: Self.now, keys: Self.keys).error == .signatureMismatch)
        for (parameter, replacement) in [
            ("X-Amz-Expires=3600", "X-Amz-Expires=604801"), ("X-Amz-Expires=3600", "X-Amz-Expires=soon"),
            ("X-Amz-Expires=3600&", ""), ("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA512"),
            ("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=x-amz-date"),
        ] {
            changed = request
            changed.query = changed.query.replacingOccurrences(of: parameter, with: replacement)
            let error = await verify(changed, service: "ec2", now: Self.now, keys: Self.keys).error
            guard case .incompleteSignature = error else {
                Issue.record("\(parameter) → \(replacement): \(String(describing: error))")
                continue
            }
        }
    }

    @Test("an Authorization header and a presigned query together are refused (one mechanism per request)")
    func bothMechanisms() async {
        let signed = Self.ec2Signer().sign(
            SigV4Request(method: "POST", path: "/", headers: [("Host", "h")], payloadHash: SigV4Signer.emptyPayloadHash),
            date: Self.now)
        var request = Self.received(signed, method: "POST", body: [])
        #expect(await verify(request, service: "ec2", now: Self.now, keys: Self.keys).accepted)
        request.query = "X-Amz-Signature=" + signed.signature
        let error = await verify(request, service: "ec2", now: Self.now, keys: Self.keys).error
        guard case .incompleteSignature = error else {
            Issue.record("\(String(describing: error))")
            return
        }
    }

    @Test("messages never carry the secret or the signature")
    func messages() async {
        let signed = Self.ec2Signer().sign(
            SigV4Request(
                method: "POST", path: "/", headers: [("Host", "h")], payloadHash: SigV4Signer.emptyPayloadHash),
            date: Self.now)
        let request = Self.received(signed, method: "POST", body: [])
        for (now, keys) in [
            (Self.now, [Self.credentials.accessKeyID: "wrong"]), (Self.now.addingTimeInterval(900), Self.keys),
            (Self.now, [:]),
        ] {
            let error = await verify(request, service: "ec2", now: now, keys: keys).error
            let text = String(describing: error)
            #expect(error != nil)
            #expect(!text.contains(signed.signature) && !text.contains(Self.credentials.secretAccessKey), "\(text)")
        }
        #expect(SigV4VerificationError.unknownAccessKey.message == SigV4VerificationError.signatureMismatch.message)
    }
}
