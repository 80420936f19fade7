/// The disk-image formats snapimport reads. Detection is from content only.
public enum ImageFormat: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case raw, iso, qcow2, vmdk, vhd, vhdx, vdi
    public var description: String { rawValue }
}

/// One piece of the virtual disk, in order: either bytes or a run of zeros.
public enum Extent: Sendable, Equatable {
    /// `bytes.count` bytes of the virtual disk starting at `offset`.
    case data(offset: UInt64, bytes: [UInt8])
    /// `length` zero bytes starting at `offset`; costs nothing to produce.
    case zero(offset: UInt64, length: UInt64)

    public var offset: UInt64 {
        switch self {
        case .data(let offset, _), .zero(let offset, _): offset
        }
    }

    public var length: UInt64 {
        switch self {
        case .data(_, let bytes): UInt64(bytes.count)
        case .zero(_, let length): length
        }
    }
}

/// Bounds that protect the host from a hostile header.
public struct InspectionLimits: Sendable, Equatable {
    /// Largest virtual size accepted (`[limits] max_virtual_size`), default 16 TiB.
    public var maxVirtualSize: UInt64
    /// Most bytes of metadata (L1/L2 tables, BAT, grain directory, descriptor …) a reader may
    /// hold in memory at once; a header that needs more is `MetadataTooLarge`. 32 MiB mirrors
    /// qemu's cap on the qcow2 L1 table.
    public var metadataBudget: Int
    /// Where a disk decompressed from a container is spilled (a sparse temporary file, unlinked as soon as it
    /// is created); nil for `$TMPDIR`, else `/tmp`. Only a random-access format inside a compressed container
    /// needs one.
    public var scratchDirectory: String?

    public init(maxVirtualSize: UInt64 = 16 << 40, metadataBudget: Int = 32 << 20, scratchDirectory: String? = nil) {
        self.maxVirtualSize = maxVirtualSize
        self.metadataBudget = metadataBudget
        self.scratchDirectory = scratchDirectory
    }
}

/// What inspection learned about an image that passed the safety checks.
public struct ImageInfo: Sendable, Equatable {
    public var format: ImageFormat
    /// Size of the virtual disk in bytes, as `qemu-img info` reports it.
    public var virtualSize: UInt64
    /// Bytes of the file that hold guest data (allocated clusters/grains/blocks), best effort.
    public var allocatedBytes: UInt64
    /// True when the disk carries a boot signature (MBR 0x55AA, a GPT, or El Torito for ISO).
    public var bootable: Bool
    /// The container the disk was found in; nil for a bare image.
    public var container: ContainerKind?
    /// The compression around the container or disk (a compressed tar, a single compressed stream); nil when
    /// the outermost layer is not compressed.
    public var compression: ContainerKind?

    public init(
        format: ImageFormat, virtualSize: UInt64, allocatedBytes: UInt64, bootable: Bool,
        container: ContainerKind? = nil
    ) {
        self.format = format
        self.virtualSize = virtualSize
        self.allocatedBytes = allocatedBytes
        self.bootable = bootable
        self.container = container
    }
}

/// Reads the virtual disk of a validated image as ordered extents.
///
/// Extents cover `[0, info.virtualSize)` exactly, in increasing offset order, without gaps or
/// overlaps. Data extents are bounded in size (a few MiB at most) so memory stays bounded;
/// adjacent zero runs may be coalesced. A reader is used from one task at a time.
public protocol DiskReader {
    var info: ImageInfo { get }

    /// The next extent, or nil at the end of the virtual disk.
    mutating func next() throws -> Extent?
}
