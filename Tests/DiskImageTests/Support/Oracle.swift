import DiskImage
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Test helpers around the conversion oracle: qemu-img and qemu-io make fixtures, `qemu-img convert -O raw`
/// gives the reference bytes, and `compare` checks a `DiskReader` against them byte for byte.
///
/// qemu-img is found through `SNAPIMPORT_TEST_QEMU_IMG` (set by scripts/test) or `PATH`; qemu-io next to it
/// or on `PATH`. Tests that need them use `@Test(.enabled(if: Oracle.available, Oracle.skipReason))`, so
/// they are reported as skipped with that reason when the tools are absent.
enum Oracle {
    /// Path of qemu-img, or nil when it cannot be found.
    static let qemuImgPath: String? = {
        if let env = ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_QEMU_IMG"], !env.isEmpty,
            FileManager.default.isExecutableFile(atPath: env)
        {
            return env
        }
        return findOnPath("qemu-img")
    }()

    /// Path of qemu-io, or nil when it cannot be found.
    static let qemuIOPath: String? = {
        if let img = qemuImgPath {
            let sibling = (img as NSString).deletingLastPathComponent + "/qemu-io"
            if FileManager.default.isExecutableFile(atPath: sibling) { return sibling }
        }
        return findOnPath("qemu-io")
    }()

    /// True when both qemu-img and qemu-io are available.
    static let available: Bool = {
        let ok = qemuImgPath != nil && qemuIOPath != nil
        if !ok { print("DiskImageTests: \(skipReason)") }
        return ok
    }()

    static let skipReason: Comment =
        "qemu-img/qemu-io not found: set SNAPIMPORT_TEST_QEMU_IMG or install qemu-utils (scripts/test does)"

    private static func findOnPath(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    struct ToolError: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs `tool args…`, returns stdout; throws with stderr when the exit status is not 0.
    @discardableResult
    static func run(_ tool: String, _ args: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = args
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes before waiting so a chatty tool cannot block on a full pipe.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ToolError(
                description: "\(tool) \(args.joined(separator: " ")) exited \(process.terminationStatus): "
                    + (String(data: errData, encoding: .utf8) ?? "") + (String(data: outData, encoding: .utf8) ?? ""))
        }
        return String(data: outData, encoding: .utf8) ?? ""
    }

    /// Runs qemu-img with `args`.
    @discardableResult
    static func qemuImg(_ args: String...) throws -> String {
        guard let tool = qemuImgPath else { throw ToolError(description: "\(skipReason)") }
        return try run(tool, args)
    }

    /// Runs qemu-img with `args` (array form).
    @discardableResult
    static func qemuImg(_ args: [String]) throws -> String {
        guard let tool = qemuImgPath else { throw ToolError(description: "\(skipReason)") }
        return try run(tool, args)
    }

    /// Runs each qemu-io command (e.g. `"write -P 0xab 0 64k"`, `"write -z 1M 64k"`) on `image`.
    static func qemuIO(_ image: String, format: String, _ commands: [String]) throws {
        guard let tool = qemuIOPath else { throw ToolError(description: "\(skipReason)") }
        var args = ["-f", format]
        for command in commands { args += ["-c", command] }
        args.append(image)
        let output = try run(tool, args)
        // qemu-io reports per-command failures on stdout and still exits 0.
        if output.contains("error") || output.contains("Error") {
            throw ToolError(description: "qemu-io \(commands) on \(image): \(output)")
        }
    }

    /// Writes `pattern` over `[offset, offset+length)` of the virtual disk (qemu-io `write -P`).
    static func writePattern(_ image: String, format: String, pattern: UInt8, offset: UInt64, length: UInt64) throws {
        try qemuIO(image, format: format, ["write -P \(pattern) \(offset) \(length)"])
    }

    /// The reference bytes of `image`: exactly what `qemu-img convert -f FMT -O raw` writes.
    static func referenceRaw(_ image: String, format: String) throws -> [UInt8] {
        let out = image + ".reference.raw"
        defer { unlink(out) }
        try qemuImg("convert", "-f", format, "-O", "raw", image, out)
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
    }

    /// Reads every extent of `reader` into memory, checking the extent invariants on the way (ordered, no gap,
    /// no overlap, covering exactly `info.virtualSize`).
    static func readAll(_ reader: inout some DiskReader) throws -> [UInt8] {
        let size = reader.info.virtualSize
        guard size <= 1 << 30 else { throw ToolError(description: "virtual size \(size) too large to hold in a test") }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        var position: UInt64 = 0
        while let extent = try reader.next() {
            guard extent.offset == position else {
                throw ToolError(description: "extent at \(extent.offset), expected \(position)")
            }
            guard extent.length > 0 || extent.offset == size else {
                throw ToolError(description: "empty extent at \(extent.offset)")
            }
            guard extent.offset + extent.length <= size else {
                throw ToolError(description: "extent [\(extent.offset), +\(extent.length)) past virtual size \(size)")
            }
            if case .data(let offset, let data) = extent {
                bytes.replaceSubrange(Int(offset)..<Int(offset) + data.count, with: data)
            }
            position += extent.length
        }
        guard position == size else {
            throw ToolError(description: "extents end at \(position), virtual size is \(size)")
        }
        return bytes
    }

    /// Reads an existential reader fully (see `readAll`).
    static func readAll(_ reader: any DiskReader) throws -> [UInt8] {
        var opened = reader
        return try readAll(&opened)
    }

    /// First offset where `a` and `b` differ (or the shorter length), nil when equal.
    static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
        if a == b { return nil }
        let n = min(a.count, b.count)
        for i in 0..<n where a[i] != b[i] { return i }
        return n
    }

    /// Opens `image` with `DiskImage.open`, reads it fully and asserts the bytes equal qemu-img's conversion
    /// with `-f qemuFormat`, and that the detected format is `expected`.
    ///
    /// - Returns: the reader's `ImageInfo` for further checks.
    @discardableResult
    static func assertMatchesReference(
        _ image: String, qemuFormat: String, expected: ImageFormat,
        limits: InspectionLimits = .init(),
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> ImageInfo {
        let reference = try referenceRaw(image, format: qemuFormat)
        let reader = try DiskImage.open(try FileByteSource(path: image), limits: limits)
        #expect(reader.info.format == expected, sourceLocation: sourceLocation)
        #expect(reader.info.virtualSize == UInt64(reference.count), sourceLocation: sourceLocation)
        let ours = try readAll(reader)
        let diff = firstDifference(ours, reference)
        #expect(
            diff == nil,
            "\(image): first difference at byte \(diff ?? -1) (ours \(ours.count) bytes, qemu \(reference.count))",
            sourceLocation: sourceLocation)
        return reader.info
    }

    /// Converts with `DiskImage.convert(to:)` into a sparse raw file and asserts it equals the reference file.
    static func assertConvertMatchesReference(
        _ image: String, qemuFormat: String, in dir: TempDir,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let reference = try referenceRaw(image, format: qemuFormat)
        let out = dir.path("converted.raw")
        var reader = try DiskImage.open(try FileByteSource(path: image))
        _ = try DiskImage.convert(&reader, toRawFile: out)
        let ours = [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
        let diff = firstDifference(ours, reference)
        #expect(diff == nil, "\(image): converted file differs at byte \(diff ?? -1)", sourceLocation: sourceLocation)
    }
}

/// A temporary directory removed when the value is released.
///
/// Lives under `SNAPIMPORT_TEST_WORK` when scripts/test sets it, else under the system temp directory.
final class TempDir {
    let url: URL

    init() throws {
        let base = ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_WORK"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory
        url = base.appendingPathComponent("diskimage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    /// Absolute path of `name` inside the directory.
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Writes `bytes` to `name` and returns its path.
    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    /// Reads the file `name`.
    func read(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path(name))))
    }
}

/// Little helpers to patch crafted headers.
extension Array where Element == UInt8 {
    mutating func putBE32(_ value: UInt32, at offset: Int) {
        for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(i))) }
    }

    mutating func putBE64(_ value: UInt64, at offset: Int) {
        for i in 0..<8 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64(i))) }
    }

    mutating func putLE32(_ value: UInt32, at offset: Int) {
        for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }

    func be64(at offset: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 << 8 | UInt64(self[offset + $1]) }
    }

    func be32(at offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 << 8 | UInt32(self[offset + $1]) }
    }
}
