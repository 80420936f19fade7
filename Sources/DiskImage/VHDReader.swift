// VHD (Connectix / Microsoft Virtual PC) fixed and dynamic disks.
// Spec: "Virtual Hard Disk Image Format Specification" (Microsoft, v1.0, 2006),
// https://download.microsoft.com/download/f/f/e/ffef50a5-07dd-4cf8-aaa3-442c0673a029/Virtual%20Hard%20Disk%20Format%20Spec_10_93.doc
// qemu's block/vpc.c decides the virtual size (CHS geometry or current size) and the limits.

/// Reads a VHD image: fixed (the data followed by a 512-byte footer) or dynamic (BAT of blocks, each with a
/// sector bitmap). Differencing disks (type 4) are refused.
public struct VHDReader: DiskReader {
    public let info: ImageInfo
    private let source: any ByteSource
    private var mapper: VHDMapper
    private var assembler: RunAssembler

    /// qemu's VHD_MAX_SECTORS: 2040 GiB.
    static let maxSectors: UInt64 = 0xFF00_0000
    /// qemu's VHD_MAX_GEOMETRY: 65535 × 16 × 255 sectors, the CHS that means "use the current size".
    static let maxGeometry: UInt64 = 65535 * 16 * 255

    /// Validates the footer (and for a dynamic disk the dynamic header and the BAT) against `limits`.
    ///
    /// - Throws: `DiskImageError`: `ChecksumMismatch` (footer or dynamic header), `DifferencingDiskNotAllowed`
    ///   (disk type 4), `UnsupportedFeature`, `CorruptImage`/`TruncatedImage` (offsets past the end or
    ///   overlapping metadata), `MetadataTooLarge`, `VirtualSizeTooLarge`.
    public init(source: any ByteSource, limits: InspectionLimits) throws {
        self.source = source
        let fileSize = source.size
        guard fileSize >= 512 else {
            throw DiskImageError(.truncatedImage, "VHD image of \(fileSize) bytes has no room for its 512-byte footer")
        }
        // qemu reads the copy at offset 0 first (dynamic disks carry one); a fixed disk has only the one at
        // the end.
        let head = try source.readExactly(at: 0, count: 512, what: "VHD footer copy")
        let tail = try source.readExactly(at: fileSize - 512, count: 512, what: "VHD footer")
        let footerAtEnd = Array(tail[0..<8]) == Array("conectix".utf8)
        let footer: [UInt8]
        if Array(head[0..<8]) == Array("conectix".utf8) && fileSize >= 1024 {
            footer = head
        } else if footerAtEnd {
            footer = tail
        } else {
            throw DiskImageError(.corruptImage, "VHD footer cookie \"conectix\" not found at the start or end")
        }
        let f = try VHDReader.parseFooter(footer)
        let diskType = f.diskType

        let virtualSize = f.virtualSize
        guard virtualSize / 512 <= VHDReader.maxSectors else {
            throw DiskImageError(
                .unsupportedFeature, "VHD virtual size \(virtualSize) exceeds the format's maximum of 2040 GiB")
        }
        try SparseMath.checkVirtualSize(virtualSize, limits, field: "VHD footer")

        let allocated: UInt64
        switch diskType {
        case 2:
            guard footerAtEnd else {
                throw DiskImageError(.corruptImage, "fixed VHD has no footer in its last 512 bytes")
            }
            guard virtualSize <= fileSize - 512 else {
                throw DiskImageError(
                    .truncatedImage,
                    "fixed VHD virtual size \(virtualSize) exceeds its data area (\(fileSize - 512) bytes)")
            }
            mapper = .fixed(virtualSize)
            allocated = virtualSize
        case 3:
            let dynamic = try VHDDynamicMap(
                source: source, footer: f, virtualSize: virtualSize, limits: limits)
            mapper = .dynamic(dynamic)
            allocated = dynamic.allocatedBytes
        case 4:
            throw DiskImageError(
                .differencingDiskNotAllowed, "VHD disk type 4 (differencing) needs a parent disk")
        default:
            throw DiskImageError(.unsupportedFeature, "VHD disk type \(diskType) is not fixed (2) or dynamic (3)")
        }
        assembler = RunAssembler(virtualSize: virtualSize)
        var probe = mapper
        let sector0 = try SparseMath.firstSector(&probe, source: source, virtualSize: virtualSize)
        info = ImageInfo(
            format: .vhd, virtualSize: virtualSize, allocatedBytes: allocated,
            bootable: SparseMath.hasBootSignature(sector0))
    }

    public mutating func next() throws -> Extent? {
        try assembler.next(&mapper, source: source, what: "VHD data")
    }

    struct Footer {
        var diskType: UInt32
        var dataOffset: UInt64
        var virtualSize: UInt64
    }

    /// Parses the hard disk footer (spec "Hard Disk Footer Format") and computes the virtual size as qemu's
    /// vpc driver does: from the CHS geometry, except for creators that use the current size ("win ",
    /// "qem2", "d2v ", "CTXS", "tap\0") and for the maximum geometry 65535/16/255.
    static func parseFooter(_ footer: [UInt8]) throws -> Footer {
        let r = FieldReader(footer)
        // "Checksum: one's complement of the sum of all the bytes in the footer without the checksum field."
        var sum: UInt32 = 0
        for (i, byte) in footer.enumerated() where !(64..<68).contains(i) { sum &+= UInt32(byte) }
        let stored = r.be32(64)
        guard ~sum == stored else {
            throw DiskImageError(
                .checksumMismatch,
                "VHD footer checksum is 0x\(String(stored, radix: 16)), computed 0x\(String(~sum, radix: 16))")
        }
        let creatorApp = Array(footer[28..<32])
        let currentSize = r.be64(48)
        let chsSectors = UInt64(r.be16(56)) * UInt64(footer[58]) * UInt64(footer[59])
        let sizeCreators: [[UInt8]] =
            ["win ", "qem2", "d2v ", "CTXS"].map { Array($0.utf8) } + [[0x74, 0x61, 0x70, 0]]
        let useCHS = !sizeCreators.contains(creatorApp)
        let sectors = (!useCHS || chsSectors == maxGeometry) ? currentSize / 512 : chsSectors
        return Footer(diskType: r.be32(60), dataOffset: r.be64(16), virtualSize: sectors * 512)
    }
}

/// How a VHD maps virtual offsets.
enum VHDMapper: RunMapper {
    case fixed(UInt64)
    case dynamic(VHDDynamicMap)

    mutating func run(at offset: UInt64) throws -> MappedRun {
        switch self {
        case .fixed(let size):
            return MappedRun(kind: .host(offset), length: size - offset)
        case .dynamic(var map):
            self = .fixed(0)  // avoid a copy-on-write of the BAT while mutating the map
            defer { self = .dynamic(map) }
            return try map.run(at: offset)
        }
    }
}

/// The BAT and sector bitmaps of a dynamic VHD (spec "Dynamic Disk Header Format", "Block Allocation
/// Table and Data Blocks").
struct VHDDynamicMap: RunMapper {
    let source: any ByteSource
    let blockSize: UInt64
    let bitmapSize: UInt64
    let bat: [UInt32]
    let allocatedBytes: UInt64
    private var cachedBitmap: (block: Int, bits: [UInt8], full: Bool)?

    init(source: any ByteSource, footer: VHDReader.Footer, virtualSize: UInt64, limits: InspectionLimits) throws {
        self.source = source
        let fileSize = source.size
        var ranges = MetadataRanges()
        ranges.add(0, length: 512, "VHD footer copy")
        ranges.add(fileSize - 512, length: 512, "VHD footer")
        let headerOffset = footer.dataOffset
        if let name = ranges.overlap(headerOffset, length: 1024) {
            throw DiskImageError(.corruptImage, "VHD footer data offset \(headerOffset) overlaps the \(name)")
        }
        let header = try source.readExactly(
            at: headerOffset, count: 1024, what: "VHD dynamic disk header (footer data offset)")
        ranges.add(headerOffset, length: 1024, "VHD dynamic disk header")
        guard Array(header[0..<8]) == Array("cxsparse".utf8) else {
            throw DiskImageError(
                .corruptImage, "VHD dynamic disk header at \(headerOffset) lacks the cookie \"cxsparse\"")
        }
        let r = FieldReader(header)
        var sum: UInt32 = 0
        for (i, byte) in header.enumerated() where !(36..<40).contains(i) { sum &+= UInt32(byte) }
        guard ~sum == r.be32(36) else {
            throw DiskImageError(
                .checksumMismatch,
                "VHD dynamic header checksum is 0x\(String(r.be32(36), radix: 16)), computed 0x\(String(~sum, radix: 16))"
            )
        }
        let blockSize = UInt64(r.be32(32))
        guard blockSize >= 512, blockSize & (blockSize - 1) == 0 else {
            throw DiskImageError(.corruptImage, "VHD block size \(blockSize) is not a power of two of at least 512")
        }
        self.blockSize = blockSize
        bitmapSize = SparseMath.roundUp(blockSize / (8 * 512), 512) ?? 512
        let entries = UInt64(r.be32(28))
        guard let capacity = SparseMath.multiply(entries, blockSize), capacity >= virtualSize else {
            throw DiskImageError(
                .corruptImage,
                "VHD max table entries \(entries) × block size \(blockSize) does not cover the virtual size \(virtualSize)"
            )
        }
        try SparseMath.checkBudget(
            entries * 4, limits, what: "VHD block allocation table (max table entries \(entries))")
        try SparseMath.checkBudget(bitmapSize, limits, what: "VHD sector bitmap (block size \(blockSize))")
        let batOffset = r.be64(16)
        let batBytes = entries * 4
        try ranges.check(batOffset, length: batBytes, fileSize: fileSize, what: "VHD BAT (table offset)")
        let raw = try source.readExactly(at: batOffset, count: Int(batBytes), what: "VHD BAT")
        ranges.add(batOffset, length: SparseMath.roundUp(batBytes, 512) ?? batBytes, "VHD BAT")
        let br = FieldReader(raw)
        var bat = [UInt32]()
        bat.reserveCapacity(Int(entries))
        var allocated: UInt64 = 0
        for i in 0..<Int(entries) {
            let entry = br.be32(i * 4)
            bat.append(entry)
            guard entry != 0xFFFF_FFFF else { continue }
            try ranges.check(
                UInt64(entry) * 512, length: bitmapSize + blockSize, fileSize: fileSize,
                what: "VHD block \(i) (BAT entry \(entry))")
            allocated += blockSize
        }
        self.bat = bat
        allocatedBytes = allocated
    }

    mutating func run(at offset: UInt64) throws -> MappedRun {
        let block = Int(offset / blockSize)
        let inBlock = offset % blockSize
        let toEnd = blockSize - inBlock
        guard block < bat.count, bat[block] != 0xFFFF_FFFF else { return MappedRun(kind: .zero, length: toEnd) }
        let blockStart = UInt64(bat[block]) * 512
        let dataStart = blockStart + bitmapSize
        if cachedBitmap?.block != block {
            let bits = try source.readExactly(
                at: blockStart, count: Int(bitmapSize), what: "VHD sector bitmap of block \(block)")
            let used = Int((blockSize / 512 + 7) / 8)
            cachedBitmap = (block, bits, bits.prefix(used).allSatisfy { $0 == 0xFF })
        }
        guard let bitmap = cachedBitmap else { return MappedRun(kind: .zero, length: toEnd) }
        if bitmap.full { return MappedRun(kind: .host(dataStart + inBlock), length: toEnd) }
        // Sector bitmap: bit set = the sector holds data; the most significant bit of byte 0 is sector 0.
        func isSet(_ sector: UInt64) -> Bool { (bitmap.bits[Int(sector / 8)] >> (7 - UInt8(sector % 8))) & 1 == 1 }
        let firstSector = inBlock / 512
        let state = isSet(firstSector)
        var sector = firstSector + 1
        let sectors = blockSize / 512
        while sector < sectors && isSet(sector) == state { sector += 1 }
        let length = sector * 512 - inBlock
        return MappedRun(kind: state ? .host(dataStart + inBlock) : .zero, length: length)
    }
}
