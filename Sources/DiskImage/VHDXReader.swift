// VHDX (Hyper-V), dynamic and fixed, any block size, 512 and 4096-byte logical sectors.
// Spec: [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format",
// https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx/83e061f8-f6e2-4de1-91bd-5d518a43d477
// qemu's block/vhdx.c and block/vhdx-log.c for what qemu reads.

/// Reads a VHDX image: picks the current header, checks the region table and metadata, and maps the BAT.
/// Differencing disks, logs that need replay and partially present blocks are refused.
public struct VHDXReader: DiskReader {
    public let info: ImageInfo
    private let source: any ByteSource
    private var mapper: VHDXMap
    private var assembler: RunAssembler

    static let mib: UInt64 = 1 << 20
    static let batGUID = VHDXGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
    static let metadataGUID = VHDXGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
    static let fileParametersGUID = VHDXGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
    static let virtualDiskSizeGUID = VHDXGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
    static let page83GUID = VHDXGUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
    static let logicalSectorSizeGUID = VHDXGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
    static let physicalSectorSizeGUID = VHDXGUID("CDA348C7-445D-4471-9CC9-E9885251C556")
    static let parentLocatorGUID = VHDXGUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

    /// Validates headers, region table, metadata, log and BAT against `limits`.
    ///
    /// - Throws: `DiskImageError`: `ChecksumMismatch` (no header or region table with a valid CRC-32C),
    ///   `DirtyLog`, `DifferencingDiskNotAllowed` (has_parent, parent locator), `UnsupportedFeature`
    ///   (unknown required region or metadata item, partially present blocks), `CorruptImage`/`TruncatedImage`,
    ///   `MetadataTooLarge`, `VirtualSizeTooLarge`.
    public init(source: any ByteSource, limits: InspectionLimits) throws {
        self.source = source
        let fileSize = source.size
        let identifier = try source.readExactly(at: 0, count: 8, what: "VHDX file identifier")
        guard identifier == Array("vhdxfile".utf8) else {
            throw DiskImageError(.corruptImage, "VHDX file identifier \"vhdxfile\" missing at offset 0")
        }
        let header = try VHDXReader.currentHeader(source)
        var ranges = MetadataRanges()
        ranges.add(0, length: VHDXReader.mib, "VHDX header section")
        // Log (header LogOffset/LogLength, [MS-VHDX] 2.2.2).
        if header.logLength > 0 {
            guard header.logOffset % VHDXReader.mib == 0, header.logOffset >= VHDXReader.mib,
                header.logLength % VHDXReader.mib == 0
            else {
                throw DiskImageError(
                    .corruptImage, "VHDX log offset \(header.logOffset) / length \(header.logLength) not 1 MiB aligned")
            }
            try ranges.check(header.logOffset, length: header.logLength, fileSize: fileSize, what: "VHDX log")
            ranges.add(header.logOffset, length: header.logLength, "VHDX log")
        }
        if header.logGUID != VHDXGUID.zero {
            try VHDXReader.checkLogClean(source, header: header, limits: limits)
        }
        let regions = try VHDXReader.regionTable(source)
        guard let bat = regions.first(where: { $0.guid == VHDXReader.batGUID }),
            let meta = regions.first(where: { $0.guid == VHDXReader.metadataGUID })
        else {
            throw DiskImageError(.corruptImage, "VHDX region table lacks the BAT or the metadata region")
        }
        for region in regions {
            let name =
                region.guid == VHDXReader.batGUID
                ? "BAT region"
                : region.guid == VHDXReader.metadataGUID
                    ? "metadata region" : "region \(region.guid)"
            guard region.offset % VHDXReader.mib == 0, region.offset >= VHDXReader.mib,
                region.length % VHDXReader.mib == 0, region.length > 0
            else {
                throw DiskImageError(
                    .corruptImage, "VHDX \(name) offset \(region.offset) / length \(region.length) not 1 MiB aligned")
            }
            try ranges.check(region.offset, length: region.length, fileSize: fileSize, what: "VHDX \(name)")
            ranges.add(region.offset, length: region.length, "VHDX \(name)")
        }
        let params = try VHDXReader.metadata(source, region: meta, limits: limits)
        try SparseMath.checkVirtualSize(params.virtualSize, limits, field: "VHDX virtual disk size")

        // BAT ([MS-VHDX] 2.5): chunk ratio, payload blocks, and a sector-bitmap entry after each chunk.
        let blockSize = UInt64(params.blockSize)
        let chunkRatio = (UInt64(1) << 23) * UInt64(params.logicalSectorSize) / blockSize
        let dataBlocks = (params.virtualSize + blockSize - 1) / blockSize
        let batEntries = dataBlocks == 0 ? 0 : dataBlocks + (dataBlocks - 1) / chunkRatio
        try SparseMath.checkBudget(batEntries * 8, limits, what: "VHDX BAT (\(batEntries) entries)")
        guard batEntries * 8 <= bat.length else {
            throw DiskImageError(
                .corruptImage, "VHDX BAT region (\(bat.length) bytes) is too small for \(batEntries) entries")
        }
        let raw = try source.readExactly(at: bat.offset, count: Int(batEntries * 8), what: "VHDX BAT")
        let br = FieldReader(raw)
        var blocks = [UInt64]()
        blocks.reserveCapacity(Int(dataBlocks))
        var allocated: UInt64 = 0
        for block in 0..<dataBlocks {
            let index = block + block / chunkRatio
            let entry = br.le64(Int(index * 8))
            let state = entry & 7
            switch state {
            case 0, 1, 2, 3:  // NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED: read as zeros
                blocks.append(0)
            case 6:  // FULLY_PRESENT
                let host = entry & ~(VHDXReader.mib - 1)
                let needed = min(blockSize, params.virtualSize - block * blockSize)
                try ranges.check(host, length: needed, fileSize: fileSize, what: "VHDX payload block \(block)")
                guard host >= VHDXReader.mib else {
                    throw DiskImageError(.corruptImage, "VHDX payload block \(block) has file offset 0")
                }
                blocks.append(host)
                allocated += needed
            case 7:
                throw DiskImageError(
                    .unsupportedFeature,
                    "VHDX payload block \(block) is PARTIALLY_PRESENT, a state only differencing disks may use")
            default:
                throw DiskImageError(.corruptImage, "VHDX BAT entry \(index) has invalid state \(state)")
            }
        }
        mapper = VHDXMap(blocks: blocks, blockSize: blockSize)
        assembler = RunAssembler(virtualSize: params.virtualSize)
        var probe = mapper
        let sector0 = try SparseMath.firstSector(&probe, source: source, virtualSize: params.virtualSize)
        info = ImageInfo(
            format: .vhdx, virtualSize: params.virtualSize, allocatedBytes: allocated,
            bootable: SparseMath.hasBootSignature(sector0))
    }

    public mutating func next() throws -> Extent? {
        try assembler.next(&mapper, source: source, what: "VHDX payload")
    }

    struct Header {
        var sequence: UInt64
        var logGUID: VHDXGUID
        var logLength: UInt64
        var logOffset: UInt64
    }

    /// Reads both headers ([MS-VHDX] 2.2.2, at 64 KiB and 128 KiB) and returns the valid one with the
    /// highest sequence number. A header is valid when its signature is "head", its CRC-32C (over 4 KiB with
    /// the checksum field zeroed) matches and its version is 1.
    static func currentHeader(_ source: any ByteSource) throws -> Header {
        var best: Header?
        var reasons: [String] = []
        var sawBadChecksum = false
        for (index, offset) in [UInt64(64 << 10), UInt64(128 << 10)].enumerated() {
            let name = "VHDX header \(index + 1)"
            guard let bytes = try? source.readExactly(at: offset, count: 4096, what: name) else {
                reasons.append("\(name) is truncated")
                continue
            }
            let r = FieldReader(bytes)
            guard bytes[0..<4].elementsEqual("head".utf8) else {
                reasons.append("\(name) lacks the signature \"head\"")
                continue
            }
            var zeroed = bytes
            zeroed.replaceSubrange(4..<8, with: [0, 0, 0, 0])
            let computed = CRC32C.checksum(zeroed)
            guard computed == r.le32(4) else {
                sawBadChecksum = true
                reasons.append(
                    "\(name) checksum is 0x\(String(r.le32(4), radix: 16)), computed 0x\(String(computed, radix: 16))")
                continue
            }
            guard r.le16(66) == 1 else {
                reasons.append("\(name) version is \(r.le16(66)), not 1")
                continue
            }
            let header = Header(
                sequence: r.le64(8), logGUID: VHDXGUID(bytes: Array(bytes[48..<64])),
                logLength: UInt64(r.le32(68)), logOffset: r.le64(72))
            if best == nil || header.sequence > best!.sequence { best = header }
        }
        guard let best else {
            throw DiskImageError(
                sawBadChecksum ? .checksumMismatch : .corruptImage,
                "no valid VHDX header: " + reasons.joined(separator: "; "))
        }
        return best
    }

    struct Region {
        var guid: VHDXGUID
        var offset: UInt64
        var length: UInt64
    }

    /// Reads the region table ([MS-VHDX] 2.2.3, at 192 KiB, copy at 256 KiB); the first copy whose CRC-32C
    /// is valid is used. Unknown regions marked required are refused.
    static func regionTable(_ source: any ByteSource) throws -> [Region] {
        var reasons: [String] = []
        var sawBadChecksum = false
        for (index, offset) in [UInt64(192 << 10), UInt64(256 << 10)].enumerated() {
            let name = "VHDX region table \(index + 1)"
            let bytes = try source.readExactly(at: offset, count: 64 << 10, what: name)
            let r = FieldReader(bytes)
            guard bytes[0..<4].elementsEqual("regi".utf8) else {
                reasons.append("\(name) lacks the signature \"regi\"")
                continue
            }
            var zeroed = bytes
            zeroed.replaceSubrange(4..<8, with: [0, 0, 0, 0])
            let computed = CRC32C.checksum(zeroed)
            guard computed == r.le32(4) else {
                sawBadChecksum = true
                reasons.append(
                    "\(name) checksum is 0x\(String(r.le32(4), radix: 16)), computed 0x\(String(computed, radix: 16))")
                continue
            }
            let count = Int(r.le32(8))
            guard count <= 2047 else {
                throw DiskImageError(.corruptImage, "\(name) entry count \(count) exceeds 2047")
            }
            var regions: [Region] = []
            for i in 0..<count {
                let e = 16 + i * 32
                let guid = VHDXGUID(bytes: Array(bytes[e..<e + 16]))
                let region = Region(guid: guid, offset: r.le64(e + 16), length: UInt64(r.le32(e + 24)))
                let required = r.le32(e + 28) & 1 == 1
                if regions.contains(where: { $0.guid == guid }) {
                    throw DiskImageError(.corruptImage, "\(name) lists region \(guid) twice")
                }
                if guid != batGUID && guid != metadataGUID {
                    if required {
                        throw DiskImageError(.unsupportedFeature, "\(name) has an unknown required region \(guid)")
                    }
                }
                regions.append(region)
            }
            return regions
        }
        throw DiskImageError(
            sawBadChecksum ? .checksumMismatch : .corruptImage,
            "no valid VHDX region table: " + reasons.joined(separator: "; "))
    }

    struct Parameters {
        var blockSize: UInt32
        var virtualSize: UInt64
        var logicalSectorSize: UInt32
        var physicalSectorSize: UInt32
    }

    /// Reads the metadata table and the system metadata items ([MS-VHDX] 2.6: File Parameters, Virtual Disk
    /// Size, Logical and Physical Sector Size, Page 83 Data, Parent Locator).
    static func metadata(_ source: any ByteSource, region: Region, limits: InspectionLimits) throws -> Parameters {
        let table = try source.readExactly(at: region.offset, count: 64 << 10, what: "VHDX metadata table")
        let r = FieldReader(table)
        guard table[0..<8].elementsEqual("metadata".utf8) else {
            throw DiskImageError(.corruptImage, "VHDX metadata table lacks the signature \"metadata\"")
        }
        let count = Int(r.le16(10))
        guard count <= 2047 else {
            throw DiskImageError(.corruptImage, "VHDX metadata entry count \(count) exceeds 2047")
        }
        var items: [VHDXGUID: [UInt8]] = [:]
        var used: UInt64 = 0
        for i in 0..<count {
            let e = 32 + i * 32
            let guid = VHDXGUID(bytes: Array(table[e..<e + 16]))
            let offset = UInt64(r.le32(e + 16))
            let length = UInt64(r.le32(e + 20))
            let flags = r.le32(e + 24)
            let isRequired = flags & 4 != 0
            let known = [
                fileParametersGUID, virtualDiskSizeGUID, page83GUID, logicalSectorSizeGUID,
                physicalSectorSizeGUID, parentLocatorGUID,
            ].contains(guid)
            if guid == parentLocatorGUID {
                throw DiskImageError(.differencingDiskNotAllowed, "VHDX metadata has a parent locator")
            }
            if !known {
                if isRequired {
                    throw DiskImageError(.unsupportedFeature, "VHDX metadata item \(guid) is required but unknown")
                }
                continue
            }
            guard items[guid] == nil else {
                throw DiskImageError(.corruptImage, "VHDX metadata item \(guid) appears twice")
            }
            guard length <= 1 << 20, offset >= 64 << 10 || length == 0, offset + length <= region.length else {
                throw DiskImageError(
                    .corruptImage,
                    "VHDX metadata item \(guid) at offset \(offset) (+\(length)) lies outside the metadata region")
            }
            used += length
            try SparseMath.checkBudget(used, limits, what: "VHDX metadata items")
            items[guid] = try source.readExactly(
                at: region.offset + offset, count: Int(length), what: "VHDX metadata item \(guid)")
        }
        func item(_ guid: VHDXGUID, _ name: String, size: Int) throws -> FieldReader {
            guard let bytes = items[guid] else {
                throw DiskImageError(.corruptImage, "VHDX metadata lacks the \(name) item")
            }
            guard bytes.count >= size else {
                throw DiskImageError(.corruptImage, "VHDX \(name) item is \(bytes.count) bytes, expected \(size)")
            }
            return FieldReader(bytes)
        }
        let fp = try item(fileParametersGUID, "file parameters", size: 8)
        let blockSize = fp.le32(0)
        let fpFlags = fp.le32(4)
        if fpFlags & 2 != 0 {
            throw DiskImageError(.differencingDiskNotAllowed, "VHDX file parameters has_parent is set")
        }
        guard blockSize >= 1 << 20, blockSize <= 256 << 20, blockSize & (blockSize - 1) == 0 else {
            throw DiskImageError(
                .corruptImage, "VHDX block size \(blockSize) is not a power of two between 1 MiB and 256 MiB")
        }
        let logical = try item(logicalSectorSizeGUID, "logical sector size", size: 4).le32(0)
        guard logical == 512 || logical == 4096 else {
            throw DiskImageError(.corruptImage, "VHDX logical sector size \(logical) is not 512 or 4096")
        }
        let physical = try item(physicalSectorSizeGUID, "physical sector size", size: 4).le32(0)
        guard physical == 512 || physical == 4096 else {
            throw DiskImageError(.corruptImage, "VHDX physical sector size \(physical) is not 512 or 4096")
        }
        let virtualSize = try item(virtualDiskSizeGUID, "virtual disk size", size: 8).le64(0)
        guard virtualSize <= 64 << 40 else {
            throw DiskImageError(.unsupportedFeature, "VHDX virtual disk size \(virtualSize) exceeds 64 TiB")
        }
        return Parameters(
            blockSize: blockSize, virtualSize: virtualSize, logicalSectorSize: logical, physicalSectorSize: physical)
    }

    /// Refuses a log that needs replay ([MS-VHDX] 2.3.3): with a non-zero LogGuid, any log entry whose
    /// signature is "loge", whose LogGuid matches the header's and whose CRC-32C is valid would be replayed.
    static func checkLogClean(_ source: any ByteSource, header: Header, limits: InspectionLimits) throws {
        guard header.logLength > 0 else { return }
        try SparseMath.checkBudget(header.logLength, limits, what: "VHDX log (log length \(header.logLength))")
        let log = try source.readExactly(at: header.logOffset, count: Int(header.logLength), what: "VHDX log")
        let r = FieldReader(log)
        var offset = 0
        while offset + 64 <= log.count {
            defer { offset += 4096 }
            guard log[offset..<offset + 4].elementsEqual("loge".utf8) else { continue }
            guard VHDXGUID(bytes: Array(log[offset + 32..<offset + 48])) == header.logGUID else { continue }
            let length = Int(r.le32(offset + 8))
            guard length >= 4096, length % 4096 == 0, length <= log.count else { continue }
            // An entry may wrap around the end of the circular log.
            var entry = [UInt8]()
            entry.reserveCapacity(length)
            let first = min(length, log.count - offset)
            entry += log[offset..<offset + first]
            entry += log[0..<(length - first)]
            let stored = FieldReader(entry).le32(4)
            entry.replaceSubrange(4..<8, with: [0, 0, 0, 0])
            if CRC32C.checksum(entry) == stored {
                throw DiskImageError(
                    .dirtyLog,
                    "VHDX log (LogGuid \(header.logGUID)) holds an entry at log offset \(offset) that needs replay")
            }
        }
    }
}

/// A GUID as VHDX stores it: the first three fields little-endian, the rest as bytes.
struct VHDXGUID: Hashable, CustomStringConvertible {
    let bytes: [UInt8]
    static let zero = VHDXGUID(bytes: [UInt8](repeating: 0, count: 16))

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// Parses the canonical text form, e.g. "2DC27766-F623-4200-9D64-115E9BFD4A08".
    init(_ text: String) {
        let hex = Array(text.utf8.filter { $0 != UInt8(ascii: "-") })
        var raw = [UInt8]()
        var i = 0
        while i + 1 < hex.count {
            raw.append(UInt8(String(decoding: hex[i...i + 1], as: UTF8.self), radix: 16) ?? 0)
            i += 2
        }
        bytes =
            Array(raw[0..<4].reversed()) + Array(raw[4..<6].reversed()) + Array(raw[6..<8].reversed())
            + Array(raw[8..<16])
    }

    var description: String {
        let order = [3, 2, 1, 0, -1, 5, 4, -1, 7, 6, -1, 8, 9, -1, 10, 11, 12, 13, 14, 15]
        return order.map { $0 < 0 ? "-" : String(bytes[$0] >> 4, radix: 16) + String(bytes[$0] & 15, radix: 16) }
            .joined().uppercased()
    }
}

/// Payload blocks of a VHDX image: 0 for blocks that read as zeros, else the file offset.
struct VHDXMap: RunMapper {
    let blocks: [UInt64]
    let blockSize: UInt64

    func run(at offset: UInt64) throws -> MappedRun {
        let block = Int(offset / blockSize)
        let inBlock = offset % blockSize
        let toEnd = blockSize - inBlock
        guard block < blocks.count, blocks[block] != 0 else { return MappedRun(kind: .zero, length: toEnd) }
        return MappedRun(kind: .host(blocks[block] + inBlock), length: toEnd)
    }
}
