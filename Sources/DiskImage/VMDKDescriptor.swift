// VMDK sparse extent header and embedded text descriptor.
// Spec: VMware "Virtual Disk Format 1.1" (https://www.vmware.com/app/vmdk/?src=vmdk), sections "The Descriptor
// File" and "Hosted Sparse Extent Header"; qemu's block/vmdk.c for what qemu accepts; OpenStack oslo.utils
// format_inspector.py (VMDKInspector) for the safety rules on extents.

/// The 512-byte header of a hosted sparse extent ("KDMV"), little-endian.
struct VMDKSparseHeader: Equatable {
    static let gdAtEnd: UInt64 = 0xFFFF_FFFF_FFFF_FFFF
    static let flagValidNewlineTest: UInt32 = 1 << 0
    static let flagRedundantGT: UInt32 = 1 << 1
    static let flagZeroedGrainGTE: UInt32 = 1 << 2
    static let flagCompressed: UInt32 = 1 << 16
    static let flagMarkers: UInt32 = 1 << 17

    var version: UInt32
    var flags: UInt32
    var capacity: UInt64
    var grainSize: UInt64
    var descriptorOffset: UInt64
    var descriptorSize: UInt64
    var numGTEsPerGT: UInt32
    var rgdOffset: UInt64
    var gdOffset: UInt64
    var overHead: UInt64
    var compressAlgorithm: UInt16

    var compressed: Bool { flags & VMDKSparseHeader.flagCompressed != 0 }
    var hasMarkers: Bool { flags & VMDKSparseHeader.flagMarkers != 0 }
    var grainBytes: UInt64 { grainSize * 512 }

    /// Parses and checks a sparse extent header ("Hosted Sparse Extent Header" in Virtual Disk Format 1.1).
    ///
    /// - Parameter what: names the copy ("header", "footer") in messages.
    static func parse(_ bytes: [UInt8], what: String) throws -> VMDKSparseHeader {
        guard bytes.count >= 512, bytes[0..<4].elementsEqual("KDMV".utf8) else {
            throw DiskImageError(.corruptImage, "VMDK \(what) lacks the magic \"KDMV\"")
        }
        let r = FieldReader(bytes)
        let header = VMDKSparseHeader(
            version: r.le32(4), flags: r.le32(8), capacity: r.le64(12), grainSize: r.le64(20),
            descriptorOffset: r.le64(28), descriptorSize: r.le64(36), numGTEsPerGT: r.le32(44),
            rgdOffset: r.le64(48), gdOffset: r.le64(56), overHead: r.le64(64), compressAlgorithm: r.le16(77))
        guard (1...3).contains(header.version) else {
            throw DiskImageError(.unsupportedFeature, "VMDK \(what) version \(header.version) is not 1, 2 or 3")
        }
        if header.flags & flagValidNewlineTest != 0 {
            // The four newline-test characters catch a file damaged by an ASCII-mode transfer.
            guard bytes[73] == 0x0A, bytes[74] == 0x20, bytes[75] == 0x0D, bytes[76] == 0x0A else {
                throw DiskImageError(.corruptImage, "VMDK \(what) newline test characters are damaged")
            }
        }
        // qemu caps the grain ("cluster") at 0x200000 sectors; VMware requires a power of two.
        guard header.grainSize >= 1, header.grainSize <= 0x20_0000, header.grainSize & (header.grainSize - 1) == 0
        else {
            throw DiskImageError(
                .corruptImage, "VMDK \(what) grain size \(header.grainSize) sectors is not a power of two ≤ 0x200000")
        }
        guard header.numGTEsPerGT >= 1, header.numGTEsPerGT <= 512 else {
            throw DiskImageError(
                .corruptImage, "VMDK \(what) numGTEsPerGT \(header.numGTEsPerGT) is not between 1 and 512")
        }
        if header.compressed {
            guard header.compressAlgorithm == 1 else {
                throw DiskImageError(
                    .unsupportedFeature,
                    "VMDK \(what) compression algorithm \(header.compressAlgorithm) is not deflate (1)")
            }
            guard header.hasMarkers else {
                throw DiskImageError(.unsupportedFeature, "VMDK \(what) has compressed grains without grain markers")
            }
            guard header.grainSize <= 32768 else {
                throw DiskImageError(
                    .unsupportedFeature, "VMDK \(what) compressed grain size \(header.grainSize) sectors exceeds 16 MiB"
                )
            }
        }
        return header
    }

    /// Checks that a stream footer repeats this header, as Virtual Disk Format 1.1 ("The Footer") requires:
    /// everything but the grain directory offsets must be the same.
    func checkFooter(_ footer: VMDKSparseHeader) throws {
        var a = self
        var b = footer
        a.gdOffset = 0
        b.gdOffset = 0
        a.rgdOffset = 0
        b.rgdOffset = 0
        guard a == b else {
            throw DiskImageError(
                .corruptImage,
                "VMDK footer disagrees with the header (capacity \(footer.capacity) vs \(capacity), grain size "
                    + "\(footer.grainSize) vs \(grainSize), flags 0x\(String(footer.flags, radix: 16)) vs "
                    + "0x\(String(flags, radix: 16)), descriptor \(footer.descriptorOffset)+\(footer.descriptorSize) vs "
                    + "\(descriptorOffset)+\(descriptorSize))")
        }
        guard footer.gdOffset != VMDKSparseHeader.gdAtEnd else {
            throw DiskImageError(.corruptImage, "VMDK footer grain directory offset is GD_AT_END too")
        }
    }

    /// The byte range of the embedded descriptor, checked: it must follow the header and be at most 1 MiB.
    func descriptorRange(what: String) throws -> (offset: UInt64, length: Int) {
        guard descriptorOffset != 0, descriptorSize != 0 else {
            throw DiskImageError(
                .corruptImage, "VMDK \(what) has no embedded descriptor (descriptorOffset \(descriptorOffset))")
        }
        guard descriptorSize <= 2048 else {
            throw DiskImageError(
                .corruptImage, "VMDK descriptorSize \(descriptorSize) sectors exceeds the 1 MiB limit")
        }
        guard descriptorOffset >= 1, descriptorOffset < (1 << 40) else {
            throw DiskImageError(.corruptImage, "VMDK descriptorOffset \(descriptorOffset) overlaps the header")
        }
        return (descriptorOffset * 512, Int(descriptorSize * 512))
    }
}

/// The embedded text descriptor of a monolithicSparse or streamOptimized VMDK.
struct VMDKDescriptor {
    enum Access: String { case rw = "RW", rdonly = "RDONLY", noaccess = "NOACCESS" }

    struct ExtentLine {
        var access: Access
        var sectors: UInt64
        var type: String
        var file: String
        var offset: UInt64?
    }

    var createType: String
    var extent: ExtentLine
    var entries: [String: String]

    static let supportedCreateTypes: Set<String> = ["monolithicSparse", "streamOptimized"]

    /// Parses `area` (the descriptor sectors; text ends at the first NUL) and applies the safety rules:
    /// every line must be a comment, `key = value`, `key = "value"` or an extent line ("The Descriptor File":
    /// `RW|RDONLY|NOACCESS <sectors> <type> "<file>" [offset]`); `createType` must be monolithicSparse or
    /// streamOptimized; exactly one SPARSE extent whose file name is a bare name (the image itself); no
    /// parent.
    static func parse(_ area: [UInt8]) throws -> VMDKDescriptor {
        let text = area.prefix { $0 != 0 }
        // VMware writes `encoding = "UTF-8"` or a legacy code page such as windows-1252; text that is not
        // UTF-8 is read as Latin-1, which keeps every ASCII structure (keys, quotes, numbers) intact.
        let string =
            String(validating: text, as: UTF8.self)
            ?? String(String.UnicodeScalarView(text.map { Unicode.Scalar($0) }))
        var entries: [String: String] = [:]
        var extents: [ExtentLine] = []
        for (index, rawLine) in string.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            line = trim(line)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard !line.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" || $0.value == 0x7F }) else {
                throw DiskImageError(.corruptImage, "VMDK descriptor line \(lineNumber) holds control characters")
            }
            let firstWord = line.prefix { $0 != " " && $0 != "\t" }
            if let access = Access(rawValue: String(firstWord)) {
                extents.append(try parseExtent(line.dropFirst(firstWord.count), access: access, line: lineNumber))
                continue
            }
            let (key, value) = try parseKeyValue(line, line: lineNumber)
            guard entries[key] == nil else {
                throw DiskImageError(.corruptImage, "VMDK descriptor line \(lineNumber): key \(key) appears twice")
            }
            entries[key] = value
        }
        guard let createType = entries["createType"] else {
            throw DiskImageError(.corruptImage, "VMDK descriptor has no createType")
        }
        guard supportedCreateTypes.contains(createType) else {
            throw DiskImageError(
                .unsupportedFeature,
                "VMDK createType \"\(createType)\" is not supported (only monolithicSparse and streamOptimized)")
        }
        if let parent = entries["parentFileNameHint"] {
            throw DiskImageError(
                .differencingDiskNotAllowed, "VMDK descriptor names a parent disk (parentFileNameHint \"\(parent)\")")
        }
        guard extents.count == 1, let extent = extents.first else {
            throw DiskImageError(
                extents.isEmpty ? .corruptImage : .externalExtentNotAllowed,
                "VMDK descriptor lists \(extents.count) extents; exactly one (the image itself) is allowed")
        }
        let file = extent.file
        let badName =
            file.isEmpty || file == "." || file == ".." || file.contains("/") || file.contains("\\")
            || file.contains(":") || file.hasPrefix("~")
        guard !badName else {
            throw DiskImageError(
                .externalExtentNotAllowed,
                "VMDK extent file name \"\(file)\" is not a plain name: only the image itself may hold the extent")
        }
        guard extent.type == "SPARSE" else {
            throw DiskImageError(
                extent.type == "ZERO" ? .unsupportedFeature : .externalExtentNotAllowed,
                "VMDK extent type \(extent.type) (file \"\(file)\") is not SPARSE: its data would live elsewhere")
        }
        guard extent.offset == nil else {
            throw DiskImageError(.corruptImage, "VMDK SPARSE extent line carries an offset")
        }
        return VMDKDescriptor(createType: createType, extent: extent, entries: entries)
    }

    private static func trim(_ s: Substring) -> Substring {
        var s = s
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return s
    }

    private static func parseExtent(_ rest: Substring, access: Access, line: Int) throws -> ExtentLine {
        func fail(_ why: String) -> DiskImageError {
            DiskImageError(.corruptImage, "VMDK descriptor line \(line): malformed extent line (\(why))")
        }
        var s = trim(rest)
        let sectorsText = s.prefix { $0.isASCII && $0.isNumber }
        guard !sectorsText.isEmpty, let sectors = UInt64(sectorsText) else { throw fail("sector count") }
        s = s.dropFirst(sectorsText.count)
        guard s.first == " " || s.first == "\t" else { throw fail("sector count") }
        s = trim(s)
        let type = s.prefix { $0.isASCII && ($0.isUppercase || $0.isNumber) }
        guard !type.isEmpty else { throw fail("extent type") }
        s = s.dropFirst(type.count)
        guard s.first == " " || s.first == "\t" else { throw fail("extent type") }
        s = trim(s)
        guard s.first == "\"" else { throw fail("file name must be quoted") }
        s = s.dropFirst()
        guard let close = s.firstIndex(of: "\"") else { throw fail("unterminated file name") }
        let file = String(s[..<close])
        s = trim(s[s.index(after: close)...])
        var offset: UInt64?
        if !s.isEmpty {
            guard s.allSatisfy({ $0.isASCII && $0.isNumber }), let value = UInt64(s) else {
                throw fail("trailing text after the file name")
            }
            offset = value
        }
        return ExtentLine(access: access, sectors: sectors, type: String(type), file: file, offset: offset)
    }

    private static func parseKeyValue(_ line: Substring, line number: Int) throws -> (String, String) {
        func fail(_ why: String) -> DiskImageError {
            DiskImageError(.corruptImage, "VMDK descriptor line \(number) is outside the grammar (\(why))")
        }
        guard let eq = line.firstIndex(of: "=") else { throw fail("neither a comment, key = value nor an extent") }
        let key = trim(line[..<eq])
        guard !key.isEmpty,
            key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") })
        else { throw fail("bad key") }
        let value = trim(line[line.index(after: eq)...])
        if value.first == "\"" {
            let inner = value.dropFirst()
            guard inner.last == "\"", let closing = inner.firstIndex(of: "\""),
                closing == inner.index(before: inner.endIndex)
            else { throw fail("bad quoted value") }
            return (String(key), String(inner.dropLast()))
        }
        guard !value.isEmpty, !value.contains(where: { $0 == "\"" || $0 == " " || $0 == "\t" }) else {
            throw fail("bad value")
        }
        return (String(key), String(value))
    }
}
