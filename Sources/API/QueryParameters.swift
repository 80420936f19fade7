public import Foundation

/// The parameters of one EC2 query-protocol request: the `application/x-www-form-urlencoded` pairs of
/// a `POST /` body and of the query string (`GET /?Action=…`), decoded, in the order they came.
///
/// EC2 flattens lists with 1-based indexes (`SnapshotId.1`, `Filter.2.Value.1`); the accessors here
/// read them back. Every parse failure is an ``EC2Error`` with the code the client will see.
public struct QueryParameters: Sendable, Equatable {
    /// The decoded pairs, in order; a key given twice keeps its last value in lookups.
    public private(set) var pairs: [(name: String, value: String)]
    private var index: [String: String]

    public init(_ pairs: [(name: String, value: String)]) {
        self.pairs = pairs
        var index: [String: String] = [:]
        for pair in pairs { index[pair.name] = pair.value }
        self.index = index
    }

    public static func == (lhs: QueryParameters, rhs: QueryParameters) -> Bool {
        lhs.pairs.elementsEqual(rhs.pairs) { $0.name == $1.name && $0.value == $1.value }
    }

    /// Parses `a=1&b=x+y&c=%2F`: `+` is a space, `%XX` a byte, the result must be UTF-8.
    /// - Throws: `MalformedQueryString` for a bad escape or bytes that are not UTF-8.
    public init(formEncoded text: String) throws {
        var pairs: [(name: String, value: String)] = []
        for part in text.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = try Self.decode(kv[0])
            let value = kv.count > 1 ? try Self.decode(kv[1]) : ""
            guard !name.isEmpty else { continue }
            pairs.append((name, value))
        }
        self.init(pairs)
    }

    /// Appends `other`'s pairs (the body's after the query string's: the body wins on a repeated key).
    public func merging(_ other: QueryParameters) -> QueryParameters {
        QueryParameters(pairs + other.pairs)
    }

    private static func decode(_ text: Substring) throws -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    throw EC2Error(.malformedQueryString, "invalid percent-encoding in \(quoted(String(text)))")
                }
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        guard let string = String(validating: bytes, as: UTF8.self) else {
            throw EC2Error(.malformedQueryString, "the request holds bytes that are not UTF-8")
        }
        return string
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    // MARK: - Scalars

    /// The value of `name`, nil when absent.
    public subscript(_ name: String) -> String? { index[name] }

    /// The value of `name`. - Throws: `MissingParameter` when absent or empty.
    public func required(_ name: String) throws -> String {
        guard let value = index[name], !value.isEmpty else {
            throw EC2Error(.missingParameter, "The request must contain the parameter \(name)")
        }
        return value
    }

    /// An integer parameter within `range`. - Throws: `InvalidParameterValue` otherwise.
    public func int(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = index[name] else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw EC2Error(
                .invalidParameterValue,
                "Value (\(text)) for parameter \(name) is invalid. Expected an integer from \(range.lowerBound) "
                    + "to \(range.upperBound).")
        }
        return value
    }

    /// A boolean parameter (`true`/`false`, any case). - Throws: `InvalidParameterValue` otherwise.
    public func bool(_ name: String) throws -> Bool? {
        guard let text = index[name] else { return nil }
        switch text.lowercased() {
        case "true": return true
        case "false": return false
        default:
            throw EC2Error(
                .invalidParameterValue, "Value (\(text)) for parameter \(name) is invalid. Expected true or false.")
        }
    }

    // MARK: - Lists

    /// `Prefix.1`, `Prefix.2`, … in index order (gaps allowed: botocore never makes them, a hand-written
    /// request may). Keys with more parts (`Prefix.1.Name`) are not members.
    /// - Throws: `InvalidParameterValue` for an index that is not a positive integer.
    public func list(_ prefix: String) throws -> [String] {
        var members: [Int: String] = [:]
        let start = prefix + "."
        for pair in pairs where pair.name.hasPrefix(start) {
            let tail = pair.name.dropFirst(start.count)
            guard !tail.contains(".") else { continue }
            members[try Self.position(String(tail), prefix)] = pair.value
        }
        return members.keys.sorted().map { members[$0]! }
    }

    /// The structures of a list such as `Filter.N.Name` + `Filter.N.Value.M`: for each N in order, a
    /// ``QueryParameters`` holding its members with the `Filter.N.` prefix removed.
    public func structures(_ prefix: String) throws -> [QueryParameters] {
        var members: [Int: [(name: String, value: String)]] = [:]
        let start = prefix + "."
        for pair in pairs where pair.name.hasPrefix(start) {
            let tail = pair.name.dropFirst(start.count)
            guard let dot = tail.firstIndex(of: ".") else { continue }
            let number = try Self.position(String(tail[..<dot]), prefix)
            members[number, default: []].append((String(tail[tail.index(after: dot)...]), pair.value))
        }
        return members.keys.sorted().map { QueryParameters(members[$0]!) }
    }

    /// Whether any parameter starts with `prefix.`.
    public func has(prefix: String) -> Bool {
        pairs.contains { $0.name.hasPrefix(prefix + ".") }
    }

    private static func position(_ text: String, _ prefix: String) throws -> Int {
        guard let number = Int(text), number >= 1, number <= 10_000 else {
            throw EC2Error(
                .invalidParameterValue, "\(prefix).\(text): a list index must be a positive integer (1, 2, …)")
        }
        return number
    }
}

/// `"text"` with control characters made visible, for messages that quote user input.
func quoted(_ text: String) -> String {
    let limited = text.count > 200 ? String(text.prefix(200)) + "…" : text
    return "\""
        + limited.unicodeScalars.map {
            $0.value < 0x20 || $0.value == 0x7F ? "\\u{\(String($0.value, radix: 16))}" : String($0)
        }.joined() + "\""
}
