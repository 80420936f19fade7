public import Foundation
import Crypto

/// AWS credentials for signing. The secret and the session token never appear in `description`,
/// `debugDescription` or a reflection dump.
public struct SigV4Credentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String {
        "SigV4Credentials(accessKeyID: \(accessKeyID), secretAccessKey: <redacted>"
            + (sessionToken == nil ? ")" : ", sessionToken: <redacted>)")
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }
}

/// One HTTP request as the signer sees it: the path and query are given *unencoded*
/// (the signer percent-encodes them once and returns the encoded forms to put on the wire).
public struct SigV4Request: Sendable {
    public var method: String
    /// The unencoded absolute path, e.g. `/bucket/p@c/a b.qcow2` — or, with ``pathIsEncoded``, the path
    /// exactly as it goes on the wire.
    public var path: String
    /// Whether ``path`` is already the path as sent (the test suite's raw request lines); it is then put
    /// on the wire unchanged. Default false: the signer encodes it once.
    public var pathIsEncoded: Bool = false
    /// Unencoded query parameters in any order; an empty value is written as `key=`.
    public var query: [(name: String, value: String)]
    /// Headers in the order given; names are case-insensitive. `Host` must be present.
    public var headers: [(name: String, value: String)]
    /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    public var payloadHash: String

    public init(
        method: String, path: String, query: [(name: String, value: String)] = [],
        headers: [(name: String, value: String)], payloadHash: String
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.payloadHash = payloadHash
    }
}

/// The result of signing: what to put on the wire and the intermediate strings (for tests).
public struct SigV4SignedRequest: Sendable {
    /// The path, percent-encoded exactly as it was signed; send it unchanged.
    public var encodedPath: String
    /// The canonical (sorted, encoded) query string; send it unchanged (may be empty).
    public var encodedQuery: String
    /// Every header to send: the request's own plus `x-amz-date`, `x-amz-security-token`
    /// (when credentials carry one) and `Authorization`.
    public var headers: [(name: String, value: String)]
    public var canonicalRequest: String
    public var stringToSign: String
    public var authorization: String
    public var signature: String
}

/// A pure AWS Signature Version 4 signer (header-based auth): a value type with an injected date.
///
/// Spec: <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html> and, for S3,
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>.
public struct SigV4Signer: Sendable {
    /// How the canonical URI is made from the path.
    public enum PathStyle: Sendable {
        /// S3: every byte except unreserved characters and `/` is percent-encoded once; the path is
        /// never normalized (`a//b`, `./` are kept as they are).
        case s3
        /// Other services (the generic test suite): remove dot segments and empty segments
        /// (RFC 3986 §5.2.4) and then encode as `.s3` does.
        case normalized
    }

    /// Where the session token goes (the generic suite's `post-sts-header-before`/`-after`).
    public enum SessionTokenPlacement: Sendable {
        /// `X-Amz-Security-Token` is part of the canonical request (S3 requires this).
        case signed
        /// The header is added after the signature is computed.
        case unsigned
    }

    public var credentials: SigV4Credentials
    public var region: String
    public var service: String
    public var pathStyle: PathStyle
    public var sessionTokenPlacement: SessionTokenPlacement

    public init(
        credentials: SigV4Credentials, region: String, service: String = "s3", pathStyle: PathStyle = .s3,
        sessionTokenPlacement: SessionTokenPlacement = .signed
    ) {
        self.credentials = credentials
        self.region = region
        self.service = service
        self.pathStyle = pathStyle
        self.sessionTokenPlacement = sessionTokenPlacement
    }

    /// The hex SHA-256 of an empty body.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// The payload hash for bodies that are not hashed (`x-amz-content-sha256: UNSIGNED-PAYLOAD`).
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    /// Signs `request` at `date`.
    ///
    /// Any `x-amz-date`, `x-amz-security-token` or `authorization` header in the request is replaced.
    /// Implements "Create a canonical request", "Create a string to sign", "Calculate the signature"
    /// of the SigV4 spec (links on the type).
    /// - Parameters:
    ///   - request: the request with unencoded path and query.
    ///   - date: the signing time (UTC is derived from it).
    /// - Returns: the headers and encoded path/query to send.
    public func sign(_ request: SigV4Request, date: Date) -> SigV4SignedRequest {
        let (amzDate, day) = Self.timestamps(date)
        var headers = request.headers.filter {
            let lower = $0.name.lowercased()
            return lower != "x-amz-date" && lower != "authorization" && lower != "x-amz-security-token"
        }
        headers.append((name: "X-Amz-Date", value: amzDate))
        let token = credentials.sessionToken
        if let token, sessionTokenPlacement == .signed {
            headers.append((name: "X-Amz-Security-Token", value: token))
        }

        let encodedPath = wirePath(request)
        let encodedQuery = Self.canonicalQuery(request.query)
        let (canonicalHeaders, signedHeaders) = Self.canonicalHeaders(headers)
        let canonicalRequest = SigV4Canonical.request(
            method: request.method, uri: SigV4Canonical.uri(wirePath: encodedPath, style: pathStyle),
            query: encodedQuery, headers: canonicalHeaders,
            signedHeaders: signedHeaders, payloadHash: request.payloadHash)
        let scope = SigV4Canonical.scope(day: day, region: region, service: service)
        let stringToSign = SigV4Canonical.stringToSign(
            amzDate: amzDate, scope: scope, canonicalRequest: canonicalRequest)
        let signature = SigV4Canonical.signature(
            key: SigV4Canonical.signingKey(
                secret: credentials.secretAccessKey, day: day, region: region, service: service),
            stringToSign: stringToSign)
        let authorization =
            "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), "
            + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
        if let token, sessionTokenPlacement == .unsigned {
            headers.append((name: "X-Amz-Security-Token", value: token))
        }
        headers.append((name: "Authorization", value: authorization))
        return SigV4SignedRequest(
            encodedPath: encodedPath, encodedQuery: encodedQuery, headers: headers,
            canonicalRequest: canonicalRequest, stringToSign: stringToSign, authorization: authorization,
            signature: signature)
    }

    /// Presigns `request` (query-string authentication, as for a presigned URL): the authentication
    /// parameters `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`,
    /// `X-Amz-SignedHeaders` (and `X-Amz-Security-Token` when the credentials carry one) join the query,
    /// the signature is computed over it, and `X-Amz-Signature` is appended last.
    ///
    /// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>; the same
    /// canonical request, string to sign and signing key as ``sign(_:date:)``.
    /// - Parameters:
    ///   - request: the request with unencoded path and query; its headers (at least `Host`) are signed.
    ///     Its `payloadHash` is used as given (`UNSIGNED-PAYLOAD` for S3).
    ///   - date: the signing time.
    ///   - expires: seconds the URL stays valid (`X-Amz-Expires`, 1 to 604800).
    /// - Returns: the encoded path and the full encoded query (signature included); `headers` are the
    ///   request's own, `authorization` is empty.
    public func presign(_ request: SigV4Request, date: Date, expires: Int) -> SigV4SignedRequest {
        let (amzDate, day) = Self.timestamps(date)
        let headers = request.headers.filter { $0.name.lowercased() != "authorization" }
        let (canonicalHeaders, signedHeaders) = Self.canonicalHeaders(headers)
        let scope = SigV4Canonical.scope(day: day, region: region, service: service)
        var query = request.query.filter { !SigV4Canonical.queryAuthenticationParameters.contains($0.name) }
        query += [
            ("X-Amz-Algorithm", SigV4Canonical.algorithm),
            ("X-Amz-Credential", "\(credentials.accessKeyID)/\(scope)"),
            ("X-Amz-Date", amzDate),
            ("X-Amz-Expires", String(expires)),
            ("X-Amz-SignedHeaders", signedHeaders),
        ]
        if let token = credentials.sessionToken { query.append(("X-Amz-Security-Token", token)) }
        let encodedPath = wirePath(request)
        let encodedQuery = Self.canonicalQuery(query)
        let canonicalRequest = SigV4Canonical.request(
            method: request.method, uri: SigV4Canonical.uri(wirePath: encodedPath, style: pathStyle),
            query: encodedQuery, headers: canonicalHeaders,
            signedHeaders: signedHeaders, payloadHash: request.payloadHash)
        let stringToSign = SigV4Canonical.stringToSign(
            amzDate: amzDate, scope: scope, canonicalRequest: canonicalRequest)
        let signature = SigV4Canonical.signature(
            key: SigV4Canonical.signingKey(
                secret: credentials.secretAccessKey, day: day, region: region, service: service),
            stringToSign: stringToSign)
        return SigV4SignedRequest(
            encodedPath: encodedPath, encodedQuery: encodedQuery + "&X-Amz-Signature=" + signature, headers: headers,
            canonicalRequest: canonicalRequest, stringToSign: stringToSign, authorization: "", signature: signature)
    }

    /// The path to send: the request's path encoded once (unreserved characters and `/` kept), or as
    /// given when ``SigV4Request/pathIsEncoded``; `/` for an empty path.
    private func wirePath(_ request: SigV4Request) -> String {
        let path = request.path.isEmpty ? "/" : request.path
        return request.pathIsEncoded ? path : Self.percentEncode(path, keepSlash: true)
    }

    // MARK: - Canonical forms

    /// `yyyyMMdd'T'HHmmss'Z'` and `yyyyMMdd` in UTC, computed without a DateFormatter (thread-safe, fast).
    public static func timestamps(_ date: Date) -> (amzDate: String, day: String) {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        // Civil-from-days (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        let day = pad(y, 4) + pad(m, 2) + pad(d, 2)
        let time = pad(secondOfDay / 3600, 2) + pad(secondOfDay / 60 % 60, 2) + pad(secondOfDay % 60, 2)
        return (day + "T" + time + "Z", day)
    }

    /// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters (`A-Z a-z 0-9 - . _ ~`)
    /// stay, every other UTF-8 byte becomes `%XX` (upper-case hex); `/` stays when `keepSlash`.
    public static func percentEncode(_ string: String, keepSlash: Bool) -> String {
        var out = [UInt8]()
        out.reserveCapacity(string.utf8.count)
        let hexDigits = Array("0123456789ABCDEF".utf8)
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.append(byte)
            case UInt8(ascii: "/") where keepSlash:
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Encoded `name=value` pairs sorted by encoded name, then encoded value, joined by `&`.
    public static func canonicalQuery(_ query: [(name: String, value: String)]) -> String {
        var pairs: [(name: String, value: String)] = query.map {
            (percentEncode($0.name, keepSlash: false), percentEncode($0.value, keepSlash: false))
        }
        // Encoded strings are ASCII, so String ordering is byte ordering here.
        pairs.sort { (a: (name: String, value: String), b: (name: String, value: String)) -> Bool in
            a.name == b.name ? a.value < b.value : a.name < b.name
        }
        return pairs.map { (pair: (name: String, value: String)) -> String in pair.name + "=" + pair.value }
            .joined(separator: "&")
    }

    /// Lower-cased names sorted; values trimmed with inner runs of spaces collapsed; repeated
    /// headers joined by `,` in their original order.
    static func canonicalHeaders(_ headers: [(name: String, value: String)]) -> (String, String) {
        var order: [String] = []
        var values: [String: [String]] = [:]
        for (name, value) in headers {
            let lower = name.lowercased()
            if values[lower] == nil { order.append(lower) }
            values[lower, default: []].append(collapseSpaces(value))
        }
        let names = order.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let canonical = names.map { "\($0):\(values[$0]!.joined(separator: ","))\n" }.joined()
        return (canonical, names.joined(separator: ";"))
    }

    static func collapseSpaces(_ value: String) -> String {
        var out = ""
        var pendingSpace = false
        for ch in value {
            if ch == " " || ch == "\t" || ch == "\n" || ch == "\r" {
                pendingSpace = !out.isEmpty
            } else {
                if pendingSpace { out.append(" ") }
                pendingSpace = false
                out.append(ch)
            }
        }
        return out
    }

    /// RFC 3986 §5.2.4 dot-segment removal plus empty-segment removal (generic services only).
    static func normalize(_ path: String) -> String {
        var segments: [Substring] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            if segment == "." { continue }
            if segment == ".." {
                if !segments.isEmpty { segments.removeLast() }
                continue
            }
            segments.append(segment)
        }
        var result = "/" + segments.joined(separator: "/")
        let last = path.split(separator: "/", omittingEmptySubsequences: true).last
        if path.hasSuffix("/") && !segments.isEmpty && last != "." && last != ".." { result += "/" }
        return result
    }

    // MARK: - Hashing

    /// Lower-case hex SHA-256 of `bytes`.
    public static func hexSHA256(_ bytes: some Sequence<UInt8>) -> String {
        var hasher = SHA256()
        hasher.update(data: Array(bytes))
        return hex(Array(hasher.finalize()))
    }

    /// Lower-case hex SHA-256 of raw memory (avoids a copy for large bodies).
    public static func hexSHA256(_ buffer: UnsafeRawBufferPointer) -> String {
        var hasher = SHA256()
        hasher.update(bufferPointer: buffer)
        return hex(Array(hasher.finalize()))
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
