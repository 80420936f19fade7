// VMDK monolithicSparse and streamOptimized (hosted sparse extents).
// Spec: VMware "Virtual Disk Format 1.1", sections "Hosted Sparse Extent Header", "Grain Directories and Grain
// Tables", "Stream-Optimized Compressed Sparse Extents" (markers, footer); qemu's block/vmdk.c.

/// Reads a monolithicSparse or streamOptimized VMDK from a random-access source, through its grain directory
/// (from the header, or from the footer when the header says GD_AT_END).
public struct VMDKReader: DiskReader {
    public let info: ImageInfo
    private let source: any ByteSource
    private var mapper: VMDKMap
    private var assembler: RunAssembler

    /// Validates header, footer, descriptor and grain directory against `limits`.
    ///
    /// - Throws: `DiskImageError`: `UnsupportedFeature` (createType, version, compression),
    ///   `ExternalExtentNotAllowed` (extent paths, several extents, non-SPARSE extents),
    ///   `DifferencingDiskNotAllowed` (parentFileNameHint), `CorruptImage` (grammar, footer, offsets
    ///   overlapping metadata), `TruncatedImage`, `MetadataTooLarge`, `VirtualSizeTooLarge`.
    public init(source: any ByteSource, limits: InspectionLimits) throws {
        self.source = source
        let fileSize = source.size
        let primary = try VMDKSparseHeader.parse(
            try source.readExactly(at: 0, count: 512, what: "VMDK header"), what: "header")
        var header = primary
        if primary.gdOffset == VMDKSparseHeader.gdAtEnd {
            header = try VMDKReader.readFooter(source, header: primary)
        }
        guard let virtualSize = SparseMath.multiply(header.capacity, 512) else {
            throw DiskImageError(.corruptImage, "VMDK capacity \(header.capacity) sectors overflows")
        }
        try SparseMath.checkVirtualSize(virtualSize, limits, field: "VMDK capacity")
        // overHead is where grains start (qemu's grain_offset): the file must reach it ("File truncated").
        guard let overhead = SparseMath.multiply(header.overHead, 512), overhead <= fileSize else {
            throw DiskImageError(
                .truncatedImage,
                "VMDK overHead \(header.overHead) sectors lies past the end of the file (\(fileSize) bytes)")
        }

        // Grain directory: one 32-bit entry (a sector offset of a grain table) per numGTEsPerGT grains.
        let gtCoverage = UInt64(header.numGTEsPerGT) * header.grainSize  // sectors per grain table
        let gdEntries = (header.capacity + gtCoverage - 1) / gtCoverage
        let gdBytes = gdEntries * 4
        try SparseMath.checkBudget(gdBytes, limits, what: "VMDK grain directory (\(gdEntries) entries)")

        var ranges = MetadataRanges()
        ranges.add(0, length: 512, "VMDK header")
        let (descOffset, descLength) = try header.descriptorRange(what: "header")
        try ranges.check(descOffset, length: UInt64(descLength), fileSize: fileSize, what: "VMDK descriptor")
        let descriptor = try VMDKDescriptor.parse(
            try source.readExactly(at: descOffset, count: descLength, what: "VMDK descriptor"))
        ranges.add(descOffset, length: UInt64(descLength), "VMDK descriptor")
        guard descriptor.extent.sectors == header.capacity else {
            throw DiskImageError(
                .corruptImage,
                "VMDK descriptor extent size \(descriptor.extent.sectors) sectors differs from the header capacity "
                    + "\(header.capacity)")
        }

        guard let gdStart = SparseMath.multiply(header.gdOffset, 512) else {
            throw DiskImageError(.corruptImage, "VMDK gdOffset \(header.gdOffset) overflows")
        }
        try ranges.check(gdStart, length: gdBytes, fileSize: fileSize, what: "VMDK grain directory (gdOffset)")
        let gdRaw = try source.readExactly(at: gdStart, count: Int(gdBytes), what: "VMDK grain directory")
        ranges.add(gdStart, length: gdBytes, "VMDK grain directory")
        if header.flags & VMDKSparseHeader.flagRedundantGT != 0, header.rgdOffset != 0,
            let rgdStart = SparseMath.multiply(header.rgdOffset, 512)
        {
            ranges.add(rgdStart, length: gdBytes, "VMDK redundant grain directory")
        }
        let gdReader = FieldReader(gdRaw)
        var gd = [UInt32]()
        gd.reserveCapacity(Int(gdEntries))
        let gtBytes = UInt64(header.numGTEsPerGT) * 4
        for i in 0..<Int(gdEntries) {
            let entry = gdReader.le32(i * 4)
            gd.append(entry)
            guard entry != 0 else { continue }
            try ranges.check(
                UInt64(entry) * 512, length: gtBytes, fileSize: fileSize,
                what: "VMDK grain table \(i) (grain directory entry \(entry))")
        }
        mapper = VMDKMap(
            source: source, header: header, gd: gd, ranges: ranges, virtualSize: virtualSize)
        assembler = RunAssembler(virtualSize: virtualSize)
        var probe = mapper
        let sector0 = try SparseMath.firstSector(&probe, source: source, virtualSize: virtualSize)
        info = ImageInfo(
            format: .vmdk, virtualSize: virtualSize, allocatedBytes: fileSize - overhead,
            bootable: SparseMath.hasBootSignature(sector0))
    }

    public mutating func next() throws -> Extent? {
        try assembler.next(&mapper, source: source, what: "VMDK grain")
    }

    /// Checks every grain table entry without reading guest data (for `inspect`): each grain must lie inside
    /// the file and off the header, descriptor, grain directories and its own grain table; a compressed
    /// grain's marker must name its own LBA.
    ///
    /// - Returns: the bytes of the file that hold grains (compressed size for compressed grains).
    public func validateMetadata() throws -> UInt64 {
        try mapper.validateAll()
    }

    /// Reads the stream footer (Virtual Disk Format 1.1, "The Footer"): the last three sectors are a footer
    /// marker, a copy of the header holding the real gdOffset, and the end-of-stream marker.
    static func readFooter(_ source: any ByteSource, header: VMDKSparseHeader) throws -> VMDKSparseHeader {
        guard header.hasMarkers else {
            throw DiskImageError(.corruptImage, "VMDK gdOffset is GD_AT_END but the header has no markers flag")
        }
        guard source.size >= 2048 else {
            throw DiskImageError(.truncatedImage, "VMDK stream of \(source.size) bytes has no room for a footer")
        }
        let tail = try source.readExactly(at: source.size - 1536, count: 1536, what: "VMDK footer")
        let r = FieldReader(tail)
        guard r.le32(8) == 0, r.le32(12) == VMDKMarker.footer else {
            throw DiskImageError(
                .corruptImage,
                "VMDK footer marker missing 1536 bytes before the end (type \(r.le32(12)), size \(r.le32(8)))")
        }
        guard r.le64(1024) == 0, r.le32(1032) == 0, r.le32(1036) == VMDKMarker.endOfStream else {
            throw DiskImageError(.corruptImage, "VMDK end-of-stream marker missing in the last sector")
        }
        let footer = try VMDKSparseHeader.parse(Array(tail[512..<1024]), what: "footer")
        try header.checkFooter(footer)
        return footer
    }
}

/// Marker types of stream-optimized extents (Virtual Disk Format 1.1, "Markers").
enum VMDKMarker {
    static let endOfStream: UInt32 = 0
    static let grainTable: UInt32 = 1
    static let grainDirectory: UInt32 = 2
    static let footer: UInt32 = 3
}

/// Maps virtual offsets through the grain directory and grain tables; decompresses stream grains.
struct VMDKMap: RunMapper {
    let source: any ByteSource
    let header: VMDKSparseHeader
    let gd: [UInt32]
    let ranges: MetadataRanges
    let virtualSize: UInt64
    private var table: (index: Int, entries: [UInt32])?

    init(source: any ByteSource, header: VMDKSparseHeader, gd: [UInt32], ranges: MetadataRanges, virtualSize: UInt64) {
        self.source = source
        self.header = header
        self.gd = gd
        self.ranges = ranges
        self.virtualSize = virtualSize
    }

    mutating func run(at offset: UInt64) throws -> MappedRun {
        let grainBytes = header.grainBytes
        let tableBytes = grainBytes * UInt64(header.numGTEsPerGT)
        let grain = offset / grainBytes
        let inGrain = offset % grainBytes
        let tableIndex = Int(offset / tableBytes)
        guard tableIndex < gd.count, gd[tableIndex] != 0 else {
            return MappedRun(kind: .zero, length: tableBytes - offset % tableBytes)
        }
        if table?.index != tableIndex {
            let raw = try source.readExactly(
                at: UInt64(gd[tableIndex]) * 512, count: Int(header.numGTEsPerGT) * 4,
                what: "VMDK grain table \(tableIndex)")
            let r = FieldReader(raw)
            table = (tableIndex, (0..<Int(header.numGTEsPerGT)).map { r.le32($0 * 4) })
        }
        guard let entries = table?.entries else { return MappedRun(kind: .zero, length: grainBytes - inGrain) }
        let entry = entries[Int(grain % UInt64(header.numGTEsPerGT))]
        let toEnd = grainBytes - inGrain
        if entry == 0 || (entry == 1 && header.flags & VMDKSparseHeader.flagZeroedGrainGTE != 0) {
            return MappedRun(kind: .zero, length: toEnd)
        }
        let host = UInt64(entry) * 512
        let needed = min(grainBytes, virtualSize - grain * grainBytes)
        let gtRange = (UInt64(gd[tableIndex]) * 512, UInt64(header.numGTEsPerGT) * 4)
        if header.compressed {
            let bytes = try readCompressedGrain(at: host, grain: grain, gtRange: gtRange)
            guard inGrain < UInt64(bytes.count) else { return MappedRun(kind: .zero, length: toEnd) }
            let tail = Array(bytes[Int(inGrain)...])
            return MappedRun(kind: .bytes(tail), length: UInt64(tail.count))
        }
        try ranges.check(
            host, length: needed, fileSize: source.size, what: "VMDK grain \(grain) (grain table entry \(entry))")
        if host < gtRange.0 + gtRange.1 && gtRange.0 < host + needed {
            throw DiskImageError(.corruptImage, "VMDK grain \(grain) at offset \(host) overlaps its grain table")
        }
        return MappedRun(kind: .host(host + inGrain), length: toEnd)
    }

    /// Walks every grain table (see `VMDKReader.validateMetadata`).
    func validateAll() throws -> UInt64 {
        var allocated: UInt64 = 0
        let grainBytes = header.grainBytes
        let perTable = UInt64(header.numGTEsPerGT)
        for (tableIndex, gtSector) in gd.enumerated() where gtSector != 0 {
            let gtRange = (UInt64(gtSector) * 512, perTable * 4)
            let raw = try source.readExactly(
                at: gtRange.0, count: Int(gtRange.1), what: "VMDK grain table \(tableIndex)")
            let r = FieldReader(raw)
            for i in 0..<Int(perTable) {
                let grain = UInt64(tableIndex) * perTable + UInt64(i)
                let entry = r.le32(i * 4)
                guard grain * grainBytes < virtualSize else { break }
                if entry == 0 || (entry == 1 && header.flags & VMDKSparseHeader.flagZeroedGrainGTE != 0) { continue }
                let host = UInt64(entry) * 512
                if header.compressed {
                    let marker = try source.readExactly(
                        at: host, count: 12, what: "VMDK grain marker of grain \(grain)")
                    let m = FieldReader(marker)
                    let size = UInt64(m.le32(8))
                    guard m.le64(0) == grain * header.grainSize, size > 0, size <= 2 * grainBytes + 1024 else {
                        throw DiskImageError(
                            .corruptImage,
                            "VMDK grain marker at offset \(host) (LBA \(m.le64(0)), size \(size)) does not fit grain \(grain)"
                        )
                    }
                    try checkGrain(host, length: 12 + size, grain: grain, entry: entry, gtRange: gtRange)
                    allocated += 12 + size
                } else {
                    let needed = min(grainBytes, virtualSize - grain * grainBytes)
                    try checkGrain(host, length: needed, grain: grain, entry: entry, gtRange: gtRange)
                    allocated += needed
                }
            }
        }
        return allocated
    }

    private func checkGrain(_ host: UInt64, length: UInt64, grain: UInt64, entry: UInt32, gtRange: (UInt64, UInt64))
        throws
    {
        try ranges.check(
            host, length: length, fileSize: source.size, what: "VMDK grain \(grain) (grain table entry \(entry))")
        if host < gtRange.0 + gtRange.1 && gtRange.0 < host + length {
            throw DiskImageError(.corruptImage, "VMDK grain \(grain) at offset \(host) overlaps its grain table")
        }
    }

    /// Reads a grain marker (LBA, compressed size) and inflates its zlib data to exactly one grain.
    private func readCompressedGrain(at host: UInt64, grain: UInt64, gtRange: (UInt64, UInt64)) throws -> [UInt8] {
        let markerBytes = try source.readExactly(at: host, count: 12, what: "VMDK grain marker of grain \(grain)")
        let r = FieldReader(markerBytes)
        let lba = r.le64(0)
        let size = UInt64(r.le32(8))
        guard lba == grain * header.grainSize else {
            throw DiskImageError(
                .corruptImage,
                "VMDK grain marker at offset \(host) has LBA \(lba), expected \(grain * header.grainSize)")
        }
        guard size > 0, size <= 2 * header.grainBytes + 1024 else {
            throw DiskImageError(
                .corruptImage,
                "VMDK grain marker at offset \(host) has compressed size \(size) (grain \(header.grainBytes))")
        }
        try ranges.check(host, length: 12 + size, fileSize: source.size, what: "VMDK compressed grain \(grain)")
        if host < gtRange.0 + gtRange.1 && gtRange.0 < host + 12 + size {
            throw DiskImageError(.corruptImage, "VMDK grain \(grain) at offset \(host) overlaps its grain table")
        }
        let data = try source.readExactly(at: host + 12, count: Int(size), what: "VMDK compressed grain \(grain)")
        // The last grain of a disk whose size is not a multiple of the grain may hold only the part inside
        // the disk (qemu writes it so, and reads it back).
        let needed = min(header.grainBytes, virtualSize - grain * header.grainBytes)
        do {
            return try VMDKInflate.grain(data, minimum: Int(needed), maximum: Int(header.grainBytes))
        } catch let error as DiskImageError {
            throw DiskImageError(
                .decompressionFailed, "VMDK compressed grain \(grain) at offset \(host): \(error.message)")
        }
    }
}

/// A source of bytes that can only be read forward (a pipe, an HTTP body).
public protocol ForwardByteStream {
    /// Reads up to `max` bytes; returns an empty array at the end of the stream.
    mutating func read(max: Int) throws -> [UInt8]
}

/// Reads a streamOptimized VMDK from a forward-only stream by walking its markers in order
/// (Virtual Disk Format 1.1, "Stream-Optimized Compressed Sparse Extents"): grain markers carry their LBA,
/// so the grain directory at the end is not needed. Grains must come in increasing LBA order.
public struct VMDKStreamReader<Stream: ForwardByteStream>: DiskReader {
    public private(set) var info: ImageInfo
    private var cursor: ForwardCursor<Stream>
    private let header: VMDKSparseHeader
    private let virtualSize: UInt64
    /// End (bytes) of what has been emitted.
    private var emitted: UInt64 = 0
    private var pending: (offset: UInt64, bytes: [UInt8])?
    private var finished = false
    private var sawFooter = false

    /// Reads and validates the header and descriptor, then looks at the first grain (for `bootable`).
    ///
    /// - Throws: `DiskImageError` as `VMDKReader` does; `UnsupportedFeature` for a VMDK that is not
    ///   stream-optimized (it needs random access).
    public init(stream: Stream, limits: InspectionLimits) throws {
        cursor = ForwardCursor(stream: stream)
        let header = try VMDKSparseHeader.parse(try cursor.read(512, what: "VMDK header"), what: "header")
        guard header.compressed, header.hasMarkers else {
            throw DiskImageError(
                .unsupportedFeature, "VMDK without compressed grains and markers cannot be read from a stream")
        }
        self.header = header
        guard let virtualSize = SparseMath.multiply(header.capacity, 512) else {
            throw DiskImageError(.corruptImage, "VMDK capacity \(header.capacity) sectors overflows")
        }
        try SparseMath.checkVirtualSize(virtualSize, limits, field: "VMDK capacity")
        self.virtualSize = virtualSize
        let (descOffset, descLength) = try header.descriptorRange(what: "header")
        try cursor.skip(to: descOffset, what: "VMDK descriptor")
        let descriptor = try VMDKDescriptor.parse(try cursor.read(descLength, what: "VMDK descriptor"))
        guard descriptor.createType == "streamOptimized" else {
            throw DiskImageError(
                .unsupportedFeature, "VMDK createType \(descriptor.createType) cannot be read from a stream")
        }
        guard descriptor.extent.sectors == header.capacity else {
            throw DiskImageError(
                .corruptImage,
                "VMDK descriptor extent size \(descriptor.extent.sectors) sectors differs from the header capacity "
                    + "\(header.capacity)")
        }
        guard let overhead = SparseMath.multiply(header.overHead, 512), overhead >= cursor.position else {
            throw DiskImageError(
                .corruptImage, "VMDK overHead \(header.overHead) sectors lies inside the header or descriptor")
        }
        try cursor.skip(to: overhead, what: "VMDK grains (overHead)")
        info = ImageInfo(format: .vmdk, virtualSize: virtualSize, allocatedBytes: 0, bootable: false)
        try advance()
        if let pending, pending.offset == 0 {
            info.bootable = SparseMath.hasBootSignature(Array(pending.bytes.prefix(512)))
        }
    }

    public mutating func next() throws -> Extent? {
        while true {
            if let grain = pending {
                if emitted < grain.offset {
                    let zero = Extent.zero(offset: emitted, length: grain.offset - emitted)
                    emitted = grain.offset
                    return zero
                }
                pending = nil
                let count = Int(min(UInt64(grain.bytes.count), virtualSize - grain.offset))
                emitted = grain.offset + UInt64(count)
                return .data(
                    offset: grain.offset,
                    bytes: count == grain.bytes.count ? grain.bytes : Array(grain.bytes.prefix(count)))
            }
            if finished {
                guard emitted < virtualSize else { return nil }
                let zero = Extent.zero(offset: emitted, length: virtualSize - emitted)
                emitted = virtualSize
                return zero
            }
            try advance()
        }
    }

    /// Reads markers until a grain is pending or the end-of-stream marker was seen.
    private mutating func advance() throws {
        while pending == nil && !finished {
            let start = cursor.position
            let head = try cursor.read(12, what: "VMDK marker")
            let r = FieldReader(head)
            let value = r.le64(0)
            let size = UInt64(r.le32(8))
            if size != 0 {
                try readGrain(lba: value, size: size, at: start)
                continue
            }
            let rest = try cursor.read(500, what: "VMDK marker")
            let type = FieldReader(rest).le32(0)
            switch type {
            case VMDKMarker.endOfStream:
                if header.gdOffset == VMDKSparseHeader.gdAtEnd && !sawFooter {
                    throw DiskImageError(
                        .corruptImage,
                        "VMDK end-of-stream marker at offset \(start) without the footer the header's GD_AT_END promises"
                    )
                }
                // Nothing but zero padding may follow the end-of-stream marker.
                guard try cursor.restIsZero() else {
                    throw DiskImageError(.corruptImage, "VMDK data follows the end-of-stream marker at offset \(start)")
                }
                finished = true
            case VMDKMarker.grainTable, VMDKMarker.grainDirectory:
                guard let skip = SparseMath.multiply(value, 512),
                    case let (target, false) =
                        cursor.position.addingReportingOverflow(skip)
                else {
                    throw DiskImageError(.corruptImage, "VMDK metadata marker at offset \(start) size overflows")
                }
                try cursor.skip(to: target, what: "VMDK metadata after marker at \(start)")
            case VMDKMarker.footer:
                guard value == 1 else {
                    throw DiskImageError(
                        .corruptImage, "VMDK footer marker at offset \(start) spans \(value) sectors, not 1")
                }
                let footer = try VMDKSparseHeader.parse(try cursor.read(512, what: "VMDK footer"), what: "footer")
                try header.checkFooter(footer)
                sawFooter = true
            default:
                throw DiskImageError(.corruptImage, "VMDK marker at offset \(start) has unknown type \(type)")
            }
        }
    }

    private mutating func readGrain(lba: UInt64, size: UInt64, at start: UInt64) throws {
        guard lba % header.grainSize == 0, let offset = SparseMath.multiply(lba, 512), offset < virtualSize else {
            throw DiskImageError(
                .corruptImage, "VMDK grain marker at offset \(start) has LBA \(lba), not a grain inside the disk")
        }
        guard offset >= emitted else {
            throw DiskImageError(
                .corruptImage, "VMDK grain marker at offset \(start) (LBA \(lba)) is out of order in the stream")
        }
        guard size <= 2 * header.grainBytes + 1024 else {
            throw DiskImageError(
                .corruptImage, "VMDK grain marker at offset \(start) has compressed size \(size)")
        }
        let data = try cursor.read(Int(size), what: "VMDK compressed grain at LBA \(lba)")
        let padded = (12 + size + 511) / 512 * 512
        try cursor.skip(to: start + padded, what: "VMDK grain padding")
        let needed = min(header.grainBytes, virtualSize - offset)
        do {
            pending = (offset, try VMDKInflate.grain(data, minimum: Int(needed), maximum: Int(header.grainBytes)))
        } catch let error as DiskImageError {
            throw DiskImageError(
                .decompressionFailed, "VMDK compressed grain at offset \(start) (LBA \(lba)): \(error.message)")
        }
    }
}

/// Buffers a forward-only stream and counts its position.
struct ForwardCursor<Stream: ForwardByteStream> {
    var stream: Stream
    private(set) var position: UInt64 = 0
    private var buffer: [UInt8] = []
    private var bufferStart = 0

    init(stream: Stream) { self.stream = stream }

    /// Reads exactly `count` bytes or throws `TruncatedImage`.
    mutating func read(_ count: Int, what: @autoclosure () -> String) throws -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count)
        while out.count < count {
            if bufferStart == buffer.count {
                buffer = try stream.read(max: max(1 << 16, min(count - out.count, 4 << 20)))
                bufferStart = 0
                guard !buffer.isEmpty else {
                    throw DiskImageError(
                        .truncatedImage, "\(what()): the stream ends at offset \(position + UInt64(out.count))")
                }
            }
            let take = min(count - out.count, buffer.count - bufferStart)
            out += buffer[bufferStart..<bufferStart + take]
            bufferStart += take
        }
        position += UInt64(count)
        return out
    }

    /// Reads the rest of the stream; true when it holds only zero bytes.
    mutating func restIsZero() throws -> Bool {
        var zero = FieldReader.isAllZero(Array(buffer[bufferStart...]))
        bufferStart = buffer.count
        while zero {
            let chunk = try stream.read(max: 1 << 16)
            if chunk.isEmpty { break }
            position += UInt64(chunk.count)
            zero = FieldReader.isAllZero(chunk)
        }
        return zero
    }

    /// Discards bytes up to the absolute offset `target` (which must not lie behind).
    mutating func skip(to target: UInt64, what: @autoclosure () -> String) throws {
        guard target >= position else {
            throw DiskImageError(
                .corruptImage, "\(what()) at offset \(target) lies behind the stream position \(position)")
        }
        while position < target {
            let chunk = Int(min(target - position, 1 << 20))
            _ = try read(chunk, what: what())
        }
    }
}
