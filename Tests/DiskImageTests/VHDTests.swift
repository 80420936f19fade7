import DiskImage
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Helpers shared by the VMDK, VHD, VHDX and VDI tests: byte patching, rejection checks, and a comparison
/// for images too large to hold in memory.
enum ReaderFixtures {
    static func putLE(_ bytes: inout [UInt8], _ value: UInt64, at offset: Int, width: Int) {
        for i in 0..<width { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    static func putBE(_ bytes: inout [UInt8], _ value: UInt64, at offset: Int, width: Int) {
        for i in 0..<width { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(width - 1 - i))) }
    }

    static func le(_ bytes: [UInt8], at offset: Int, width: Int) -> UInt64 {
        (0..<width).reversed().reduce(0) { $0 << 8 | UInt64(bytes[offset + $1]) }
    }

    static func be(_ bytes: [UInt8], at offset: Int, width: Int) -> UInt64 {
        (0..<width).reduce(0) { $0 << 8 | UInt64(bytes[offset + $1]) }
    }

    /// Reads `path`, lets `edit` change the bytes, writes them back.
    static func patch(_ path: String, _ edit: (inout [UInt8]) throws -> Void) throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        try edit(&bytes)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Asserts that `image` is refused with `code`: by `DiskImage.inspect` when `atOpen`, and in any case
    /// while opening or reading it through `DiskImage.open`, with a message containing `mentioning`.
    static func expectRejected(
        _ image: String, _ code: DiskImageError.Code, mentioning: String? = nil, atOpen: Bool = true,
        limits: InspectionLimits = .init(), sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let source = try FileByteSource(path: image)
        if atOpen {
            let result = DiskImage.inspect(source, limits: limits)
            #expect(result.verdict == .rejected, sourceLocation: sourceLocation)
            #expect(result.reasons.map(\.code) == [code.name], "\(result.reasons)", sourceLocation: sourceLocation)
        }
        do {
            var reader = try DiskImage.open(source, limits: limits)
            while try reader.next() != nil {}
            Issue.record("\(image) was read without error", sourceLocation: sourceLocation)
        } catch let error as DiskImageError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
            if let mentioning {
                #expect(error.message.contains(mentioning), "\(error)", sourceLocation: sourceLocation)
            }
        }
    }

    /// `qemu-img info` virtual size of `image` read as `format`.
    static func qemuVirtualSize(_ image: String, format: String) throws -> UInt64 {
        let json = try Oracle.qemuImg("info", "-f", format, "--output=json", image)
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        return (object?["virtual-size"] as? NSNumber)?.uint64Value ?? 0
    }

    /// Compares `reader` with qemu-img's sparse raw conversion of `image` without holding either in memory:
    /// data extents are compared byte for byte, zero extents must be holes or zeros in the reference.
    static func compareSparse(
        _ image: String, qemuFormat: String, reader: inout some DiskReader, dir: TempDir,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let refPath = dir.path("reference.raw")
        try Oracle.qemuImg("convert", "-f", qemuFormat, "-O", "raw", image, refPath)
        let ref = try FileByteSource(path: refPath)
        #expect(ref.size == reader.info.virtualSize, sourceLocation: sourceLocation)
        let fd = open(refPath, O_RDONLY)
        defer { close(fd) }
        var position: UInt64 = 0
        while let extent = try reader.next() {
            #expect(extent.offset == position, sourceLocation: sourceLocation)
            switch extent {
            case .data(let offset, let bytes):
                let expected = try ref.read(at: offset, count: bytes.count)
                #expect(
                    bytes == expected, "data differs in [\(offset), +\(bytes.count))", sourceLocation: sourceLocation)
            case .zero(let offset, let length):
                var cursor = off_t(offset)
                let end = off_t(offset + length)
                while cursor < end {
                    let data = lseek(fd, cursor, 3 /* SEEK_DATA (Linux) */)
                    if data < 0 || data >= end { break }
                    let hole = min(lseek(fd, data, 4 /* SEEK_HOLE (Linux) */), end)
                    var at = data
                    while at < hole {
                        let count = Int(min(hole - at, off_t(1 << 20)))
                        let bytes = try ref.read(at: UInt64(at), count: count)
                        #expect(
                            bytes.allSatisfy { $0 == 0 }, "reference has data at \(at) where we read zeros",
                            sourceLocation: sourceLocation)
                        at += off_t(count)
                    }
                    cursor = hole
                }
            }
            position += extent.length
        }
        #expect(position == reader.info.virtualSize, sourceLocation: sourceLocation)
    }
}

/// VHD ("vpc") images made by qemu-img/qemu-io, read by snapimport and compared with `qemu-img convert -f vpc`,
/// and one crafted image per rejection.
@Suite(.enabled(if: Oracle.available, Oracle.skipReason))
struct VHDTests {
    static func make(_ dir: TempDir, subformat: String, size: UInt64, options: String = "") throws -> String {
        let image = dir.path("disk-\(subformat).vhd")
        try Oracle.qemuImg(
            "create", "-f", "vpc", "-o", "subformat=\(subformat)" + (options.isEmpty ? "" : ",\(options)"), image,
            "\(size)")
        try Oracle.qemuIO(
            image, format: "vpc",
            ["write -P 0xab 100k 300k", "write -P 0x55 2m 1m", "write -P 0x11 0 512", "write -P 0x22 3m 4k"])
        return image
    }

    /// Recomputes the footer checksum (one's complement of the byte sum) of the footer at `offset`.
    static func fixFooterChecksum(_ bytes: inout [UInt8], footerAt offset: Int) {
        ReaderFixtures.putBE(&bytes, 0, at: offset + 64, width: 4)
        let sum = bytes[offset..<offset + 512].reduce(UInt32(0)) { $0 &+ UInt32($1) }
        ReaderFixtures.putBE(&bytes, UInt64(~sum), at: offset + 64, width: 4)
    }

    /// Edits both footers of a dynamic VHD (the copy at 0 and the one at the end), fixing their checksums.
    static func patchFooters(_ image: String, _ edit: @escaping (inout [UInt8], Int) -> Void) throws {
        try ReaderFixtures.patch(image) { bytes in
            for offset in [0, bytes.count - 512] where bytes[offset..<offset + 8].elementsEqual("conectix".utf8) {
                edit(&bytes, offset)
                fixFooterChecksum(&bytes, footerAt: offset)
            }
        }
    }

    /// Edits the dynamic disk header (at 512 in qemu's layout), fixing its checksum.
    static func patchDynamicHeader(_ image: String, _ edit: (inout [UInt8]) -> Void) throws {
        try ReaderFixtures.patch(image) { bytes in
            edit(&bytes)
            ReaderFixtures.putBE(&bytes, 0, at: 512 + 36, width: 4)
            let sum = bytes[512..<1536].reduce(UInt32(0)) { $0 &+ UInt32($1) }
            ReaderFixtures.putBE(&bytes, UInt64(~sum), at: 512 + 36, width: 4)
        }
    }

    @Test(arguments: ["dynamic", "fixed"], [UInt64(5 << 20), 3_333_333, 20 << 20])
    func matchesQemu(subformat: String, size: UInt64) throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: subformat, size: size)
        let info = try Oracle.assertMatchesReference(image, qemuFormat: "vpc", expected: .vhd)
        #expect(info.virtualSize == (try ReaderFixtures.qemuVirtualSize(image, format: "vpc")))
    }

    /// qemu takes the size from the CHS geometry for "vpc "/"qemu" creators, from current_size for "qem2",
    /// "win ", "d2v ", "CTXS", "tap\0" and for the maximum geometry.
    @Test(arguments: ["qem2", "vpc ", "win ", "d2v ", "CTXS", "tap\0", "qemu"])
    func virtualSizeAsQemuComputesIt(creator: String) throws {
        let dir = try TempDir()
        // force_size keeps current_size at the odd requested size, which CHS cannot express exactly.
        let image = try Self.make(dir, subformat: "dynamic", size: 7_777_777 / 512 * 512, options: "force_size=on")
        try Self.patchFooters(image) { bytes, offset in
            bytes.replaceSubrange(offset + 28..<offset + 32, with: Array(creator.utf8))
            // A plausible geometry that differs from current_size.
            ReaderFixtures.putBE(&bytes, 940, at: offset + 56, width: 2)
            bytes[offset + 58] = 16
            bytes[offset + 59] = 1
        }
        let expected = try ReaderFixtures.qemuVirtualSize(image, format: "vpc")
        let info = try Oracle.assertMatchesReference(image, qemuFormat: "vpc", expected: .vhd)
        #expect(info.virtualSize == expected)
        let chs = creator == "vpc " || creator == "qemu"
        #expect(info.virtualSize == (chs ? 940 * 16 * 512 : 7_777_777 / 512 * 512))
    }

    @Test func maximumGeometryUsesCurrentSize() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 6 << 20)
        try Self.patchFooters(image) { bytes, offset in
            ReaderFixtures.putBE(&bytes, 65535, at: offset + 56, width: 2)
            bytes[offset + 58] = 16
            bytes[offset + 59] = 255
        }
        let info = try Oracle.assertMatchesReference(image, qemuFormat: "vpc", expected: .vhd)
        #expect(info.virtualSize == (try ReaderFixtures.qemuVirtualSize(image, format: "vpc")))
    }

    /// Sectors whose bit is clear in the block's sector bitmap read as zeros (spec "Block Allocation Table and
    /// Data Blocks"); qemu ignores the bitmap, so only those sectors may differ from its conversion.
    @Test func sectorBitmapClearedSectorsReadAsZero() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 5 << 20)
        var batEntry: UInt64 = 0
        try ReaderFixtures.patch(image) { bytes in
            let bat = Int(ReaderFixtures.be(bytes, at: 512 + 16, width: 8))
            batEntry = ReaderFixtures.be(bytes, at: bat, width: 4)
            // Block 0: clear the bits of sectors 200…207 (100 KiB = sector 200 holds 0xab).
            bytes[Int(batEntry) * 512 + 25] = 0
        }
        let reference = try Oracle.referenceRaw(image, format: "vpc")
        let ours = try Oracle.readAll(try DiskImage.open(try FileByteSource(path: image)))
        var expected = reference
        expected.replaceSubrange(200 * 512..<208 * 512, with: [UInt8](repeating: 0, count: 4096))
        #expect(reference[200 * 512] == 0xAB)
        #expect(Oracle.firstDifference(ours, expected) == nil)
    }

    @Test func bootSignature() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 5 << 20)
        try Oracle.qemuIO(image, format: "vpc", ["write -P 0x55 510 1", "write -P 0xaa 511 1"])
        let reader = try VHDReader(source: try FileByteSource(path: image), limits: .init())
        #expect(reader.info.bootable)
    }

    // MARK: Rejections

    @Test func differencingDisk() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 5 << 20)
        try Self.patchFooters(image) { bytes, offset in ReaderFixtures.putBE(&bytes, 4, at: offset + 60, width: 4) }
        try ReaderFixtures.expectRejected(image, .differencingDiskNotAllowed, mentioning: "type 4")
    }

    @Test(arguments: ["dynamic", "fixed"])
    func footerChecksumMismatch(subformat: String) throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: subformat, size: 5 << 20)
        try ReaderFixtures.patch(image) { bytes in
            for offset in [0, bytes.count - 512] where bytes[offset..<offset + 8].elementsEqual("conectix".utf8) {
                bytes[offset + 48] ^= 0x01  // current size, checksum left stale
            }
        }
        try ReaderFixtures.expectRejected(image, .checksumMismatch, mentioning: "footer checksum")
    }

    @Test func dynamicHeaderChecksumMismatch() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 5 << 20)
        try ReaderFixtures.patch(image) { bytes in bytes[512 + 28] ^= 0x01 }
        try ReaderFixtures.expectRejected(image, .checksumMismatch, mentioning: "dynamic header")
    }

    @Test func blockPastEndOfFile() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 5 << 20)
        try ReaderFixtures.patch(image) { bytes in
            let bat = Int(ReaderFixtures.be(bytes, at: 512 + 16, width: 8))
            ReaderFixtures.putBE(&bytes, UInt64(bytes.count / 512 + 100), at: bat, width: 4)
        }
        try ReaderFixtures.expectRejected(image, .truncatedImage, mentioning: "VHD block 0")
    }

    @Test func blockOverlappingTheBAT() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 5 << 20)
        try ReaderFixtures.patch(image) { bytes in
            let bat = Int(ReaderFixtures.be(bytes, at: 512 + 16, width: 8))
            ReaderFixtures.putBE(&bytes, UInt64(bat / 512), at: bat, width: 4)
        }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "overlaps the VHD BAT")
    }

    @Test func batLargerThanTheBudget() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 5 << 20)
        try Self.patchDynamicHeader(image) { bytes in ReaderFixtures.putBE(&bytes, 0x0100_0000, at: 512 + 28, width: 4)
        }
        try ReaderFixtures.expectRejected(image, .metadataTooLarge, mentioning: "block allocation table")
    }

    @Test func truncatedFile() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 5 << 20)
        try ReaderFixtures.patch(image) { bytes in bytes.removeLast(1 << 20) }
        try ReaderFixtures.expectRejected(image, .truncatedImage)
    }

    @Test func fixedDiskShorterThanItsSize() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "fixed", size: 5 << 20)
        try ReaderFixtures.patch(image) { bytes in
            let footer = Array(bytes.suffix(512))
            bytes.removeLast(4096 + 512)
            bytes += footer
        }
        try ReaderFixtures.expectRejected(image, .truncatedImage, mentioning: "data area")
    }

    @Test func virtualSizeOverTheLimit() throws {
        let dir = try TempDir()
        let image = try Self.make(dir, subformat: "dynamic", size: 5 << 20)
        try ReaderFixtures.expectRejected(image, .virtualSizeTooLarge, limits: .init(maxVirtualSize: 1 << 20))
    }
}
