import DiskImage
import Foundation
import Testing

/// A forward-only stream over bytes in memory, handing them out in uneven chunks.
struct ChunkedStream: ForwardByteStream {
    let bytes: [UInt8]
    var position = 0
    var turn = 0
    static let chunks = [1000, 7, 65536, 512, 3 << 20, 1]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func read(max: Int) throws -> [UInt8] {
        let size = Swift.min(max, ChunkedStream.chunks[turn % ChunkedStream.chunks.count], bytes.count - position)
        turn += 1
        defer { position += size }
        return Array(bytes[position..<position + size])
    }
}

/// Builds stream-optimized VMDKs the way VMware writes them (Virtual Disk Format 1.1): header with
/// GD_AT_END, grain markers, grain tables and the grain directory behind markers, footer, end-of-stream.
/// Grains are zlib streams of stored (uncompressed) deflate blocks, which needs no compressor.
struct VMwareStream {
    var grainSectors: UInt64 = 128
    /// Grains whose compressed data inflates to 512 bytes less than a grain.
    var shortGrain: Int?
    /// Grains whose compressed data inflates to 512 bytes more than a grain.
    var longGrain: Int?
    var footerCapacityDelta: UInt64 = 0
    var withFooter = true
    var swapFirstTwoGrains = false
    var trailingGarbage = false

    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let n = min(65535, data.count - offset)
            let final: UInt8 = offset + n == data.count ? 1 : 0
            out += [final, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[offset..<offset + n]
            offset += n
        } while offset < data.count
        var a: UInt32 = 1
        var b: UInt32 = 0
        for byte in data {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        let adler = b << 16 | a
        return out + [UInt8(adler >> 24), UInt8((adler >> 16) & 0xFF), UInt8((adler >> 8) & 0xFF), UInt8(adler & 0xFF)]
    }

    static func padSector(_ bytes: inout [UInt8]) {
        if bytes.count % 512 != 0 { bytes += [UInt8](repeating: 0, count: 512 - bytes.count % 512) }
    }

    func header(capacity: UInt64, gdOffset: UInt64) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        h.replaceSubrange(0..<4, with: Array("KDMV".utf8))
        ReaderFixtures.putLE(&h, 3, at: 4, width: 4)
        ReaderFixtures.putLE(&h, 0x30001, at: 8, width: 4)
        ReaderFixtures.putLE(&h, capacity, at: 12, width: 8)
        ReaderFixtures.putLE(&h, grainSectors, at: 20, width: 8)
        ReaderFixtures.putLE(&h, 1, at: 28, width: 8)  // descriptor at sector 1
        ReaderFixtures.putLE(&h, 2, at: 36, width: 8)  // two sectors
        ReaderFixtures.putLE(&h, 512, at: 44, width: 4)
        ReaderFixtures.putLE(&h, gdOffset, at: 56, width: 8)
        ReaderFixtures.putLE(&h, 3, at: 64, width: 8)  // overHead
        h.replaceSubrange(73..<77, with: [0x0A, 0x20, 0x0D, 0x0A])
        ReaderFixtures.putLE(&h, 1, at: 77, width: 2)
        return h
    }

    func marker(value: UInt64, type: UInt32) -> [UInt8] {
        var m = [UInt8](repeating: 0, count: 512)
        ReaderFixtures.putLE(&m, value, at: 0, width: 8)
        ReaderFixtures.putLE(&m, UInt64(type), at: 12, width: 4)
        return m
    }

    /// A stream-optimized VMDK of `raw` (whose length must be a multiple of 512).
    func build(_ raw: [UInt8]) -> [UInt8] {
        let capacity = UInt64(raw.count / 512)
        let grainBytes = Int(grainSectors * 512)
        var out = header(capacity: capacity, gdOffset: 0xFFFF_FFFF_FFFF_FFFF)
        var descriptor = Array(
            """
            # Disk DescriptorFile
            version=1
            CID=fffffffe
            parentCID=ffffffff
            createType="streamOptimized"

            # Extent description
            RDONLY \(capacity) SPARSE "generated.vmdk"

            # The Disk Data Base
            #DDB

            ddb.virtualHWVersion = "4"
            ddb.adapterType = "lsilogic"

            """.utf8)
        descriptor += [UInt8](repeating: 0, count: 1024 - descriptor.count)
        out += descriptor
        let grains = (raw.count + grainBytes - 1) / grainBytes
        var gt = [UInt32](repeating: 0, count: (grains + 511) / 512 * 512)
        var order = Array(0..<grains).filter { g in
            raw[g * grainBytes..<min(raw.count, (g + 1) * grainBytes)].contains { $0 != 0 }
        }
        if swapFirstTwoGrains, order.count >= 2 { order.swapAt(0, 1) }
        for g in order {
            var grain = Array(raw[g * grainBytes..<min(raw.count, (g + 1) * grainBytes)])
            grain += [UInt8](repeating: 0, count: grainBytes - grain.count)
            if g == shortGrain { grain.removeLast(512) }
            if g == longGrain { grain += [UInt8](repeating: 0x99, count: 512) }
            let data = Self.zlibStored(grain)
            gt[g] = UInt32(out.count / 512)
            var m = [UInt8](repeating: 0, count: 12)
            ReaderFixtures.putLE(&m, UInt64(g) * grainSectors, at: 0, width: 8)
            ReaderFixtures.putLE(&m, UInt64(data.count), at: 8, width: 4)
            out += m + data
            Self.padSector(&out)
        }
        var gd: [UInt32] = []
        for t in 0..<gt.count / 512 {
            out += marker(value: 4, type: 1)
            gd.append(UInt32(out.count / 512))
            for e in gt[t * 512..<(t + 1) * 512] {
                var b = [UInt8](repeating: 0, count: 4)
                ReaderFixtures.putLE(&b, UInt64(e), at: 0, width: 4)
                out += b
            }
        }
        var gdBytes = [UInt8]()
        for e in gd {
            var b = [UInt8](repeating: 0, count: 4)
            ReaderFixtures.putLE(&b, UInt64(e), at: 0, width: 4)
            gdBytes += b
        }
        Self.padSector(&gdBytes)
        out += marker(value: UInt64(gdBytes.count / 512), type: 2)
        let gdSector = UInt64(out.count / 512)
        out += gdBytes
        if withFooter {
            out += marker(value: 1, type: 3)
            out += header(capacity: capacity + footerCapacityDelta, gdOffset: gdSector)
        }
        out += marker(value: 0, type: 0)
        if trailingGarbage { out += [UInt8](repeating: 0x42, count: 512) }
        return out
    }
}

/// VMDK images (monolithicSparse, streamOptimized) made by qemu-img/qemu-io or built like VMware does, read by
/// snapimport (random access and forward-only) and compared with `qemu-img convert -f vmdk`, and one crafted
/// image per rejection.
@Suite(.enabled(if: Oracle.available, Oracle.skipReason))
struct VMDKTests {
    static let writes = [
        "write -P 0xab 100k 300k", "write -P 0x55 2m 1m", "write -P 0x11 0 512", "write -P 0x22 3m 4k",
    ]

    static func makeSparse(_ dir: TempDir, size: UInt64 = 5 << 20, options: String = "") throws -> String {
        let image = dir.path("disk.vmdk")
        try Oracle.qemuImg(
            "create", "-f", "vmdk", "-o", "subformat=monolithicSparse" + (options.isEmpty ? "" : ",\(options)"), image,
            "\(size)")
        try Oracle.qemuIO(image, format: "vmdk", writes)
        return image
    }

    static func makeStreamOptimized(_ dir: TempDir, size: UInt64 = 5 << 20) throws -> String {
        let raw = dir.path("source.raw")
        try Oracle.qemuImg("create", "-f", "raw", raw, "\(size)")
        try Oracle.qemuIO(raw, format: "raw", writes + ["write -P 0x33 \(size / 512 * 512 - 1024) 1024"])
        let image = dir.path("stream.vmdk")
        try Oracle.qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, image)
        return image
    }

    /// A patterned raw disk of `size` bytes with data, holes and a partial last grain.
    static func patternedRaw(size: Int) -> [UInt8] {
        var raw = [UInt8](repeating: 0, count: size)
        for i in 0..<4096 { raw[i] = UInt8(truncatingIfNeeded: i * 7 + 1) }
        for i in (200 << 10)..<(300 << 10) { raw[i] = UInt8(truncatingIfNeeded: i / 512) }
        for i in (size - 1024)..<size { raw[i] = 0x5A }
        raw[510] = 0x55
        raw[511] = 0xAA
        return raw
    }

    /// Rewrites the embedded descriptor text of `image` through `edit`.
    static func patchDescriptor(_ image: String, _ edit: @escaping (String) -> String) throws {
        try ReaderFixtures.patch(image) { bytes in
            let offset = Int(ReaderFixtures.le(bytes, at: 28, width: 8)) * 512
            let size = Int(ReaderFixtures.le(bytes, at: 36, width: 8)) * 512
            let text = String(decoding: bytes[offset..<offset + size].prefix { $0 != 0 }, as: UTF8.self)
            let new = Array(edit(text).utf8)
            try #require(new.count < size)
            bytes.replaceSubrange(offset..<offset + size, with: new + [UInt8](repeating: 0, count: size - new.count))
        }
    }

    static func readStream(_ bytes: [UInt8], limits: InspectionLimits = .init()) throws -> [UInt8] {
        try Oracle.readAll(try VMDKStreamReader(stream: ChunkedStream(bytes), limits: limits))
    }

    static func expectStreamRejected(
        _ bytes: [UInt8], _ code: DiskImageError.Code, mentioning: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        do {
            _ = try readStream(bytes)
            Issue.record("the stream was read without error", sourceLocation: sourceLocation)
        } catch let error as DiskImageError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
            if let mentioning {
                #expect(error.message.contains(mentioning), "\(error)", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    // MARK: Oracle

    @Test(arguments: [UInt64(5 << 20), 3_333_333, 40 << 20])
    func monolithicSparseMatchesQemu(size: UInt64) throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir, size: size)
        let info = try Oracle.assertMatchesReference(image, qemuFormat: "vmdk", expected: .vmdk)
        #expect(info.virtualSize == (try ReaderFixtures.qemuVirtualSize(image, format: "vmdk")))
    }

    @Test func zeroedGrainEntries() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir, options: "zeroed_grain=on")
        try Oracle.qemuIO(image, format: "vmdk", ["write -z 2m 64k", "write -z 128k 64k"])
        try Oracle.assertMatchesReference(image, qemuFormat: "vmdk", expected: .vmdk)
    }

    @Test(arguments: [UInt64(5 << 20), 3_333_333, 40 << 20])
    func streamOptimizedMatchesQemu(size: UInt64) throws {
        let dir = try TempDir()
        let image = try Self.makeStreamOptimized(dir, size: size)
        try Oracle.assertMatchesReference(image, qemuFormat: "vmdk", expected: .vmdk)
        // The same file read forward-only, in uneven chunks.
        let reference = try Oracle.referenceRaw(image, format: "vmdk")
        let streamed = try Self.readStream(try dir.read("stream.vmdk"))
        #expect(Oracle.firstDifference(streamed, reference) == nil)
    }

    /// A VMware-style stream (grain directory at the end, found through the footer): qemu, the random-access
    /// reader and the forward-only reader all give back the raw disk it was made from.
    @Test(arguments: [UInt64(128), 8])
    func vmwareStreamWithFooter(grainSectors: UInt64) throws {
        let dir = try TempDir()
        let raw = Self.patternedRaw(size: 3 << 20 + 512 * 5)
        let image = try dir.write("vmware.vmdk", VMwareStream(grainSectors: grainSectors).build(raw))
        #expect(try Oracle.referenceRaw(image, format: "vmdk") == raw)
        let info = try Oracle.assertMatchesReference(image, qemuFormat: "vmdk", expected: .vmdk)
        #expect(info.bootable)
        let reader = try VMDKStreamReader(stream: ChunkedStream(try dir.read("vmware.vmdk")), limits: .init())
        #expect(reader.info.bootable)
        #expect(reader.info.virtualSize == UInt64(raw.count))
        #expect(try Oracle.readAll(reader) == raw)
    }

    /// Descriptors VMware writes in a legacy code page (windows-1252) are read as Latin-1.
    @Test func latin1Descriptor() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try ReaderFixtures.patch(image) { bytes in
            let offset = Int(ReaderFixtures.le(bytes, at: 28, width: 8)) * 512
            let end = offset + bytes[offset...].prefix { $0 != 0 }.count
            let line =
                Array("# Caf".utf8) + [0xE9] + Array("\nencoding = \"windows-1252\"\nddb.comment = \"d".utf8) + [
                    0xE9, 0x22, 0x0A,
                ]
            bytes.replaceSubrange(end..<end + line.count, with: line)
        }
        try Oracle.assertMatchesReference(image, qemuFormat: "vmdk", expected: .vmdk)
    }

    // MARK: Descriptor rejections

    @Test func unsupportedCreateType() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try Self.patchDescriptor(image) { $0.replacingOccurrences(of: "monolithicSparse", with: "monolithicFlat") }
        try ReaderFixtures.expectRejected(image, .unsupportedFeature, mentioning: "monolithicFlat")
    }

    @Test(arguments: ["/etc/passwd", "../other.vmdk", "dir\\\\disk.vmdk", "C:disk.vmdk"])
    func extentWithAPath(name: String) throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try Self.patchDescriptor(image) { $0.replacingOccurrences(of: "\"disk.vmdk\"", with: "\"\(name)\"") }
        try ReaderFixtures.expectRejected(image, .externalExtentNotAllowed, mentioning: "extent file name")
    }

    @Test func secondExtent() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try Self.patchDescriptor(image) {
            $0.replacingOccurrences(
                of: "SPARSE \"disk.vmdk\"", with: "SPARSE \"disk.vmdk\"\nRW 2048 FLAT \"other.raw\" 0")
        }
        try ReaderFixtures.expectRejected(image, .externalExtentNotAllowed, mentioning: "2 extents")
    }

    @Test func flatExtent() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try Self.patchDescriptor(image) {
            $0.replacingOccurrences(of: "SPARSE \"disk.vmdk\"", with: "FLAT \"disk.vmdk\" 0")
        }
        try ReaderFixtures.expectRejected(image, .externalExtentNotAllowed, mentioning: "FLAT")
    }

    @Test(arguments: ["hello world", "key = \"unterminated", "RW many SPARSE \"disk.vmdk\"", "= value"])
    func lineOutsideTheGrammar(line: String) throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try Self.patchDescriptor(image) { $0 + line + "\n" }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "descriptor line")
    }

    @Test func parentFileNameHint() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try Self.patchDescriptor(image) { $0 + "parentFileNameHint=\"base.vmdk\"\n" }
        try ReaderFixtures.expectRejected(image, .differencingDiskNotAllowed, mentioning: "parent")
    }

    @Test func descriptorOverOneMiB() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, 4096, at: 36, width: 8) }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "1 MiB")
    }

    @Test func descriptorNotWhereTheHeaderSays() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try ReaderFixtures.patch(image) { bytes in
            let gd = ReaderFixtures.le(bytes, at: 56, width: 8)
            ReaderFixtures.putLE(&bytes, gd, at: 28, width: 8)  // point the descriptor at the grain directory
        }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "descriptor")
    }

    @Test func extentSizeDiffersFromCapacity() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try Self.patchDescriptor(image) { $0.replacingOccurrences(of: "RW 10240 SPARSE", with: "RW 20480 SPARSE") }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "capacity")
    }

    // MARK: Table and grain rejections

    @Test func grainDirectoryPastEndOfFile() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, 1 << 30, at: 56, width: 8) }
        try ReaderFixtures.expectRejected(image, .truncatedImage, mentioning: "grain directory")
    }

    @Test func grainTableOverlappingTheDescriptor() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try ReaderFixtures.patch(image) { bytes in
            let gd = Int(ReaderFixtures.le(bytes, at: 56, width: 8)) * 512
            ReaderFixtures.putLE(&bytes, 2, at: gd, width: 4)
        }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "overlaps the VMDK descriptor")
    }

    @Test func grainOverlappingTheHeader() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try ReaderFixtures.patch(image) { bytes in
            let gd = Int(ReaderFixtures.le(bytes, at: 56, width: 8)) * 512
            let gt = Int(ReaderFixtures.le(bytes, at: gd, width: 4)) * 512
            ReaderFixtures.putLE(&bytes, 0, at: gt + 4, width: 4)
            ReaderFixtures.putLE(&bytes, 2, at: gt, width: 4)  // grain 0 inside the descriptor
        }
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "overlaps the VMDK")
    }

    /// `validateMetadata` (for inspect) walks every grain table without reading guest data.
    @Test func validateMetadataChecksEveryGrain() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        let good = try VMDKReader(source: try FileByteSource(path: image), limits: .init())
        #expect(try good.validateMetadata() == 24 * 65536)  // grains 0, 1…6, 32…47 and 48
        let stream = try Self.makeStreamOptimized(dir)
        #expect(try VMDKReader(source: try FileByteSource(path: stream), limits: .init()).validateMetadata() > 0)
        try ReaderFixtures.patch(image) { bytes in
            let gd = Int(ReaderFixtures.le(bytes, at: 56, width: 8)) * 512
            let gt = Int(ReaderFixtures.le(bytes, at: gd, width: 4)) * 512
            ReaderFixtures.putLE(&bytes, 3, at: gt + 40 * 4, width: 4)  // grain 40 inside the descriptor
        }
        let bad = try VMDKReader(source: try FileByteSource(path: image), limits: .init())
        #expect(throws: DiskImageError(.corruptImage, "")) { try bad.validateMetadata() }
    }

    @Test func grainDirectoryLargerThanTheBudget() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try ReaderFixtures.patch(image) { bytes in ReaderFixtures.putLE(&bytes, 1 << 40, at: 12, width: 8) }
        try ReaderFixtures.expectRejected(
            image, .metadataTooLarge, mentioning: "grain directory", limits: .init(maxVirtualSize: 1 << 60))
    }

    @Test func truncatedSparseFile() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try ReaderFixtures.patch(image) { bytes in bytes.removeLast(512 << 10) }
        try ReaderFixtures.expectRejected(image, .truncatedImage, mentioning: "grain")
    }

    @Test func virtualSizeOverTheLimit() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        try ReaderFixtures.expectRejected(image, .virtualSizeTooLarge, limits: .init(maxVirtualSize: 1 << 20))
    }

    // MARK: Stream rejections

    @Test func compressedGrainInflatesShort() throws {
        let dir = try TempDir()
        let bytes = VMwareStream(shortGrain: 0).build(Self.patternedRaw(size: 1 << 20))
        let image = try dir.write("short.vmdk", bytes)
        try ReaderFixtures.expectRejected(image, .decompressionFailed, mentioning: "grain")
        Self.expectStreamRejected(bytes, .decompressionFailed)
    }

    @Test func compressedGrainInflatesLong() throws {
        let dir = try TempDir()
        let bytes = VMwareStream(longGrain: 0).build(Self.patternedRaw(size: 1 << 20))
        let image = try dir.write("long.vmdk", bytes)
        try ReaderFixtures.expectRejected(image, .decompressionFailed, mentioning: "more than")
        Self.expectStreamRejected(bytes, .decompressionFailed, mentioning: "more than")
    }

    @Test func footerInconsistentWithTheHeader() throws {
        let dir = try TempDir()
        let bytes = VMwareStream(footerCapacityDelta: 128).build(Self.patternedRaw(size: 1 << 20))
        let image = try dir.write("footer.vmdk", bytes)
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "footer")
        Self.expectStreamRejected(bytes, .corruptImage, mentioning: "footer")
    }

    @Test func endOfStreamWithoutTheFooter() throws {
        let dir = try TempDir()
        let bytes = VMwareStream(withFooter: false).build(Self.patternedRaw(size: 1 << 20))
        let image = try dir.write("nofooter.vmdk", bytes)
        try ReaderFixtures.expectRejected(image, .corruptImage, mentioning: "footer")
        Self.expectStreamRejected(bytes, .corruptImage, mentioning: "footer")
    }

    @Test func dataAfterTheEndOfStream() throws {
        let dir = try TempDir()
        let bytes = VMwareStream(trailingGarbage: true).build(Self.patternedRaw(size: 1 << 20))
        let image = try dir.write("trailing.vmdk", bytes)
        try ReaderFixtures.expectRejected(image, .corruptImage)
        Self.expectStreamRejected(bytes, .corruptImage, mentioning: "end-of-stream")
    }

    @Test func grainsOutOfOrderInAStream() throws {
        let bytes = VMwareStream(swapFirstTwoGrains: true).build(Self.patternedRaw(size: 1 << 20))
        Self.expectStreamRejected(bytes, .corruptImage, mentioning: "out of order")
    }

    @Test func truncatedStream() throws {
        let bytes = VMwareStream().build(Self.patternedRaw(size: 1 << 20))
        Self.expectStreamRejected(Array(bytes.prefix(bytes.count / 2)), .truncatedImage)
    }

    @Test func monolithicSparseIsNotAStream() throws {
        let dir = try TempDir()
        let image = try Self.makeSparse(dir)
        Self.expectStreamRejected(try dir.read("disk.vmdk"), .unsupportedFeature)
    }
}
