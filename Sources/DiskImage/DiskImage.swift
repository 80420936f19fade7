#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Entry points: detect an image's format from its content, run the safety checks, and read it.
///
/// Safety model (after OpenStack's format inspector, written for CVE-2022-47951, CVE-2024-32498 and
/// CVE-2024-40767): the format comes from the bytes, never from a name; a claimed format must match; a file
/// carrying more than one format signature is refused; every reader refuses anything that would make it
/// read outside the file it was given (backing files, external data files, extents, parents) and anything
/// it cannot read exactly.
public enum DiskImage {
    /// Detects the format from content (never the name), checks `claimedFormat` matches, runs the format's
    /// safety checks and returns a reader positioned at the start of the virtual disk.
    ///
    /// A disk inside a container (an OVA, a tar, a zip, a gzip/xz/zstd/bzip2 stream, a compressed tar) is
    /// found and read transparently (architecture.md "Inputs"): a member of an uncompressed tar in place; a
    /// raw disk or streamOptimized VMDK in a compressed stream while it is decompressed (StreamedMember.swift);
    /// any other format in a compressed stream through a sparse temporary file in `limits.scratchDirectory`
    /// (unlinked at once, gone when the reader is released). `info.container` says which container it was.
    ///
    /// - Parameters:
    ///   - source: the image bytes.
    ///   - claimedFormat: what the uploader said (flag or sidecar); nil when nothing was claimed. A claimed
    ///     `raw` accepts an ISO 9660 image (its content is read as raw). For a container, the format of the
    ///     disk inside.
    ///   - claim: what the uploader said the file is, container forms included (`raw.xz`, `ova`, `tar.gz`);
    ///     content that differs is `FormatMismatch`. Its disk format counts as `claimedFormat`.
    ///   - limits: bounds on virtual size and metadata memory; where temporary files go.
    ///   - isCancelled: polled while a compressed container is decompressed (besides `Task.isCancelled`,
    ///     which a dispatch thread does not see); returning true ends the work with `CancellationError`.
    /// - Returns: a reader whose `info.bootable` also reflects an MBR/GPT found in the first sectors.
    /// - Throws: `DiskImageError` with a stable rejection code; the source's own errors as they are.
    public static func open(
        _ source: any ByteSource, claimedFormat: ImageFormat? = nil, claim: FormatClaim? = nil,
        limits: InspectionLimits = .init(), isCancelled: (@Sendable () -> Bool)? = nil
    ) throws -> any DiskReader {
        var container: ContainerKind?
        let unwrapped = try Containers.unwrap(source, limits: limits, isCancelled: isCancelled, report: &container)
        return try openBare(unwrapped, claimedFormat: claimedFormat, claim: claim, limits: limits)
    }

    /// Opens the disk image file of `unwrapped` (no container left).
    static func openBare(
        _ unwrapped: Unwrapped, claimedFormat: ImageFormat?, claim: FormatClaim? = nil, limits: InspectionLimits
    ) throws -> BootSniffingReader {
        let source = unwrapped.source
        let format = try detectBare(source)
        try check(claimed: claimedFormat, detected: format)
        try claim?.check(format: format, container: unwrapped.container, compression: unwrapped.compression)
        let reader: any DiskReader
        if let plan = unwrapped.stream {
            reader = try plan.reader(format: format)
        } else {
            switch format {
            case .raw: reader = try RawReader(source: source, limits: limits)
        case .iso: reader = try RawReader(source: source, limits: limits, format: .iso)
        case .qcow2: reader = try QCOW2Reader(source: source, limits: limits)
        case .vmdk: reader = try VMDKReader(source: source, limits: limits)
        case .vhd: reader = try VHDReader(source: source, limits: limits)
        case .vhdx: reader = try VHDXReader(source: source, limits: limits)
        case .vdi: reader = try VDIReader(source: source, limits: limits)
            }
        }
        guard reader.info.virtualSize <= limits.maxVirtualSize else {
            throw DiskImageError(
                .virtualSizeTooLarge,
                "virtual size \(reader.info.virtualSize) exceeds the limit of \(limits.maxVirtualSize) bytes")
        }
        var sniffing = try BootSniffingReader(reader)
        sniffing.info.container = unwrapped.container
        sniffing.info.compression = unwrapped.compression
        return sniffing
    }

    /// Validates an image without converting it. Never throws for a bad image: the reasons say why it was
    /// rejected.
    ///
    /// By default it refuses everything a conversion would: every table entry is checked and the whole
    /// virtual disk is read (every compressed qcow2 cluster and VMDK grain inflated), with no output written.
    /// With `metadataOnly` it checks headers and tables only (qcow2 L2 tables, VMDK grain tables) and reads
    /// no guest data: fast, but a damaged compressed cluster passes. A disk inside a compressed container is
    /// decompressed in both modes (there is no other way to reach its headers).
    ///
    /// - Returns: the verdict, the reasons, and what could be learned about the image.
    public static func inspect(
        _ source: any ByteSource, claimedFormat: ImageFormat? = nil, claim: FormatClaim? = nil,
        limits: InspectionLimits = .init(), metadataOnly: Bool = false, isCancelled: (@Sendable () -> Bool)? = nil
    ) -> Inspection {
        var result = Inspection(
            format: nil, virtualSize: 0, allocatedBytes: 0, bootable: false, verdict: .ok, reasons: [])
        var container: ContainerKind?
        var opened: Unwrapped?
        do {
            let unwrapped = try Containers.unwrap(source, limits: limits, isCancelled: isCancelled, report: &container)
            opened = unwrapped
            result.container = unwrapped.container
            result.format = try? detectBare(unwrapped.source)
            var reader = try openBare(unwrapped, claimedFormat: claimedFormat, claim: claim, limits: limits)
            result.format = reader.info.format
            result.virtualSize = reader.info.virtualSize
            result.allocatedBytes = reader.info.allocatedBytes
            result.bootable = reader.info.bootable
            if let validating = reader.base as? any MetadataValidating {
                result.allocatedBytes = try validating.validateMetadata()
            }
            if !metadataOnly {
                while try reader.next() != nil {
                    if Task.isCancelled || isCancelled?() == true { throw CancellationError() }
                }
            }
        } catch let error as DiskImageError {
            result.verdict = .rejected
            result.reasons.append(.init(code: error.code.name, message: error.message))
            // A disk refused for its size or for not being the claimed format still has a size worth
            // showing: read its headers again without those two rules (no data is read).
            if result.virtualSize == 0, let opened,
                error.code == .virtualSizeTooLarge || error.code == .formatMismatch
            {
                var lenient = limits
                lenient.maxVirtualSize = .max
                if let reader = try? openBare(opened, claimedFormat: nil, limits: lenient) {
                    result.format = result.format ?? reader.info.format
                    result.virtualSize = reader.info.virtualSize
                    result.allocatedBytes = reader.info.allocatedBytes
                    result.bootable = reader.info.bootable
                }
            }
        } catch {
            result.verdict = .rejected
            result.reasons.append(.init(code: DiskImageError.Code.ioError.name, message: "\(error)"))
        }
        if result.container == nil { result.container = container }
        return result
    }

    /// Detects the format of the disk image from the content alone; for a container, of the disk inside it
    /// (which may mean decompressing it: see `open`).
    ///
    /// - Throws: `EmptyImage`, `AmbiguousFormat` (more than one signature, see `detectBare`),
    ///   `EncryptedImage` (LUKS), `ExternalExtentNotAllowed` (a bare VMDK text descriptor, which can only name
    ///   other files), `UnknownFormat` for formats qemu knows but snapimport does not read (QED, Parallels,
    ///   Bochs, cloop), and the container rules of `open`.
    public static func detect(_ source: any ByteSource, limits: InspectionLimits = .init()) throws -> ImageFormat {
        var container: ContainerKind?
        let unwrapped = try Containers.unwrap(source, limits: limits, isCancelled: nil, report: &container)
        return try detectBare(unwrapped.source)
    }

    /// The container signature of `source` from its first bytes (content only, nothing decompressed): what
    /// `open` would unwrap. A tar whose first file is an OVF descriptor is still `.tar` here.
    public static func detectContainer(_ source: any ByteSource) throws -> ContainerKind? {
        Containers.sniff(try source.read(at: 0, count: 512))
    }

    /// The format signatures found in `source` (disk formats, LUKS, a VMDK descriptor, unsupported formats,
    /// and a GPT with its protective MBR when another format is present too).
    static func signatures(_ source: any ByteSource) throws -> (found: [String], format: ImageFormat) {
        let size = source.size
        let head = try source.read(at: 0, count: 512)
        var found: [String] = []
        var format: ImageFormat = .raw

        func note(_ name: String, _ f: ImageFormat) {
            found.append(name)
            format = f
        }
        if head.starts(with: Signature.qcow2) { note("qcow2", .qcow2) }
        if head.starts(with: Signature.vmdkSparse) || head.starts(with: Signature.vmdkCOWD) { note("vmdk", .vmdk) }
        if head.starts(with: Signature.vhdx) { note("vhdx", .vhdx) }
        let tail = size >= 512 ? try source.read(at: size - 512, count: 512) : []
        if head.starts(with: Signature.vhd) || tail.starts(with: Signature.vhd) { note("vhd", .vhd) }
        if head.count >= 0x44, FieldReader(head).le32(0x40) == Signature.vdi { note("vdi", .vdi) }
        if try isISO9660(source) { note("iso", .iso) }
        if head.starts(with: Signature.luks) { found.append("luks") }
        if head.starts(with: Signature.vmdkDescriptor) { found.append("vmdk descriptor") }
        for (magic, name) in Signature.unsupported where head.starts(with: magic) { found.append(name) }
        // A GPT (header at LBA 1 behind a protective MBR) is a partitioned raw disk: alone it is raw, beside an
        // ISO it is a hybrid ISO (isohybrid), but beside any other format it is a second format, as
        // format_inspector counts it.
        if !found.isEmpty && format != .iso, try hasProtectiveGPT(source, head: head) {
            found.append("gpt (protective MBR and GPT header)")
        }
        return (found, format)
    }

    /// Detects the format of a disk image file (no container unwrapped).
    ///
    /// - Throws: as `detect`; `AmbiguousFormat` also for a container signature beside a disk format.
    static func detectBare(_ source: any ByteSource) throws -> ImageFormat {
        let size = source.size
        guard size > 0 else { throw DiskImageError(.emptyImage, "the image is empty (0 bytes)") }
        var (found, format) = try signatures(source)
        let head = try source.read(at: 0, count: 512)
        if let kind = Containers.sniff(head) { found.append(kind.rawValue) }

        if found.count > 1 {
            throw DiskImageError(
                .ambiguousFormat,
                "the image carries more than one format signature: \(found.joined(separator: ", "))")
        }
        if head.starts(with: Signature.luks) {
            throw DiskImageError(.encryptedImage, "the image is a LUKS encrypted volume (magic LUKS\\xba\\xbe at 0)")
        }
        if head.starts(with: Signature.vmdkDescriptor) {
            throw DiskImageError(
                .externalExtentNotAllowed,
                "the image is a bare VMDK text descriptor; its extents would be other files")
        }
        if let foreign = Signature.unsupported.first(where: { head.starts(with: $0.0) })?.1 {
            throw DiskImageError(.unknownFormat, "the image is \(foreign), a format snapimport does not read")
        }
        if let kind = Containers.sniff(head) {
            throw DiskImageError(.unsupportedContainer, "a \(kind) container where a disk image was expected")
        }
        if format == .raw, Containers.looksLikeText(try source.read(at: 0, count: 4096)) {
            throw DiskImageError(
                .unknownFormat, "the file is text, not a disk image (its first bytes are printable characters only)")
        }
        return format
    }

    /// A protective MBR (signature 0x55AA and a partition of type 0xEE) with a GPT header ("EFI PART") at
    /// LBA 1, for 512- or 4096-byte sectors (UEFI 2.10 §5.2.3 and §5.3.2).
    static func hasProtectiveGPT(_ source: any ByteSource, head: [UInt8]) throws -> Bool {
        guard head.count >= 512, head[510] == 0x55, head[511] == 0xAA else { return false }
        guard (0..<4).contains(where: { head[446 + 16 * $0 + 4] == 0xEE }) else { return false }
        let gpt = Array("EFI PART".utf8)
        for lba1: UInt64 in [512, 4096] where try source.read(at: lba1, count: 8) == gpt { return true }
        return false
    }

    /// Refuses a claimed format that differs from the detected one.
    static func check(claimed: ImageFormat?, detected: ImageFormat) throws {
        guard let claimed, claimed != detected else { return }
        // An ISO 9660 image is raw content; claiming raw for it is accurate.
        if claimed == .raw && detected == .iso { return }
        throw DiskImageError(
            .formatMismatch, "the image was declared as \(claimed) but its content is \(detected)")
    }

    /// ISO 9660: a volume descriptor ("CD001", version 1) at 0x8001, 0x8801 or 0x9001 (ECMA-119 §8).
    static func isISO9660(_ source: any ByteSource) throws -> Bool {
        for offset: UInt64 in [0x8001, 0x8801, 0x9001] where source.size >= offset + 6 {
            let bytes = try source.read(at: offset, count: 6)
            if bytes.starts(with: Signature.iso) && bytes[5] == 1 { return true }
        }
        return false
    }

    /// Writes the virtual disk of `reader` into a sparse raw file at `path` (created or truncated): the
    /// file is sized with `ftruncate` and only non-zero data is written, so zero regions stay holes.
    ///
    /// - Returns: the bytes written and the virtual size.
    @discardableResult
    public static func convert(_ reader: inout any DiskReader, toRawFile path: String) throws -> ConversionResult {
        let writer = try SparseRawWriter(path: path, size: reader.info.virtualSize)
        // Reading (and inflating) runs on this thread while a second thread checks for zeros and writes, so
        // both cores work on a conversion; at most `depth` extents (a few MiB each) are in flight.
        let pipe = WriterPipe(writer: writer, depth: 4)
        do {
            while let extent = try reader.next() {
                guard case .data(let offset, let bytes) = extent else { continue }
                guard pipe.send(bytes, at: offset) else { break }
            }
        } catch {
            _ = try? pipe.finish()
            throw error
        }
        let written = try pipe.finish()
        try writer.finish()
        return ConversionResult(virtualSize: reader.info.virtualSize, dataBytesWritten: written)
    }

    /// Writes the virtual disk of `reader` as a raw stream to the file descriptor `descriptor` (a pipe,
    /// standard output): every byte in order, zero regions as zeros, since a stream has no holes.
    ///
    /// - Returns: the non-zero data bytes written and the virtual size.
    /// - Throws: the reader's errors; `IOError` naming `name` when a write fails (a closed pipe).
    @discardableResult
    public static func convert(
        _ reader: inout any DiskReader, toStream descriptor: Int32, name: String = "standard output"
    ) throws -> ConversionResult {
        let size = reader.info.virtualSize
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        var position: UInt64 = 0
        var dataBytes: UInt64 = 0
        func put(_ bytes: UnsafeRawBufferPointer) throws {
            var offset = 0
            while offset < bytes.count {
                let count = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else {
                    throw DiskImageError(
                        .ioError,
                        "writing the raw disk to \(name) failed at byte \(position + UInt64(offset)): "
                            + String(cString: strerror(errno)))
                }
                offset += count
            }
            position += UInt64(bytes.count)
        }
        func zeroFill(to end: UInt64) throws {
            while position < end {
                let count = Int(min(UInt64(zeros.count), end - position))
                try zeros.withUnsafeBytes { try put(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            }
        }
        while let extent = try reader.next() {
            guard case .data(let offset, let bytes) = extent, offset >= position else { continue }
            try zeroFill(to: offset)
            try bytes.withUnsafeBytes { try put($0) }
            dataBytes += UInt64(bytes.count)
        }
        try zeroFill(to: size)
        return ConversionResult(virtualSize: size, dataBytesWritten: dataBytes)
    }
}

/// A reader that can check all of its mapping metadata without reading guest data (`DiskImage.inspect`).
protocol MetadataValidating {
    /// Validates every table entry; returns the bytes of the file holding guest data.
    func validateMetadata() throws -> UInt64
}

extension QCOW2Reader: MetadataValidating {}
extension VMDKReader: MetadataValidating {}

/// What `DiskImage.convert` did.
public struct ConversionResult: Sendable, Equatable {
    public var virtualSize: UInt64
    /// Bytes of non-zero data written (the rest of the file is holes).
    public var dataBytesWritten: UInt64
}

/// The outcome of `DiskImage.inspect`.
public struct Inspection: Sendable, Equatable, Codable {
    public enum Verdict: String, Sendable, Codable { case ok, rejected }

    /// One reason for a rejection: a stable code (architecture.md) and a message naming the field.
    public struct Reason: Sendable, Equatable, Codable {
        public var code: String
        public var message: String
        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }

    /// The detected format of the disk (inside any container); nil when detection itself failed.
    public var format: ImageFormat?
    /// The container the disk came in (`tar`, `ova`, `zip`, or the compression of a single stream); nil for
    /// a bare image.
    public var container: ContainerKind?
    public var virtualSize: UInt64
    public var allocatedBytes: UInt64
    public var bootable: Bool
    public var verdict: Verdict
    public var reasons: [Reason]

    private enum CodingKeys: String, CodingKey {
        case format, container, virtualSize, allocatedBytes, bootable, verdict, reasons
    }

    public init(
        format: ImageFormat?, container: ContainerKind? = nil, virtualSize: UInt64, allocatedBytes: UInt64,
        bootable: Bool, verdict: Verdict, reasons: [Reason]
    ) {
        self.format = format
        self.container = container
        self.virtualSize = virtualSize
        self.allocatedBytes = allocatedBytes
        self.bootable = bootable
        self.verdict = verdict
        self.reasons = reasons
    }

    /// Encodes every field of `inspect --json`, with `"format": null` when detection failed and
    /// `"container": null` for a bare image.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(format, forKey: .format)
        try container.encode(self.container, forKey: .container)
        try container.encode(virtualSize, forKey: .virtualSize)
        try container.encode(allocatedBytes, forKey: .allocatedBytes)
        try container.encode(bootable, forKey: .bootable)
        try container.encode(verdict, forKey: .verdict)
        try container.encode(reasons, forKey: .reasons)
    }
}

/// Magic numbers of the formats detection knows.
enum Signature {
    static let qcow2: [UInt8] = [0x51, 0x46, 0x49, 0xFB]  // "QFI\xfb"
    static let vmdkSparse: [UInt8] = Array("KDMV".utf8)
    static let vmdkCOWD: [UInt8] = Array("COWD".utf8)
    static let vmdkDescriptor: [UInt8] = Array("# Disk DescriptorFile".utf8)
    static let vhdx: [UInt8] = Array("vhdxfile".utf8)
    static let vhd: [UInt8] = Array("conectix".utf8)
    static let vdi: UInt32 = 0xBEDA_107F
    static let iso: [UInt8] = Array("CD001".utf8)
    static let luks: [UInt8] = [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE]
    /// Formats qemu probes that snapimport does not read.
    static let unsupported: [([UInt8], String)] = [
        (Array("QED".utf8) + [0], "QED"),
        (Array("WithoutFreeSpace".utf8), "Parallels"),
        (Array("WithouFreSpacExt".utf8), "Parallels"),
        (Array("Bochs Virtual HD Image".utf8), "Bochs"),
        (Array("#!/bin/sh\n#V2.0 Format\n".utf8), "cloop"),
    ]
}

/// Wraps a reader to learn whether the virtual disk starts with a boot signature (MBR 0x55AA at 510, or a
/// GPT header "EFI PART" at LBA 1 for 512- or 4096-byte sectors), replaying the extents it looked at.
struct BootSniffingReader: DiskReader {
    let base: any DiskReader
    private var inner: any DiskReader
    private var pending: [Extent]
    var info: ImageInfo

    init(_ reader: any DiskReader) throws {
        base = reader
        inner = reader
        info = reader.info
        pending = []
        let wanted: UInt64 = 4096 + 512
        var covered: UInt64 = 0
        var head = [UInt8]()
        while covered < min(wanted, info.virtualSize), let extent = try inner.next() {
            pending.append(extent)
            let take = Int(min(extent.length, wanted - min(wanted, covered)))
            switch extent {
            case .data(_, let bytes): head += bytes.prefix(take)
            case .zero: head += [UInt8](repeating: 0, count: take)
            }
            covered += extent.length
        }
        if !info.bootable { info.bootable = BootSniffingReader.hasBootSignature(head) }
        pending.reverse()
    }

    static func hasBootSignature(_ head: [UInt8]) -> Bool {
        if head.count >= 512 && head[510] == 0x55 && head[511] == 0xAA { return true }
        let gpt = Array("EFI PART".utf8)
        if head.count >= 520 && Array(head[512..<520]) == gpt { return true }
        if head.count >= 4104 && Array(head[4096..<4104]) == gpt { return true }
        return false
    }

    mutating func next() throws -> Extent? {
        if let extent = pending.popLast() { return extent }
        return try inner.next()
    }
}
