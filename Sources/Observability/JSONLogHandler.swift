public import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A `LogHandler` writing one JSON object per line (`--log-format json`), for journald, Loki or any
/// log shipper: `{"time":"2026-12-01T00:10:00.123Z","level":"info","label":"snapimport.watch",
/// "message":"imported","key":"incoming/web@acme/disk.qcow2","etag":"…","project":"web@acme",…}`.
///
/// Metadata become plain fields beside `time`, `level`, `label` and `message` (a metadata key equal to
/// one of those is written as `metadata.<key>` instead, so it never overwrites them). Values are
/// strings, or nested arrays and objects for `Logger.MetadataValue.array`/`.dictionary`; a
/// `stringConvertible` value is written as its `description`. Each line is written with one `write(2)`,
/// so lines of concurrent tasks never interleave.
public struct JSONLogHandler: LogHandler {
    /// The fields every line starts with.
    public static let reservedFields: Set<String> = ["time", "level", "label", "message"]

    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let fileDescriptor: Int32

    /// - Parameters:
    ///   - label: the logger's label (its `label` field).
    ///   - fileDescriptor: where lines go; standard error by default.
    public init(label: String, fileDescriptor: Int32 = 2, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.fileDescriptor = fileDescriptor
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let line = Self.line(
            time: Self.timestamp(), level: event.level, label: label, message: event.message.description,
            metadata: merged)
        var bytes = Array(line.utf8)
        bytes.append(0x0A)
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(fileDescriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    /// One log line (without its newline): the fixed fields, then the metadata sorted by key.
    public static func line(
        time: String, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata
    ) -> String {
        var out = "{\"time\":\(quoted(time)),\"level\":\(quoted(level.rawValue)),\"label\":\(quoted(label)),"
        out += "\"message\":\(quoted(message))"
        for key in metadata.keys.sorted() {
            let name = reservedFields.contains(key) ? "metadata.\(key)" : key
            out += ",\(quoted(name)):"
            append(metadata[key]!, to: &out)
        }
        out += "}"
        return out
    }

    private static func append(_ value: Logger.MetadataValue, to out: inout String) {
        switch value {
        case .string(let text): out += quoted(text)
        case .stringConvertible(let value): out += quoted(value.description)
        case .array(let values):
            out += "["
            for (index, element) in values.enumerated() {
                if index > 0 { out += "," }
                append(element, to: &out)
            }
            out += "]"
        case .dictionary(let dictionary):
            out += "{"
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { out += "," }
                out += "\(quoted(key)):"
                append(dictionary[key]!, to: &out)
            }
            out += "}"
        }
    }

    /// `text` as a JSON string literal (RFC 8259 escapes; control characters as `\u00XX`).
    static func quoted(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// Now, RFC 3339 in UTC with milliseconds (`2026-12-01T00:10:00.123Z`).
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = time_t(now.tv_sec)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
            + "\(pad(Int32(now.tv_nsec / 1_000_000), 3))Z"
    }
}

/// The log formats `--log-format` accepts.
public enum LogFormat: String, CaseIterable, Sendable {
    /// swift-log's `StreamLogHandler` lines (`2026-12-01T00:10:00+0000 info snapimport.watch : key=… message`).
    case text
    /// ``JSONLogHandler``: one JSON object per line.
    case json

    /// A handler of this format writing to standard error.
    public func handler(label: String) -> any LogHandler {
        switch self {
        case .text: StreamLogHandler.standardError(label: label)
        case .json: JSONLogHandler(label: label)
        }
    }
}
