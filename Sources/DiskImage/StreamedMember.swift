// A raw or streamOptimized VMDK disk inside a compressed stream (or a compressed tar, a zip) is converted
// while it is decompressed, without a temporary file. A first pass reads the member once without keeping it
// (its size, its first bytes and its last sector are all detection needs: a raw disk's size is known only at
// the end of a compressed stream, and a fixed VHD is told from raw only by its last sector); a second pass
// decompresses it again and hands the bytes to the reader as they come. A streamOptimized VMDK alone in a
// compressed stream needs no first pass: its header gives its size and its markers end the stream.

/// How much of a member's start the first pass keeps: every signature detection looks for (the ISO 9660
/// volume descriptors up to sector 16 + 64 of 2048 bytes, a GPT at 4096, the text check) lies inside it.
let streamHeadBytes = 256 << 10

/// The bytes of a member that a first pass kept: its first `head.count` bytes and its last sector, and its
/// size. Enough for format detection and a raw disk's ISO checks; any other read is a programming error and
/// throws.
struct ProbeByteSource: ByteSource {
    let size: UInt64
    let head: [UInt8]
    /// The last `tail.count` (at most 512) bytes.
    let tail: [UInt8]

    func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard offset < size, count > 0 else { return [] }
        let end = min(size, offset + UInt64(count))
        if end <= UInt64(head.count) { return Array(head[Int(offset)..<Int(end)]) }
        let tailStart = size - UInt64(tail.count)
        if offset >= tailStart { return Array(tail[Int(offset - tailStart)..<Int(end - tailStart)]) }
        throw DiskImageError(
            .ioError, "internal: bytes \(offset)..<\(end) of a streamed member were not kept by the first pass")
    }
}

/// The data of the current entry of an `ArchiveReader` as a forward-only stream: holes of a sparse entry
/// read as zeros, and the entry never yields more than `limit` bytes.
struct ArchiveEntryStream: ForwardByteStream {
    let archive: ArchiveReader
    /// The entry's recorded size (zeros pad a sparse entry's trailing hole up to it), if any.
    let recordedSize: UInt64?
    /// More bytes than this is `tooLong`.
    let limit: UInt64
    let tooLong: @Sendable (UInt64) -> DiskImageError
    let isCancelled: (@Sendable () -> Bool)?
    /// Bytes of the entry consumed from the archive (holes included).
    private(set) var position: UInt64 = 0
    /// Bytes handed out so far.
    private(set) var delivered: UInt64 = 0
    private var pending: [UInt8]
    private var pendingStart = 0
    /// A block read ahead of a hole: (its offset in the entry, its bytes).
    private var ahead: (UInt64, [UInt8])?
    private var ended = false

    init(
        archive: ArchiveReader, recordedSize: UInt64?, limit: UInt64,
        isCancelled: (@Sendable () -> Bool)?, tooLong: @escaping @Sendable (UInt64) -> DiskImageError
    ) {
        self.archive = archive
        self.recordedSize = recordedSize
        self.limit = limit
        self.isCancelled = isCancelled
        self.tooLong = tooLong
        pending = []
    }

    mutating func read(max: Int) throws -> [UInt8] {
        if Task.isCancelled || isCancelled?() == true { throw CancellationError() }
        let wanted = Swift.max(1, max)
        if pendingStart == pending.count {
            guard try refill() else { return [] }
        }
        let take = min(wanted, pending.count - pendingStart)
        let out = Array(pending[pendingStart..<pendingStart + take])
        pendingStart += take
        delivered += UInt64(take)
        return out
    }

    /// Loads the next piece into `pending`: zeros of a hole, or a block's bytes. False at the end.
    private mutating func refill() throws -> Bool {
        pending = []
        pendingStart = 0
        if ahead == nil && !ended {
            if let (offset, block) = try archive.nextBlock() {
                guard offset >= position else {
                    throw DiskImageError(
                        .corruptImage, "container member data at offset \(offset) overlaps data already read")
                }
                ahead = (offset, Array(block))
            } else {
                ended = true
            }
        }
        let next = ahead?.0 ?? Swift.max(position, recordedSize ?? position)
        if next > position {
            // A hole (sparse entry) before the next block or the recorded end: zeros, 1 MiB at a time.
            let count = Int(min(next - position, 1 << 20))
            try advance(by: UInt64(count))
            pending = [UInt8](repeating: 0, count: count)
            return true
        }
        guard let (_, bytes) = ahead else { return false }
        ahead = nil
        if bytes.isEmpty { return try refill() }
        try advance(by: UInt64(bytes.count))
        pending = bytes
        return true
    }

    private mutating func advance(by count: UInt64) throws {
        let (end, overflow) = position.addingReportingOverflow(count)
        guard !overflow, end <= limit else { throw tooLong(limit) }
        position = end
    }

    /// Hands `bytes` (the last ones read) out again before the rest of the entry.
    mutating func unread(_ bytes: [UInt8]) {
        pending = bytes + pending[pendingStart...]
        pendingStart = 0
        delivered -= UInt64(bytes.count)
    }

    /// Reads (and drops) the rest of the entry; returns how many bytes it held and its last `tailCount`.
    mutating func drain(tailCount: Int) throws -> (count: UInt64, tail: [UInt8]) {
        var tail: [UInt8] = []
        while true {
            let chunk = try read(max: 4 << 20)
            if chunk.isEmpty { break }
            if chunk.count >= tailCount {
                tail = Array(chunk.suffix(tailCount))
            } else {
                tail = Array((tail + chunk).suffix(tailCount))
            }
        }
        return (delivered, tail)
    }
}

/// How a disk found in a sequential container is read: from a temporary file, or streamed.
enum TakenMember {
    /// Spilled into a sparse temporary file (a random-access format, or a nested container).
    case file(FileByteSource)
    /// Read once by a first pass; `plan` decompresses it again for the reader.
    case stream(StreamPlan)

    /// What detection reads: the file, or the first pass's probe.
    var source: any ByteSource {
        switch self {
        case .file(let file): file
        case .stream(let plan): plan.probe
        }
    }
}

/// A member to be converted while it is decompressed (see the top of this file).
///
/// Not `Sendable`: it holds libarchive handles, used by one task at a time like the reader it makes.
final class StreamPlan {
    /// The first pass's view of the member (size, first bytes, last sector).
    let probe: ProbeByteSource
    /// Opens the container again from its start.
    private let reopen: () throws -> ArchiveReader
    /// The member's position among the container's entries (1 for the first).
    private let ordinal: Int
    private let member: String?
    private let recordedSize: UInt64?
    /// A streamOptimized VMDK alone in a stream: the first pass's stream, to be read on from its start.
    private var direct: ArchiveEntryStream?
    private let limits: InspectionLimits
    private let isCancelled: (@Sendable () -> Bool)?

    init(
        probe: ProbeByteSource, reopen: @escaping () throws -> ArchiveReader, ordinal: Int, member: String?,
        recordedSize: UInt64?, direct: ArchiveEntryStream?, limits: InspectionLimits,
        isCancelled: (@Sendable () -> Bool)?
    ) {
        self.probe = probe
        self.reopen = reopen
        self.ordinal = ordinal
        self.member = member
        self.recordedSize = recordedSize
        self.direct = direct
        self.limits = limits
        self.isCancelled = isCancelled
    }

    var what: String { member.map { "member \"\(OVFDescriptor.printable($0))\"" } ?? "the stream" }

    /// The reader of the member, whose format detection found to be `format`.
    ///
    /// raw and ISO are streamed by `StreamRawReader`, a VMDK by `VMDKStreamReader` (it must be
    /// streamOptimized); any other format (a fixed VHD, told from raw by its last sector) is decompressed
    /// again into a temporary file and read from there.
    func reader(format: ImageFormat) throws -> any DiskReader {
        switch format {
        case .raw, .iso:
            return try StreamRawReader(stream: try secondPass(exact: true), probe: probe, format: format, limits: limits)
        case .vmdk:
            let stream: ArchiveEntryStream
            if let first = direct {
                direct = nil
                stream = first
            } else {
                stream = try secondPass(exact: true)
            }
            return try VMDKStreamReader(stream: stream, limits: limits)
        case .qcow2, .vhd, .vhdx, .vdi:
            let writer = try SpillWriter(directory: limits.scratchDirectory, limit: limits.maxVirtualSize)
            var stream = try secondPass(exact: true)
            var offset: UInt64 = 0
            while true {
                let chunk = try stream.read(max: 4 << 20)
                if chunk.isEmpty { break }
                try chunk.withUnsafeBytes { try writer.write($0, at: offset) }
                offset += UInt64(chunk.count)
            }
            let file = try writer.finish(size: probe.size)
            return try DiskImage.openBare(Unwrapped(source: file), claimedFormat: nil, limits: limits).base
        }
    }

    /// The container opened again and read up to the member; with `exact`, the stream yields the first
    /// pass's byte count or fails (the object changed between the passes).
    private func secondPass(exact: Bool) throws -> ArchiveEntryStream {
        let archive = try reopen()
        for index in 1...ordinal {
            guard let entry = try archive.nextEntry() else {
                throw DiskImageError(.corruptImage, "the container changed between its two reads (\(what) is gone)")
            }
            if index < ordinal { try archive.skipEntry() }
            if index == ordinal, let member, Containers.normalized(entry.name) != member {
                throw DiskImageError(.corruptImage, "the container changed between its two reads (\(what) is gone)")
            }
        }
        let size = probe.size
        let what = what
        return ArchiveEntryStream(
            archive: archive, recordedSize: recordedSize, limit: exact ? size : limits.maxVirtualSize,
            isCancelled: isCancelled,
            tooLong: { _ in
                DiskImageError(
                    .corruptImage, "\(what) holds more than the \(size) bytes its first read found (it changed)")
            })
    }

    static func tooLong(_ what: String) -> @Sendable (UInt64) -> DiskImageError {
        { limit in DiskImageError(.virtualSizeTooLarge, "\(what) decompresses to more than the limit of \(limit) bytes") }
    }
}

/// A raw disk (or ISO 9660 image) read from a forward-only stream of known size: the same extents as
/// `RawReader` (chunks of `chunkSize`, all-zero chunks as `.zero`, the last sector padded with zeros).
struct StreamRawReader<Stream: ForwardByteStream>: DiskReader {
    let info: ImageInfo
    private var cursor: ForwardCursor<Stream>
    private let size: UInt64
    private var position: UInt64 = 0
    private let chunkSize: Int

    /// - Parameter probe: the member's first bytes and size (the ISO checks read the volume descriptors).
    init(stream: Stream, probe: ProbeByteSource, format: ImageFormat, limits: InspectionLimits, chunkSize: Int = 4 << 20)
        throws
    {
        guard probe.size > 0 else { throw DiskImageError(.emptyImage, "the image is empty (0 bytes)") }
        guard probe.size <= limits.maxVirtualSize else {
            throw DiskImageError(
                .virtualSizeTooLarge, "virtual size \(probe.size) exceeds the limit of \(limits.maxVirtualSize) bytes")
        }
        if format == .iso { try RawReader.checkVolumeSize(probe) }
        let bootable = format == .iso ? try RawReader.hasElTorito(probe) : false
        cursor = ForwardCursor(stream: stream)
        size = probe.size
        self.chunkSize = max(512, chunkSize)
        info = ImageInfo(
            format: format, virtualSize: (probe.size + 511) / 512 * 512, allocatedBytes: probe.size, bootable: bootable)
    }

    mutating func next() throws -> Extent? {
        guard position < info.virtualSize else { return nil }
        let count = Int(min(UInt64(chunkSize), info.virtualSize - position))
        let present = Int(min(UInt64(count), size - min(size, position)))
        var bytes = try cursor.read(present, what: "raw data at \(position)")
        if position + UInt64(present) >= size {
            // The last piece: read the stream to its end, so a longer stream (changed since the first pass)
            // fails and the compressed stream's own check (xz CRC, gzip trailer) is verified.
            _ = try cursor.restIsZero()
        }
        if bytes.count < count { bytes += [UInt8](repeating: 0, count: count - bytes.count) }
        defer { position += UInt64(count) }
        if FieldReader.isAllZero(bytes) { return .zero(offset: position, length: UInt64(count)) }
        return .data(offset: position, bytes: bytes)
    }
}
