// VirtualBox VDI images, version 1.1, dynamic and static.
// Layout: VirtualBox src/VBox/Storage/VDICore.h (VDIPREHEADER, VDIHEADER1PLUS); qemu's block/vdi.c for what
// qemu accepts (1 MiB blocks, 512-byte sectors, no link/parent UUID, disk size rounded up to a sector).

/// Reads a VDI image. The block map has one little-endian 32-bit entry per 1 MiB block: an index into the
/// data area, or 0xFFFFFFFF (never allocated) / 0xFFFFFFFE (discarded), both reading as zeros.
public struct VDIReader: DiskReader {
    public let info: ImageInfo
    private let source: any ByteSource
    private var mapper: VDIMap
    private var assembler: RunAssembler

    static let signature: UInt32 = 0xBEDA_107F
    static let version11: UInt32 = 0x0001_0001
    static let blockSize: UInt64 = 1 << 20

    /// Validates the pre-header, header v1.1 and block map against `limits`.
    ///
    /// - Throws: `DiskImageError`: `DifferencingDiskNotAllowed` (image type diff/undo or a parent or link
    ///   UUID), `UnsupportedFeature` (versions other than 1.1, block sizes other than 1 MiB, sector sizes other
    ///   than 512, block extra data), `CorruptImage`/`TruncatedImage`, `MetadataTooLarge`, `VirtualSizeTooLarge`.
    public init(source: any ByteSource, limits: InspectionLimits) throws {
        self.source = source
        let fileSize = source.size
        // VDIPREHEADER (0x48 bytes) + VDIHEADER1PLUS (0x190 bytes).
        let h = try source.readExactly(at: 0, count: 0x1D8, what: "VDI header")
        let r = FieldReader(h)
        guard r.le32(0x40) == VDIReader.signature else {
            throw DiskImageError(.corruptImage, "VDI signature at 0x40 is 0x\(String(r.le32(0x40), radix: 16))")
        }
        let version = r.le32(0x44)
        guard version == VDIReader.version11 else {
            throw DiskImageError(
                .unsupportedFeature, "VDI version \(version >> 16).\(version & 0xFFFF) is not supported (only 1.1)")
        }
        let headerSize = UInt64(r.le32(0x48))
        guard headerSize >= 0x180, headerSize <= 0x200 else {
            throw DiskImageError(.corruptImage, "VDI header size \(headerSize) is not that of a version 1.1 header")
        }
        let imageType = r.le32(0x4C)
        let uuidLink = h[0x1A8..<0x1B8]
        let uuidParent = h[0x1B8..<0x1C8]
        switch imageType {
        case 1, 2: break  // normal (dynamic), fixed (static)
        case 3, 4:
            throw DiskImageError(
                .differencingDiskNotAllowed,
                "VDI image type \(imageType) (\(imageType == 3 ? "undo" : "diff")) needs a parent")
        default:
            throw DiskImageError(.unsupportedFeature, "VDI image type \(imageType) is not dynamic (1) or static (2)")
        }
        guard uuidParent.allSatisfy({ $0 == 0 }) else {
            throw DiskImageError(
                .differencingDiskNotAllowed, "VDI parent UUID is set: the image is a differencing disk")
        }
        guard uuidLink.allSatisfy({ $0 == 0 }) else {
            throw DiskImageError(.differencingDiskNotAllowed, "VDI link UUID is set: the image depends on another")
        }
        let offsetBmap = UInt64(r.le32(0x154))
        let offsetData = UInt64(r.le32(0x158))
        guard offsetBmap % 512 == 0, offsetData % 512 == 0 else {
            throw DiskImageError(
                .corruptImage, "VDI block map offset \(offsetBmap) or data offset \(offsetData) is not sector aligned")
        }
        // 0x15C…0x167 hold the legacy CHS geometry, which VirtualBox fills in and qemu ignores.
        let sectorSize = r.le32(0x168)
        guard sectorSize == 512 else {
            throw DiskImageError(.unsupportedFeature, "VDI sector size \(sectorSize) is not 512")
        }
        var diskSize = r.le64(0x170)
        let blockSize = UInt64(r.le32(0x178))
        guard blockSize == VDIReader.blockSize else {
            throw DiskImageError(.unsupportedFeature, "VDI block size \(blockSize) is not 1048576")
        }
        let blockExtra = r.le32(0x17C)
        guard blockExtra == 0 else {
            throw DiskImageError(.unsupportedFeature, "VDI block extra data size \(blockExtra) is not 0")
        }
        let blocksInImage = UInt64(r.le32(0x180))
        let blocksAllocated = UInt64(r.le32(0x184))
        guard blocksAllocated <= blocksInImage else {
            throw DiskImageError(
                .corruptImage,
                "VDI allocated block count \(blocksAllocated) exceeds the block count \(blocksInImage)")
        }
        // "VBoxManage convertfromraw" writes odd sizes; qemu rounds them up to a sector.
        guard let rounded = SparseMath.roundUp(diskSize, 512) else {
            throw DiskImageError(.corruptImage, "VDI disk size \(diskSize) overflows")
        }
        diskSize = rounded
        try SparseMath.checkVirtualSize(diskSize, limits, field: "VDI disk size")
        guard diskSize <= blocksInImage * blockSize else {
            throw DiskImageError(
                .corruptImage,
                "VDI disk size \(diskSize) exceeds what the block map covers (\(blocksInImage) blocks of \(blockSize))")
        }
        let bmapBytes = blocksInImage * 4
        try SparseMath.checkBudget(bmapBytes, limits, what: "VDI block map (\(blocksInImage) blocks)")

        var ranges = MetadataRanges()
        ranges.add(0, length: max(0x48 + headerSize, 0x200), "VDI header")
        try ranges.check(offsetBmap, length: bmapBytes, fileSize: fileSize, what: "VDI block map (offset_bmap)")
        let bmapRegion = SparseMath.roundUp(bmapBytes, 512) ?? bmapBytes
        ranges.add(offsetBmap, length: bmapRegion, "VDI block map")
        if let name = ranges.overlap(offsetData, length: 1) {
            throw DiskImageError(.corruptImage, "VDI data offset \(offsetData) overlaps the \(name)")
        }
        // The data area holds `blocksAllocated` blocks: a header claiming more than the file holds lies.
        try ranges.check(
            offsetData, length: blocksAllocated * blockSize, fileSize: fileSize,
            what: "VDI data area (\(blocksAllocated) allocated blocks)")
        let raw = try source.readExactly(at: offsetBmap, count: Int(bmapBytes), what: "VDI block map")
        // Each data block may back one virtual block only, and only blocks the header counts exist (qemu's
        // vdi_check): a block index at or past blocks_allocated, or used twice, is corrupt.
        var used = [UInt8](repeating: 0, count: Int((blocksAllocated + 7) / 8))
        let br = FieldReader(raw)
        var bmap = [UInt32]()
        bmap.reserveCapacity(Int(blocksInImage))
        var allocated: UInt64 = 0
        let neededBlocks = (diskSize + blockSize - 1) / blockSize
        for i in 0..<Int(blocksInImage) {
            let entry = br.le32(i * 4)
            bmap.append(entry)
            guard entry < 0xFFFF_FFFE else { continue }
            if UInt64(i) < neededBlocks {
                let host = offsetData + UInt64(entry) * blockSize
                let needed = min(blockSize, diskSize - UInt64(i) * blockSize)
                try ranges.check(
                    host, length: needed, fileSize: fileSize, what: "VDI block \(i) (block map entry \(entry))")
                allocated += needed
            }
            guard UInt64(entry) < blocksAllocated else {
                throw DiskImageError(
                    .corruptImage,
                    "VDI block map entry \(i) names data block \(entry), past the \(blocksAllocated) allocated blocks")
            }
            let bit = UInt8(1) << (entry % 8)
            guard used[Int(entry / 8)] & bit == 0 else {
                throw DiskImageError(.corruptImage, "VDI data block \(entry) backs more than one virtual block (entry \(i))")
            }
            used[Int(entry / 8)] |= bit
        }
        mapper = VDIMap(bmap: bmap, offsetData: offsetData, blockSize: blockSize)
        assembler = RunAssembler(virtualSize: diskSize)
        var probe = mapper
        let sector0 = try SparseMath.firstSector(&probe, source: source, virtualSize: diskSize)
        info = ImageInfo(
            format: .vdi, virtualSize: diskSize, allocatedBytes: allocated,
            bootable: SparseMath.hasBootSignature(sector0))
    }

    public mutating func next() throws -> Extent? {
        try assembler.next(&mapper, source: source, what: "VDI data")
    }
}

/// The block map of a VDI image.
struct VDIMap: RunMapper {
    let bmap: [UInt32]
    let offsetData: UInt64
    let blockSize: UInt64

    func run(at offset: UInt64) throws -> MappedRun {
        let block = Int(offset / blockSize)
        let inBlock = offset % blockSize
        let toEnd = blockSize - inBlock
        guard block < bmap.count, bmap[block] < 0xFFFF_FFFE else { return MappedRun(kind: .zero, length: toEnd) }
        return MappedRun(kind: .host(offsetData + UInt64(bmap[block]) * blockSize + inBlock), length: toEnd)
    }
}
