import Crypto
import Foundation

/// The one canonicalization of SigV4, shared by ``SigV4Signer`` and ``SigV4Verifier``: the canonical URI,
/// the canonical request, the credential scope, the string to sign, the signing key and the signature.
/// Signer and verifier differ only in where the pieces come from (a request being built, or one received).
///
/// Spec: <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>, steps 1–4.
enum SigV4Canonical {
    static let algorithm = "AWS4-HMAC-SHA256"
    static let terminator = "aws4_request"

    /// The query parameters of query-string authentication (presigned URLs). `X-Amz-Signature` is
    /// excluded from the canonical query of the request it signs; the others are part of it.
    static let queryAuthenticationParameters: Set<String> = [
        "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
        "X-Amz-Signature", "X-Amz-Security-Token",
    ]

    /// The canonical URI of a path as it is (or will be) sent on the wire.
    ///
    /// - `.s3`: the path encoded exactly once and never normalized: the wire path is decoded, then
    ///   encoded (so a client's escapes of any character read the same).
    /// - `.normalized` (every other service): dot and empty segments removed (RFC 3986 §5.2.4), then the
    ///   wire path is encoded once more: the "encode twice" rule of non-S3 services that botocore and the
    ///   other SDKs follow (the wire's `/a%20b` is canonical `/a%2520b`). The test suite's raw request
    ///   lines (`/example space/`) are wire paths too, so they come out encoded once, as its `.creq` say.
    static func uri(wirePath: String, style: SigV4Signer.PathStyle) -> String {
        let path = wirePath.isEmpty ? "/" : wirePath
        switch style {
        case .s3: return SigV4Signer.percentEncode(percentDecode(path), keepSlash: true)
        case .normalized: return SigV4Signer.percentEncode(SigV4Signer.normalize(path), keepSlash: true)
        }
    }

    /// The canonical query string of a raw query as received (`a=1&b=%20x`): each pair decoded, then
    /// encoded and sorted as ``SigV4Signer/canonicalQuery(_:)`` does. Parameters named in `excluding`
    /// are left out.
    static func query(raw: String, excluding: Set<String> = []) -> String {
        SigV4Signer.canonicalQuery(parseQuery(raw).filter { !excluding.contains($0.name) })
    }

    /// Decoded `name=value` pairs of a raw query string, in order; empty pieces (`a=1&&b=2`) are skipped
    /// and a piece without `=` has an empty value.
    ///
    /// Decoding is form decoding: `+` is a space, as for the server that reads the parameters (a request
    /// signed over `%20` and sent with `+`, as botocore's `params=` requests are, verifies; a literal plus
    /// is `%2B` on the wire, as every SigV4 client encodes it).
    static func parseQuery(_ raw: String) -> [(name: String, value: String)] {
        raw.split(separator: "&", omittingEmptySubsequences: true).map { piece in
            let piece = piece.replacingOccurrences(of: "+", with: " ")
            if let equals = piece.firstIndex(of: "=") {
                return (
                    percentDecode(String(piece[..<equals])), percentDecode(String(piece[piece.index(after: equals)...]))
                )
            }
            return (percentDecode(piece), "")
        }
    }

    /// Percent-decoding of `%XX` escapes into bytes (interpreted as UTF-8; invalid sequences become
    /// U+FFFD); a `%` not followed by two hex digits stays as it is.
    static func percentDecode(_ text: String) -> String {
        guard text.utf8.contains(UInt8(ascii: "%")) else { return text }
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count, let hi = hexValue(bytes[i + 1]),
                let lo = hexValue(bytes[i + 2])
            {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Step 1: `METHOD\nURI\nQUERY\nHEADERS\nSIGNED-HEADERS\nPAYLOAD-HASH`; `headers` ends with its own
    /// newline (each `name:value\n`), hence the blank line before the signed-header list.
    static func request(
        method: String, uri: String, query: String, headers: String, signedHeaders: String, payloadHash: String
    ) -> String {
        [method.uppercased(), uri, query, headers, signedHeaders, payloadHash].joined(separator: "\n")
    }

    /// `<yyyyMMdd>/<region>/<service>/aws4_request`.
    static func scope(day: String, region: String, service: String) -> String {
        "\(day)/\(region)/\(service)/\(terminator)"
    }

    /// Step 2: `AWS4-HMAC-SHA256\n<X-Amz-Date>\n<scope>\n<hex SHA-256 of the canonical request>`.
    static func stringToSign(amzDate: String, scope: String, canonicalRequest: String) -> String {
        [algorithm, amzDate, scope, SigV4Signer.hexSHA256(Array(canonicalRequest.utf8))].joined(separator: "\n")
    }

    /// Step 3: kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request").
    static func signingKey(secret: String, day: String, region: String, service: String) -> SymmetricKey {
        var key = SymmetricKey(data: Array(("AWS4" + secret).utf8))
        for part in [day, region, service, terminator] {
            key = SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key))
        }
        return key
    }

    /// Step 4: the lower-case hex HMAC-SHA256 of the string to sign.
    static func signature(key: SymmetricKey, stringToSign: String) -> String {
        SigV4Signer.hex(Array(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key)))
    }

    /// Compares two strings in time that depends only on their lengths (signatures are always 64 hex
    /// digits, so the length tells nothing).
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in x.indices { difference |= x[i] ^ y[i] }
        return difference == 0
    }
}
