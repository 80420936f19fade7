import DiskImage
import Foundation
import Testing

/// VHDX images made by qemu-img/qemu-io, read by snapimport and compared with `qemu-img convert -f vhdx`, and
/// one crafted image per rejection.
@Suite(.enabled(if: Oracle.available, Oracle.skipReason))
struct VHDXTests {
    static func make(_ dir: TempDir, options: String = "block_size=1M", size: UInt64 = 5 << 20) throws -> String {
        let image = dir.path("disk.vhdx")
        try Oracle.qemuImg("create", "-f", "vhdx", "-o", options, image, "\(size)")
        try Oracle.qemuIO(
            image, format: "vhdx",
            ["write -P 0xab 100k 300k", "write -P 0x55 2m 1m", "write -P 0x11 0 512", "write -P 0x22 1m 4k"])
        return image
    }

    /// GUID bytes as VHDX stores them (first three fields little-endian).
    static func guid(_ text: String) -> [UInt8] {
        let hex = Array(text.utf8.filter { $0 != UInt8(ascii: "-") })
        let raw = stride(from: 0, to: 32, by: 2).map {
            UInt8(String(decoding: hex[$0...$0 + 1], as: UTF8.self), radix: 16)!
        }
        return Array(raw[0..<4].reversed()) + Array(raw[4..<6].reversed()) + Array(raw[6..<8].reversed())
            + Array(raw[8...])
    }

    static let batRegion = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
    static let metadataRegion = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
    static let fileParameters = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
    static let logicalSectorSize = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
    static let virtualDiskSize = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")

    static func fixCRC(_ bytes: inout [UInt8], at offset: Int, length: Int) {
        ReaderFixtures.putLE(&bytes, 0, at: offset + 4, width: 4)
        let crc = CRC32C.checksum(Array(bytes[offset..<offset + length]))
        ReaderFixtures.putLE(&bytes, UInt64(crc), at: offset + 4, width: 4)
    }

    /// File offset of the region `guid` (from region table 1).
    static func regionOffset(_ bytes: [UInt8], _ guid: [UInt8]) -> Int {
        let table = 192 << 10
        let count = Int(ReaderFixtures.le(bytes, at: table + 8, width: 4))
        for i in 0..<count where Array(bytes[table + 16 + i * 32..<table + 32 + i * 32]) == guid {
            return Int(ReaderFixtures.le(bytes, at: table + 32 + i * 32, width: 8))
        }
        return -1
    }

    /// File offset of the metadata item `guid`.
    static func metadataItemOffset(_ bytes: [UInt8], _ guid: [UInt8]) -> Int {
        let region = regionOffset(bytes, metadataRegion)
        let count = Int(ReaderFixtures.le(bytes, at: region + 10, width: 2))
        for i in 0..<count where Array(bytes[region + 32 + i * 32..<region + 48 + i * 32]) == guid {
            return region + Int(ReaderFixtures.le(bytes, at: region + 48 + i * 32, width: 4))
        }
        return -1
    }

    /// Edits both headers (at 64 KiB and 128 KiB), fixing their CRC-32C.
    static func patchHeaders(_ bytes: inout [UInt8], _ edit: (inout [UInt8], Int) -> Void) {
        for offset in [64 << 10, 128 << 10] {
            edit(&bytes, offset)
            fixCRC(&bytes, at: offset, length: 4096)
        }
    }

    @Test(
        arguments: [
            "block_size=1M", "block_size=8M", "block_size=32M", "subformat=fixed,block_size=1M",
            "subformat=fixed,block_size=8M", "subformat=dynamic,block_size=8M,block_state_zero=off",
            "block_size=32M,log_size=4M", "block_size=1M,block_state_zero=on",
        ], [UInt64(5 << 20), 3_333_333])
    func matchesQemu(options: String, size: UInt64) throws {
        let dir = try TempDir()
        let image = try Self.make(dir, options: options, size: size)
        let info = try Oracle.assertMatchesReference(image, qemuFormat: "vhdx", expected: .vhdx)
        #expect(info.virtualSize == (try ReaderFixtures.qemuVirtualSize(image, format: "vhdx")))
    }

    /// 4096-byte logical sectors raise the chunk ratio to 32768 for 1 MiB blocks, so the sector-bitmap entry
    /// that 512-byte sectors put after block 4095 disappears. Neither qemu-img 7.2 nor qemu-io handle 4096-byte
    /// sectors, so the image is a qemu image with its BAT re-laid out and the metadata item patched; the
    /// reference is qemu's conversion of the original.
    @Test func logicalSectorSize4096() throws {
        let dir = try TempDir()
        let original = dir.path("original.vhdx")
        try Oracle.qemuImg("create", "-f", "vhdx", "-o", "block_size=1M", original, "5G")
        try Oracle.qemuIO(
            original, format: "vhdx",
            ["write -P 0x55 4095m 2m", "write -P 0xab 4100m 3m", "write -P 0x11 0 512", "write -P 0x66 5119m 1m"])
        let image = dir.path("sector4096.vhdx")
        try FileManager.default.copyItem(atPath: original, toPath: image)
        try ReaderFixtures.patch(image) { bytes in
            let bat = Self.regionOffset(bytes, Self.batRegion)
            let blocks = 5 << 10
            var entries = [UInt64](repeating: 0, count: blocks + blocks / 4096 + 1)
            for b in 0..<blocks {
                entries[b + b / 32768] = ReaderFixtures.le(bytes, at: bat + 8 * (b + b / 4096), width: 8)
            }
            for (i, entry) in entries.enumerated() { ReaderFixtures.putLE(&bytes, entry, at: bat + 8 * i, width: 8) }
            ReaderFixtures.putLE(&bytes, 4096, at: Self.metadataItemOffset(bytes, Self.logicalSectorSize), width: 4)
        }
        var reader = try VHDXReader(source: try FileByteSource(path: image), limits: .init())
        try ReaderFixtures.compareSparse(original, qemuFormat: "vhdx", reader: &reader, dir: dir)
    }

    /// With 1 MiB blocks and 512-byte sectors a chunk is 4096 blocks: the BAT holds a sector-bitmap entry after
    /// every 4096 payload entries, which the reader must skip.
    @Test func sectorBitmapEntriesInterleaved() throws {
        let dir = try TempDir()
        let image = dir.path("big.vhdx")
        try Oracle.qemuImg("create", "-f", "vhdx", "-o", "block_size=1M", image, "5G")
        try Oracle.qemuIO(
            image, format: "vhdx",
            ["write -P 0x55 4095m 2m", "write -P 0xab 4100m 3m", "write -P 0x11 0 512", "write -P 0x66 5119m 1m"])
        var reader = try VHDXReader(source: try FileByteSource(path: image), limits: .init())
        try ReaderFixtures.compareSparse(image, qemuFormat: "vhdx", reader: &reader, dir: dir)
    }

    @Test func headerWithBadChecksumFallsBackToTheOther() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        let reference = try Oracle.referenceRaw(image, format: "vhdx")
        try ReaderFixtures.patch(image) { bytes in bytes[(64 << 10) + 40] ^= 0xFF }
        let ours = try Oracle.readAll(try DiskImage.open(try FileByteSource(path: image)))
        #expect(Oracle.firstDifference(ours, reference) == nil)
    }

    @Test func emptyLogWithLogGUIDIsClean() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            Self.patchHeaders(&bytes) { b, offset in
                b.replaceSubrange(offset + 48..<offset + 64, with: (1...16).map { UInt8($0) })
            }
        }
        try Oracle.assertMatchesReference(image, qemuFormat: "vhdx", expected: .vhdx)
    }

    // MARK: Rejections

    @Test func bothHeadersWithBadChecksums() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            bytes[(64 << 10) + 40] ^= 0xFF
            bytes[(128 << 10) + 40] ^= 0xFF
        }
        try ReaderFixtures.expectRejected(image, .checksumMismatch, mentioning: "header")
    }

    @Test func regionTablesWithBadChecksums() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            bytes[(192 << 10) + 20] ^= 0xFF
            bytes[(256 << 10) + 20] ^= 0xFF
        }
        try ReaderFixtures.expectRejected(image, .checksumMismatch, mentioning: "region table")
    }

    @Test func unknownRequiredRegion() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            for table in [192 << 10, 256 << 10] {
                let count = Int(ReaderFixtures.le(bytes, at: table + 8, width: 4))
                let entry = table + 16 + count * 32
                bytes.replaceSubrange(entry..<entry + 16, with: Self.guid("01234567-89AB-CDEF-0123-456789ABCDEF"))
                ReaderFixtures.putLE(&bytes, 1 << 20, at: entry + 16, width: 8)
                ReaderFixtures.putLE(&bytes, 1 << 20, at: entry + 24, width: 4)
                ReaderFixtures.putLE(&bytes, 1, at: entry + 28, width: 4)
                ReaderFixtures.putLE(&bytes, UInt64(count + 1), at: table + 8, width: 4)
                Self.fixCRC(&bytes, at: table, length: 64 << 10)
            }
        }
        try ReaderFixtures.expectRejected(image, .unsupportedFeature, mentioning: "required region")
    }

    @Test func hasParent() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            let item = Self.metadataItemOffset(bytes, Self.fileParameters)
            bytes[item + 4] |= 2
        }
        try ReaderFixtures.expectRejected(image, .differencingDiskNotAllowed, mentioning: "has_parent")
    }

    @Test func logThatNeedsReplay() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        let logGUID: [UInt8] = (1...16).map { UInt8($0 * 7) }
        try ReaderFixtures.patch(image) { bytes in
            let logOffset = Int(ReaderFixtures.le(bytes, at: (64 << 10) + 72, width: 8))
            var entry = [UInt8](repeating: 0, count: 4096)
            entry.replaceSubrange(0..<4, with: Array("loge".utf8))
            ReaderFixtures.putLE(&entry, 4096, at: 8, width: 4)  // entry length
            ReaderFixtures.putLE(&entry, 1, at: 16, width: 8)  // sequence number
            entry.replaceSubrange(32..<48, with: logGUID)
            ReaderFixtures.putLE(&entry, UInt64(bytes.count), at: 48, width: 8)
            ReaderFixtures.putLE(&entry, UInt64(bytes.count), at: 56, width: 8)
            Self.fixCRC(&entry, at: 0, length: 4096)
            bytes.replaceSubrange(logOffset..<logOffset + 4096, with: entry)
            Self.patchHeaders(&bytes) { b, offset in b.replaceSubrange(offset + 48..<offset + 64, with: logGUID) }
        }
        try ReaderFixtures.expectRejected(image, .dirtyLog, mentioning: "replay")
    }

    @Test func partiallyPresentBlock() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            let bat = Self.regionOffset(bytes, Self.batRegion)
            bytes[bat] = (bytes[bat] & ~7) | 7
        }
        try ReaderFixtures.expectRejected(image, .unsupportedFeature, mentioning: "PARTIALLY_PRESENT")
    }

    @Test func payloadBlockPastEndOfFile() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            let bat = Self.regionOffset(bytes, Self.batRegion)
            ReaderFixtures.putLE(&bytes, (UInt64(1000) << 20) | 6, at: bat, width: 8)
        }
        try ReaderFixtures.expectRejected(image, .truncatedImage, mentioning: "payload block 0")
    }

    @Test func payloadBlockOverlappingMetadata() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            let bat = Self.regionOffset(bytes, Self.batRegion)
            let metadata = Self.regionOffset(bytes, Self.metadataRegion)
            ReaderFixtures.putLE(&bytes, UInt64(metadata) | 6, at: bat, width: 8)
        }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "overlaps the VHDX")
    }

    @Test func batLargerThanTheBudget() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in
            let item = Self.metadataItemOffset(bytes, Self.virtualDiskSize)
            ReaderFixtures.putLE(&bytes, 60 << 40, at: item, width: 8)
        }
        try ReaderFixtures.expectRejected(
            image, .metadataTooLarge, mentioning: "BAT", limits: .init(maxVirtualSize: 64 << 40))
    }

    @Test func truncatedFile() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.patch(image) { bytes in bytes.removeLast(1 << 20) }
        try ReaderFixtures.expectRejected(image, .truncatedImage)
    }

    @Test func virtualSizeOverTheLimit() throws {
        let dir = try TempDir()
        let image = try Self.make(dir)
        try ReaderFixtures.expectRejected(image, .virtualSizeTooLarge, limits: .init(maxVirtualSize: 1 << 20))
    }
}
