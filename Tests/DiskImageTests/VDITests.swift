import DiskImage
import Testing

/// VDI images made by qemu-img/qemu-io, read by snapimport and compared with `qemu-img convert -f vdi`, and
/// one crafted image per rejection.
@Suite(.enabled(if: Oracle.available, Oracle.skipReason))
struct VDITests {
    static func make(_ dir: TempDir, static isStatic: Bool = false, size: UInt64 = 5 << 20) throws -> String {
        let image = dir.path("disk.vdi")
        try Oracle.qemuImg("create", "-f", "vdi", "-o", "static=\(isStatic ? "on" : "off")", image, "\(size)")
        try Oracle.qemuIO(
            image, format: "vdi",
            ["write -P 0xab 100k 300k", "write -P 0x55 2m 1m", "write -P 0x11 0 512", "write -P 0x22 1m 4k"])
        return image
    }

    @Test(arguments: [false, true], [UInt64(5 << 20), 3_333_333, 20 << 20])
    func matchesQemu(isStatic: Bool, size: UInt64) throws {
        let dir = try TempDir()
        let image = try Self.make(dir, static: isStatic, size: size)
        let info = try Oracle.assertMatchesReference(image, qemuFormat: "vdi", expected: .vdi)
        #expect(info.virtualSize == (try ReaderFixtures.qemuVirtualSize(image, format: "vdi")))
    }

    /// Blocks written out of order land out of order in the file; the map must follow them.
    @Test func blocksAllocatedOutOfOrder() throws {
        let dir = try TempDir()
        let image = dir.path("disk.vdi")
        try Oracle.qemuImg("create", "-f", "vdi", image, "9M")
        try Oracle.qemuIO(
            image, format: "vdi",
            ["write -P 0x77 8m 4k", "write -P 0x66 0 4k", "write -P 0x55 4m 1m", "write -P 0x44 5m 512"])
        try Oracle.assertMatchesReference(image, qemuFormat: "vdi", expected: .vdi)
    }

    @Test func discardedBlocksReadAsZero() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            let bmap = Int(ReaderFixtures.le(bytes, at: 0x154, width: 4))
            ReaderFixtures.putLE(&bytes, 0xFFFF_FFFE, at: bmap + 8, width: 4)  // block 2 (2 MiB) discarded
        }
        let reader = try DiskImage.open(try FileByteSource(path: image))
        let bytes = try Oracle.readAll(reader)
        #expect(bytes[(2 << 20)..<(3 << 20)].allSatisfy { $0 == 0 })
        #expect(bytes[100 << 10] == 0xAB)
        try Oracle.assertMatchesReference(image, qemuFormat: "vdi", expected: .vdi)
    }

    /// VirtualBox fills in the legacy CHS geometry; qemu ignores it, and so must the reader.
    @Test func legacyGeometryIsIgnored() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            ReaderFixtures.putLE(&bytes, 1024, at: 0x15C, width: 4)
            ReaderFixtures.putLE(&bytes, 16, at: 0x160, width: 4)
            ReaderFixtures.putLE(&bytes, 63, at: 0x164, width: 4)
        }
        try Oracle.assertMatchesReference(image, qemuFormat: "vdi", expected: .vdi)
    }

    // MARK: Rejections

    @Test func parentUUID() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in bytes[0x1B8] = 1 }
        try ReaderFixtures.expectRejected(image, .differencingDiskNotAllowed, mentioning: "parent UUID")
    }

    @Test(arguments: [UInt64(3), 4])
    func differencingImageType(type: UInt64) throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, type, at: 0x4C, width: 4) }
        try ReaderFixtures.expectRejected(image, .differencingDiskNotAllowed, mentioning: "image type")
    }

    @Test func linkUUID() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in bytes[0x1A8] = 1 }
        try ReaderFixtures.expectRejected(image, .differencingDiskNotAllowed, mentioning: "link UUID")
    }

    @Test func blockSizeOtherThanOneMiB() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, 4096, at: 0x178, width: 4) }
        try ReaderFixtures.expectRejected(image, .unsupportedFeature, mentioning: "block size 4096")
    }

    @Test func versionOtherThan1_1() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, 0x0001_0000, at: 0x44, width: 4) }
        try ReaderFixtures.expectRejected(image, .unsupportedFeature, mentioning: "version 1.0")
    }

    @Test func blockPastEndOfFile() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            let bmap = Int(ReaderFixtures.le(bytes, at: 0x154, width: 4))
            ReaderFixtures.putLE(&bytes, 1000, at: bmap, width: 4)
        }
        try ReaderFixtures.expectRejected(image, .truncatedImage, mentioning: "VDI block 0")
    }

    @Test func dataOffsetOverlappingTheHeader() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, 0, at: 0x158, width: 4) }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "overlaps the VDI header")
    }

    @Test func blockMapPastEndOfFile() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, 0x7FFF_FE00, at: 0x154, width: 4) }
        try ReaderFixtures.expectRejected(image, .truncatedImage, mentioning: "block map")
    }

    @Test func blockMapLargerThanTheBudget() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, 0x0400_0000, at: 0x180, width: 4) }
        try ReaderFixtures.expectRejected(image, .metadataTooLarge, mentioning: "block map")
    }

    @Test func diskSizeBeyondTheBlockMap() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, 64 << 20, at: 0x170, width: 8) }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "disk size")
    }

    @Test func truncatedFile() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in bytes.removeLast(512 << 10) }
        try ReaderFixtures.expectRejected(image, .truncatedImage)
    }

    @Test func virtualSizeOverTheLimit() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.expectRejected(image, .virtualSizeTooLarge, limits: .init(maxVirtualSize: 1 << 20))
    }
}
