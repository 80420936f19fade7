import Foundation
import Importer

/// `run` on a terminal: one line per import in flight on stderr (key, bar, percentage, bytes read of the
/// total), redrawn four times a second in place and erased when the pass ends, so that the summary
/// printed afterwards stands alone. Not drawn when stderr is not a terminal (cron, pipes) or with `--json`.
struct LiveImportLines {
    let inFlight: InFlightImports
    /// Terminal columns; lines are cut to fit so that none wraps (a wrapped line would break the redraw).
    let columns: Int

    init(_ inFlight: InFlightImports, columns: Int = Self.terminalColumns()) {
        self.inFlight = inFlight
        self.columns = max(40, columns)
    }

    /// Draws until cancelled, then erases what it drew.
    func run(every interval: Duration = .milliseconds(250)) async {
        var drawn = 0
        while !Task.isCancelled {
            let lines = Self.lines(inFlight.entries, columns: columns)
            write(Self.redraw(previous: drawn, lines: lines))
            drawn = lines.count
            try? await Task.sleep(for: interval)
        }
        write(Self.redraw(previous: drawn, lines: []))
    }

    /// The escape sequence that replaces the `previous` lines drawn last time by `lines`: back to the first
    /// of them (CPL), clear to the end of the screen (ED), then the new lines.
    static func redraw(previous: Int, lines: [String]) -> String {
        (previous > 0 ? "\u{1B}[\(previous)F\u{1B}[J" : "") + lines.map { $0 + "\n" }.joined()
    }

    /// One line per import: `incoming/p@c/disk.qcow2  [=======             ]  35%  245.0 MiB of 700.0 MiB`.
    static func lines(_ entries: [InFlightImports.Entry], columns: Int) -> [String] {
        entries.map { entry in
            let read = entry.progress.bytesRead
            let total = entry.progress.bytesTotal
            let width = 20
            let fraction = total.map { $0 == 0 ? 1 : Double(read) / Double($0) }
            let filled = min(width, Int((fraction ?? 0) * Double(width)))
            let bar = "[" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "]"
            let percent = fraction.map { String(format: "%3d%%", Int($0 * 100)) } ?? "  ?%"
            let amount = short(read) + (total.map { " of " + short($0) } ?? "")
            // A narrow terminal drops the bar and the total before the key shrinks below a file name's worth.
            var tail = "  \(bar) \(percent)  \(amount)"
            if columns - 1 - tail.count < 16 { tail = "  \(percent)  \(short(read))" }
            return cut(entry.key, to: max(8, columns - 1 - tail.count)) + tail
        }
    }

    /// `245.0 MiB`: ``ByteCount/human(_:)`` without the exact figure, which a live line has no room for.
    static func short(_ bytes: UInt64) -> String {
        let text = ByteCount.human(bytes)
        return text.firstIndex(of: "(").map { String(text[..<$0]).trimmingCharacters(in: .whitespaces) } ?? text
    }

    /// A key cut to `width` characters, keeping its end (the file name) after an ellipsis.
    static func cut(_ key: String, to width: Int) -> String {
        key.count <= width ? key : "…" + key.suffix(width - 1)
    }

    static func terminalColumns() -> Int {
        var size = winsize()
        return ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 80
    }

    private func write(_ text: String) {
        guard !text.isEmpty else { return }
        FileHandle.standardError.write(Data(text.utf8))
    }
}
