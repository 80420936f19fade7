import DiskImage
import Testing

/// One test per qcow2 rejection, each with an image crafted by qemu-img and, where qemu cannot make it,
/// patched header bytes.
@Suite(.enabled(if: Oracle.available, Oracle.skipReason))
struct QCOW2SafetyTests {
    /// A v3 qcow2 (64 KiB clusters) of 4 MiB holding a little data; returns its path.
    static func makeImage(_ dir: TempDir, name: String = "disk.qcow2", options: String = "compat=1.1") throws
        -> String
    {
        let image = dir.path(name)
        try Oracle.qemuImg("create", "-f", "qcow2", "-o", options, image, "4M")
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0x42 0 128k", "write -P 0x43 2m 64k"])
        return image
    }

    /// Reads `image`, lets `patch` edit the bytes, and writes them back.
    static func patch(_ dir: TempDir, _ image: String, _ patch: (inout [UInt8]) -> Void) throws {
        let name = String(image.split(separator: "/").last ?? "")
        var bytes = try dir.read(name)
        patch(&bytes)
        try dir.write(name, bytes)
    }

    /// Asserts both `open` and `inspect` reject `image` with `code` and a message containing `mentions`.
    static func expectRejected(
        _ image: String, _ code: DiskImageError.Code, mentioning mentions: String? = nil,
        limits: InspectionLimits = .init(), sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let source = try FileByteSource(path: image)
        let result = DiskImage.inspect(source, limits: limits)
        #expect(result.verdict == .rejected, sourceLocation: sourceLocation)
        #expect(result.reasons.map(\.code) == [code.name], "\(result.reasons)", sourceLocation: sourceLocation)
        if let mentions {
            #expect(
                result.reasons.first?.message.contains(mentions) == true, "\(result.reasons)",
                sourceLocation: sourceLocation)
        }
        // Reading the image must fail the same way (at open, or at the latest while reading).
        do {
            var reader = try DiskImage.open(source, limits: limits)
            while try reader.next() != nil {}
            Issue.record("\(image) was read without error", sourceLocation: sourceLocation)
        } catch let error as DiskImageError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func backingFile() throws {
        let dir = try TempDir()
        let base = try Self.makeImage(dir, name: "base.qcow2")
        let overlay = dir.path("overlay.qcow2")
        try Oracle.qemuImg("create", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)
        try Self.expectRejected(overlay, .backingFileNotAllowed, mentioning: "base.qcow2")
    }

    @Test func externalDataFileCreatedByQemu() throws {
        let dir = try TempDir()
        let image = dir.path("ext.qcow2")
        // data_file truncates its target: it lives in the temp dir only.
        try Oracle.qemuImg("create", "-f", "qcow2", "-o", "data_file=\(dir.path("data.raw"))", image, "1M")
        try Self.expectRejected(image, .externalDataFileNotAllowed, mentioning: "data.raw")
    }

    @Test func externalDataFileBitAlone() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0[79] |= 1 << 2 }
        try Self.expectRejected(image, .externalDataFileNotAllowed, mentioning: "bit 2")
    }

    // qemu-img cannot create LUKS images on every machine (its PBKDF benchmark needs per-thread CPU time:
    // "Unable to get accurate CPU usage"), so the encrypted images are crafted from plain ones.

    @Test func luksCryptMethodPatched() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0.putBE32(2, at: 32) }
        try Self.expectRejected(image, .encryptedImage, mentioning: "LUKS")
    }

    @Test func aesCryptMethodPatched() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0.putBE32(1, at: 32) }
        try Self.expectRejected(image, .encryptedImage, mentioning: "AES")
    }

    @Test func encryptionHeaderExtension() throws {
        // crypt_method 0 but a full disk encryption header extension: the first extension (qemu writes the
        // feature name table there) is retyped to 0x0537be77.
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { bytes in
            let headerLength = Int(bytes.be32(at: 100))
            #expect(bytes.be32(at: headerLength) != 0)
            bytes.putBE32(0x0537_BE77, at: headerLength)
        }
        try Self.expectRejected(image, .encryptedImage, mentioning: "0x0537be77")
    }

    @Test func corruptBit() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0[79] |= 1 << 1 }
        try Self.expectRejected(image, .corruptImage, mentioning: "corrupt")
    }

    @Test func unknownIncompatibleBit() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0[78] |= 1 << 1 }  // bit 9
        try Self.expectRejected(image, .unsupportedFeature, mentioning: "bit 9")
    }

    @Test(arguments: [1, 4, 0xFFFF_FFFF] as [UInt32])
    func unsupportedVersion(version: UInt32) throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0.putBE32(version, at: 4) }
        try Self.expectRejected(image, .unsupportedFeature, mentioning: "version \(version)")
    }

    @Test func dirtyBitIsReadable() throws {
        // Decision: a dirty image only needs a refcount repair; its data mapping is intact (qemu converts it).
        let dir = try TempDir()
        let image = try Self.makeImage(dir, options: "compat=1.1,lazy_refcounts=on")
        try Self.patch(dir, image) { $0[79] |= 1 }
        try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
    }

    @Test func l1TablePastEndOfFile() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0.putBE64(1 << 40, at: 40) }
        try Self.expectRejected(image, .truncatedImage, mentioning: "l1_table_offset")
    }

    @Test func l1TableOverlappingHeader() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0.putBE64(0, at: 40) }
        try Self.expectRejected(image, .corruptImage, mentioning: "header")
    }

    @Test func l1TableOverMetadataBudget() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0.putBE32(5_000_000, at: 36) }  // 40 MB of L1 entries
        try Self.expectRejected(image, .metadataTooLarge, mentioning: "l1_size")
    }

    @Test func virtualSizeOverLimit() throws {
        let dir = try TempDir()
        let image = dir.path("big.qcow2")
        try Oracle.qemuImg("create", "-f", "qcow2", image, "2G")
        try Self.expectRejected(
            image, .virtualSizeTooLarge, mentioning: "virtual size", limits: .init(maxVirtualSize: 1 << 30))
    }

    @Test func hugeVirtualSizeInHeader() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { $0.putBE64(UInt64.max - 511, at: 24) }
        try Self.expectRejected(image, .virtualSizeTooLarge)
    }

    /// Host offset of the L2 table of L1 entry 0 and the file bytes.
    static func firstL2(_ bytes: [UInt8]) -> Int {
        let l1 = Int(bytes.be64(at: 40))
        return Int(bytes.be64(at: l1) & 0x00FF_FFFF_FFFF_FE00)
    }

    @Test func dataClusterPastEndOfFile() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { bytes in
            let l2 = Self.firstL2(bytes)
            bytes.putBE64((1 << 63) | (1 << 40), at: l2 + 8)  // cluster 1 → 1 TiB
        }
        try Self.expectRejected(image, .truncatedImage, mentioning: "past the end")
    }

    @Test func dataClusterOverlappingHeaderOrUnaligned() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { bytes in
            let l2 = Self.firstL2(bytes)
            bytes.putBE64((1 << 63) | 0x10200, at: l2)  // not cluster aligned
        }
        try Self.expectRejected(image, .corruptImage, mentioning: "aligned")
    }

    @Test func l2TablePastEndOfFile() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { bytes in
            let l1 = Int(bytes.be64(at: 40))
            bytes.putBE64((1 << 63) | (1 << 41), at: l1)
        }
        try Self.expectRejected(image, .truncatedImage, mentioning: "L2 table")
    }

    @Test func truncatedFile() throws {
        let dir = try TempDir()
        let image = try Self.makeImage(dir)
        try Self.patch(dir, image) { bytes in bytes.removeLast(bytes.count - 5 * 65536 - 100) }
        try Self.expectRejected(image, .truncatedImage)
    }

    @Test func compressedClusterThatDoesNotInflate() throws {
        let dir = try TempDir()
        let source = try Self.makeImage(dir, name: "plain.qcow2")
        let image = dir.path("compressed.qcow2")
        try Oracle.qemuImg("convert", "-c", "-f", "qcow2", "-O", "qcow2", source, image)
        try Self.patch(dir, image) { bytes in
            let entry = bytes.be64(at: Self.firstL2(bytes))
            let host = Int(entry & ((1 << (62 - (16 - 8))) - 1))
            for i in 0..<16 { bytes[host + i] = 0xFF }
        }
        try Self.expectRejected(image, .decompressionFailed, mentioning: "compressed cluster")
    }

    @Test func compressedClusterWithTooLittleData() throws {
        // A valid deflate stream that ends early (inflates to less than one cluster).
        let dir = try TempDir()
        let source = try Self.makeImage(dir, name: "plain.qcow2")
        let image = dir.path("compressed.qcow2")
        try Oracle.qemuImg("convert", "-c", "-f", "qcow2", "-O", "qcow2", source, image)
        try Self.patch(dir, image) { bytes in
            let entry = bytes.be64(at: Self.firstL2(bytes))
            let host = Int(entry & ((1 << (62 - (16 - 8))) - 1))
            // Stored block, final, 5 bytes of data: "hello".
            let stored: [UInt8] = [0x01, 0x05, 0x00, 0xFA, 0xFF] + Array("hello".utf8)
            bytes.replaceSubrange(host..<host + stored.count, with: stored)
        }
        try Self.expectRejected(image, .decompressionFailed, mentioning: "inflated")
    }
}
