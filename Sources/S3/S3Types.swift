public import Foundation

/// One object of a listing.
public struct S3Object: Sendable, Equatable, Hashable {
    /// The key, decoded (listings are requested with `encoding-type=url`).
    public var key: String
    public var size: UInt64
    /// The ETag without quotes.
    public var etag: String
    public var lastModified: Date?

    public init(key: String, size: UInt64, etag: String, lastModified: Date?) {
        self.key = key
        self.size = size
        self.etag = etag
        self.lastModified = lastModified
    }
}

/// One page of ListObjectsV2.
public struct ListPage: Sendable, Equatable {
    public var objects: [S3Object]
    /// Common prefixes when a delimiter was given (decoded).
    public var commonPrefixes: [String]
    public var isTruncated: Bool
    /// Pass this as `continuationToken` to get the next page; nil on the last page.
    public var nextContinuationToken: String?
}

/// What HeadObject (or the head of a GetObject) says about an object.
public struct ObjectHead: Sendable, Equatable {
    /// The size of the whole object (from `Content-Range` on a ranged answer).
    public var size: UInt64
    /// The ETag without quotes.
    public var etag: String
    public var lastModified: Date?
    public var contentType: String?
    /// `x-amz-meta-*` headers without the prefix, names lower-cased.
    public var metadata: [String: String]

    public init(size: UInt64, etag: String, lastModified: Date?, contentType: String?, metadata: [String: String]) {
        self.size = size
        self.etag = etag
        self.lastModified = lastModified
        self.contentType = contentType
        self.metadata = metadata
    }
}

/// A part of a multipart upload.
public struct UploadedPart: Sendable, Equatable {
    public var partNumber: Int
    /// The ETag without quotes.
    public var etag: String
    public var size: UInt64

    public init(partNumber: Int, etag: String, size: UInt64 = 0) {
        self.partNumber = partNumber
        self.etag = etag
        self.size = size
    }
}

/// Date formats S3 uses, parsed without (thread-unsafe, slow) formatters.
enum S3Date {
    /// ISO 8601 as in listings: `2026-11-24T22:31:20.000Z` (fraction optional).
    static func parseISO8601(_ text: String) -> Date? {
        let b = Array(text.utf8)
        guard b.count >= 19 else { return nil }
        func num(_ from: Int, _ count: Int) -> Int? {
            var v = 0
            for i in from..<(from + count) {
                guard b[i] >= 48 && b[i] <= 57 else { return nil }
                v = v * 10 + Int(b[i] - 48)
            }
            return v
        }
        guard let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2),
            let s = num(17, 2)
        else { return nil }
        var fraction = 0.0
        var i = 19
        if i < b.count && b[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            while i < b.count, b[i] >= 48 && b[i] <= 57 {
                fraction += Double(b[i] - 48) * scale
                scale /= 10
                i += 1
            }
        }
        return date(y, mo, d, h, mi, s, fraction)
    }

    /// RFC 7231 IMF-fixdate as in `Last-Modified`/`Date`: `Tue, 24 Nov 2026 22:31:20 GMT`.
    static func parseHTTP(_ text: String) -> Date? {
        let parts = text.split(separator: " ")
        guard parts.count >= 5 else { return nil }
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        guard let d = Int(parts[1]), let mIndex = months.firstIndex(of: String(parts[2])), let y = Int(parts[3])
        else { return nil }
        let time = parts[4].split(separator: ":")
        guard time.count == 3, let h = Int(time[0]), let mi = Int(time[1]), let s = Int(time[2]) else { return nil }
        return date(y, mIndex + 1, d, h, mi, s, 0)
    }

    private static func date(_ y: Int, _ m: Int, _ d: Int, _ h: Int, _ mi: Int, _ s: Int, _ fraction: Double) -> Date? {
        guard (1...12).contains(m), (1...31).contains(d), h < 24, mi < 60, s < 61 else { return nil }
        // Days from civil (Howard Hinnant).
        let yy = m <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let mp = m > 2 ? m - 3 : m + 9
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let seconds = Double(days * 86_400 + h * 3600 + mi * 60 + s) + fraction
        return Date(timeIntervalSince1970: seconds)
    }
}
