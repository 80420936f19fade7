public import Foundation

/// A request as a server received it, for ``SigV4Verifier``.
public struct SigV4IncomingRequest: Sendable {
    /// The method, e.g. `POST`.
    public var method: String
    /// The raw path as received, e.g. `/` (percent-encoding as sent, not decoded).
    public var path: String
    /// The raw query string without `?` (`""` if none), percent-encoding as sent.
    public var query: String
    /// Headers as received; names are case-insensitive and may repeat (values are then joined by `,`).
    public var headers: [(name: String, value: String)]
    /// The body bytes (hashed unless `X-Amz-Content-SHA256` gives the hash).
    public var body: [UInt8]

    public init(method: String, path: String, query: String, headers: [(name: String, value: String)], body: [UInt8]) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }

    /// Every value of the header `name` (case-insensitive), in order.
    func values(of name: String) -> [String] {
        let lower = name.lowercased()
        return headers.filter { $0.name.lowercased() == lower }.map(\.value)
    }
}

/// Who signed a verified request.
public struct SigV4Identity: Sendable, Equatable {
    /// The access key ID of the credential scope.
    public var accessKeyID: String
    /// The region the client signed for (any region is accepted; case as sent).
    public var region: String
    /// The service of the credential scope (always the verifier's service).
    public var service: String
    /// The request's `X-Amz-Date`.
    public var date: Date

    public init(accessKeyID: String, region: String, service: String, date: Date) {
        self.accessKeyID = accessKeyID
        self.region = region
        self.service = service
        self.date = date
    }
}

/// Why a request was refused. The message never holds a secret or a signature.
///
/// EC2's codes and statuses for each case are ``awsCode`` and ``httpStatus`` (see the design's
/// "Errors" table): `MissingAuthenticationToken` 403, `IncompleteSignature` 400, `AuthFailure` 401,
/// `RequestExpired` 400.
public enum SigV4VerificationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No `Authorization` header and no `X-Amz-Signature` query parameter.
    case missingAuthentication
    /// A malformed `Authorization` header, credential scope, `X-Amz-Date` or presigned query.
    case incompleteSignature(String)
    /// The access key ID is not known.
    case unknownAccessKey
    /// The signature does not match the request (wrong secret, or anything signed was changed).
    case signatureMismatch
    /// `X-Amz-Date` is outside the clock-skew window, or a presigned request's `X-Amz-Expires` passed.
    case requestExpired(String)
    /// The credential scope names another service than the verifier's.
    case wrongService(String)

    /// EC2's error code for this failure.
    public var awsCode: String {
        switch self {
        case .missingAuthentication: "MissingAuthenticationToken"
        case .incompleteSignature: "IncompleteSignature"
        case .unknownAccessKey, .signatureMismatch, .wrongService: "AuthFailure"
        case .requestExpired: "RequestExpired"
        }
    }

    /// The HTTP status EC2 answers with.
    public var httpStatus: Int {
        switch self {
        case .missingAuthentication: 403
        case .incompleteSignature, .requestExpired: 400
        case .unknownAccessKey, .signatureMismatch, .wrongService: 401
        }
    }

    /// A message for the client. An unknown key and a wrong signature read the same (EC2's wording),
    /// so a client cannot probe which access key IDs exist.
    public var message: String {
        switch self {
        case .missingAuthentication:
            "Request is missing Authentication Token (no Authorization header and no X-Amz-Signature parameter)"
        case .incompleteSignature(let why): why
        case .unknownAccessKey, .signatureMismatch: "AWS was not able to validate the provided access credentials"
        case .requestExpired(let why): "Request has expired: \(why)"
        case .wrongService(let why):
            "AWS was not able to validate the provided access credentials: \(why)"
        }
    }

    public var description: String { "\(awsCode): \(message)" }
}

/// Verifies AWS Signature Version 4 on requests a server receives, with the same canonicalization as
/// ``SigV4Signer`` (``SigV4Canonical``).
///
/// Both forms are accepted: header authentication (`Authorization: AWS4-HMAC-SHA256 Credential=…,
/// SignedHeaders=…, Signature=…` with `X-Amz-Date`) and query authentication (presigned:
/// `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`,
/// `X-Amz-Signature`). Rules (botocore's `SigV4Auth`, mirrored):
/// - the credential scope is `<key>/<yyyyMMdd>/<region>/<service>/aws4_request`; any region; the service
///   must be the verifier's; the scope date must be the date of `X-Amz-Date`;
/// - `host` must be signed, and `x-amz-date` too in header authentication;
/// - the payload hash is the `X-Amz-Content-SHA256` header when present and signed (`UNSIGNED-PAYLOAD`
///   allowed; a hash must match the body), else the SHA-256 of the body;
/// - header authentication: `X-Amz-Date` within `maxClockSkew` of `now` either way; query
///   authentication: valid from `X-Amz-Date` (less the skew) until `X-Amz-Date + X-Amz-Expires`;
/// - the signature is compared in constant time.
///
/// Spec: <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>,
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>.
public struct SigV4Verifier: Sendable {
    /// The service every credential scope must name (`ec2`).
    public var service: String
    /// How far `X-Amz-Date` may be from the server's time, in seconds (AWS: 5 minutes).
    public var maxClockSkew: TimeInterval
    /// How the canonical URI is made: `.s3` for S3, `.normalized` for every other service.
    public var pathStyle: SigV4Signer.PathStyle

    /// - Parameters:
    ///   - service: the service every credential scope must name, e.g. `ec2`.
    ///   - maxClockSkew: the accepted distance between `X-Amz-Date` and the server's time, in seconds.
    public init(service: String, maxClockSkew: TimeInterval = 300) {
        self.init(service: service, maxClockSkew: maxClockSkew, pathStyle: service == "s3" ? .s3 : .normalized)
    }

    /// As ``init(service:maxClockSkew:)`` with an explicit canonical-URI style.
    public init(service: String, maxClockSkew: TimeInterval, pathStyle: SigV4Signer.PathStyle) {
        self.service = service
        self.maxClockSkew = maxClockSkew
        self.pathStyle = pathStyle
    }

    /// The longest `X-Amz-Expires` of a presigned request (7 days, as AWS).
    public static let maxExpires = 604_800

    /// Verifies header auth (`Authorization: AWS4-HMAC-SHA256 …`) and query auth (`X-Amz-Algorithm`,
    /// `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`, `X-Amz-Signature`).
    ///
    /// - Parameters:
    ///   - request: the request as received.
    ///   - now: the server's time.
    ///   - secret: returns the secret of an access key ID, or nil when unknown.
    /// - Returns: who signed the request.
    /// - Throws: ``SigV4VerificationError``; errors thrown by `secret` propagate unchanged.
    public func verify(
        _ request: SigV4IncomingRequest, now: Date, secret: (String) async throws -> String?
    ) async throws -> SigV4Identity {
        let claim = try parse(request)
        guard claim.scope.service == service else {
            throw SigV4VerificationError.wrongService(
                "the credential scope names service \"\(Self.printable(claim.scope.service))\"; "
                    + "this endpoint is \"\(service)\"")
        }
        try checkTime(claim, now: now)
        guard let secretKey = try await secret(claim.scope.accessKeyID) else {
            throw SigV4VerificationError.unknownAccessKey
        }

        // The signed headers, in the order the client listed them, values canonicalized and joined.
        var canonicalHeaders = ""
        for name in claim.signedHeaders {
            let values = request.values(of: name)
            guard !values.isEmpty else { throw SigV4VerificationError.signatureMismatch }
            canonicalHeaders += name + ":" + values.map(SigV4Signer.collapseSpaces).joined(separator: ",") + "\n"
        }
        let payloadHash = try payloadHash(request, claim)
        let canonicalRequest = SigV4Canonical.request(
            method: request.method,
            uri: SigV4Canonical.uri(wirePath: request.path, style: pathStyle),
            query: SigV4Canonical.query(raw: request.query, excluding: claim.presigned ? ["X-Amz-Signature"] : []),
            headers: canonicalHeaders, signedHeaders: claim.signedHeaders.joined(separator: ";"),
            payloadHash: payloadHash)
        let scope = SigV4Canonical.scope(day: claim.scope.day, region: claim.scope.region, service: claim.scope.service)
        let expected = SigV4Canonical.signature(
            key: SigV4Canonical.signingKey(
                secret: secretKey, day: claim.scope.day, region: claim.scope.region, service: claim.scope.service),
            stringToSign: SigV4Canonical.stringToSign(
                amzDate: claim.amzDate, scope: scope, canonicalRequest: canonicalRequest))
        guard SigV4Canonical.constantTimeEqual(expected, claim.signature) else {
            throw SigV4VerificationError.signatureMismatch
        }
        return SigV4Identity(
            accessKeyID: claim.scope.accessKeyID, region: claim.scope.region, service: claim.scope.service,
            date: claim.date)
    }

    /// The last line of the canonical request. A *signed* `X-Amz-Content-SHA256` header gives it (botocore's
    /// rule): `UNSIGNED-PAYLOAD` (the client chose not to protect the body), or the body's hex SHA-256 —
    /// checked against the body here, since the signature covers only the header. Without that header it
    /// is the SHA-256 of the body (`UNSIGNED-PAYLOAD` for presigned S3 requests).
    private func payloadHash(_ request: SigV4IncomingRequest, _ claim: Claim) throws -> String {
        let given = request.values(of: "x-amz-content-sha256")
        guard claim.signedHeaders.contains("x-amz-content-sha256"), given.count == 1 else {
            if claim.presigned && pathStyle == .s3 { return SigV4Signer.unsignedPayload }
            return SigV4Signer.hexSHA256(request.body)
        }
        let value = given[0].trimmingCharacters(in: .whitespaces)
        if value == SigV4Signer.unsignedPayload { return value }
        guard value.utf8.count == 64,
            value.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
        else {
            throw SigV4VerificationError.incompleteSignature(
                "X-Amz-Content-SHA256 must be UNSIGNED-PAYLOAD or the body's lower-case hex SHA-256")
        }
        guard SigV4Canonical.constantTimeEqual(value, SigV4Signer.hexSHA256(request.body)) else {
            throw SigV4VerificationError.signatureMismatch
        }
        return value
    }

    // MARK: - Parsing

    /// `<key>/<yyyyMMdd>/<region>/<service>/aws4_request`.
    struct Scope {
        var accessKeyID: String
        var day: String
        var region: String
        var service: String
    }

    /// What the client claims: its scope, the signed header names, the date and the signature.
    struct Claim {
        var scope: Scope
        var signedHeaders: [String]
        var signature: String
        var amzDate: String
        var date: Date
        var presigned: Bool
        /// `X-Amz-Expires` of a presigned request.
        var expires: Int?
    }

    func parse(_ request: SigV4IncomingRequest) throws -> Claim {
        let authorizations = request.values(of: "authorization")
        if !authorizations.isEmpty {
            guard authorizations.count == 1 else {
                throw SigV4VerificationError.incompleteSignature("more than one Authorization header")
            }
            // As AWS: one mechanism per request, so a request never reads as signed one way and used another.
            guard !SigV4Canonical.parseQuery(request.query).contains(where: { $0.name == "X-Amz-Signature" }) else {
                throw SigV4VerificationError.incompleteSignature(
                    "only one authentication mechanism is allowed: an Authorization header or X-Amz-Signature")
            }
            return try parseHeader(authorizations[0], request)
        }
        let query = SigV4Canonical.parseQuery(request.query)
        let presigned = query.contains {
            $0.name == "X-Amz-Signature" || $0.name == "X-Amz-Algorithm" || $0.name == "X-Amz-Credential"
        }
        guard presigned else { throw SigV4VerificationError.missingAuthentication }
        return try parseQuery(query)
    }

    private func parseHeader(_ header: String, _ request: SigV4IncomingRequest) throws -> Claim {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        let prefix = SigV4Canonical.algorithm + " "
        guard trimmed.hasPrefix(prefix) else {
            let scheme = trimmed.prefix { $0 != " " }
            throw SigV4VerificationError.incompleteSignature(
                "unsupported Authorization scheme \"\(Self.printable(String(scheme)))\"; "
                    + "expected \(SigV4Canonical.algorithm)")
        }
        var fields: [String: String] = [:]
        for part in trimmed.dropFirst(prefix.count).split(separator: ",") {
            let item = part.trimmingCharacters(in: .whitespaces)
            guard let equals = item.firstIndex(of: "=") else {
                throw SigV4VerificationError.incompleteSignature(
                    "Authorization header component \"\(Self.printable(item))\" is not name=value")
            }
            let name = String(item[..<equals])
            guard fields[name] == nil else {
                throw SigV4VerificationError.incompleteSignature("Authorization header repeats \(Self.printable(name))")
            }
            fields[name] = String(item[item.index(after: equals)...])
        }
        func field(_ name: String) throws -> String {
            guard let value = fields[name], !value.isEmpty else {
                throw SigV4VerificationError.incompleteSignature(
                    "Authorization header requires a '\(name)' parameter (Credential, SignedHeaders, Signature)")
            }
            return value
        }
        let scope = try Self.parseScope(try field("Credential"))
        let signedHeaders = try Self.parseSignedHeaders(try field("SignedHeaders"), requireDate: true)
        let signature = try field("Signature")
        let dates = request.values(of: "x-amz-date")
        guard dates.count == 1 else {
            throw SigV4VerificationError.incompleteSignature(
                dates.isEmpty ? "the X-Amz-Date header is missing" : "more than one X-Amz-Date header")
        }
        let amzDate = dates[0].trimmingCharacters(in: .whitespaces)
        let date = try Self.parseDate(amzDate, scope: scope)
        return Claim(
            scope: scope, signedHeaders: signedHeaders, signature: signature, amzDate: amzDate, date: date,
            presigned: false, expires: nil)
    }

    private func parseQuery(_ query: [(name: String, value: String)]) throws -> Claim {
        func parameter(_ name: String) throws -> String {
            let values = query.filter { $0.name == name }.map(\.value)
            guard values.count == 1, !values[0].isEmpty else {
                throw SigV4VerificationError.incompleteSignature(
                    values.count > 1
                        ? "the query repeats \(name)"
                        : "a presigned request requires the query parameter \(name) (X-Amz-Algorithm, "
                            + "X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders, X-Amz-Signature)")
            }
            return values[0]
        }
        let algorithm = try parameter("X-Amz-Algorithm")
        guard algorithm == SigV4Canonical.algorithm else {
            throw SigV4VerificationError.incompleteSignature(
                "unsupported X-Amz-Algorithm \"\(Self.printable(algorithm))\"; expected \(SigV4Canonical.algorithm)")
        }
        let scope = try Self.parseScope(try parameter("X-Amz-Credential"))
        let signedHeaders = try Self.parseSignedHeaders(try parameter("X-Amz-SignedHeaders"), requireDate: false)
        let signature = try parameter("X-Amz-Signature")
        let amzDate = try parameter("X-Amz-Date")
        let date = try Self.parseDate(amzDate, scope: scope)
        let expiresText = try parameter("X-Amz-Expires")
        guard let expires = Int(expiresText), expires >= 1, expires <= Self.maxExpires else {
            throw SigV4VerificationError.incompleteSignature(
                "X-Amz-Expires must be a whole number of seconds from 1 to \(Self.maxExpires)")
        }
        return Claim(
            scope: scope, signedHeaders: signedHeaders, signature: signature, amzDate: amzDate, date: date,
            presigned: true, expires: expires)
    }

    static func parseScope(_ credential: String) throws -> Scope {
        let parts = credential.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5, !parts[0].isEmpty, !parts[3].isEmpty else {
            throw SigV4VerificationError.incompleteSignature(
                "malformed credential \"\(printable(credential))\": "
                    + "expected <access key>/<yyyyMMdd>/<region>/<service>/aws4_request")
        }
        guard parts[4] == SigV4Canonical.terminator else {
            throw SigV4VerificationError.incompleteSignature(
                "credential scope must end with aws4_request, not \"\(printable(parts[4]))\"")
        }
        guard parts[1].utf8.count == 8, parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw SigV4VerificationError.incompleteSignature(
                "credential scope date \"\(printable(parts[1]))\" is not yyyyMMdd")
        }
        return Scope(accessKeyID: parts[0], day: parts[1], region: parts[2], service: parts[3])
    }

    /// Lower-case names separated by `;`; `host` must be among them (and `x-amz-date` in header auth).
    static func parseSignedHeaders(_ text: String, requireDate: Bool) throws -> [String] {
        let names = text.split(separator: ";", omittingEmptySubsequences: false).map(String.init)
        guard names.allSatisfy({ !$0.isEmpty && $0 == $0.lowercased() }), Set(names).count == names.count else {
            throw SigV4VerificationError.incompleteSignature(
                "SignedHeaders \"\(printable(text))\" must be distinct lower-case header names separated by ';'")
        }
        guard names.contains("host") else {
            throw SigV4VerificationError.incompleteSignature("'Host' must be a signed header (SignedHeaders)")
        }
        if requireDate && !names.contains("x-amz-date") {
            throw SigV4VerificationError.incompleteSignature("'X-Amz-Date' must be a signed header (SignedHeaders)")
        }
        return names
    }

    /// `yyyyMMdd'T'HHmmss'Z'`, whose date must be the scope's.
    static func parseDate(_ text: String, scope: Scope) throws -> Date {
        guard let date = parseAmzDate(text) else {
            throw SigV4VerificationError.incompleteSignature(
                "X-Amz-Date \"\(printable(text))\" is not in the form yyyyMMdd'T'HHmmss'Z'")
        }
        guard text.hasPrefix(scope.day) else {
            throw SigV4VerificationError.incompleteSignature(
                "the credential scope date \(scope.day) is not the date of X-Amz-Date \(text)")
        }
        return date
    }

    /// Parses `yyyyMMdd'T'HHmmss'Z'` (UTC) without a formatter. - Returns: nil when malformed.
    public static func parseAmzDate(_ text: String) -> Date? {
        let b = Array(text.utf8)
        guard b.count == 16, b[8] == UInt8(ascii: "T"), b[15] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for i in range {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                value = value * 10 + Int(b[i] - 0x30)
            }
            return value
        }
        guard let year = number(0..<4), let month = number(4..<6), let day = number(6..<8),
            let hour = number(9..<11), let minute = number(11..<13), let second = number(13..<15),
            (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour < 24, minute < 60,
            second < 60
        else { return nil }
        // Days from civil (Howard Hinnant's algorithm), the inverse of SigV4Signer.timestamps.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return Date(timeIntervalSince1970: TimeInterval(days * 86_400 + hour * 3600 + minute * 60 + second))
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    private func checkTime(_ claim: Claim, now: Date) throws {
        let (nowText, _) = SigV4Signer.timestamps(now)
        if let expires = claim.expires {
            if claim.date.timeIntervalSince(now) > maxClockSkew {
                throw SigV4VerificationError.requestExpired(
                    "X-Amz-Date \(claim.amzDate) is in the future (server time \(nowText))")
            }
            if now.timeIntervalSince(claim.date) > TimeInterval(expires) {
                throw SigV4VerificationError.requestExpired(
                    "the presigned request expired \(expires) s after \(claim.amzDate) (server time \(nowText))")
            }
        } else if abs(now.timeIntervalSince(claim.date)) > maxClockSkew {
            throw SigV4VerificationError.requestExpired(
                "X-Amz-Date \(claim.amzDate) is more than \(Int(maxClockSkew)) s from the server time \(nowText)")
        }
    }

    /// Untrusted text for a message: cut to 64 characters, control characters replaced.
    static func printable(_ text: String) -> String {
        let cut = text.count > 64 ? String(text.prefix(64)) + "…" : text
        return String(
            String.UnicodeScalarView(cut.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
    }
}
