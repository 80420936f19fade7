/// Human listings (`snapshot list`, `volume list`, `s3 ls`): a header and columns padded to their
/// widest cell, two spaces apart; the last column is not padded (descriptions and keys run free).
/// Scripts read `--json`, where numbers stay numbers.
struct Table {
    /// The column titles, upper case by convention (`ID`, `SIZE`, …).
    var header: [String]
    /// Columns whose cells are aligned to the right (sizes).
    var rightAligned: Set<Int> = []
    var rows: [[String]] = []

    init(_ header: String..., rightAligned: Set<Int> = []) {
        self.header = header
        self.rightAligned = rightAligned
    }

    mutating func append(_ row: String...) { rows.append(row) }

    /// The table as lines (header first), each ending in a newline; just the header when empty.
    func render() -> String {
        let all = [header] + rows
        var widths = [Int](repeating: 0, count: header.count)
        for row in all {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.count)
            }
        }
        var out = ""
        for row in all {
            var line = ""
            for (index, cell) in row.enumerated() {
                let last = index == row.count - 1
                let padding = String(repeating: " ", count: max(0, widths[min(index, widths.count - 1)] - cell.count))
                if index > 0 { line += "  " }
                if rightAligned.contains(index) {
                    line += padding + cell
                } else {
                    line += last ? cell : cell + padding
                }
            }
            out += line + "\n"
        }
        return out
    }
}

/// Sizes for people, the way `qemu-img info` writes them: `1.0 GiB (1073741824 bytes)`; under 1 KiB just
/// `512 bytes`.
enum ByteCount {
    static func human(_ bytes: UInt64) -> String {
        let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        guard bytes >= 1024 else { return "\(bytes) bytes" }
        var value = Double(bytes) / 1024
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        // One decimal, rounded half up; 1023.95 MiB is written 1024.0 MiB rather than jumping units.
        let tenths = (value * 10).rounded()
        return "\(Int(tenths) / 10).\(Int(tenths) % 10) \(units[unit]) (\(bytes) bytes)"
    }
}
