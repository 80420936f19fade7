public import Foundation
import SnapshotCore

/// Where objects live in the bucket and where they go (architecture.md, "Bucket layout").
///
/// Pure policy, no I/O:
/// - `incoming/<project>@<customer>/<path>` is an image to import; the owner is the first path
///   segment after the incoming prefix.
/// - `<key>.json` beside an image is its sidecar. Keys ending in `.json` are never images: a
///   sidecar whose image is not (yet) there is left alone until its image arrives.
/// - `processed/<project>@<customer>/<path>` (+ `.snapshot.json`) after success,
///   `failed/<project>@<customer>/<path>` (+ `.error.json`) after a rejection. A key outside any
///   project folder keeps its relative path under `failed/`.
public struct BucketLayout: Sendable, Equatable {
    public var incoming: String
    public var processed: String
    public var failed: String

    /// Prefixes get a trailing `/` when they lack one (an empty prefix stays empty).
    public init(incoming: String = "incoming/", processed: String = "processed/", failed: String = "failed/") {
        self.incoming = Self.normalize(incoming)
        self.processed = Self.normalize(processed)
        self.failed = Self.normalize(failed)
    }

    private static func normalize(_ prefix: String) -> String {
        prefix.isEmpty || prefix.hasSuffix("/") ? prefix : prefix + "/"
    }

    /// Suffix of a sidecar key.
    public static let sidecarSuffix = ".json"
    /// Suffix of the receipt written beside a processed image.
    public static let receiptSuffix = ".snapshot.json"
    /// Suffix of the error report written beside a failed image.
    public static let errorReportSuffix = ".error.json"

    /// What a listed key under `incoming/` is.
    public enum Role: Sendable, Equatable {
        /// An image to import.
        case image
        /// A sidecar `<image>.json`.
        case sidecar(imageKey: String)
        /// A "directory" marker (ends in `/`) or a key outside the incoming prefix.
        case ignored
    }

    /// Classifies one key of the incoming listing.
    public func role(of key: String) -> Role {
        guard key.hasPrefix(incoming), key.count > incoming.count, !key.hasSuffix("/") else { return .ignored }
        if key.hasSuffix(Self.sidecarSuffix) {
            return .sidecar(imageKey: String(key.dropLast(Self.sidecarSuffix.count)))
        }
        return .image
    }

    /// The path after the incoming prefix (`<project>@<customer>/<path>`), or nil when the key
    /// is not under it.
    public func relativePath(of key: String) -> String? {
        guard key.hasPrefix(incoming) else { return nil }
        return String(key.dropFirst(incoming.count))
    }

    /// The owner text (`project@customer`) of an incoming key: the first segment after the
    /// incoming prefix, present only when a non-empty name follows it.
    ///
    /// - Throws: `InvalidProject` when the key has no project folder or the folder name is not
    ///   of the form `project@customer`. (The domain's full name rules are applied by the caller
    ///   with SnapshotCore's parser; this checks the shape.)
    public func ownerText(of key: String) throws -> String {
        guard let relative = relativePath(of: key) else {
            throw ImporterError(.invalidProject, "key \(key) is not under \(incoming)")
        }
        guard let slash = relative.firstIndex(of: "/") else {
            throw ImporterError(
                .invalidProject, "key \(key) is not inside a project folder \(incoming)<project>@<customer>/")
        }
        let owner = String(relative[..<slash])
        let name = relative[relative.index(after: slash)...]
        guard !name.isEmpty else {
            throw ImporterError(.invalidProject, "key \(key) names no object inside \(incoming)\(owner)/")
        }
        let parts = owner.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ImporterError(
                .invalidProject, "folder '\(owner)' of key \(key) is not of the form <project>@<customer>")
        }
        return owner
    }

    /// The key an incoming image moves to after its snapshot was committed.
    public func processedKey(for key: String) -> String { processed + (relativePath(of: key) ?? key) }

    /// The key an incoming image moves to after a rejection.
    public func failedKey(for key: String) -> String { failed + (relativePath(of: key) ?? key) }

    /// The sidecar key of an image key.
    public static func sidecarKey(for key: String) -> String { key + sidecarSuffix }

    /// The receipt key beside a processed image.
    public static func receiptKey(for processedKey: String) -> String { processedKey + receiptSuffix }

    /// The error report key beside a failed image.
    public static func errorReportKey(for failedKey: String) -> String { failedKey + errorReportSuffix }

    /// One image found in a listing, with its sidecar when one is listed beside it.
    public struct Candidate: Sendable, Equatable {
        public var key: String
        public var etag: String
        public var size: UInt64
        public var sidecarKey: String?
        /// Set for an object of the listing that is not an image and will not be imported (an orphan
        /// sidecar): the pass reports it as skipped with this reason and touches nothing.
        public var skipReason: String?
        /// When the listing this candidate comes from began: an import committed since then was made by a
        /// worker that is moving the object itself.
        public var listedAt: Date?

        public init(key: String, etag: String, size: UInt64, sidecarKey: String? = nil, skipReason: String? = nil) {
            self.key = key
            self.etag = etag
            self.size = size
            self.sidecarKey = sidecarKey
            self.skipReason = skipReason
        }
    }

    /// Turns the listing of `incoming/` into the images to consider, in listing order, each
    /// with its sidecar. Sidecars, orphan sidecars and directory markers are not candidates.
    public func candidates(from objects: [(key: String, etag: String, size: UInt64)]) -> [Candidate] {
        var keys = Set<String>()
        for object in objects { keys.insert(object.key) }
        var result: [Candidate] = []
        for object in objects where role(of: object.key) == .image {
            let sidecar = Self.sidecarKey(for: object.key)
            result.append(
                Candidate(
                    key: object.key, etag: object.etag, size: object.size,
                    sidecarKey: keys.contains(sidecar) ? sidecar : nil))
        }
        return result
    }

    /// The objects of a listing of `incoming/` that are neither images nor the sidecar of a listed image:
    /// a `<name>.json` whose image `<name>` is not there (not uploaded yet, or a stray JSON file). Each is
    /// a candidate with a ``Candidate/skipReason``.
    public func unimportable(from objects: [(key: String, etag: String, size: UInt64)]) -> [Candidate] {
        var keys = Set<String>()
        for object in objects { keys.insert(object.key) }
        return objects.compactMap { object in
            guard case .sidecar(let image) = role(of: object.key), !keys.contains(image) else { return nil }
            return Candidate(
                key: object.key, etag: object.etag, size: object.size,
                skipReason: "a .json object without an image: \(image) is not in the bucket "
                    + "(a sidecar waits for its image; an image named *.json is never imported)")
        }
    }

    /// The customer part of an owner text, used for the per-customer concurrency bound.
    public static func customer(ofOwner owner: String) -> String {
        guard let at = owner.lastIndex(of: "@") else { return owner }
        return String(owner[owner.index(after: at)...])
    }
}

/// Optional metadata beside an image: `<key>.json` (architecture.md, "Bucket layout").
///
/// Unknown fields are refused (`InvalidSidecar`) so that a typo such as `sharewith` does not
/// silently publish nothing. `public: true` on a bootable image counts as the explicit
/// confirmation that publishing a bootable snapshot needs: the operator who wrote the sidecar
/// asked for it in writing.
public struct Sidecar: Sendable, Equatable, Codable {
    public var description: String?
    /// The claimed format (`raw`, `qcow2`, …); the content must match it.
    public var format: String?
    /// Projects (`project@customer`) to share the snapshot with.
    public var shareWith: [String]?
    /// Make the snapshot public.
    public var `public`: Bool?

    public init(description: String? = nil, format: String? = nil, shareWith: [String]? = nil, public: Bool? = nil) {
        self.description = description
        self.format = format
        self.shareWith = shareWith
        self.public = `public`
    }

    /// Largest sidecar read (a sidecar is a few hundred bytes; anything larger is refused).
    public static let maxSize = 64 << 10

    private static let knownFields: Set<String> = ["description", "format", "shareWith", "public"]

    /// Parses sidecar bytes.
    ///
    /// - Throws: `InvalidSidecar` naming the problem.
    public static func parse(_ bytes: [UInt8], key: String) throws -> Sidecar {
        guard bytes.count <= maxSize else {
            throw ImporterError(.invalidSidecar, "sidecar \(key) is larger than \(maxSize) bytes")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(bytes))
        } catch {
            throw ImporterError(.invalidSidecar, "sidecar \(key) is not valid JSON", underlying: error)
        }
        guard let dictionary = object as? [String: Any] else {
            throw ImporterError(.invalidSidecar, "sidecar \(key) must be a JSON object")
        }
        for field in dictionary.keys where !knownFields.contains(field) {
            throw ImporterError(
                .invalidSidecar,
                "sidecar \(key) has unknown field '\(field)' (known: description, format, shareWith, public)")
        }
        do {
            return try JSONDecoder().decode(Sidecar.self, from: Data(bytes))
        } catch {
            throw ImporterError(
                .invalidSidecar,
                "sidecar \(key): description and format must be strings, shareWith an array of strings, "
                    + "public a boolean", underlying: error)
        }
    }
}

/// The `.error.json` written beside a failed image: `{"code","message","key","etag","at"}`.
public struct ErrorReport: Sendable, Equatable, Codable {
    public var code: String
    public var message: String
    /// The incoming key the image had.
    public var key: String
    public var etag: String
    /// When the import was given up, RFC 3339.
    public var at: String

    public init(code: String, message: String, key: String, etag: String, at: Date) {
        self.code = code
        self.message = message
        self.key = key
        self.etag = etag
        self.at = RFC3339.string(at)
    }

    /// The JSON document (keys sorted, one line, trailing newline).
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding five strings cannot fail.
        let data = (try? encoder.encode(self)) ?? Data("{}".utf8)
        return Array(data) + [0x0A]
    }
}
