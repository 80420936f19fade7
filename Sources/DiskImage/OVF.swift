// OVF descriptors, as far as an OVA import needs them.
// Spec: DMTF DSP0243 "Open Virtualization Format Specification" 2.1, §5 (OVF package: "the OVF descriptor
// shall be the first file" of an OVA; References/File with ovf:href, ovf:compression, ovf:chunkSize) and
// §9.1 (DiskSection/Disk with ovf:fileRef).

/// The disk files an OVF descriptor names, validated so that none can point outside the archive.
struct OVFDescriptor {
    /// One `References/File` entry.
    struct File: Equatable {
        var id: String
        /// The href, percent-decoded: a relative path inside the archive.
        var href: String
        var compression: String?
        var chunked: Bool
    }

    /// The files the descriptor's disks use (every referenced file when there is no DiskSection).
    var disks: [File]

    /// Parses `bytes` (UTF-8 XML) and checks every file reference.
    ///
    /// - Throws: `ExternalExtentNotAllowed` (an href with a scheme, an absolute path or a `..` component),
    ///   `CorruptImage` (not an OVF envelope, a DTD, a disk naming an unknown file, an empty href),
    ///   `UnsupportedContainer` (split or non-gzip compressed files).
    static func parse(_ bytes: [UInt8]) throws -> OVFDescriptor {
        let elements = try XMLScan.elements(bytes)
        guard elements.contains(where: { $0.name == "Envelope" }) else {
            throw DiskImageError(.corruptImage, "the OVA's .ovf member is not an OVF Envelope document")
        }
        var files: [File] = []
        var diskRefs: [String] = []
        for element in elements {
            if element.name == "File" && element.parents.last == "References" {
                guard let href = element.attributes["href"], !href.isEmpty else {
                    throw DiskImageError(.corruptImage, "OVF References/File without an href")
                }
                let decoded = percentDecoded(href)
                try checkHref(decoded, raw: href)
                files.append(
                    File(
                        id: element.attributes["id"] ?? "", href: decoded, compression: element.attributes["compression"],
                        chunked: element.attributes["chunkSize"] != nil))
            } else if element.name == "Disk" && element.parents.last == "DiskSection",
                let ref = element.attributes["fileRef"]
            {
                diskRefs.append(ref)
            }
        }
        var disks: [File] = []
        if diskRefs.isEmpty {
            disks = files
        } else {
            for ref in diskRefs where !disks.contains(where: { $0.id == ref }) {
                guard let file = files.first(where: { $0.id == ref }) else {
                    throw DiskImageError(.corruptImage, "OVF Disk fileRef \"\(printable(ref))\" names no References/File")
                }
                disks.append(file)
            }
        }
        for disk in disks {
            if disk.chunked {
                throw DiskImageError(
                    .unsupportedContainer, "OVF file \"\(printable(disk.href))\" is split into chunks (ovf:chunkSize)")
            }
            if let compression = disk.compression, compression != "gzip", compression != "identity" {
                throw DiskImageError(
                    .unsupportedContainer, "OVF file \"\(printable(disk.href))\" uses compression \"\(printable(compression))\"")
            }
        }
        return OVFDescriptor(disks: disks)
    }

    /// Refuses an href that could name something outside the archive: a URL scheme (`http:`, `file:`), an
    /// absolute path (`/…`, `\…`) or a `..` component.
    static func checkHref(_ href: String, raw: String) throws {
        let bytes = Array(href.utf8)
        let why: String?
        if let colon = bytes.firstIndex(of: UInt8(ascii: ":")), colon > 0,
            bytes[..<colon].allSatisfy({ isSchemeByte($0) }), isLetter(bytes[0])
        {
            why = "has a URL scheme"
        } else if bytes.first == UInt8(ascii: "/") || bytes.first == UInt8(ascii: "\\") {
            why = "is an absolute path"
        } else if href.split(whereSeparator: { $0 == "/" || $0 == "\\" }).contains("..") {
            why = "leaves the archive (..)"
        } else {
            why = nil
        }
        if let why {
            throw DiskImageError(
                .externalExtentNotAllowed, "OVF References/File href \"\(printable(raw))\" \(why)")
        }
    }

    private static func isLetter(_ b: UInt8) -> Bool { (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) }
    private static func isSchemeByte(_ b: UInt8) -> Bool {
        isLetter(b) || (0x30...0x39).contains(b) || b == UInt8(ascii: "+") || b == UInt8(ascii: "-")
            || b == UInt8(ascii: ".")
    }

    /// `%XX` escapes decoded (an href is a URI reference); invalid escapes stay as they are.
    static func percentDecoded(_ text: String) -> String {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count,
                let value = UInt8(String(decoding: bytes[i + 1...i + 2], as: UTF8.self), radix: 16)
            {
                out.append(value)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A name from the descriptor made safe for a message.
    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.prefix(200).map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
    }
}

/// A minimal, non-validating XML scanner: start tags with their attributes and the names of their open
/// ancestors, namespace prefixes dropped. No entities beyond the predefined and numeric ones; a document
/// type declaration with an internal subset is refused (no entity expansion, ever).
enum XMLScan {
    struct Element {
        var name: String
        var attributes: [String: String]
        var parents: [String]
    }

    static func elements(_ bytes: [UInt8]) throws -> [Element] {
        var result: [Element] = []
        var stack: [String] = []
        var i = 0
        let n = bytes.count
        func starts(_ text: String, at index: Int) -> Bool {
            let t = Array(text.utf8)
            return index + t.count <= n && Array(bytes[index..<index + t.count]) == t
        }
        func find(_ text: String, from index: Int) -> Int? {
            var j = index
            while j < n {
                if starts(text, at: j) { return j }
                j += 1
            }
            return nil
        }
        while i < n {
            guard bytes[i] == UInt8(ascii: "<") else {
                i += 1
                continue
            }
            if starts("<!--", at: i) {
                guard let end = find("-->", from: i + 4) else { throw malformed("an unterminated comment") }
                i = end + 3
            } else if starts("<![CDATA[", at: i) {
                guard let end = find("]]>", from: i + 9) else { throw malformed("an unterminated CDATA section") }
                i = end + 3
            } else if starts("<?", at: i) {
                guard let end = find("?>", from: i + 2) else { throw malformed("an unterminated processing instruction") }
                i = end + 2
            } else if starts("<!", at: i) {
                guard let end = find(">", from: i + 2) else { throw malformed("an unterminated declaration") }
                if bytes[i..<end].contains(UInt8(ascii: "[")) {
                    throw DiskImageError(.corruptImage, "the OVF descriptor declares a DTD with an internal subset")
                }
                i = end + 1
            } else if starts("</", at: i) {
                guard let end = find(">", from: i + 2) else { throw malformed("an unterminated end tag") }
                let name = localName(String(decoding: bytes[i + 2..<end], as: UTF8.self))
                if let index = stack.lastIndex(of: name) { stack.removeSubrange(index...) }
                i = end + 1
            } else {
                let (element, end, selfClosing) = try startTag(bytes, at: i, parents: stack)
                result.append(element)
                if !selfClosing { stack.append(element.name) }
                guard stack.count <= 256 else { throw malformed("elements nested more than 256 deep") }
                i = end
            }
        }
        return result
    }

    /// Parses the start tag at `start` (`<name attr="value" …>` or `… />`).
    private static func startTag(_ bytes: [UInt8], at start: Int, parents: [String]) throws
        -> (Element, end: Int, selfClosing: Bool)
    {
        var i = start + 1
        let n = bytes.count
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
        func isNameEnd(_ b: UInt8) -> Bool {
            isSpace(b) || b == UInt8(ascii: ">") || b == UInt8(ascii: "/") || b == UInt8(ascii: "=")
        }
        func name() -> String {
            let from = i
            while i < n && !isNameEnd(bytes[i]) { i += 1 }
            return String(decoding: bytes[from..<i], as: UTF8.self)
        }
        let tag = localName(name())
        guard !tag.isEmpty else { throw malformed("an empty tag name") }
        var attributes: [String: String] = [:]
        while true {
            while i < n && isSpace(bytes[i]) { i += 1 }
            guard i < n else { throw malformed("an unterminated <\(tag)> tag") }
            if bytes[i] == UInt8(ascii: ">") { return (Element(name: tag, attributes: attributes, parents: parents), i + 1, false) }
            if bytes[i] == UInt8(ascii: "/") {
                guard i + 1 < n, bytes[i + 1] == UInt8(ascii: ">") else { throw malformed("a stray / in <\(tag)>") }
                return (Element(name: tag, attributes: attributes, parents: parents), i + 2, true)
            }
            let attribute = localName(name())
            guard !attribute.isEmpty else { throw malformed("an attribute without a name in <\(tag)>") }
            while i < n && isSpace(bytes[i]) { i += 1 }
            guard i < n, bytes[i] == UInt8(ascii: "=") else { throw malformed("attribute \(attribute) without a value") }
            i += 1
            while i < n && isSpace(bytes[i]) { i += 1 }
            guard i < n, bytes[i] == UInt8(ascii: "\"") || bytes[i] == UInt8(ascii: "'") else {
                throw malformed("an unquoted value of \(attribute)")
            }
            let quote = bytes[i]
            i += 1
            let from = i
            while i < n && bytes[i] != quote { i += 1 }
            guard i < n else { throw malformed("an unterminated value of \(attribute)") }
            attributes[attribute] = try unescape(Array(bytes[from..<i]))
            i += 1
        }
    }

    /// `ovf:href` → `href`.
    private static func localName(_ name: String) -> String {
        let trimmed = name.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).first
            .map(String.init) ?? ""
        return trimmed.split(separator: ":").last.map(String.init) ?? trimmed
    }

    /// Replaces the predefined entities and character references.
    private static func unescape(_ bytes: [UInt8]) throws -> String {
        guard bytes.contains(UInt8(ascii: "&")) else { return String(decoding: bytes, as: UTF8.self) }
        var out = ""
        var i = 0
        while i < bytes.count {
            guard bytes[i] == UInt8(ascii: "&") else {
                var j = i
                while j < bytes.count && bytes[j] != UInt8(ascii: "&") { j += 1 }
                out += String(decoding: bytes[i..<j], as: UTF8.self)
                i = j
                continue
            }
            guard let semi = bytes[i...].firstIndex(of: UInt8(ascii: ";")), semi - i <= 10 else {
                throw malformed("a bare & in an attribute")
            }
            let entity = String(decoding: bytes[i + 1..<semi], as: UTF8.self)
            switch entity {
            case "amp": out += "&"
            case "lt": out += "<"
            case "gt": out += ">"
            case "quot": out += "\""
            case "apos": out += "'"
            default:
                let value: UInt32?
                if entity.hasPrefix("#x") {
                    value = UInt32(entity.dropFirst(2), radix: 16)
                } else if entity.hasPrefix("#") {
                    value = UInt32(entity.dropFirst(), radix: 10)
                } else {
                    value = nil
                }
                guard let value, let scalar = Unicode.Scalar(value) else {
                    throw malformed("an unknown entity &\(OVFDescriptor.printable(entity));")
                }
                out.unicodeScalars.append(scalar)
            }
            i = semi + 1
        }
        return out
    }

    private static func malformed(_ what: String) -> DiskImageError {
        DiskImageError(.corruptImage, "the OVF descriptor is not well-formed XML: \(what)")
    }
}
