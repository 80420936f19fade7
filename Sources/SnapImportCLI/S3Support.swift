import ArgumentParser
import Foundation
import Synchronization

/// An `s3://bucket/key` location; the key is taken literally (no percent-decoding; `?`, `#` and
/// spaces are part of it).
struct S3Location: Equatable {
    var bucket: String
    var key: String

    /// - Parameter requireKey: whether an empty key is refused (objects) or allowed (a prefix).
    init(_ text: String, requireKey: Bool) throws {
        guard text.hasPrefix("s3://") else { throw ValidationError("expected s3://bucket/key, got '\(text)'") }
        let rest = text.dropFirst("s3://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        bucket = String(rest[..<slash])
        key = slash == rest.endIndex ? "" : String(rest[rest.index(after: slash)...])
        guard !bucket.isEmpty else { throw ValidationError("no bucket in '\(text)'") }
        if requireKey && key.isEmpty { throw ValidationError("no key in '\(text)'") }
    }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
final class ProgressBar: Sendable {
    private struct State {
        var lastDraw = ContinuousClock.now - .seconds(1)
        var drawn = false
    }
    private let state = Mutex(State())
    private let label: String
    private let started = ContinuousClock.now
    let enabled: Bool

    init(label: String, enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.label = label
        self.enabled = enabled
    }

    func update(done: UInt64, total: UInt64) {
        guard enabled else { return }
        let now = ContinuousClock.now
        let line: String? = state.withLock { s in
            guard done >= total || now - s.lastDraw >= .milliseconds(100) else { return nil }
            s.lastDraw = now
            s.drawn = true
            let fraction = total == 0 ? 1 : Double(done) / Double(total)
            let width = 30
            let filled = min(width, Int(fraction * Double(width)))
            let elapsed = max(0.001, Double((now - started).components.seconds) + Double((now - started).components.attoseconds) / 1e18)
            let rate = Double(done) / elapsed / 1_048_576
            let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
            return "\r\(label) [\(bar)] \(Int(fraction * 100))% " + String(format: "%.1f", rate) + " MiB/s"
        }
        if let line { FileHandle.standardError.write(Data(line.utf8)) }
    }

    func finish() {
        if enabled && state.withLock({ $0.drawn }) { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
