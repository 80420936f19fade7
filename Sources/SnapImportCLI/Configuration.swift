import ArgumentParser
import Foundation
import SnapshotCore
import TOMLKit

/// The parsed `snapimport.toml` (architecture.md, "Configuration").
///
/// Every section is optional so that a command reads only what it needs: `snapshot …` and a
/// local `import FILE` work with a file holding only `[store]`. Environment variables override
/// the file where architecture.md names one; credentials never live here.
struct Configuration: Sendable, Equatable {
    struct S3Section: Sendable, Equatable {
        var endpoint: String?
        var region: String?
        var bucket: String?
        /// `"path"` (default) or `"virtual"`.
        var addressing: String = "path"
        /// A PEM bundle to trust instead of the system CA store.
        var caFile: String?
    }

    struct LayoutSection: Sendable, Equatable {
        var incoming = "incoming/"
        var processed = "processed/"
        var failed = "failed/"
    }

    struct StoreSection: Sendable, Equatable {
        /// Data directory: SQLite catalog and filesystem block store.
        var path = "./data"
        /// A `postgres://` URL for the shared catalog; nil means SQLite in `path`.
        var catalog: String?
        /// An `s3://bucket/prefix/` block store; nil means the filesystem under `path`.
        var blocks: String?
        /// Block size of the block store in bytes.
        var blockSize: Int?
    }

    struct LimitsSection: Sendable, Equatable {
        var maxVirtualSize: UInt64 = 16 << 40
        var concurrentImportsPerCustomer = 16
        var concurrentImports = 4
        /// Passes that may fail transiently before an object goes to failed/.
        var maxAttempts = 5
    }

    /// `[api]`: `snapimport serve`.
    struct APISection: Sendable, Equatable {
        /// `HOST:PORT` the EC2-compatible API listens on.
        var listen = "127.0.0.1:8773"
        /// PEM certificate chain and private key for HTTPS; both or neither.
        var tlsCert: String?
        var tlsKey: String?
        /// Whether `serve` also runs `watch`'s passes over incoming/ in the same process.
        var watch = false
    }

    var s3 = S3Section()
    var layout = LayoutSection()
    var store = StoreSection()
    var limits = LimitsSection()
    var api = APISection()
    /// Whether `[store] path` was written in the configuration file (then a relative one is taken from
    /// the file's folder; the default `./data` and `SNAPIMPORT_STORE` stay relative to the working
    /// directory).
    var storePathFromFile = false

    /// Where the configuration comes from: `--config`, then `$SNAPIMPORT_CONFIG`, then
    /// `./config/snapimport.toml`. A missing default file is not an error (all defaults apply);
    /// a missing file that was named explicitly is.
    static func load(
        path explicit: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> Configuration {
        var config = Configuration()
        let named = explicit ?? environment["SNAPIMPORT_CONFIG"]
        let path = named ?? "./config/snapimport.toml"
        if FileManager.default.fileExists(atPath: path) {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw ValidationError("cannot read configuration \(path): \(ErrorText.plain(error))")
            }
            config = try parse(text, origin: path)
            // A relative store path in the file belongs to the file, not to wherever the command runs:
            // the cron line, the systemd unit and an operator's shell all find the same store.
            if config.storePathFromFile, !config.store.path.hasPrefix("/") {
                let folder = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent()
                config.store.path = folder.appendingPathComponent(config.store.path).standardizedFileURL.path
            }
        } else if named != nil {
            throw ValidationError("configuration file not found: \(path)")
        }
        config.applyEnvironment(environment)
        return config
    }

    /// Parses TOML text; unknown keys are refused so that a typo does not silently fall back
    /// to a default.
    static func parse(_ text: String, origin: String = "<config>") throws -> Configuration {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ValidationError(
                "\(origin):\(error.source.begin.line): invalid TOML: \(error.description)")
        }
        var config = Configuration()
        var reader = TableReader(origin: origin)
        for key in table.keys {
            guard let section = table[key]?.table else {
                throw ValidationError("\(origin): '\(key)' must be a [section]")
            }
            switch key {
            case "s3":
                reader.section = "s3"
                try reader.checkKeys(section, ["endpoint", "region", "bucket", "addressing", "ca_file"])
                config.s3.endpoint = try reader.string(section, "endpoint")
                config.s3.region = try reader.string(section, "region")
                config.s3.bucket = try reader.string(section, "bucket")
                config.s3.addressing = try reader.string(section, "addressing") ?? "path"
                config.s3.caFile = try reader.string(section, "ca_file")
            case "layout":
                reader.section = "layout"
                try reader.checkKeys(section, ["incoming", "processed", "failed"])
                config.layout.incoming = try reader.string(section, "incoming") ?? config.layout.incoming
                config.layout.processed = try reader.string(section, "processed") ?? config.layout.processed
                config.layout.failed = try reader.string(section, "failed") ?? config.layout.failed
            case "store":
                reader.section = "store"
                try reader.checkKeys(section, ["path", "catalog", "blocks", "block_size"])
                if let path = try reader.string(section, "path") {
                    config.store.path = path
                    config.storePathFromFile = true
                }
                config.store.catalog = try reader.string(section, "catalog")
                config.store.blocks = try reader.string(section, "blocks")
                if let size = try reader.size(section, "block_size") { config.store.blockSize = Int(size) }
            case "limits":
                reader.section = "limits"
                try reader.checkKeys(
                    section,
                    ["max_virtual_size", "concurrent_imports_per_customer", "concurrent_imports", "max_attempts"])
                if let size = try reader.size(section, "max_virtual_size") { config.limits.maxVirtualSize = size }
                if let n = try reader.int(section, "concurrent_imports_per_customer") {
                    config.limits.concurrentImportsPerCustomer = n
                }
                if let n = try reader.int(section, "concurrent_imports") { config.limits.concurrentImports = n }
                if let n = try reader.int(section, "max_attempts") { config.limits.maxAttempts = n }
            case "api":
                reader.section = "api"
                try reader.checkKeys(section, ["listen", "tls_cert", "tls_key", "watch"])
                config.api.listen = try reader.string(section, "listen") ?? config.api.listen
                config.api.tlsCert = try reader.string(section, "tls_cert")
                config.api.tlsKey = try reader.string(section, "tls_key")
                config.api.watch = try reader.bool(section, "watch") ?? false
            default:
                throw ValidationError("\(origin): unknown section [\(key)]")
            }
        }
        try config.validate(origin: origin)
        return config
    }

    /// Environment variables named in architecture.md take precedence over the file.
    mutating func applyEnvironment(_ environment: [String: String]) {
        if let endpoint = environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"], !endpoint.isEmpty {
            s3.endpoint = endpoint
        }
        if let region = environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"], !region.isEmpty {
            s3.region = region
        }
        if let bucket = environment["SNAPIMPORT_BUCKET"], !bucket.isEmpty { s3.bucket = bucket }
        if let path = environment["SNAPIMPORT_STORE"], !path.isEmpty { store.path = path }
        if let catalog = environment["SNAPIMPORT_CATALOG"], !catalog.isEmpty { store.catalog = catalog }
        if let blocks = environment["SNAPIMPORT_BLOCKS"], !blocks.isEmpty { store.blocks = blocks }
        if let listen = environment["SNAPIMPORT_API_LISTEN"], !listen.isEmpty { api.listen = listen }
    }

    func validate(origin: String) throws {
        guard s3.addressing == "path" || s3.addressing == "virtual" else {
            throw ValidationError(
                "\(origin): [s3] addressing must be \"path\" or \"virtual\", not \"\(s3.addressing)\"")
        }
        guard limits.concurrentImportsPerCustomer > 0, limits.concurrentImports > 0, limits.maxAttempts > 0 else {
            throw ValidationError("\(origin): [limits] counts must be positive")
        }
        if (api.tlsCert == nil) != (api.tlsKey == nil) {
            throw ValidationError("\(origin): [api] tls_cert and tls_key go together: set both or neither")
        }
        if let blockSize = store.blockSize {
            guard blockSize >= 4096, blockSize <= 64 << 20, blockSize & (blockSize - 1) == 0 else {
                throw ValidationError("\(origin): [store] block_size must be a power of two from 4KiB to 64MiB")
            }
        }
    }
}

/// Reads typed values out of one TOML section with messages that name the key.
private struct TableReader {
    let origin: String
    var section = ""

    func checkKeys(_ table: TOMLTable, _ allowed: Set<String>) throws {
        for key in table.keys where !allowed.contains(key) {
            throw ValidationError("\(origin): unknown key '\(key)' in [\(section)]")
        }
    }

    func string(_ table: TOMLTable, _ key: String) throws -> String? {
        guard let value = table[key] else { return nil }
        guard let string = value.string else {
            throw ValidationError("\(origin): [\(section)] \(key) must be a string")
        }
        return string
    }

    func bool(_ table: TOMLTable, _ key: String) throws -> Bool? {
        guard let value = table[key] else { return nil }
        guard let bool = value.bool else { throw ValidationError("\(origin): [\(section)] \(key) must be true or false") }
        return bool
    }

    func int(_ table: TOMLTable, _ key: String) throws -> Int? {
        guard let value = table[key] else { return nil }
        guard let int = value.int else { throw ValidationError("\(origin): [\(section)] \(key) must be an integer") }
        return int
    }

    /// A byte size: an integer, or a string such as `"16TiB"`, `"512MiB"`, `"4096"`.
    func size(_ table: TOMLTable, _ key: String) throws -> UInt64? {
        guard let value = table[key] else { return nil }
        if let int = value.int, int >= 0 { return UInt64(int) }
        if let string = value.string, let size = ByteSize.parse(string) { return size }
        throw ValidationError("\(origin): [\(section)] \(key) must be a size such as \"16TiB\"")
    }
}

/// Human byte sizes with binary (KiB…PiB) and decimal (KB…PB) units.
enum ByteSize {
    static func parse(_ text: String) -> UInt64? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let number = UInt64(digits) else { return nil }
        let unit = trimmed.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        let multipliers: [String: UInt64] = [
            "": 1, "b": 1,
            "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
            "t": 1 << 40, "tib": 1 << 40, "p": 1 << 50, "pib": 1 << 50,
            "kb": 1_000, "mb": 1_000_000, "gb": 1_000_000_000, "tb": 1_000_000_000_000,
            "pb": 1_000_000_000_000_000,
        ]
        guard let multiplier = multipliers[unit] else { return nil }
        let (result, overflow) = number.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : result
    }
}
