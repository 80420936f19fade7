// Containers operators ship disks in: an OVA, a plain tar, a zip, or a single compressed stream (gzip, xz,
// zstd, bzip2), and a compressed tar. Detected from content, never from a name; read with libarchive.
// The disk inside is then detected and validated exactly like a bare image.

/// A container or compressed stream around a disk image.
public enum ContainerKind: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case tar, ova, gzip, xz, zstd, bzip2, zip
    public var description: String { rawValue }

    /// True for the single-stream compressions.
    var isCompression: Bool { self == .gzip || self == .xz || self == .zstd || self == .bzip2 }
}

/// What was unwrapped: the bytes of the disk, and how they were found.
struct Unwrapped {
    /// The disk image file (the source itself, a window onto a tar member, or a temporary file).
    var source: any ByteSource
    /// The outermost archive kind (tar, ova, zip), else the compression; nil for a bare image.
    var container: ContainerKind?
    /// The member that holds the disk, when the container is an archive.
    var member: String?
    /// The compression around everything (a compressed tar or a single compressed stream), if any.
    var compression: ContainerKind?
    /// Set when the disk is converted while it is decompressed: `source` is then the first pass's probe
    /// (see StreamedMember.swift), and the plan makes the reader.
    var stream: StreamPlan?
}

enum Containers {
    /// Magic numbers of containers and compressed streams.
    enum Magic {
        static let gzip: [UInt8] = [0x1F, 0x8B, 0x08]
        static let xz: [UInt8] = [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]
        static let zstd: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]
        static let zip: [UInt8] = [0x50, 0x4B, 0x03, 0x04]
        static let zipEmpty: [UInt8] = [0x50, 0x4B, 0x05, 0x06]
        /// bzip2: "BZh" and a block size digit, then a block header or the end-of-stream marker.
        static let bzip2Block: [UInt8] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
        static let bzip2End: [UInt8] = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90]
    }

    /// Limits that keep an archive from costing more than its disk.
    static let maxMembers = 10_000
    static let maxDescriptor = 1 << 20

    /// The container signature of `head` (the first 512 bytes of a file), if any.
    ///
    /// A tar is recognised by its ustar magic ("ustar\0" POSIX/pax, "ustar  \0" GNU) at 257 and a valid
    /// header checksum (POSIX.1-2017 `pax`, "ustar Interchange Format"); old v7 tars without the magic are not.
    static func sniff(_ head: [UInt8]) -> ContainerKind? {
        if head.starts(with: Magic.gzip) { return .gzip }
        if head.starts(with: Magic.xz) { return .xz }
        if head.starts(with: Magic.zstd) { return .zstd }
        if head.starts(with: Magic.zip) || head.starts(with: Magic.zipEmpty) { return .zip }
        if head.count >= 10, head.starts(with: Array("BZh".utf8)), (0x31...0x39).contains(head[3]),
            Array(head[4..<10]) == Magic.bzip2Block || Array(head[4..<10]) == Magic.bzip2End
        {
            return .bzip2
        }
        if isTarHeader(head) { return .tar }
        return nil
    }

    /// A ustar header block: magic at 257 and the checksum at 148 (octal, the header summed with the
    /// checksum field read as spaces).
    static func isTarHeader(_ head: [UInt8]) -> Bool {
        guard head.count >= 512 else { return false }
        let magic = Array(head[257..<263])
        guard magic == Array("ustar\0".utf8) || magic == Array("ustar ".utf8) else { return false }
        var stored: UInt32 = 0
        var digits = 0
        for b in head[148..<156] {
            if b == 0x20 || b == 0 {
                if digits > 0 { break }
                continue
            }
            guard (0x30...0x37).contains(b) else { return false }
            stored = stored * 8 + UInt32(b - 0x30)
            digits += 1
        }
        guard digits > 0 else { return false }
        var sum: UInt32 = 0
        for (i, b) in head.prefix(512).enumerated() { sum += (148..<156).contains(i) ? 0x20 : UInt32(b) }
        return sum == stored
    }

    /// Unwraps `source` down to the disk image file it carries (itself, for a bare image).
    ///
    /// - Parameters:
    ///   - report: set to the container kind as soon as it is known, so a rejection can still name it.
    ///   - depth: how many containers enclose `source`: inside one, only a compressed stream may be unwrapped
    ///     (an OVA's gzip-compressed disk, a `disk.raw.xz` in a tar), and never more than two levels in all
    ///     (a stream that decompresses to itself must not loop).
    /// - Throws: the rules of architecture.md "Inputs": `MultipleDisks`, `ExternalExtentNotAllowed`,
    ///   `UnknownFormat`, `CorruptImage` (missing member), `UnsupportedContainer` (nested archives),
    ///   `TruncatedImage`/`DecompressionFailed` (damaged streams), `VirtualSizeTooLarge`.
    static func unwrap(
        _ source: any ByteSource, limits: InspectionLimits, isCancelled: (@Sendable () -> Bool)?,
        report: inout ContainerKind?, depth: Int = 0
    ) throws -> Unwrapped {
        guard source.size > 0 else { return Unwrapped(source: source) }
        let head = try source.read(at: 0, count: 512)
        guard let kind = sniff(head) else { return Unwrapped(source: source) }
        if report == nil { report = kind }
        // A container that also carries a disk format's signature is a polyglot (format_inspector's "multiple
        // formats"). An ISO volume descriptor is not counted in a tar: a member's own content can sit there.
        let others = try DiskImage.signatures(source).found.filter { !(kind == .tar && $0 == "iso") }
        if !others.isEmpty {
            throw DiskImageError(
                .ambiguousFormat,
                "the image carries more than one format signature: \(([kind.rawValue] + others).joined(separator: ", "))")
        }
        if depth > 0 && !kind.isCompression {
            throw DiskImageError(.unsupportedContainer, "a \(kind) archive inside another container is not read")
        }
        guard depth < 2 else {
            throw DiskImageError(.unsupportedContainer, "containers nested more than two deep are not read")
        }
        if kind == .tar {
            return try InPlaceTar.unwrap(source, limits: limits, isCancelled: isCancelled, report: &report)
        }
        var unwrapped = try SequentialArchive.unwrap(
            source, sniffed: kind, limits: limits, isCancelled: isCancelled, report: &report, depth: depth)
        if depth == 0 { unwrapped.compression = kind.isCompression ? kind : nil }
        return unwrapped
    }

    /// True when a member of a plain archive looks like a disk image: any format but raw (or a compressed
    /// stream, or a file detection rejects: an image, only a bad one), or raw content that is sector-sized
    /// (a multiple of 512 bytes), binary, and either 64 KiB or more or carries an MBR/GPT.
    static func isDiskCandidate(_ source: any ByteSource) throws -> Bool {
        guard source.size > 0 else { return false }
        let head = try source.read(at: 0, count: 4096)
        if let kind = sniff(Array(head.prefix(512))) { return kind.isCompression }
        // Text (a manifest, a checksum list, a README) is no disk, unless it is a format's text (a VMDK
        // descriptor: an image, only a bad one).
        if looksLikeText(head), try DiskImage.signatures(source).found.isEmpty { return false }
        do {
            guard try DiskImage.detectBare(source) == .raw else { return true }
        } catch let error as DiskImageError {
            return error.code != .emptyImage
        }
        guard source.size % 512 == 0 else { return false }
        return source.size >= 64 << 10 || BootSniffingReader.hasBootSignature(head)
    }

    /// True when `head` (the first bytes of a file) is text: valid UTF-8 (a character cut at the end is
    /// fine) without control characters other than tab, newline, form feed and carriage return. No disk image
    /// starts so: boot code, partition tables, superblocks and unused sectors all hold bytes text never does.
    static func looksLikeText(_ head: [UInt8]) -> Bool {
        guard !head.isEmpty else { return false }
        for b in head where (b < 0x20 && b != 0x09 && b != 0x0A && b != 0x0C && b != 0x0D) || b == 0x7F {
            return false
        }
        for cut in 0...min(3, head.count - 1) where String(validating: head.dropLast(cut), as: UTF8.self) != nil {
            return true
        }
        return false
    }

    /// The member name as an OVF href names it: without a leading "./".
    static func normalized(_ name: String) -> String {
        var name = Substring(name)
        while name.hasPrefix("./") { name = name.dropFirst(2) }
        return String(name)
    }

    static func multipleDisks(_ names: [String], in kind: ContainerKind) -> DiskImageError {
        DiskImageError(
            .multipleDisks,
            "the \(kind) holds more than one disk image: "
                + names.map { "\"\(OVFDescriptor.printable($0))\"" }.joined(separator: ", "))
    }
}

/// An uncompressed tar or OVA: members are listed with libarchive (headers only, data skipped with seeks)
/// and the disk is read in place through a window onto its bytes.
enum InPlaceTar {
    struct Member {
        var name: String
        var offset: UInt64
        var size: UInt64
        var sparse: Bool
    }

    static func unwrap(
        _ source: any ByteSource, limits: InspectionLimits, isCancelled: (@Sendable () -> Bool)?,
        report: inout ContainerKind?
    ) throws -> Unwrapped {
        let archive = try ArchiveReader(
            source: source, compressed: false, formats: [.tar], chunkSize: 64 << 10, isCancelled: isCancelled)
        var members: [Member] = []
        var count = 0
        while let entry = try archive.nextEntry() {
            count += 1
            guard count <= Containers.maxMembers else {
                throw DiskImageError(.unsupportedContainer, "the tar holds more than \(Containers.maxMembers) members")
            }
            if entry.isRegularFile {
                let size = entry.size ?? 0
                let member = Member(
                    name: Containers.normalized(entry.name), offset: archive.uncompressedPosition, size: size,
                    sparse: entry.isSparse)
                if !member.sparse {
                    _ = try WindowByteSource(
                        base: source, start: member.offset, size: member.size,
                        what: "tar member \"\(OVFDescriptor.printable(member.name))\"")
                }
                members.append(member)
            }
            try archive.skipEntry()
        }
        let window = { (member: Member) in
            try WindowByteSource(
                base: source, start: member.offset, size: member.size,
                what: "tar member \"\(OVFDescriptor.printable(member.name))\"")
        }
        // A sparse member (GNU tar -S) is stored without its holes: it is read through libarchive instead.
        func sequential(_ report: inout ContainerKind?) throws -> Unwrapped {
            try SequentialArchive.unwrap(
                source, sniffed: .tar, limits: limits, isCancelled: isCancelled, report: &report, depth: 0)
        }

        if let first = members.first, first.name.lowercased().hasSuffix(".ovf") {
            report = .ova
            guard first.size <= UInt64(Containers.maxDescriptor) else {
                throw DiskImageError(.metadataTooLarge, "the OVF descriptor is larger than \(Containers.maxDescriptor) bytes")
            }
            let descriptor = try OVFDescriptor.parse(
                try source.readExactly(at: first.offset, count: Int(first.size), what: "OVF descriptor"))
            let disk = try OVA.theDisk(descriptor)
            let matches = members.filter { $0.name == Containers.normalized(disk.href) }
            guard let member = matches.first else {
                throw DiskImageError(
                    .corruptImage, "the OVF names disk \"\(OVFDescriptor.printable(disk.href))\" but the OVA has no such member")
            }
            guard matches.count == 1 else {
                throw DiskImageError(
                    .corruptImage, "the OVA holds member \"\(OVFDescriptor.printable(disk.href))\" more than once")
            }
            if member.sparse { return try sequential(&report) }
            var inner = try Containers.unwrap(
                try window(member), limits: limits, isCancelled: isCancelled, report: &report, depth: 1)
            inner.container = .ova
            inner.member = member.name
            return inner
        }

        if members.contains(where: \.sparse) { return try sequential(&report) }
        var disks: [Member] = []
        for member in members where try Containers.isDiskCandidate(try window(member)) {
            disks.append(member)
        }
        guard disks.count <= 1 else { throw Containers.multipleDisks(disks.map(\.name), in: .tar) }
        guard let disk = disks.first else {
            throw DiskImageError(
                .unknownFormat,
                "the tar holds no disk image among its \(members.count) file(s)"
                    + (members.isEmpty ? "" : ": " + members.prefix(10).map { "\"\(OVFDescriptor.printable($0.name))\"" }.joined(separator: ", ")))
        }
        var inner = try Containers.unwrap(
            try window(disk), limits: limits, isCancelled: isCancelled, report: &report, depth: 1)
        inner.container = .tar
        inner.member = disk.name
        return inner
    }
}

/// OVA rules shared by the in-place and the sequential paths.
enum OVA {
    /// The one disk an OVF descriptor names.
    ///
    /// - Throws: `MultipleDisks` naming them, `UnknownFormat` when it names none.
    static func theDisk(_ descriptor: OVFDescriptor) throws -> OVFDescriptor.File {
        guard descriptor.disks.count <= 1 else {
            throw Containers.multipleDisks(descriptor.disks.map(\.href), in: .ova)
        }
        guard let disk = descriptor.disks.first else {
            throw DiskImageError(.unknownFormat, "the OVF descriptor names no disk file")
        }
        return disk
    }
}

/// A compressed stream, a compressed tar/OVA, or a zip: read forward with libarchive. A raw or
/// streamOptimized VMDK disk member is converted while it is decompressed (StreamedMember.swift: a first
/// pass measures it, a second streams it; no temporary file); any other member is decompressed into a
/// sparse temporary file (random-access formats need one), then read like a bare image.
enum SequentialArchive {
    static func unwrap(
        _ source: any ByteSource, sniffed: ContainerKind, limits: InspectionLimits,
        isCancelled: (@Sendable () -> Bool)?, report: inout ContainerKind?, depth: Int
    ) throws -> Unwrapped {
        let formats: Set<ArchiveReader.Format> =
            sniffed == .zip ? [.zip] : sniffed == .tar ? [.tar] : depth > 0 ? [.raw] : [.tar, .raw]
        func openArchive(_ formats: Set<ArchiveReader.Format>) throws -> ArchiveReader {
            let archive = try ArchiveReader(
                source: source, compressed: sniffed != .zip && sniffed != .gzip, gunzip: sniffed == .gzip,
                formats: formats, chunkSize: 4 << 20, isCancelled: isCancelled)
            guard archive.compressionFilters <= 1 else {
                throw DiskImageError(.unsupportedContainer, "the stream is compressed more than once")
            }
            return archive
        }
        var opened = formats
        var archive = try openArchive(formats)
        var firstEntry = try archive.nextEntry()
        if firstEntry == nil, sniffed.isCompression, archive.format == .tar {
            // libarchive takes a stream starting with a zero block for an empty tar; a raw disk whose first
            // sector is zero starts so too. Read it as the single stream it is.
            opened = [.raw]
            archive = try openArchive([.raw])
            firstEntry = try archive.nextEntry()
        }
        let reopen = { [opened] in try openArchive(opened) }
        var ordinal = firstEntry == nil ? 0 : 1
        // Everything decompressed from this container, all members together, stays under this bound.
        let slack = UInt64(Containers.maxDescriptor) * 16
        var budget = Budget(limit: limits.maxVirtualSize > UInt64.max - slack ? .max : limits.maxVirtualSize + slack)
        let take = { (member: String?, size: UInt64?) throws -> TakenMember in
            try takeEntry(
                archive, reopen: reopen, ordinal: ordinal, single: archive.format == .raw, limits: limits,
                budget: &budget, isCancelled: isCancelled, member: member, size: size)
        }

        guard let first = firstEntry else {
            throw DiskImageError(.unknownFormat, "the \(sniffed) container holds nothing")
        }
        let kind: ContainerKind
        switch archive.format {
        case .raw?:
            // A single compressed stream: the whole stream is the image file.
            var inner = try unwrapTaken(try take(nil, nil), member: nil, limits: limits, isCancelled: isCancelled, report: &report, depth: depth)
            inner.container = sniffed
            return inner
        case .zip?: kind = .zip
        case .tar?: kind = .tar
        case nil: throw DiskImageError(.unsupportedContainer, "the \(sniffed) container holds an unknown archive format")
        }
        if report == nil || report?.isCompression == true { report = kind }

        var entry: ArchiveReader.Entry? = first
        var count = 0
        var names: [String] = []
        // An OVA: the first file is the .ovf descriptor; it names the disk member.
        var wanted: OVFDescriptor.File?
        var isOVA = false
        var found: (name: String, taken: TakenMember)?
        var candidates: [String] = []
        while let current = entry {
            count += 1
            guard count <= Containers.maxMembers else {
                throw DiskImageError(.unsupportedContainer, "the \(kind) holds more than \(Containers.maxMembers) members")
            }
            if current.isEncrypted {
                throw DiskImageError(
                    .encryptedImage, "member \"\(OVFDescriptor.printable(current.name))\" of the \(kind) is encrypted")
            }
            let name = Containers.normalized(current.name)
            if current.isRegularFile {
                if names.isEmpty && kind == .tar && name.lowercased().hasSuffix(".ovf") {
                    isOVA = true
                    report = .ova
                    let descriptor = try OVFDescriptor.parse(
                        try archive.readEntry(limit: Containers.maxDescriptor, what: "the OVF descriptor"))
                    wanted = try OVA.theDisk(descriptor)
                } else if isOVA {
                    if let wanted, name == Containers.normalized(wanted.href) {
                        guard found == nil else {
                            throw DiskImageError(
                                .corruptImage, "the OVA holds member \"\(OVFDescriptor.printable(name))\" more than once")
                        }
                        found = (name, try take(name, current.size))
                    } else {
                        try archive.skipEntry()
                    }
                } else {
                    let taken = try take(name, current.size)
                    if try Containers.isDiskCandidate(taken.source) {
                        candidates.append(name)
                        guard candidates.count == 1 else { throw Containers.multipleDisks(candidates, in: kind) }
                        found = (name, taken)
                    }
                }
                names.append(name)
            } else {
                try archive.skipEntry()
            }
            entry = try archive.nextEntry()
            if entry != nil { ordinal += 1 }
        }
        if isOVA, found == nil, let wanted {
            throw DiskImageError(
                .corruptImage, "the OVF names disk \"\(OVFDescriptor.printable(wanted.href))\" but the OVA has no such member")
        }
        guard let found else {
            throw DiskImageError(
                .unknownFormat,
                "the \(kind) holds no disk image among its \(names.count) file(s)"
                    + (names.isEmpty ? "" : ": " + names.prefix(10).map { "\"\(OVFDescriptor.printable($0))\"" }.joined(separator: ", ")))
        }
        var inner = try unwrapTaken(found.taken, member: found.name, limits: limits, isCancelled: isCancelled, report: &report, depth: depth)
        inner.container = isOVA ? .ova : kind
        inner.member = found.name
        return inner
    }

    /// Bytes decompressed so far from one container, against its limit.
    struct Budget {
        let limit: UInt64
        var used: UInt64 = 0
    }

    /// The disk inside a taken member: a spilled file is unwrapped further (it may be a compressed stream
    /// itself); a streamed one is a disk image (its first bytes carry no container signature).
    private static func unwrapTaken(
        _ taken: TakenMember, member: String?, limits: InspectionLimits, isCancelled: (@Sendable () -> Bool)?,
        report: inout ContainerKind?, depth: Int
    ) throws -> Unwrapped {
        switch taken {
        case .file(let file):
            return try Containers.unwrap(file, limits: limits, isCancelled: isCancelled, report: &report, depth: depth + 1)
        case .stream(let plan):
            return Unwrapped(source: plan.probe, member: member, stream: plan)
        }
    }

    /// What the first bytes of a member say about streaming it: `.raw` (raw or ISO content) and `.vmdk` (a
    /// streamOptimized VMDK: compressed grains with markers) can be streamed; nil for anything else (another
    /// format, a container, several signatures: spilled, and detection then judges the file).
    static func streamKind(_ head: [UInt8]) throws -> ImageFormat? {
        guard Containers.sniff(Array(head.prefix(512))) == nil else { return nil }
        let found = try DiskImage.signatures(MemoryByteSource(head)).found
        if found.isEmpty || found == ["iso"] { return .raw }
        if found == ["vmdk"], head.starts(with: Signature.vmdkSparse),
            let header = try? VMDKSparseHeader.parse(Array(head.prefix(512)), what: "header"),
            header.compressed, header.hasMarkers
        {
            return .vmdk
        }
        return nil
    }

    /// Reads the current entry once: a member that can be streamed (`streamKind`) is measured (size, first
    /// bytes, last sector) and dropped; any other is decompressed into a sparse temporary file. A
    /// streamOptimized VMDK alone in a compressed stream (`single`) is not read past its first bytes: its
    /// reader continues from there.
    private static func takeEntry(
        _ archive: ArchiveReader, reopen: @escaping () throws -> ArchiveReader, ordinal: Int, single: Bool,
        limits: InspectionLimits, budget: inout Budget, isCancelled: (@Sendable () -> Bool)?, member: String?,
        size: UInt64?
    ) throws -> TakenMember {
        let what = member.map { "member \"\(OVFDescriptor.printable($0))\"" } ?? "the stream"
        // Both bounds hold as bytes arrive: a member past the virtual size limit, a container past its budget.
        let remaining = budget.limit - budget.used
        let containerLimit = budget.limit
        let limitMessage: @Sendable (UInt64) -> DiskImageError
        if remaining < limits.maxVirtualSize {
            limitMessage = { _ in
                DiskImageError(.virtualSizeTooLarge, "the container decompresses to more than \(containerLimit) bytes")
            }
        } else {
            limitMessage = StreamPlan.tooLong(what)
        }
        var stream = ArchiveEntryStream(
            archive: archive, recordedSize: size, limit: min(remaining, limits.maxVirtualSize),
            isCancelled: isCancelled, tooLong: limitMessage)
        defer { budget.used += stream.position }
        var head: [UInt8] = []
        while head.count < streamHeadBytes {
            let chunk = try stream.read(max: streamHeadBytes - head.count)
            if chunk.isEmpty { break }
            head += chunk
        }
        switch try streamKind(head) {
        case .vmdk? where single:
            // The probe holds the header only (detection reads nothing else of a VMDK); the reader reads on.
            let probe = ProbeByteSource(size: UInt64(head.count), head: head, tail: [])
            stream.unread(head)
            return .stream(
                StreamPlan(
                    probe: probe, reopen: reopen, ordinal: ordinal, member: member, recordedSize: size,
                    direct: stream, limits: limits, isCancelled: isCancelled))
        case .raw?, .vmdk?:
            let (total, last) = try stream.drain(tailCount: 512)
            let tail = last.count == 512 ? last : Array((head + last).suffix(512))
            let probe = ProbeByteSource(size: total, head: head, tail: tail)
            return .stream(
                StreamPlan(
                    probe: probe, reopen: reopen, ordinal: ordinal, member: member, recordedSize: size, direct: nil,
                    limits: limits, isCancelled: isCancelled))
        default:
            let writer = try SpillWriter(directory: limits.scratchDirectory, limit: limits.maxVirtualSize)
            var offset: UInt64 = 0
            var chunk = head
            while !chunk.isEmpty {
                try chunk.withUnsafeBytes { try writer.write($0, at: offset) }
                offset += UInt64(chunk.count)
                chunk = try stream.read(max: 4 << 20)
            }
            return .file(try writer.finish(size: size))
        }
    }
}
