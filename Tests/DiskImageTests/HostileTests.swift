import DiskImage
import Foundation
import Testing

/// Hostile classes built to the specs and to qemu's open-time checks: the qcow2 snapshot and refcount
/// tables, polyglots, compressed data that does not end where it must, header fields that lie about sizes
/// and counts, and `inspect` refusing what a conversion refuses. Each rule has a generated fixture refused
/// by `inspect` and by `open`/reading with its code.
@Suite(.enabled(if: Oracle.available, Oracle.skipReason))
struct HostileTests {
    /// Asserts `inspect` (reading the data) and `open` + reading both refuse `image` with `code`.
    static func expectRefused(
        _ image: String, _ code: DiskImageError.Code, mentioning: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        try ReaderFixtures.expectRejected(image, code, mentioning: mentioning, sourceLocation: sourceLocation)
    }

    /// A v3 qcow2 (64 KiB clusters) with data and one internal snapshot.
    static func qcow2WithSnapshot(_ dir: TempDir) throws -> String {
        let image = dir.path("snap.qcow2")
        try Oracle.qemuImg("create", "-q", "-f", "qcow2", image, "4M")
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0x21 0 128k"])
        try Oracle.qemuImg("snapshot", "-c", "first", image)
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0x22 64k 64k"])
        return image
    }

    /// Offset of the first snapshot table entry.
    static func snapshotEntry(_ image: String) throws -> Int {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
        return Int(bytes.be64(at: 64))
    }

    // MARK: - qcow2 snapshot and refcount tables

    @Test func qcow2WithSnapshotIsReadAsItsActiveLayer() throws {
        let dir = try TempDir()
        let image = try Self.qcow2WithSnapshot(dir)
        try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
    }

    @Test func qcow2TooManySnapshots() throws {
        let dir = try TempDir()
        let image = try Self.qcow2WithSnapshot(dir)
        try ReaderFixtures.patch(image) { $0.putBE32(65537, at: 60) }
        try Self.expectRefused(image, .corruptImage, mentioning: "nb_snapshots")
    }

    @Test func qcow2SnapshotTableUnalignedOrOutside() throws {
        let dir = try TempDir()
        let image = try Self.qcow2WithSnapshot(dir)
        let entry = try Self.snapshotEntry(image)
        try ReaderFixtures.patch(image) { $0.putBE64(UInt64(entry + 8), at: 64) }
        try Self.expectRefused(image, .corruptImage, mentioning: "snapshots_offset")
        try ReaderFixtures.patch(image) { $0.putBE64(1 << 40, at: 64) }
        try Self.expectRefused(image, .truncatedImage, mentioning: "snapshot table entry 0")
        try ReaderFixtures.patch(image) { $0.putBE64(0, at: 64) }
        try Self.expectRefused(image, .corruptImage, mentioning: "overlaps the header")
    }

    @Test func qcow2SnapshotExtraDataSizes() throws {
        let dir = try TempDir()
        let image = try Self.qcow2WithSnapshot(dir)
        let entry = try Self.snapshotEntry(image)
        try ReaderFixtures.patch(image) { $0.putBE32(1025, at: entry + 36) }
        try Self.expectRefused(image, .corruptImage, mentioning: "extra_data_size 1025")
        try ReaderFixtures.patch(image) { $0.putBE32(8, at: entry + 36) }
        try Self.expectRefused(image, .corruptImage, mentioning: "version 3 requires")
    }

    @Test func qcow2SnapshotIdAndNamePastTheEnd() throws {
        let dir = try TempDir()
        let image = try Self.qcow2WithSnapshot(dir)
        let entry = try Self.snapshotEntry(image)
        try ReaderFixtures.patch(image) { bytes in
            // Put the table in the file's last cluster, then let the name run far past the end.
            let last = (bytes.count - 1) / 65536 * 65536
            let table = Array(bytes[entry..<entry + 64])
            if bytes.count < last + 64 { bytes += [UInt8](repeating: 0, count: last + 64 - bytes.count) }
            bytes.replaceSubrange(last..<last + 64, with: table)
            bytes.putBE64(UInt64(last), at: 64)
            bytes[last + 14] = 0xFF
            bytes[last + 15] = 0xFF
            bytes[last + 12] = 0xFF
            bytes[last + 13] = 0xFF
        }
        try Self.expectRefused(image, .truncatedImage, mentioning: "snapshot 0")
    }

    @Test func qcow2SnapshotL1Table() throws {
        let dir = try TempDir()
        let image = try Self.qcow2WithSnapshot(dir)
        let entry = try Self.snapshotEntry(image)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
        let l1 = bytes.be64(at: entry)
        try ReaderFixtures.patch(image) { $0.putBE64(l1 + 512, at: entry) }
        try Self.expectRefused(image, .corruptImage, mentioning: "snapshot 0 L1 table")
        try ReaderFixtures.patch(image) { $0.putBE64(1 << 40, at: entry) }
        try Self.expectRefused(image, .truncatedImage, mentioning: "snapshot 0 L1 table")
        try ReaderFixtures.patch(image) {
            $0.putBE64(l1, at: entry)
            $0.putBE32(0x0100_0000, at: entry + 8)
        }
        try Self.expectRefused(image, .corruptImage, mentioning: "l1_size")
    }

    @Test func qcow2RefcountTable() throws {
        let dir = try TempDir()
        let image = try Self.qcow2WithSnapshot(dir)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
        let clusters = bytes.be32(at: 56)
        try ReaderFixtures.patch(image) { $0.putBE32(0, at: 56) }
        try Self.expectRefused(image, .corruptImage, mentioning: "refcount_table_clusters")
        try ReaderFixtures.patch(image) {
            $0.putBE32(clusters, at: 56)
            $0.putBE64(1 << 40, at: 48)
        }
        try Self.expectRefused(image, .truncatedImage, mentioning: "refcount table")
    }

    // MARK: - Compressed data must end inside its cluster or grain

    /// A qcow2 whose first guest cluster is compressed data appended at the end of the file: `stream` (raw
    /// deflate), in an L2 entry of enough sectors.
    static func qcow2WithCompressedCluster(_ dir: TempDir, stream: [UInt8]) throws -> String {
        let image = dir.path("compressed.qcow2")
        let plain = dir.path("plain.qcow2")
        try Oracle.qemuImg("create", "-q", "-f", "qcow2", plain, "1M")
        try Oracle.qemuIO(plain, format: "qcow2", ["write -P 0x61 0 64k"])
        try Oracle.qemuImg("convert", "-q", "-c", "-f", "qcow2", "-O", "qcow2", plain, image)
        try ReaderFixtures.patch(image) { bytes in
            let l1 = Int(bytes.be64(at: 40))
            let l2 = Int(bytes.be64(at: l1) & 0x00FF_FFFF_FFFF_FE00)
            var host = (bytes.count + 511) / 512 * 512
            host = max(host, bytes.count)
            bytes += [UInt8](repeating: 0, count: host - bytes.count) + stream
            bytes += [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512)
            let sectors = UInt64((stream.count + 511) / 512)
            // 64 KiB clusters: the sector count sits at bit 54, the offset below it.
            bytes.putBE64((1 << 62) | ((sectors - 1) << 54) | UInt64(host), at: l2)
        }
        return image
    }

    /// Raw deflate stored blocks holding `sizes` bytes each (of 0x61), the last one final when `final`.
    static func storedDeflate(_ sizes: [Int], final: Bool) -> [UInt8] {
        var out: [UInt8] = []
        for (index, n) in sizes.enumerated() {
            let last: UInt8 = final && index == sizes.count - 1 ? 1 : 0
            out += [last, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += [UInt8](repeating: 0x61, count: n)
        }
        return out
    }

    @Test func qcow2CompressedClusterThatDoesNotEnd() throws {
        let dir = try TempDir()
        // Exactly one cluster of data, but the stream has no final block: qemu takes it, snapimport does not.
        let image = try Self.qcow2WithCompressedCluster(dir, stream: Self.storedDeflate([65535, 1], final: false))
        try Self.expectRefused(image, .decompressionFailed, mentioning: "does not end")
    }

    @Test func qcow2CompressedClusterThatGoesOn() throws {
        let dir = try TempDir()
        let image = try Self.qcow2WithCompressedCluster(dir, stream: Self.storedDeflate([65535, 2], final: true))
        try Self.expectRefused(image, .decompressionFailed, mentioning: "does not end")
    }

    @Test func qcow2CompressedClusterThatEndsExactlyIsRead() throws {
        let dir = try TempDir()
        let image = try Self.qcow2WithCompressedCluster(dir, stream: Self.storedDeflate([65535, 1], final: true))
        let reader = try DiskImage.open(try FileByteSource(path: image))
        let bytes = try Oracle.readAll(reader)
        #expect(bytes.prefix(65536).allSatisfy { $0 == 0x61 })
    }

    // MARK: - inspect refuses what convert refuses

    @Test func inspectReadsCompressedClustersUnlessMetadataOnly() throws {
        let dir = try TempDir()
        let source = dir.path("plain.qcow2")
        try Oracle.qemuImg("create", "-q", "-f", "qcow2", source, "16M")
        try Oracle.qemuIO(source, format: "qcow2", ["write -P 0x41 0 4k", "write -P 0x42 8m 256k"])
        let image = dir.path("garbage.qcow2")
        try Oracle.qemuImg("convert", "-q", "-c", "-f", "qcow2", "-O", "qcow2", source, image)
        try ReaderFixtures.patch(image) { bytes in
            let l1 = Int(bytes.be64(at: 40))
            let l2 = Int(bytes.be64(at: l1) & 0x00FF_FFFF_FFFF_FE00)
            // The cluster at 8 MiB (L2 entry 128) gets garbage compressed bytes; its L2 entry stays valid.
            let host = Int(bytes.be64(at: l2 + 128 * 8) & ((1 << 54) - 1))
            for i in 0..<24 { bytes[host + i] = UInt8(truncatingIfNeeded: 0xA5 &+ i * 37) }
        }
        let file = try FileByteSource(path: image)
        #expect(DiskImage.inspect(file, metadataOnly: true).verdict == .ok)
        let full = DiskImage.inspect(file)
        #expect(full.reasons.map(\.code) == ["DecompressionFailed"], "\(full.reasons)")
        try Self.expectRefused(image, .decompressionFailed)
    }

    @Test func inspectInflatesVMDKGrainsUnlessMetadataOnly() throws {
        let dir = try TempDir()
        // Grain 4 (256 KiB): past the first sectors, which opening reads to look for a boot signature.
        let bytes = VMwareStream(longGrain: 4).build(VMDKTests.patternedRaw(size: 1 << 20))
        let image = try dir.write("long.vmdk", bytes)
        let file = try FileByteSource(path: image)
        #expect(DiskImage.inspect(file, metadataOnly: true).verdict == .ok)
        #expect(DiskImage.inspect(file).reasons.map(\.code) == ["DecompressionFailed"])
    }

    // MARK: - Polyglots

    /// Writes a protective MBR (0x55AA, a partition of type 0xEE) and a GPT header signature at LBA 1.
    static func addProtectiveGPT(_ bytes: inout [UInt8]) {
        bytes[446 + 4] = 0xEE
        bytes[510] = 0x55
        bytes[511] = 0xAA
        bytes.replaceSubrange(512..<520, with: Array("EFI PART".utf8))
    }

    @Test(arguments: ["qcow2", "vhdx", "vdi"])
    func imageCarryingAGPTIsAmbiguous(_ format: String) throws {
        let dir = try TempDir()
        let image = dir.path("polyglot.\(format)")
        try Oracle.qemuImg("create", "-q", "-f", format, image, "4M")
        try ReaderFixtures.patch(image) { Self.addProtectiveGPT(&$0) }
        try Self.expectRefused(image, .ambiguousFormat, mentioning: "gpt")
    }

    @Test func qcow2CarryingAnISOVolumeDescriptorIsAmbiguous() throws {
        let dir = try TempDir()
        let image = dir.path("polyglot.qcow2")
        try Oracle.qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", image, "4M")
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0x33 0 64k"])
        try ReaderFixtures.patch(image) { bytes in
            if bytes.count < 0x8800 { bytes += [UInt8](repeating: 0, count: 0x8800 - bytes.count) }
            bytes[0x8000] = 1
            bytes.replaceSubrange(0x8001..<0x8006, with: Array("CD001".utf8))
            bytes[0x8006] = 1
        }
        try Self.expectRefused(image, .ambiguousFormat, mentioning: "iso")
    }

    @Test func hybridISOAndPartitionedRawAreNotAmbiguous() throws {
        var iso = DetectionTests.iso(bootRecord: true)
        Self.addProtectiveGPT(&iso)
        #expect(try DiskImage.detect(MemoryByteSource(iso)) == .iso)
        #expect(DiskImage.inspect(MemoryByteSource(iso)).verdict == .ok)
        var raw = [UInt8](repeating: 0, count: 1 << 20)
        Self.addProtectiveGPT(&raw)
        #expect(try DiskImage.detect(MemoryByteSource(raw)) == .raw)
        #expect(DiskImage.inspect(MemoryByteSource(raw)).bootable)
    }

    @Test func tarCarryingAVHDFooterIsAmbiguous() throws {
        let dir = try TempDir()
        let vhd = dir.path("fixed.vhd")
        try Oracle.qemuImg("create", "-q", "-f", "vpc", "-o", "subformat=fixed", vhd, "1M")
        try dir.write("notes.txt", Array("hello\n".utf8))
        try Archivers.tar("plain.tar", ["notes.txt"], in: dir)
        let footer = Array(try dir.read("fixed.vhd").suffix(512))
        let image = try dir.write("polyglot.tar", try dir.read("plain.tar") + footer)
        try Self.expectRefused(image, .ambiguousFormat, mentioning: "tar")
    }

    // MARK: - Lying counts and sizes

    @Test func isoVolumeLargerThanTheFile() throws {
        let dir = try TempDir()
        var bytes = DetectionTests.iso(bootRecord: false)
        let pvd = 16 * 2048
        bytes.putLE32(1000, at: pvd + 80)
        bytes.putBE32(1000, at: pvd + 84)
        let image = try dir.write("lying.iso", bytes)
        try Self.expectRefused(image, .truncatedImage, mentioning: "volume space size")
        bytes.putBE32(40, at: pvd + 84)
        let mixed = try dir.write("mixed.iso", bytes)
        try Self.expectRefused(mixed, .corruptImage, mentioning: "copies")
    }

    @Test func vdiAllocatedCountAboveBlockCount() throws {
        let dir = try TempDir()
        let image = try VDITests.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            let blocks = ReaderFixtures.le(bytes, at: 0x180, width: 4)
            ReaderFixtures.putLE(&bytes, blocks + 1, at: 0x184, width: 4)
        }
        try Self.expectRefused(image, .corruptImage, mentioning: "allocated block count")
    }

    @Test func vdiAllocatedCountBeyondTheFile() throws {
        let dir = try TempDir()
        let image = try VDITests.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            let blocks = ReaderFixtures.le(bytes, at: 0x180, width: 4)
            ReaderFixtures.putLE(&bytes, blocks, at: 0x184, width: 4)
        }
        try Self.expectRefused(image, .truncatedImage, mentioning: "VDI data area")
    }

    @Test func vdiBlockMapEntryPastTheAllocatedBlocksOrShared() throws {
        let dir = try TempDir()
        let image = try VDITests.make(dir)
        let original = try dir.read("disk.vdi")
        let bmap = Int(ReaderFixtures.le(original, at: 0x154, width: 4))
        let allocated = ReaderFixtures.le(original, at: 0x184, width: 4)
        // Entry 4 (unallocated in VDITests.make) names an existing block: two virtual blocks share it.
        try ReaderFixtures.patch(image) { ReaderFixtures.putLE(&$0, 0, at: bmap + 4 * 4, width: 4) }
        try Self.expectRefused(image, .corruptImage, mentioning: "more than one")
        // Entry 4 names the block just past the allocated ones (a block the header does not count).
        try ReaderFixtures.patch(image) {
            ReaderFixtures.putLE(&$0, allocated - 1, at: 0x184, width: 4)
            ReaderFixtures.putLE(&$0, 0xFFFF_FFFF, at: bmap + 4 * 4, width: 4)
        }
        try Self.expectRefused(image, .corruptImage, mentioning: "past the")
    }

    @Test func vmdkOverheadPastTheEnd() throws {
        let dir = try TempDir()
        let image = try VMDKTests.makeSparse(dir)
        try ReaderFixtures.patch(image) { ReaderFixtures.putLE(&$0, 1 << 30, at: 64, width: 8) }
        try Self.expectRefused(image, .truncatedImage, mentioning: "overHead")
    }

    @Test func vhdMaxTableEntriesBeyondTheFile() throws {
        let dir = try TempDir()
        let image = try VHDTests.make(dir, subformat: "dynamic", size: 5 << 20)
        try VHDTests.patchDynamicHeader(image) { ReaderFixtures.putBE(&$0, 5_000_000, at: 512 + 28, width: 4) }
        try Self.expectRefused(image, .truncatedImage, mentioning: "BAT")
    }
}
