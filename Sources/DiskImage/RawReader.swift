/// Reads a raw disk (or an ISO 9660 image, whose content is raw): the virtual disk is the file.
///
/// The virtual size is the file size rounded up to whole 512-byte sectors, as qemu reports it.
/// Chunks of `chunkSize` bytes are read in order; a chunk that is entirely zero is emitted as `.zero`
/// so sparse outputs stay sparse.
public struct RawReader: DiskReader {
    public let info: ImageInfo
    private let source: any ByteSource
    private var position: UInt64 = 0
    private let chunkSize: Int

    /// Opens `source` as raw content.
    ///
    /// - Parameters:
    ///   - format: `.raw`, or `.iso` for an ISO 9660 image (bootable when an El Torito boot record exists).
    ///   - chunkSize: the size of the data extents produced.
    public init(source: any ByteSource, limits: InspectionLimits, format: ImageFormat = .raw, chunkSize: Int = 4 << 20)
        throws
    {
        guard source.size > 0 else { throw DiskImageError(.emptyImage, "the image is empty (0 bytes)") }
        guard source.size <= limits.maxVirtualSize else {
            throw DiskImageError(
                .virtualSizeTooLarge, "virtual size \(source.size) exceeds the limit of \(limits.maxVirtualSize) bytes")
        }
        self.source = source
        self.chunkSize = max(512, chunkSize)
        if format == .iso { try RawReader.checkVolumeSize(source) }
        let bootable = format == .iso ? try RawReader.hasElTorito(source) : false
        // qemu counts whole 512-byte sectors: a file whose length is not a multiple of 512 reads as if
        // padded with zeros to the next sector, and `qemu-img convert` writes that padding.
        let virtualSize = (source.size + 511) / 512 * 512
        info = ImageInfo(format: format, virtualSize: virtualSize, allocatedBytes: source.size, bootable: bootable)
    }

    public mutating func next() throws -> Extent? {
        guard position < info.virtualSize else { return nil }
        let count = Int(min(UInt64(chunkSize), info.virtualSize - position))
        var bytes = try source.read(at: position, count: count)
        if bytes.count < count {
            // The sector padding past the end of the file (see `init`); anything else is a short read.
            guard UInt64(bytes.count) == source.size - min(source.size, position) else {
                throw DiskImageError(
                    .truncatedImage, "raw data at \(position): short read (\(bytes.count) of \(count))")
            }
            bytes += [UInt8](repeating: 0, count: count - bytes.count)
        }
        defer { position += UInt64(count) }
        if FieldReader.isAllZero(bytes) { return .zero(offset: position, length: UInt64(count)) }
        return .data(offset: position, bytes: bytes)
    }

    /// Checks the primary volume descriptor's size fields (ECMA-119 §8.4): the logical block size (both-endian
    /// 16-bit at byte 128) must be 512, 1024 or 2048 and both byte orders must agree, as for the volume space
    /// size (both-endian 32-bit at byte 80); the volume (size × block size) must fit in the file.
    ///
    /// - Throws: `CorruptImage` for inconsistent fields, `TruncatedImage` when the volume is larger than the
    ///   file (a descriptor that lies about the disk's size).
    static func checkVolumeSize(_ source: any ByteSource) throws {
        for index in 0..<64 {
            let offset = UInt64(16 + index) * 2048
            let d = try source.read(at: offset, count: 136)
            guard d.count == 136, Array(d[1..<6]) == Signature.iso else { return }
            if d[0] == 255 { return }
            guard d[0] == 1 else { continue }
            let r = FieldReader(d)
            let blocks = r.le32(80)
            let blockSize = r.le16(128)
            guard blocks == r.be32(84), blockSize == r.be16(130) else {
                throw DiskImageError(
                    .corruptImage,
                    "ISO 9660 primary volume descriptor: the little- and big-endian copies of the volume space size "
                        + "(\(blocks)/\(r.be32(84))) or logical block size (\(blockSize)/\(r.be16(130))) differ")
            }
            guard [512, 1024, 2048].contains(blockSize) else {
                throw DiskImageError(
                    .corruptImage, "ISO 9660 logical block size \(blockSize) is not 512, 1024 or 2048")
            }
            let volume = UInt64(blocks) * UInt64(blockSize)
            guard volume <= source.size else {
                throw DiskImageError(
                    .truncatedImage,
                    "ISO 9660 volume space size \(blocks) × \(blockSize) = \(volume) bytes exceeds the file "
                        + "(\(source.size) bytes)")
            }
            return
        }
    }

    /// True when the volume descriptor set holds an El Torito boot record: type 0, "CD001", version 1, boot
    /// system identifier "EL TORITO SPECIFICATION" (El Torito 1.0 §2.0). The set starts at sector 16 (2048-byte
    /// sectors) and ends at the terminator (type 255); at most 64 descriptors are examined.
    static func hasElTorito(_ source: any ByteSource) throws -> Bool {
        let ident = Array("EL TORITO SPECIFICATION".utf8)
        for index in 0..<64 {
            let offset = UInt64(16 + index) * 2048
            let descriptor = try source.read(at: offset, count: 7 + ident.count)
            guard descriptor.count == 7 + ident.count, Array(descriptor[1..<6]) == Signature.iso else { return false }
            if descriptor[0] == 255 { return false }
            if descriptor[0] == 0 && Array(descriptor[7...]) == ident { return true }
        }
        return false
    }
}
