// Shared machinery of the block-mapped readers (VMDK, VHD, VHDX, VDI): a format maps a virtual offset to a
// run (zeros, bytes at a host offset, or bytes it produced itself), and `RunAssembler` turns those runs into
// the bounded, coalesced extents of the `DiskReader` contract.

/// A contiguous piece of the virtual disk as a format maps it.
struct MappedRun {
    enum Kind {
        /// Reads as zeros; costs no I/O.
        case zero
        /// Stored uncompressed at this offset of the image file.
        case host(UInt64)
        /// Bytes the mapper materialised (a decompressed grain), starting at the queried offset.
        case bytes([UInt8])
    }

    var kind: Kind
    /// Bytes from the queried offset (for `.bytes`, the array's count).
    var length: UInt64
}

/// Maps virtual offsets to runs. `run(at:)` is only ever asked about offsets below the virtual size, and
/// must return a run of at least one byte.
protocol RunMapper {
    mutating func run(at offset: UInt64) throws -> MappedRun
}

/// Turns runs into extents: adjacent zero runs coalesce into one `.zero`; host runs that are contiguous in
/// the file too coalesce into one read of at most `maxDataExtent` bytes.
struct RunAssembler {
    /// Largest data extent produced (bounded memory, large reads).
    static let maxDataExtent: UInt64 = 4 << 20

    let virtualSize: UInt64
    private(set) var position: UInt64 = 0
    private var pending: (offset: UInt64, run: MappedRun)?

    init(virtualSize: UInt64) { self.virtualSize = virtualSize }

    private mutating func run<M: RunMapper>(_ mapper: inout M, at offset: UInt64) throws -> MappedRun {
        if let pending, pending.offset == offset { return pending.run }
        var run = try mapper.run(at: offset)
        guard run.length > 0 else {
            throw DiskImageError(.corruptImage, "internal: empty mapping at virtual offset \(offset)")
        }
        run.length = min(run.length, virtualSize - offset)
        pending = (offset, run)
        return run
    }

    /// The next extent, or nil once `[0, virtualSize)` is covered.
    mutating func next<M: RunMapper>(_ mapper: inout M, source: any ByteSource, what: String) throws -> Extent? {
        guard position < virtualSize else { return nil }
        let start = position
        let first = try run(&mapper, at: start)
        switch first.kind {
        case .zero:
            var length = first.length
            while start + length < virtualSize {
                let next = try run(&mapper, at: start + length)
                guard case .zero = next.kind else { break }
                length += next.length
            }
            position = start + length
            return .zero(offset: start, length: length)
        case .bytes(let bytes):
            position = start + first.length
            return .data(
                offset: start,
                bytes: first.length == UInt64(bytes.count) ? bytes : Array(bytes.prefix(Int(first.length))))
        case .host(let host):
            var length = min(first.length, RunAssembler.maxDataExtent)
            while length < RunAssembler.maxDataExtent && start + length < virtualSize {
                let next = try run(&mapper, at: start + length)
                guard case .host(let nextHost) = next.kind, nextHost == host &+ length else { break }
                length += min(next.length, RunAssembler.maxDataExtent - length)
            }
            let bytes = try source.readExactly(at: host, count: Int(length), what: what)
            position = start + length
            return .data(offset: start, bytes: bytes)
        }
    }
}

/// Half-open byte ranges of an image file that hold metadata, for overlap checks.
struct MetadataRanges {
    private var ranges: [(start: UInt64, end: UInt64, name: String)] = []

    mutating func add(_ start: UInt64, length: UInt64, _ name: String) {
        let (end, overflow) = start.addingReportingOverflow(length)
        ranges.append((start, overflow ? .max : end, name))
    }

    /// The name of the first metadata structure `[start, start+length)` overlaps, if any.
    func overlap(_ start: UInt64, length: UInt64) -> String? {
        let (end, overflow) = start.addingReportingOverflow(length)
        let e = overflow ? UInt64.max : end
        for r in ranges where start < r.end && r.start < e { return r.name }
        return nil
    }

    /// Throws `CorruptImage` when `[start, start+length)` overlaps metadata, `TruncatedImage` when it ends
    /// past `fileSize`.
    func check(_ start: UInt64, length: UInt64, fileSize: UInt64, what: @autoclosure () -> String) throws {
        let (end, overflow) = start.addingReportingOverflow(length)
        guard !overflow, end <= fileSize else {
            throw DiskImageError(
                .truncatedImage,
                "\(what()) at offset \(start) (+\(length) bytes) lies past the end of the image (\(fileSize) bytes)")
        }
        if let name = overlap(start, length: length) {
            throw DiskImageError(.corruptImage, "\(what()) at offset \(start) (+\(length) bytes) overlaps the \(name)")
        }
    }
}

/// Small helpers shared by the block-mapped readers.
enum SparseMath {
    /// `value` rounded up to a multiple of `multiple` (a power of two or any positive number), nil on overflow.
    static func roundUp(_ value: UInt64, _ multiple: UInt64) -> UInt64? {
        let (sum, overflow) = value.addingReportingOverflow(multiple - 1)
        return overflow ? nil : sum / multiple * multiple
    }

    /// `a * b`, nil on overflow.
    static func multiply(_ a: UInt64, _ b: UInt64) -> UInt64? {
        let (product, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? nil : product
    }

    /// Checks a table of `bytes` bytes fits the metadata budget.
    static func checkBudget(_ bytes: UInt64, _ limits: InspectionLimits, what: String) throws {
        guard bytes <= UInt64(limits.metadataBudget) else {
            throw DiskImageError(
                .metadataTooLarge,
                "\(what) needs \(bytes) bytes, more than the metadata budget of \(limits.metadataBudget) bytes")
        }
    }

    /// Checks the virtual size against the configured limit.
    static func checkVirtualSize(_ size: UInt64, _ limits: InspectionLimits, field: String) throws {
        guard size <= limits.maxVirtualSize else {
            throw DiskImageError(
                .virtualSizeTooLarge,
                "virtual size \(size) (\(field)) exceeds the limit of \(limits.maxVirtualSize) bytes")
        }
    }

    /// True when sector 0 of a virtual disk ends with the boot signature 0x55AA.
    static func hasBootSignature(_ sector0: [UInt8]) -> Bool {
        sector0.count >= 512 && sector0[510] == 0x55 && sector0[511] == 0xAA
    }

    /// Reads the first 512 bytes of the virtual disk through `mapper` (zeros where unmapped).
    static func firstSector<M: RunMapper>(_ mapper: inout M, source: any ByteSource, virtualSize: UInt64) throws
        -> [UInt8]
    {
        guard virtualSize >= 512 else { return [] }
        let run = try mapper.run(at: 0)
        guard run.length >= 512 else { return [] }
        switch run.kind {
        case .zero: return [UInt8](repeating: 0, count: 512)
        case .host(let host): return try source.readExactly(at: host, count: 512, what: "sector 0")
        case .bytes(let bytes): return Array(bytes.prefix(512))
        }
    }
}
