import Foundation

/// The one error type of the S3 module.
///
/// `code` classifies the failure (equality compares only the code); `awsCode` keeps the raw `<Code>`
/// of an S3 error body; `message` has context (operation, bucket, key) but never credentials,
/// signatures or presigned URLs.
public struct S3Error: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong, as a small closed set of cases plus `.other` for S3 codes not listed.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Kind: Hashable, Sendable {
            case noSuchKey, noSuchBucket, noSuchUpload, preconditionFailed, notModified, accessDenied
            case signatureDoesNotMatch, invalidAccessKeyID, requestTimeTooSkewed, slowDown, internalError
            case serviceUnavailable, bucketAlreadyOwnedByYou, bucketAlreadyExists, invalidRange
            case invalidArgument, invalidPart, entityTooSmall, entityTooLarge, transport, invalidResponse
            case invalidRequest, fileIO, timeout, tls, other
        }
        private let kind: Kind
        private init(_ kind: Kind) { self.kind = kind }

        public static let noSuchKey = Code(.noSuchKey)
        public static let noSuchBucket = Code(.noSuchBucket)
        public static let noSuchUpload = Code(.noSuchUpload)
        /// `If-Match` / `x-amz-copy-source-if-match` did not match (HTTP 412).
        public static let preconditionFailed = Code(.preconditionFailed)
        public static let notModified = Code(.notModified)
        public static let accessDenied = Code(.accessDenied)
        public static let signatureDoesNotMatch = Code(.signatureDoesNotMatch)
        public static let invalidAccessKeyID = Code(.invalidAccessKeyID)
        public static let requestTimeTooSkewed = Code(.requestTimeTooSkewed)
        public static let slowDown = Code(.slowDown)
        public static let internalError = Code(.internalError)
        public static let serviceUnavailable = Code(.serviceUnavailable)
        public static let bucketAlreadyOwnedByYou = Code(.bucketAlreadyOwnedByYou)
        public static let bucketAlreadyExists = Code(.bucketAlreadyExists)
        public static let invalidRange = Code(.invalidRange)
        public static let invalidArgument = Code(.invalidArgument)
        public static let invalidPart = Code(.invalidPart)
        public static let entityTooSmall = Code(.entityTooSmall)
        public static let entityTooLarge = Code(.entityTooLarge)
        /// The connection failed (refused, reset, TLS, DNS …); see `curlCode`.
        public static let transport = Code(.transport)
        /// TLS verification failed, or the URL/protocol was refused (not transient).
        public static let tls = Code(.tls)
        /// A connect or stall timeout, or the retry budget ran out of time.
        public static let timeout = Code(.timeout)
        /// The server's answer could not be understood (bad XML, missing fields).
        public static let invalidResponse = Code(.invalidResponse)
        /// The caller asked for something this client refuses (bad key, bad configuration …).
        public static let invalidRequest = Code(.invalidRequest)
        /// Reading or writing a local file failed.
        public static let fileIO = Code(.fileIO)
        /// Any other S3 error code; see `awsCode`.
        public static let other = Code(.other)

        public var description: String {
            switch kind {
            case .noSuchKey: "NoSuchKey"
            case .noSuchBucket: "NoSuchBucket"
            case .noSuchUpload: "NoSuchUpload"
            case .preconditionFailed: "PreconditionFailed"
            case .notModified: "NotModified"
            case .accessDenied: "AccessDenied"
            case .signatureDoesNotMatch: "SignatureDoesNotMatch"
            case .invalidAccessKeyID: "InvalidAccessKeyId"
            case .requestTimeTooSkewed: "RequestTimeTooSkewed"
            case .slowDown: "SlowDown"
            case .internalError: "InternalError"
            case .serviceUnavailable: "ServiceUnavailable"
            case .bucketAlreadyOwnedByYou: "BucketAlreadyOwnedByYou"
            case .bucketAlreadyExists: "BucketAlreadyExists"
            case .invalidRange: "InvalidRange"
            case .invalidArgument: "InvalidArgument"
            case .invalidPart: "InvalidPart"
            case .entityTooSmall: "EntityTooSmall"
            case .entityTooLarge: "EntityTooLarge"
            case .transport: "Transport"
            case .timeout: "Timeout"
            case .tls: "TLS"
            case .invalidResponse: "InvalidResponse"
            case .invalidRequest: "InvalidRequest"
            case .fileIO: "FileIO"
            case .other: "Other"
            }
        }

        /// Maps an S3 `<Code>` string (and the HTTP status when there is no body) to a code.
        static func from(awsCode: String?, status: Int) -> Code {
            switch awsCode {
            case "NoSuchKey": return .noSuchKey
            case "NoSuchBucket": return .noSuchBucket
            case "NoSuchUpload": return .noSuchUpload
            case "PreconditionFailed": return .preconditionFailed
            case "AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidSecurity", "ExpiredToken",
                "InvalidToken":
                return .accessDenied
            case "SignatureDoesNotMatch": return .signatureDoesNotMatch
            case "InvalidAccessKeyId": return .invalidAccessKeyID
            case "RequestTimeTooSkewed": return .requestTimeTooSkewed
            case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded": return .slowDown
            case "InternalError": return .internalError
            case "ServiceUnavailable": return .serviceUnavailable
            case "BucketAlreadyOwnedByYou": return .bucketAlreadyOwnedByYou
            case "BucketAlreadyExists": return .bucketAlreadyExists
            case "InvalidRange": return .invalidRange
            case "InvalidArgument": return .invalidArgument
            case "InvalidPart", "InvalidPartOrder": return .invalidPart
            case "EntityTooSmall": return .entityTooSmall
            case "EntityTooLarge": return .entityTooLarge
            case "RequestTimeout": return .timeout
            case .some: return .other
            case nil: break
            }
            switch status {
            case 304: return .notModified
            case 403: return .accessDenied
            case 404: return .noSuchKey
            case 412: return .preconditionFailed
            case 416: return .invalidRange
            case 500: return .internalError
            case 503: return .serviceUnavailable
            default: return .other
            }
        }
    }

    public var code: Code
    /// Human message with context (operation, bucket, key); never a secret.
    public var message: String
    /// The raw `<Code>` of the S3 error body, if any.
    public var awsCode: String?
    /// HTTP status, 0 when no response was received.
    public var httpStatus: Int
    /// `x-amz-request-id` (or `<RequestId>`), when the server sent one.
    public var requestID: String?
    /// libcurl's result code for transport failures (`CURLcode` as an integer).
    public var curlCode: Int?
    /// A lower-level error (e.g. a file error), if any.
    public var underlying: (any Error & Sendable)?
    /// The server's `Date` header, used to correct clock skew.
    var serverDate: Date?

    public init(
        code: Code, message: String, awsCode: String? = nil, httpStatus: Int = 0, requestID: String? = nil,
        curlCode: Int? = nil, underlying: (any Error & Sendable)? = nil
    ) {
        self.code = code
        self.message = message
        self.awsCode = awsCode
        self.httpStatus = httpStatus
        self.requestID = requestID
        self.curlCode = curlCode
        self.underlying = underlying
    }

    public static func == (lhs: S3Error, rhs: S3Error) -> Bool { lhs.code == rhs.code }

    /// True for failures worth retrying later: HTTP 5xx, SlowDown/throttling, request timeouts and
    /// transport errors (connection refused/reset, timeouts). Never true for other 4xx.
    public var isTransient: Bool {
        if code == .transport || code == .timeout || code == .slowDown { return true }
        if code == .internalError || code == .serviceUnavailable { return true }
        return httpStatus >= 500 && httpStatus <= 599
    }

    /// The HTTP statuses that are retried (with the codes above).
    static let retriedStatuses: Set<Int> = [500, 502, 503, 504]

    public var description: String {
        var text = "S3 \(awsCode ?? code.description): \(message)"
        var details: [String] = []
        if httpStatus != 0 { details.append("HTTP \(httpStatus)") }
        if let requestID { details.append("request id \(requestID)") }
        if let underlying { details.append("\(underlying)") }
        if !details.isEmpty { text += " (" + details.joined(separator: ", ") + ")" }
        return text
    }
}
