/// A small streaming XML writer: elements, escaped text, nothing else (the EC2 answers need no
/// attributes but the namespace). Every piece of text goes through ``escape(_:)``: user input (a
/// description, a key, an error message quoting a parameter) can never break out of its element.
public struct XMLWriter: Sendable {
    private(set) var output: String
    private var open: [String] = []

    /// Starts a document with the XML declaration.
    public init() {
        output = #"<?xml version="1.0" encoding="UTF-8"?>"# + "\n"
    }

    /// The document; every element opened must have been closed.
    public var document: String {
        precondition(open.isEmpty, "unclosed elements: \(open)")
        return output
    }

    /// `<name xmlns="namespace">`.
    public mutating func start(_ name: String, namespace: String? = nil) {
        output += "<" + name
        if let namespace { output += " xmlns=\"" + Self.escape(namespace) + "\"" }
        output += ">"
        open.append(name)
    }

    /// Closes the innermost open element.
    public mutating func end() {
        guard let name = open.popLast() else { preconditionFailure("end() without an open element") }
        output += "</" + name + ">"
    }

    /// `<name>` … `</name>` around `body`.
    public mutating func element(_ name: String, _ body: (inout XMLWriter) throws -> Void) rethrows {
        start(name)
        try body(&self)
        end()
    }

    /// `<name>text</name>`, the text escaped; `<name/>` for an empty one.
    public mutating func text(_ name: String, _ value: String) {
        if value.isEmpty {
            output += "<" + name + "/>"
        } else {
            output += "<" + name + ">" + Self.escape(value) + "</" + name + ">"
        }
    }

    /// `text(name, value)` when `value` is not nil.
    public mutating func text(_ name: String, ifPresent value: String?) {
        if let value { text(name, value) }
    }

    /// `<name>true</name>` / `false`.
    public mutating func bool(_ name: String, _ value: Bool) { text(name, value ? "true" : "false") }

    /// An integer element.
    public mutating func int<T: BinaryInteger>(_ name: String, _ value: T) { text(name, String(value)) }

    /// `<name><item>…</item>…</name>`, or `<name/>` when `items` is empty.
    public mutating func list<S: Sequence>(
        _ name: String, _ items: S, _ item: (inout XMLWriter, S.Element) throws -> Void
    ) rethrows {
        var iterator = items.makeIterator()
        guard let first = iterator.next() else {
            output += "<" + name + "/>"
            return
        }
        start(name)
        start("item")
        try item(&self, first)
        end()
        while let next = iterator.next() {
            start("item")
            try item(&self, next)
            end()
        }
        end()
    }

    /// Escapes `&`, `<`, `>`, `"`, `'`, and writes characters XML 1.0 cannot carry at all (C0 controls
    /// but tab, LF, CR; U+FFFE/U+FFFF; lone surrogates cannot occur in a Swift string) as U+FFFD, so the
    /// document always parses.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\t", "\n": out.unicodeScalars.append(scalar)
            case "\r": out += "&#13;"
            default:
                if scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF {
                    out += "\u{FFFD}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
