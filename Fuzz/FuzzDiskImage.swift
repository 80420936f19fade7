// libFuzzer entry for the DiskImage parsers. Built by scripts/fuzz together with the DiskImage sources
// (one module), with exactly one of these defined to pick the parser:
//   FUZZ_ANY    detection + DiskImage.open (every format, the path production takes)
//   FUZZ_QCOW2, FUZZ_VMDK, FUZZ_VHD, FUZZ_VHDX, FUZZ_VDI, FUZZ_RAW: that reader directly, no detection.
//   FUZZ_CONTAINER  DiskImage.open seeded with containers (tar, OVA, zip, gzip/xz/zstd/bzip2): container
//               detection, libarchive over a ByteSource, the spill file, the tar/OVA/zip rules.
//   FUZZ_OVF    the OVF descriptor parser (XML scanner and href rules) alone.
// Every input is opened with small limits and read to the end, and inspected: no crash, hang or unbounded
// allocation is acceptable; a thrown DiskImageError is the expected outcome for most inputs.

/// Small limits keep each run bounded: at most 16 MiB of virtual disk and 1 MiB of metadata.
let fuzzLimits = InspectionLimits(maxVirtualSize: 16 << 20, metadataBudget: 1 << 20)

func openForFuzzing(_ source: MemoryByteSource) throws -> any DiskReader {
    #if FUZZ_QCOW2
    return try QCOW2Reader(source: source, limits: fuzzLimits)
    #elseif FUZZ_VMDK
    return try VMDKReader(source: source, limits: fuzzLimits)
    #elseif FUZZ_VHD
    return try VHDReader(source: source, limits: fuzzLimits)
    #elseif FUZZ_VHDX
    return try VHDXReader(source: source, limits: fuzzLimits)
    #elseif FUZZ_VDI
    return try VDIReader(source: source, limits: fuzzLimits)
    #elseif FUZZ_RAW
    return try RawReader(source: source, limits: fuzzLimits, format: .iso)
    #else
    return try DiskImage.open(source, limits: fuzzLimits)
    #endif
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDiskImage(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    #if FUZZ_OVF
    if let descriptor = try? OVFDescriptor.parse([UInt8](UnsafeRawBufferPointer(start: data, count: size))) {
        for disk in descriptor.disks {
            // Whatever the descriptor, an accepted href never leaves the archive.
            precondition(!disk.href.hasPrefix("/") && !disk.href.split(separator: "/").contains(".."), "href escapes")
        }
    }
    return 0
    #else
    let source = MemoryByteSource([UInt8](UnsafeRawBufferPointer(start: data, count: size)))
    do {
        var reader = try openForFuzzing(source)
        var position: UInt64 = 0
        while let extent = try reader.next() {
            // The extent contract: ordered, contiguous, inside the virtual disk, data extents bounded.
            precondition(extent.offset == position, "extent out of order")
            precondition(extent.length > 0, "empty extent")
            precondition(extent.offset + extent.length <= reader.info.virtualSize, "extent past the virtual size")
            if case .data(_, let bytes) = extent { precondition(bytes.count <= 64 << 20, "data extent too large") }
            position += extent.length
        }
        precondition(position == reader.info.virtualSize, "extents do not cover the virtual disk")
    } catch {
        // Rejections are expected.
    }
    _ = DiskImage.inspect(source, limits: fuzzLimits)
    return 0
    #endif
}
