import BlockingIO
import Synchronization

/// Reads a qcow2 image, versions 2 and 3, as specified by qemu's `docs/interop/qcow2.rst`
/// (https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.rst).
///
/// Supported: every cluster size qemu allows (512 B – 2 MiB), the active L1 table (internal snapshots may
/// exist; their tables are never read), zlib (raw deflate) and zstd compressed clusters, extended L2 entries
/// (32 subclusters with allocation and zero bitmaps), and the v3 "reads as zero" flag.
///
/// Refused (spec section "Header"): a backing file, an external data file, encryption (`crypt_method` or
/// the full-disk-encryption header extension), the corrupt bit and unknown incompatible bits, versions
/// other than 2 and 3, tables that do not fit in the file or overlap the header, an L1 table larger than
/// the metadata budget, and a virtual size over the limit.
///
/// The dirty bit (incompatible bit 0) is accepted: it only says the refcounts may be stale after a crash
/// with lazy refcounts; the L1/L2 mapping that says where guest data lives is always written before the
/// data is reported complete. qemu itself opens such an image read-only without a repair, and
/// `qemu-img convert` converts it.
///
/// Memory: the L1 table (at most the budget) and one L2 table (one cluster, at most 2 MiB).
public struct QCOW2Reader: DiskReader {
    public private(set) var info: ImageInfo
    private let source: any ByteSource
    private let header: Header
    private let l1: [UInt64]
    private var position: UInt64 = 0
    private var cachedL2: (offset: UInt64, entries: [UInt64])?
    private var lookahead: Piece?
    /// Largest data extent produced (a few MiB keeps memory bounded and reads large).
    private let maxExtent: Int

    /// Validates the header, its extensions and the L1 table.
    ///
    /// - Throws: `DiskImageError` naming the offending field.
    public init(source: any ByteSource, limits: InspectionLimits, maxExtent: Int = 4 << 20) throws {
        self.source = source
        self.maxExtent = max(maxExtent, 1)
        header = try Header(source: source, limits: limits)
        try QCOW2Reader.checkRefcountTable(source: source, header: header)
        try QCOW2Reader.checkSnapshotTable(source: source, header: header)
        let l1Bytes = try source.readExactly(
            at: header.l1TableOffset, count: Int(header.l1Size) * 8, what: "qcow2 L1 table (l1_table_offset)")
        let fields = FieldReader(l1Bytes)
        var l1 = [UInt64](repeating: 0, count: Int(header.l1Size))
        for i in 0..<l1.count { l1[i] = fields.be64(i * 8) }
        self.l1 = l1
        info = ImageInfo(format: .qcow2, virtualSize: header.size, allocatedBytes: source.size, bootable: false)
        // Every L2 table the active L1 points at must lie inside the file, after the header cluster.
        for index in 0..<min(l1.count, header.l1EntriesNeeded) {
            _ = try l2Offset(forL1Index: index)
        }
    }

    public mutating func next() throws -> Extent? {
        guard position < header.size else { return nil }
        let first = try takePiece()
        switch first {
        case .zero(let length):
            var total = length
            while position + total < header.size {
                let piece = try peekPiece(at: position + total)
                guard case .zero(let more) = piece else { break }
                total += more
                lookahead = nil
            }
            defer { position += total }
            return .zero(offset: position, length: total)
        case .raw, .compressed:
            let start = position
            // Gather pieces up to `maxExtent` bytes, merging host-contiguous plain clusters into one read.
            var segments: [Piece] = []
            var current: Piece? = first
            var consumed: UInt64 = 0
            while let piece = current {
                if case .raw(let host, let length) = piece, case .raw(let h, let l)? = segments.last, h + l == host {
                    segments[segments.count - 1] = .raw(host: h, length: l + length)
                } else {
                    segments.append(piece)
                }
                consumed += piece.length
                current = nil
                guard start + consumed < header.size else { break }
                let next = try peekPiece(at: start + consumed)
                if case .zero = next { break }
                if consumed + next.length > UInt64(maxExtent) { break }
                lookahead = nil
                current = next
            }
            position = start + consumed
            return .data(offset: start, bytes: try materialize(segments, total: Int(consumed)))
        }
    }

    /// Produces the bytes of `segments` (plain and compressed pieces, in order): plain runs are read with
    /// one read each; compressed clusters are read in groups of nearby clusters and inflated in parallel.
    private func materialize(_ segments: [Piece], total: Int) throws -> [UInt8] {
        if segments.count == 1, case .raw(let host, let length) = segments[0] {
            return try readPlain(host: host, count: Int(length))
        }
        var jobs: [InflateJob] = []
        var output = [UInt8](repeating: 0, count: total)
        var destination = 0
        var group: (start: UInt64, bytes: [UInt8])?
        var groupEnd: UInt64 = 0
        var pendingGroup: [Int] = []  // jobs waiting for the current group's bytes
        func loadGroup() throws {
            guard let g = group, !pendingGroup.isEmpty else { return }
            let bytes = try source.read(at: g.start, count: Int(groupEnd - g.start))
            for index in pendingGroup { jobs[index].input = bytes }
            pendingGroup = []
        }
        for segment in segments {
            switch segment {
            case .zero:
                break
            case .raw(let host, let length):
                let bytes = try readPlain(host: host, count: Int(length))
                output.withUnsafeMutableBytes { out in
                    bytes.withUnsafeBytes {
                        out.baseAddress!.advanced(by: destination)
                            .copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                    }
                }
            case .compressed(let host, let size, let skip, let length):
                let available = UInt64(min(UInt64(size), source.size - host))
                let end = host + available
                // Compressed clusters are packed one after another: read neighbours (gaps under 64 KiB, groups
                // under 8 MiB) with one request, which matters when the source is an object store.
                if let g = group, host >= g.start, host <= groupEnd + 65536, max(end, groupEnd) - g.start <= 8 << 20 {
                    groupEnd = max(groupEnd, end)
                } else {
                    try loadGroup()
                    group = (host, [])
                    groupEnd = end
                }
                jobs.append(InflateJob(host: host, size: Int(available), skip: skip, length: Int(length),
                                       destination: destination, groupStart: group!.start))
                pendingGroup.append(jobs.count - 1)
            }
            destination += Int(segment.length)
        }
        try loadGroup()
        if jobs.isEmpty { return output }

        let clusterSize = Int(header.clusterSize)
        let zstd = header.compressionType == 1
        @Sendable func inflate(_ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer) throws {
            if zstd {
                try Decompression.zstd(input, into: output)
            } else {
                try Decompression.inflateRaw(input, into: output)
            }
        }
        let errors = InflateFailures()
        output.withUnsafeMutableBytes { out in
            // Each job writes only its own [destination, destination + length) range of `out`, and `out`
            // outlives `forEach`, which returns only when every job is done (this thread inflates too,
            // beside the blocking executor's threads that are free).
            let target = UncheckedBox(out)
            let work = jobs
            BlockingExecutor.shared.forEach(work.count) { index in
                let job = work[index]
                let from = Int(job.host - job.groupStart)
                do {
                    guard from + job.size <= job.input.count else {
                        throw DiskImageError(.truncatedImage, "short read of the compressed data")
                    }
                    try job.input.withUnsafeBytes { all in
                        let input = UnsafeRawBufferPointer(rebasing: all[from..<from + job.size])
                        let whole = job.skip == 0 && job.length == clusterSize
                        if whole {
                            // The common case: the cluster inflates straight into the extent.
                            let slot = UnsafeMutableRawBufferPointer(
                                rebasing: target.value[job.destination..<job.destination + clusterSize])
                            try inflate(input, slot)
                        } else {
                            var cluster = [UInt8](repeating: 0, count: clusterSize)
                            try cluster.withUnsafeMutableBytes { try inflate(input, $0) }
                            cluster.withUnsafeBytes { c in
                                target.value.baseAddress!.advanced(by: job.destination)
                                    .copyMemory(from: c.baseAddress!.advanced(by: job.skip), byteCount: job.length)
                            }
                        }
                    }
                } catch let error as DiskImageError {
                    errors.list.withLock { $0.append((index, error)) }
                } catch {
                    errors.list.withLock { $0.append((index, DiskImageError(.decompressionFailed, "\(error)"))) }
                }
            }
        }
        if let (index, error) = errors.list.withLock({ $0.min { $0.0 < $1.0 } }) {
            throw DiskImageError(
                error.code, "qcow2 compressed cluster at host offset \(jobs[index].host): \(error.message)",
                underlying: error)
        }
        return output
    }

    /// One compressed cluster to inflate into the output of `materialize`.
    private struct InflateJob: Sendable {
        var host: UInt64
        var size: Int
        var skip: Int
        var length: Int
        var destination: Int
        var groupStart: UInt64
        var input: [UInt8] = []
    }

    /// Walks every L2 table of the active L1 without reading guest data, validating every entry.
    ///
    /// - Returns: the bytes of the file that hold guest data (allocated clusters or subclusters, plus the
    ///   compressed size of compressed clusters).
    public func validateMetadata() throws -> UInt64 {
        var copy = self
        copy.position = 0
        copy.lookahead = nil
        var allocated: UInt64 = 0
        var position: UInt64 = 0
        while position < header.size {
            let piece = try copy.piece(at: position)
            switch piece {
            case .zero: break
            case .raw(_, let length): allocated += length
            case .compressed(_, let size, let skip, _): if skip == 0 { allocated += UInt64(size) }
            }
            position += piece.length
        }
        return allocated
    }

    // MARK: - Pieces

    /// A maximal run starting at some virtual offset that maps uniformly.
    private enum Piece {
        case zero(length: UInt64)
        /// `length` bytes at host offset `host`.
        case raw(host: UInt64, length: UInt64)
        /// A compressed cluster at `host` spanning `size` bytes; the piece is `length` bytes of the inflated
        /// cluster starting at `skip`.
        case compressed(host: UInt64, size: Int, skip: Int, length: UInt64)

        var length: UInt64 {
            switch self {
            case .zero(let length), .raw(_, let length), .compressed(_, _, _, let length): length
            }
        }
    }

    private mutating func takePiece() throws -> Piece {
        if let piece = lookahead {
            lookahead = nil
            return piece
        }
        return try piece(at: position)
    }

    private mutating func peekPiece(at offset: UInt64) throws -> Piece {
        if let piece = lookahead { return piece }
        let piece = try piece(at: offset)
        lookahead = piece
        return piece
    }

    /// The piece starting at virtual `offset` (never crossing a cluster boundary, except for an unallocated
    /// L1 entry, which covers its whole range) clipped to the virtual size.
    private mutating func piece(at offset: UInt64) throws -> Piece {
        let h = header
        let remaining = h.size - offset
        let l1Index = Int(offset >> h.l1Shift)
        let l2Offset = try l2Offset(forL1Index: l1Index)
        guard l2Offset != 0 else {
            let rangeEnd = (UInt64(l1Index) + 1) << h.l1Shift
            return .zero(length: min(rangeEnd - offset, remaining))
        }
        let entries = try l2Table(at: l2Offset)
        let clusterIndex = Int((offset >> h.clusterBits) & UInt64(h.l2Entries - 1))
        let inCluster = offset & (h.clusterSize - 1)
        let toClusterEnd = min(h.clusterSize - inCluster, remaining)
        let entry = entries[clusterIndex * (h.extendedL2 ? 2 : 1)]
        if entry == 0 && !h.extendedL2 {
            // A run of unallocated entries is one piece, however long (it costs one scan of the table).
            var last = clusterIndex
            while last + 1 < h.l2Entries && entries[last + 1] == 0 { last += 1 }
            let runEnd = (offset - inCluster) + UInt64(last - clusterIndex + 1) * h.clusterSize
            return .zero(length: min(runEnd - offset, remaining))
        }

        if entry & Header.compressedFlag != 0 {
            let hostOffset = entry & h.compressedOffsetMask
            let sectors = ((entry >> h.compressedSizeShift) & h.compressedSizeMask) + 1
            let size = Int(sectors * 512 - (hostOffset & 511))
            guard hostOffset >= h.clusterSize else {
                throw DiskImageError(
                    .corruptImage,
                    "qcow2 compressed cluster for guest offset \(offset) at host offset \(hostOffset) "
                        + "overlaps the header")
            }
            guard hostOffset < source.size else {
                throw DiskImageError(
                    .truncatedImage,
                    "qcow2 compressed cluster for guest offset \(offset) at host offset \(hostOffset) "
                        + "lies past the end of the file (\(source.size) bytes)")
            }
            return .compressed(host: hostOffset, size: size, skip: Int(inCluster), length: toClusterEnd)
        }

        let hostCluster = entry & Header.l2OffsetMask
        guard h.extendedL2 else {
            // v3 "reads as zero" (bit 0) wins over any host offset; offset 0 is unallocated (no backing: zero).
            if entry & Header.zeroFlag != 0 || hostCluster == 0 { return .zero(length: toClusterEnd) }
            try checkDataCluster(hostCluster, entry: entry, guestOffset: offset)
            return .raw(host: hostCluster + inCluster, length: toClusterEnd)
        }

        // Extended L2: 32 subclusters, allocation bitmap in bits 0-31, zero bitmap in bits 32-63.
        let bitmap = entries[clusterIndex * 2 + 1]
        let alloc = UInt32(truncatingIfNeeded: bitmap)
        let zero = UInt32(truncatingIfNeeded: bitmap >> 32)
        guard alloc & zero == 0, hostCluster != 0 || alloc == 0 else {
            throw DiskImageError(
                .corruptImage,
                "qcow2 extended L2 entry for guest offset \(offset) has an invalid subcluster bitmap \(hex(bitmap))")
        }
        if alloc != 0 { try checkDataCluster(hostCluster, entry: entry, guestOffset: offset) }
        let sub = h.clusterSize / 32
        let firstSub = Int(inCluster / sub)
        func state(_ i: Int) -> Int { alloc >> i & 1 != 0 ? 1 : 0 }
        let kind = state(firstSub)
        var last = firstSub
        while last + 1 < 32 && state(last + 1) == kind { last += 1 }
        let length = min(UInt64(last + 1) * sub - inCluster, remaining)
        return kind == 1 ? .raw(host: hostCluster + inCluster, length: length) : .zero(length: length)
    }

    private func checkDataCluster(_ hostCluster: UInt64, entry: UInt64, guestOffset: UInt64) throws {
        let h = header
        guard hostCluster & (h.clusterSize - 1) == 0 else {
            throw DiskImageError(
                .corruptImage,
                "qcow2 L2 entry \(hex(entry)) for guest offset \(guestOffset) is not cluster aligned")
        }
        guard hostCluster >= h.clusterSize else {
            throw DiskImageError(
                .corruptImage, "qcow2 data cluster for guest offset \(guestOffset) overlaps the header (host offset 0)")
        }
        // Only the start must lie inside the file: qemu writes a partial last cluster (extended L2 images
        // allocate a cluster but write only the subclusters in use) and reads the missing tail as zeros.
        guard hostCluster < source.size else {
            throw DiskImageError(
                .truncatedImage,
                "qcow2 data cluster for guest offset \(guestOffset) at host offset \(hostCluster) "
                    + "lies past the end of the file (\(source.size) bytes)")
        }
    }

    /// The L2 table offset of L1 entry `index` (0 when unallocated), validated.
    private func l2Offset(forL1Index index: Int) throws -> UInt64 {
        guard index < l1.count else {
            throw DiskImageError(.corruptImage, "qcow2 L1 table (l1_size \(l1.count)) too small for the virtual size")
        }
        let entry = l1[index]
        let offset = entry & Header.l1OffsetMask
        guard offset != 0 else { return 0 }
        guard offset & (header.clusterSize - 1) == 0 else {
            throw DiskImageError(.corruptImage, "qcow2 L1 entry \(index) (\(hex(entry))) is not cluster aligned")
        }
        guard offset >= header.clusterSize else {
            throw DiskImageError(.corruptImage, "qcow2 L1 entry \(index) points into the header cluster")
        }
        guard offset < source.size, source.size - offset >= header.clusterSize else {
            throw DiskImageError(
                .truncatedImage,
                "qcow2 L1 entry \(index): L2 table at \(offset) lies past the end of the file (\(source.size) bytes)")
        }
        return offset
    }

    private mutating func l2Table(at offset: UInt64) throws -> [UInt64] {
        if let cached = cachedL2, cached.offset == offset { return cached.entries }
        let bytes = try source.readExactly(at: offset, count: Int(header.clusterSize), what: "qcow2 L2 table")
        let entries = bytes.withUnsafeBytes { raw in
            [UInt64](unsafeUninitializedCapacity: bytes.count / 8) { buffer, count in
                for i in 0..<bytes.count / 8 {
                    buffer[i] = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
                }
                count = bytes.count / 8
            }
        }
        cachedL2 = (offset, entries)
        return entries
    }

    /// Reads `count` bytes of plain clusters at `host`; bytes past the end of the file read as zeros, as in
    /// qemu (see `checkDataCluster`).
    private func readPlain(host: UInt64, count: Int) throws -> [UInt8] {
        var bytes = try source.read(at: host, count: count)
        if bytes.count < count { bytes += [UInt8](repeating: 0, count: count - bytes.count) }
        return bytes
    }
}

extension QCOW2Reader {
    /// qemu's QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOT_EXTRA_DATA, QCOW_MAX_L1_SIZE and QCOW_MAX_REFTABLE_SIZE.
    static let maxSnapshots: UInt32 = 65536
    static let maxSnapshotExtraData: UInt32 = 1024
    static let maxSnapshotTableBytes: UInt64 = 1024 * 65536
    static let maxL1Bytes: UInt64 = 32 << 20
    static let maxRefcountTableBytes: UInt64 = 8 << 20

    /// Checks the refcount table's placement as qemu does when it opens an image (`qcow2_do_open`): present,
    /// not larger than 8 MiB, cluster aligned, off the header and inside the file. Its entries are not read
    /// (snapimport never allocates), but a header that lies about it is not a qcow2 qemu would open.
    static func checkRefcountTable(source: any ByteSource, header: Header) throws {
        let clusters = UInt64(header.refcountTableClusters)
        guard clusters > 0 else {
            throw DiskImageError(.corruptImage, "qcow2 refcount_table_clusters is 0: the image has no refcount table")
        }
        let bytes = clusters << header.clusterBits
        guard bytes <= maxRefcountTableBytes else {
            throw DiskImageError(
                .corruptImage,
                "qcow2 refcount_table_clusters \(clusters) (\(bytes) bytes) exceeds qemu's limit of \(maxRefcountTableBytes)")
        }
        try checkTable(
            source: source, header: header, offset: header.refcountTableOffset, bytes: bytes,
            what: "qcow2 refcount table (refcount_table_offset)")
    }

    /// Checks the internal snapshot table as qemu does when it opens an image (`qcow2_do_open` and
    /// `qcow2_read_snapshots`, qcow2.rst "Snapshots"): at most 65536 snapshots; the table cluster aligned, off
    /// the header and inside the file, at most 64 MiB; each entry's extra data at most 1 KiB (and, in version 3,
    /// at least the 16 bytes the spec requires) and its id and name inside the table; each snapshot's L1
    /// table at most 32 MiB, cluster aligned, off the header and inside the file. Snapshots are never read
    /// (conversion reads the active layer); they are checked so that an image qemu refuses is refused here.
    ///
    /// Memory: one 40-byte entry header at a time.
    static func checkSnapshotTable(source: any ByteSource, header: Header) throws {
        let count = header.snapshotCount
        guard count <= maxSnapshots else {
            throw DiskImageError(.corruptImage, "qcow2 nb_snapshots \(count) exceeds qemu's limit of \(maxSnapshots)")
        }
        let start = header.snapshotsOffset
        guard start & (header.clusterSize - 1) == 0 else {
            throw DiskImageError(.corruptImage, "qcow2 snapshots_offset \(start) is not cluster aligned")
        }
        guard count > 0 else { return }
        guard start >= header.clusterSize else {
            throw DiskImageError(.corruptImage, "qcow2 snapshot table at snapshots_offset \(start) overlaps the header")
        }
        var offset = start
        for index in 0..<Int(count) {
            offset = (offset + 7) & ~7
            guard offset - start + 40 <= maxSnapshotTableBytes else {
                throw DiskImageError(
                    .corruptImage, "qcow2 snapshot table is larger than qemu's limit of \(maxSnapshotTableBytes) bytes")
            }
            let entry = FieldReader(
                try source.readExactly(at: offset, count: 40, what: "qcow2 snapshot table entry \(index)"))
            let l1Offset = entry.be64(0)
            let l1Size = UInt64(entry.be32(8))
            let idSize = UInt64(entry.be16(12))
            let nameSize = UInt64(entry.be16(14))
            let extraSize = entry.be32(36)
            guard extraSize <= maxSnapshotExtraData else {
                throw DiskImageError(
                    .corruptImage,
                    "qcow2 snapshot \(index) extra_data_size \(extraSize) exceeds qemu's limit of \(maxSnapshotExtraData)")
            }
            if header.version >= 3 && extraSize < 16 {
                throw DiskImageError(
                    .corruptImage,
                    "qcow2 snapshot \(index) extra_data_size \(extraSize) is below the 16 bytes version 3 requires")
            }
            offset += 40 + UInt64(extraSize) + idSize + nameSize
            guard offset - start <= maxSnapshotTableBytes else {
                throw DiskImageError(
                    .corruptImage, "qcow2 snapshot table is larger than qemu's limit of \(maxSnapshotTableBytes) bytes")
            }
            guard offset <= source.size else {
                throw DiskImageError(
                    .truncatedImage,
                    "qcow2 snapshot \(index) (id \(idSize) and name \(nameSize) bytes) runs past the end of the file "
                        + "(\(source.size) bytes)")
            }
            guard l1Size * 8 <= maxL1Bytes else {
                throw DiskImageError(
                    .corruptImage, "qcow2 snapshot \(index) l1_size \(l1Size) exceeds qemu's limit of \(maxL1Bytes / 8)")
            }
            try checkTable(
                source: source, header: header, offset: l1Offset, bytes: l1Size * 8,
                what: "qcow2 snapshot \(index) L1 table (l1_table_offset)")
        }
    }

    /// A table of `bytes` bytes at `offset`: cluster aligned, off the header cluster, inside the file.
    private static func checkTable(source: any ByteSource, header: Header, offset: UInt64, bytes: UInt64, what: String)
        throws
    {
        guard offset & (header.clusterSize - 1) == 0 else {
            throw DiskImageError(.corruptImage, "\(what) at \(offset) is not cluster aligned")
        }
        guard bytes > 0 else { return }
        guard offset >= header.clusterSize else {
            throw DiskImageError(.corruptImage, "\(what) at \(offset) overlaps the header")
        }
        let (end, overflow) = offset.addingReportingOverflow(bytes)
        guard !overflow, end <= source.size else {
            throw DiskImageError(
                .truncatedImage,
                "\(what) at \(offset) (+\(bytes) bytes) lies past the end of the file (\(source.size) bytes)")
        }
    }
}

/// Formats `value` as hexadecimal for messages.
func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

extension QCOW2Reader {
    /// The validated qcow2 header (qcow2.rst "Header" and "Header extensions").
    struct Header {
        static let l1OffsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
        static let l2OffsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
        static let compressedFlag: UInt64 = 1 << 62
        static let zeroFlag: UInt64 = 1

        var version: UInt32
        var clusterBits: UInt64
        var clusterSize: UInt64
        var size: UInt64
        var l1Size: UInt32
        var l1TableOffset: UInt64
        var extendedL2: Bool
        var compressionType: UInt8
        /// Entries per L2 table.
        var l2Entries: Int
        /// Guest bytes covered by one L1 entry, as a shift.
        var l1Shift: UInt64
        var l1EntriesNeeded: Int
        var compressedOffsetMask: UInt64
        var compressedSizeShift: UInt64
        var compressedSizeMask: UInt64
        var refcountTableOffset: UInt64
        var refcountTableClusters: UInt32
        var snapshotCount: UInt32
        var snapshotsOffset: UInt64

        /// Incompatible feature bits (qcow2.rst, header bytes 72-79).
        enum Incompatible {
            static let dirty: UInt64 = 1 << 0
            static let corrupt: UInt64 = 1 << 1
            static let externalDataFile: UInt64 = 1 << 2
            static let compressionType: UInt64 = 1 << 3
            static let extendedL2: UInt64 = 1 << 4
            static let known: UInt64 = 0b11111
        }

        /// Header extension types (qcow2.rst "Header extensions").
        enum Extension {
            static let end: UInt32 = 0
            static let backingFormat: UInt32 = 0xE279_2ACA
            static let featureNames: UInt32 = 0x6803_F857
            static let bitmaps: UInt32 = 0x2385_2875
            static let fullDiskEncryption: UInt32 = 0x0537_BE77
            static let externalDataFile: UInt32 = 0x4441_5441
        }

        init(source: any ByteSource, limits: InspectionLimits) throws {
            let fileSize = source.size
            let head = try source.readExactly(at: 0, count: min(Int(min(fileSize, 512)), 512), what: "qcow2 header")
            guard head.count >= 72 else {
                throw DiskImageError(.truncatedImage, "qcow2 header needs 72 bytes, the file has \(head.count)")
            }
            let f = FieldReader(head)
            version = f.be32(4)
            guard version == 2 || version == 3 else {
                throw DiskImageError(.unsupportedFeature, "qcow2 version \(version) is not supported (only 2 and 3)")
            }
            let cb = f.be32(20)
            guard (9...21).contains(cb) else {
                throw DiskImageError(.corruptImage, "qcow2 cluster_bits \(cb) is outside 9...21")
            }
            clusterBits = UInt64(cb)
            clusterSize = 1 << clusterBits
            // qemu counts whole sectors (total_sectors = size / 512): a size that is not a multiple of 512
            // reads, and converts, as the size rounded down.
            size = f.be64(24) / 512 * 512

            var incompatible: UInt64 = 0
            var headerLength: UInt64 = 72
            compressionType = 0
            if version == 3 {
                guard head.count >= 104 else {
                    throw DiskImageError(.truncatedImage, "qcow2 v3 header needs 104 bytes, the file has \(head.count)")
                }
                incompatible = f.be64(72)
                let refcountOrder = f.be32(96)
                headerLength = UInt64(f.be32(100))
                guard headerLength >= 104, headerLength % 8 == 0, headerLength <= clusterSize else {
                    throw DiskImageError(.corruptImage, "qcow2 header_length \(headerLength) is invalid")
                }
                guard refcountOrder <= 6 else {
                    throw DiskImageError(.corruptImage, "qcow2 refcount_order \(refcountOrder) is above 6")
                }
                if headerLength > 104 {
                    guard head.count > 104 else {
                        throw DiskImageError(
                            .truncatedImage, "qcow2 header (header_length \(headerLength)) is cut short")
                    }
                    compressionType = head[104]
                }
            }

            // Extensions first: the feature-name table names unknown bits in messages.
            let extensions = try Header.readExtensions(
                source: source, from: headerLength, clusterSize: clusterSize)

            let backingOffset = f.be64(8)
            if backingOffset != 0 {
                let length = min(Int(f.be32(16)), 1023)
                let name = (try? source.read(at: backingOffset, count: length)).map(Header.printable) ?? ""
                throw DiskImageError(
                    .backingFileNotAllowed,
                    "qcow2 backing_file_offset is \(backingOffset): the image depends on a backing file \"\(name)\"")
            }
            if incompatible & Incompatible.externalDataFile != 0 || extensions.externalDataFile != nil {
                let name = extensions.externalDataFile.map { " \"\($0)\"" } ?? ""
                throw DiskImageError(
                    .externalDataFileNotAllowed,
                    "qcow2 image uses an external data file\(name) (incompatible bit 2 / header extension 0x44415441)")
            }
            let crypt = f.be32(32)
            if crypt != 0 {
                let kind = crypt == 1 ? "AES" : crypt == 2 ? "LUKS" : "unknown"
                throw DiskImageError(
                    .encryptedImage, "qcow2 crypt_method is \(crypt) (\(kind)): the image is encrypted")
            }
            if extensions.hasEncryptionHeader {
                throw DiskImageError(
                    .encryptedImage, "qcow2 image carries a full disk encryption header extension (0x0537be77)")
            }
            if incompatible & Incompatible.corrupt != 0 {
                throw DiskImageError(.corruptImage, "qcow2 incompatible feature bit 1 (corrupt) is set")
            }
            let unknown = incompatible & ~Incompatible.known
            if unknown != 0 {
                let bits = (0..<64).filter { unknown >> $0 & 1 != 0 }
                let names = bits.map { bit in
                    extensions.incompatibleNames[bit].map { "bit \(bit) (\($0))" } ?? "bit \(bit)"
                }
                throw DiskImageError(
                    .unsupportedFeature,
                    "qcow2 unknown incompatible feature \(names.joined(separator: ", ")) is set")
            }
            if incompatible & Incompatible.compressionType != 0 {
                guard compressionType <= 1 else {
                    throw DiskImageError(
                        .unsupportedFeature, "qcow2 compression_type \(compressionType) is unknown (0 zlib, 1 zstd)")
                }
            } else if compressionType != 0 {
                throw DiskImageError(
                    .corruptImage,
                    "qcow2 compression_type \(compressionType) without the compression-type incompatible bit")
            }
            extendedL2 = incompatible & Incompatible.extendedL2 != 0
            if extendedL2 && clusterBits < 14 {
                throw DiskImageError(.corruptImage, "qcow2 extended L2 entries need clusters of 16 KiB or more")
            }

            guard size <= limits.maxVirtualSize else {
                throw DiskImageError(
                    .virtualSizeTooLarge,
                    "qcow2 virtual size \(size) exceeds the limit of \(limits.maxVirtualSize) bytes")
            }
            guard size > 0 else { throw DiskImageError(.emptyImage, "qcow2 virtual size is 0") }

            l2Entries = Int(clusterSize) / (extendedL2 ? 16 : 8)
            l1Shift = clusterBits + UInt64(l2Entries.trailingZeroBitCount)
            let perL1 = UInt64(1) << l1Shift
            let needed = size / perL1 + (size % perL1 == 0 ? 0 : 1)
            l1Size = f.be32(36)
            l1TableOffset = f.be64(40)
            guard UInt64(l1Size) * 8 <= UInt64(limits.metadataBudget) else {
                throw DiskImageError(
                    .metadataTooLarge,
                    "qcow2 l1_size \(l1Size) needs \(UInt64(l1Size) * 8) bytes, "
                        + "over the metadata budget of \(limits.metadataBudget)")
            }
            // The reader holds the L1 table and one L2 table (one cluster) at a time.
            guard UInt64(l1Size) * 8 + clusterSize <= UInt64(limits.metadataBudget) else {
                throw DiskImageError(
                    .metadataTooLarge,
                    "qcow2 l1_size \(l1Size) and cluster_bits \(clusterBits) need "
                        + "\(UInt64(l1Size) * 8 + clusterSize) bytes of tables, over the metadata budget of "
                        + "\(limits.metadataBudget)")
            }
            guard UInt64(l1Size) >= needed else {
                throw DiskImageError(
                    .corruptImage, "qcow2 l1_size \(l1Size) is too small for virtual size \(size) (needs \(needed))")
            }
            l1EntriesNeeded = Int(needed)
            if l1Size > 0 {
                guard l1TableOffset & (clusterSize - 1) == 0 else {
                    throw DiskImageError(.corruptImage, "qcow2 l1_table_offset \(l1TableOffset) is not cluster aligned")
                }
                guard l1TableOffset >= clusterSize else {
                    throw DiskImageError(.corruptImage, "qcow2 l1_table_offset \(l1TableOffset) overlaps the header")
                }
                let (end, overflow) = l1TableOffset.addingReportingOverflow(UInt64(l1Size) * 8)
                guard !overflow, end <= fileSize else {
                    throw DiskImageError(
                        .truncatedImage,
                        "qcow2 L1 table at l1_table_offset \(l1TableOffset) (\(l1Size) entries) "
                            + "lies past the end of the file (\(fileSize) bytes)")
                }
            }
            refcountTableOffset = f.be64(48)
            refcountTableClusters = f.be32(56)
            snapshotCount = f.be32(60)
            snapshotsOffset = f.be64(64)
            let x = 62 - (clusterBits - 8)
            compressedSizeShift = x
            compressedOffsetMask = (UInt64(1) << x) - 1
            compressedSizeMask = (UInt64(1) << (clusterBits - 8)) - 1
        }

        struct Extensions {
            var externalDataFile: String?
            var hasEncryptionHeader = false
            var incompatibleNames: [Int: String] = [:]
        }

        /// Parses the header extensions between the header and the end of the first cluster.
        static func readExtensions(source: any ByteSource, from start: UInt64, clusterSize: UInt64) throws
            -> Extensions
        {
            var result = Extensions()
            let end = min(clusterSize, source.size)
            guard start < end else { return result }
            let area = try source.readExactly(at: start, count: Int(end - start), what: "qcow2 header extensions")
            let f = FieldReader(area)
            var offset = 0
            while offset + 8 <= area.count {
                let type = f.be32(offset)
                let length = Int(f.be32(offset + 4))
                if type == Extension.end { break }
                let dataStart = offset + 8
                guard length <= area.count - dataStart else {
                    throw DiskImageError(
                        .corruptImage,
                        "qcow2 header extension \(hex(UInt64(type))) (length \(length)) runs past the first cluster")
                }
                let data = Array(area[dataStart..<dataStart + length])
                switch type {
                case Extension.externalDataFile:
                    result.externalDataFile = printable(data)
                case Extension.fullDiskEncryption:
                    result.hasEncryptionHeader = true
                case Extension.featureNames:
                    var i = 0
                    while i + 48 <= data.count {
                        if data[i] == 0 {
                            result.incompatibleNames[Int(data[i + 1])] = printable(Array(data[i + 2..<i + 48]))
                        }
                        i += 48
                    }
                default:
                    break
                }
                offset = dataStart + (length + 7) / 8 * 8
            }
            return result
        }

        /// A name from the image made safe for a message: printable ASCII up to the first NUL, at most 200
        /// characters.
        static func printable(_ bytes: [UInt8]) -> String {
            let cut = bytes.prefix { $0 != 0 }.prefix(200)
            return String(decoding: cut.map { (0x20..<0x7F).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
        }
    }
}

/// The failures of one parallel inflate, by job index (the first one is reported).
private final class InflateFailures: Sendable {
    let list = Mutex<[(Int, DiskImageError)]>([])
}
