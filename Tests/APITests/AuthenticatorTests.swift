import API
import Foundation
import SigV4
import SnapshotCore
import Testing

/// SigV4 authentication of EC2 requests, on the request the real aws CLI signed (ec2-api.md §3): the
/// caller comes from the access key, and every refusal has EC2's code and status.
@Suite("SigV4 authenticator")
struct AuthenticatorTests {
    static let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    static let body = "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=snap-1234567890abcdef0"
    static let signed = Date(timeIntervalSince1970: 1_796_056_092)  // 2026-11-30T16:28:12Z

    static func request(
        body: String = body, signature: String = "c245e5ea9e6de1423d9cf7e0f416cdffd03ac762fd289d698acf93679f34bafd",
        authorization: Bool = true
    ) -> SigV4IncomingRequest {
        var headers: [(name: String, value: String)] = [
            ("Host", "127.0.0.1:5056"), ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("X-Amz-Date", "20261130T162812Z"), ("User-Agent", "aws-cli/1.45.11"),
        ]
        if authorization {
            headers.append(
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/croc/ec2/aws4_request, "
                        + "SignedHeaders=content-type;host;x-amz-date, Signature=\(signature)"
                ))
        }
        return SigV4IncomingRequest(method: "POST", path: "/", query: "", headers: headers, body: Array(body.utf8))
    }

    static func authenticator(at now: Date = signed) -> SigV4Authenticator {
        SigV4Authenticator(clock: { now }) { id in
            id == "AKIDEXAMPLE"
                ? SigV4Authenticator.Key(secret: secret, caller: .project(try ProjectRef(parsing: "web@acme"))) : nil
        }
    }

    func refusal(_ request: SigV4IncomingRequest, at now: Date = signed) async -> (String, Int)? {
        do {
            _ = try await Self.authenticator(at: now).authenticate(request)
            return nil
        } catch let error as EC2Error {
            return (error.code.rawValue, error.status)
        } catch {
            return ("\(error)", 0)
        }
    }

    @Test("the aws CLI's signed request names its key's project")
    func accepted() async throws {
        let who = try await Self.authenticator().authenticate(Self.request())
        #expect(who.caller == .project(try ProjectRef(parsing: "web@acme")))
        #expect(who.accessKeyID == "AKIDEXAMPLE")
        // Four minutes later is still inside the window.
        _ = try await Self.authenticator(at: Self.signed.addingTimeInterval(240)).authenticate(Self.request())
    }

    @Test("refusals: a changed body or signature, an unknown key, a stale date, no or a broken header")
    func refused() async {
        #expect(await refusal(Self.request(body: Self.body + "1"))! == ("AuthFailure", 401))
        #expect(await refusal(Self.request(signature: String(repeating: "0", count: 64)))! == ("AuthFailure", 401))
        #expect(await refusal(Self.request(), at: Self.signed.addingTimeInterval(301))! == ("RequestExpired", 400))
        #expect(await refusal(Self.request(), at: Self.signed.addingTimeInterval(-301))! == ("RequestExpired", 400))
        #expect(await refusal(Self.request(authorization: false))! == ("MissingAuthenticationToken", 403))
        var broken = Self.request()
        broken.headers[broken.headers.count - 1].value = "AWS4-HMAC-SHA256 Credential=garbage"
        #expect(await refusal(broken)! == ("IncompleteSignature", 400))
        var stranger = Self.request()
        stranger.headers[stranger.headers.count - 1].value = stranger.headers.last!.value.replacingOccurrences(
            of: "AKIDEXAMPLE", with: "AKIDUNKNOWN")
        #expect(await refusal(stranger)! == ("AuthFailure", 401))
        var s3 = Self.request()
        s3.headers[s3.headers.count - 1].value = s3.headers.last!.value.replacingOccurrences(of: "/ec2/", with: "/s3/")
        #expect(await refusal(s3)! == ("AuthFailure", 401))
    }
}
