import DiskImage
import Foundation
import Testing

/// Disks inside the containers operators ship (architecture.md "Inputs"): every container form around every
/// disk format reads exactly as `qemu-img convert -O raw` of the inner disk, and each container rule refuses
/// with its code.
@Suite(.enabled(if: Archivers.available, Archivers.skipReason))
struct ContainerTests {
    typealias Disk = Archivers.Disk

    /// The container forms, each made from a disk file named `disk` in `dir`.
    enum Form: String, CaseIterable, CustomStringConvertible {
        case tar, ova, tarGz, gzip, xz, zstd, bzip2, zip
        var description: String { rawValue }
        var expected: ContainerKind {
            switch self {
            case .tar, .tarGz: .tar
            case .ova: .ova
            case .gzip: .gzip
            case .xz: .xz
            case .zstd: .zstd
            case .bzip2: .bzip2
            case .zip: .zip
            }
        }

        func make(disk: String, in dir: TempDir) throws -> String {
            try dir.write("README.txt", Array("A disk image, as the vendor ships it.\n".utf8))
            switch self {
            case .tar: return try Archivers.tar("image.tar", ["README.txt", disk], in: dir)
            case .ova: return try Archivers.ova("image.ova", ovf: Archivers.ovf([disk]), disks: [disk], in: dir)
            case .tarGz:
                try Archivers.tar("image.tar", [disk, "README.txt"], in: dir, options: ["--format=gnu"])
                return try Archivers.compress("image.tar", with: "gzip", in: dir)
            case .gzip, .xz, .zstd, .bzip2: return try Archivers.compress(disk, with: rawValue, in: dir)
            case .zip: return try Archivers.zip("image.zip", ["README.txt", disk], in: dir)
            }
        }
    }

    /// Asserts `open` reads `image` as `reference`, with the format and container given, and that `inspect`
    /// accepts it and reports both.
    static func expectReads(
        _ image: String, as reference: [UInt8], format: ImageFormat, container: ContainerKind,
        limits: InspectionLimits = .init(), sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let source = try FileByteSource(path: image)
        let reader = try DiskImage.open(source, limits: limits)
        #expect(reader.info.format == format, sourceLocation: sourceLocation)
        #expect(reader.info.container == container, sourceLocation: sourceLocation)
        #expect(reader.info.virtualSize == UInt64(reference.count), sourceLocation: sourceLocation)
        let ours = try Oracle.readAll(reader)
        let diff = Oracle.firstDifference(ours, reference)
        #expect(diff == nil, "\(image): first difference at \(diff ?? -1)", sourceLocation: sourceLocation)
        let result = DiskImage.inspect(source, limits: limits)
        #expect(result.verdict == .ok, "\(result.reasons)", sourceLocation: sourceLocation)
        #expect(result.format == format, sourceLocation: sourceLocation)
        #expect(result.container == container, sourceLocation: sourceLocation)
    }

    /// Asserts `inspect` and `open` (read to the end) both refuse `image` with `code`.
    static func expectRefused(
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
        do {
            var reader = try DiskImage.open(source, limits: limits)
            while try reader.next() != nil {}
            Issue.record("\(image) was read without error", sourceLocation: sourceLocation)
        } catch let error as DiskImageError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: Disk.allCases)
    func everyContainerAroundEveryFormat(_ disk: Disk) throws {
        for form in Form.allCases {
            let dir = try TempDir()
            let name = "disk.\(disk.rawValue)"
            let inner = try Archivers.makeDisk(disk, in: dir, name: name)
            let reference = try Oracle.referenceRaw(inner, format: disk.qemuFormat)
            let image = try form.make(disk: name, in: dir)
            try Self.expectReads(image, as: reference, format: disk.format, container: form.expected)
        }
    }

    @Test func uncompressedTarIsReadInPlace() throws {
        let dir = try TempDir()
        let disk = try Archivers.makeDisk(.qcow2, in: dir, name: "disk.qcow2")
        let reference = try Oracle.referenceRaw(disk, format: "qcow2")
        let image = try Archivers.ova("in-place.ova", ovf: Archivers.ovf(["disk.qcow2"]), disks: ["disk.qcow2"], in: dir)
        // No temporary file may be created: the scratch directory does not exist.
        let limits = InspectionLimits(scratchDirectory: dir.path("no-such-directory"))
        try Self.expectReads(image, as: reference, format: .qcow2, container: .ova, limits: limits)
        // And a compressed stream does need it.
        let gz = try Archivers.compress("disk.qcow2", with: "gzip", in: dir)
        try Self.expectRefused(gz, .ioError, mentioning: "no-such-directory", limits: limits)
    }

    @Test func spillFileIsGoneFromTheScratchDirectory() throws {
        let dir = try TempDir()
        let disk = try Archivers.makeDisk(.qcow2, in: dir, name: "disk.qcow2")
        let reference = try Oracle.referenceRaw(disk, format: "qcow2")
        let zst = try Archivers.compress("disk.qcow2", with: "zstd", in: dir)
        let scratch = try TempDir()
        let reader = try DiskImage.open(try FileByteSource(path: zst), limits: .init(scratchDirectory: scratch.url.path))
        // The temporary file is unlinked as soon as it is created: nothing to clean up, even after a crash.
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).isEmpty)
        #expect(try Oracle.readAll(reader) == reference)
    }

    @Test func encryptedZipMember() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.raw, in: dir, name: "disk.raw")
        try Archivers.run("zip", ["-q", "-j", "-P", "secret", dir.path("locked.zip"), dir.path("disk.raw")])
        try Self.expectRefused(dir.path("locked.zip"), .encryptedImage)
    }

    @Test func ovaWithTheDiskMemberTwice() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.vmdk, in: dir, name: "disk.vmdk")
        let image = try Archivers.ova("twice.ova", ovf: Archivers.ovf(["disk.vmdk"]), disks: ["disk.vmdk"], in: dir)
        try Archivers.tarIn(dir, ["--format=ustar", "-rf", image, "disk.vmdk"])
        try Self.expectRefused(image, .corruptImage, mentioning: "more than once")
    }

    @Test func ovaWithSplitDiskFile() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.vmdk, in: dir, name: "disk.vmdk")
        let ovf = Archivers.ovf(["disk.vmdk"]).replacingOccurrences(
            of: "ovf:id=\"file0\"", with: "ovf:id=\"file0\" ovf:chunkSize=\"1048576\"")
        let image = try Archivers.ova("split.ova", ovf: ovf, disks: ["disk.vmdk"], in: dir)
        try Self.expectRefused(image, .unsupportedContainer, mentioning: "chunk")
    }

    @Test func sparseGNUTarAsGCEShipsIt() throws {
        let dir = try TempDir()
        let disk = try Archivers.makeDisk(.raw, in: dir, name: "disk.raw", size: "16M")
        let reference = try Oracle.referenceRaw(disk, format: "raw")
        try Archivers.tarIn(dir, ["--format=oldgnu", "-Scf", dir.path("gce.tar"), "disk.raw"])
        try Self.expectReads(dir.path("gce.tar"), as: reference, format: .raw, container: .tar)
        try Archivers.tarIn(dir, ["--format=oldgnu", "-Sczf", dir.path("gce.tar.gz"), "disk.raw"])
        try Self.expectReads(dir.path("gce.tar.gz"), as: reference, format: .raw, container: .tar)
        try Archivers.tarIn(dir, ["--format=pax", "-Scf", dir.path("pax-sparse.tar"), "disk.raw"])
        try Self.expectReads(dir.path("pax-sparse.tar"), as: reference, format: .raw, container: .tar)
    }

    @Test func ovaWithGzipCompressedDisk() throws {
        let dir = try TempDir()
        let disk = try Archivers.makeDisk(.vmdk, in: dir, name: "disk.vmdk")
        let reference = try Oracle.referenceRaw(disk, format: "vmdk")
        try Archivers.compress("disk.vmdk", with: "gzip", in: dir)
        let image = try Archivers.ova(
            "gz.ova", ovf: Archivers.ovf(["disk.vmdk.gz"], compression: "gzip"), disks: ["disk.vmdk.gz"], in: dir)
        try Self.expectReads(image, as: reference, format: .vmdk, container: .ova)
    }

    @Test func storedZipAndCompressedOVA() throws {
        let dir = try TempDir()
        let disk = try Archivers.makeDisk(.vhd, in: dir, name: "disk.vhd")
        let reference = try Oracle.referenceRaw(disk, format: "vpc")
        let zip = try Archivers.zip("stored.zip", ["disk.vhd"], in: dir, stored: true)
        try Self.expectReads(zip, as: reference, format: .vhd, container: .zip)
        try Archivers.ova("image.ova", ovf: Archivers.ovf(["disk.vhd"]), disks: ["disk.vhd"], in: dir)
        let xz = try Archivers.compress("image.ova", with: "xz", in: dir)
        try Self.expectReads(xz, as: reference, format: .vhd, container: .ova)
    }

    // MARK: - OVA rules

    @Test(arguments: ["http://attacker.example/disk.vmdk", "file:///etc/passwd", "/etc/passwd", "../disk.vmdk",
        "disks/../../disk.vmdk", "%2e%2e/disk.vmdk", "\\\\server\\share\\disk.vmdk"])
    func ovaHrefOutsideTheArchive(_ href: String) throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.vmdk, in: dir, name: "disk.vmdk")
        let escaped = href.replacingOccurrences(of: "&", with: "&amp;")
        let image = try Archivers.ova("evil.ova", ovf: Archivers.ovf([escaped]), disks: ["disk.vmdk"], in: dir)
        try Self.expectRefused(image, .externalExtentNotAllowed, mentioning: "href")
    }

    @Test func ovaWithTwoDisks() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.vmdk, in: dir, name: "disk1.vmdk")
        try Archivers.makeDisk(.vmdk, in: dir, name: "disk2.vmdk", seed: 9)
        let image = try Archivers.ova(
            "two.ova", ovf: Archivers.ovf(["disk1.vmdk", "disk2.vmdk"]), disks: ["disk1.vmdk", "disk2.vmdk"], in: dir)
        try Self.expectRefused(image, .multipleDisks, mentioning: "disk2.vmdk")
        let gz = try Archivers.compress("two.ova", with: "gzip", in: dir)
        try Self.expectRefused(gz, .multipleDisks, mentioning: "disk1.vmdk")
    }

    @Test func ovaNamingAMissingMember() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.vmdk, in: dir, name: "disk.vmdk")
        let image = try Archivers.ova("missing.ova", ovf: Archivers.ovf(["other.vmdk"]), disks: ["disk.vmdk"], in: dir)
        try Self.expectRefused(image, .corruptImage, mentioning: "other.vmdk")
        let zst = try Archivers.compress("missing.ova", with: "zstd", in: dir)
        try Self.expectRefused(zst, .corruptImage, mentioning: "other.vmdk")
    }

    @Test func ovaWithoutDisksOrWithBrokenDescriptor() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.vmdk, in: dir, name: "disk.vmdk")
        let none = try Archivers.ova("none.ova", ovf: Archivers.ovf([]), disks: ["disk.vmdk"], in: dir)
        try Self.expectRefused(none, .unknownFormat)
        let broken = try Archivers.ova("broken.ova", ovf: "<Envelope><References><File ovf:href=", disks: ["disk.vmdk"], in: dir)
        try Self.expectRefused(broken, .corruptImage)
        let dtd = Archivers.ovf(["disk.vmdk"]).replacingOccurrences(
            of: "<!-- written by the DiskImage tests -->",
            with: "<!DOCTYPE Envelope [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>")
        let withDTD = try Archivers.ova("dtd.ova", ovf: dtd, disks: ["disk.vmdk"], in: dir)
        try Self.expectRefused(withDTD, .corruptImage, mentioning: "DTD")
    }

    @Test func ovaWhoseDiskIsAnArchive() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.raw, in: dir, name: "disk.raw")
        try Archivers.tar("inner.tar", ["disk.raw"], in: dir)
        let image = try Archivers.ova("nested.ova", ovf: Archivers.ovf(["inner.tar"]), disks: ["inner.tar"], in: dir)
        try Self.expectRefused(image, .unsupportedContainer)
    }

    // MARK: - Plain tar and zip rules

    @Test func tarAndZipWithSeveralDisks() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.raw, in: dir, name: "a.raw")
        try Archivers.makeDisk(.qcow2, in: dir, name: "b.qcow2", seed: 3)
        let tar = try Archivers.tar("two.tar", ["a.raw", "b.qcow2"], in: dir)
        try Self.expectRefused(tar, .multipleDisks, mentioning: "b.qcow2")
        let tgz = try Archivers.compress("two.tar", with: "bzip2", in: dir)
        try Self.expectRefused(tgz, .multipleDisks, mentioning: "a.raw")
        let zip = try Archivers.zip("two.zip", ["a.raw", "b.qcow2"], in: dir)
        try Self.expectRefused(zip, .multipleDisks, mentioning: "b.qcow2")
    }

    @Test func tarAndZipWithoutADisk() throws {
        let dir = try TempDir()
        try dir.write("notes.txt", Array(String(repeating: "no disk here\n", count: 10_000).utf8))
        try dir.write("sums.sha256", Array("0123  disk.raw\n".utf8))
        let tar = try Archivers.tar("nodisk.tar", ["notes.txt", "sums.sha256"], in: dir)
        try Self.expectRefused(tar, .unknownFormat, mentioning: "notes.txt")
        let zip = try Archivers.zip("nodisk.zip", ["notes.txt", "sums.sha256"], in: dir)
        try Self.expectRefused(zip, .unknownFormat)
        let xz = try Archivers.compress("nodisk.tar", with: "xz", in: dir)
        try Self.expectRefused(xz, .unknownFormat)
    }

    @Test func tarWithADiskAndSmallFilesUsesTheDisk() throws {
        let dir = try TempDir()
        let disk = try Archivers.makeDisk(.vdi, in: dir, name: "disk.vdi")
        let reference = try Oracle.referenceRaw(disk, format: "vdi")
        try dir.write("manifest.json", Array(#"{"name":"vm","disks":1}"#.utf8))
        try dir.write("checksums", Array(String(repeating: "x", count: 1024).utf8))
        let tar = try Archivers.tar("mixed.tar", ["manifest.json", "disk.vdi", "checksums"], in: dir)
        try Self.expectReads(tar, as: reference, format: .vdi, container: .tar)
    }

    // MARK: - Damaged and oversized streams

    @Test(arguments: ["gzip", "xz", "zstd", "bzip2"])
    func truncatedStream(_ tool: String) throws {
        let dir = try TempDir()
        try Self.noise(dir, name: "disk.raw")
        let compressed = try Archivers.compress("disk.raw", with: tool, in: dir)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: compressed)))
        let cut = try dir.write("cut", Array(bytes.prefix(bytes.count * 2 / 3)))
        try Self.expectRefused(cut, .truncatedImage)
    }

    /// 1 MiB of pseudo-random bytes (compressors keep them nearly as they are, so damage hits real data).
    static func noise(_ dir: TempDir, name: String) throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let bytes = (0..<(1 << 20)).map { _ -> UInt8 in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        try dir.write(name, bytes)
    }

    @Test(arguments: ["gzip", "xz", "zstd", "bzip2"])
    func corruptedStream(_ tool: String) throws {
        let dir = try TempDir()
        try Self.noise(dir, name: "disk.raw")
        let compressed = try Archivers.compress("disk.raw", with: tool, in: dir)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: compressed)))
        // Damage the middle of the data (a flipped byte inside a compressed block fails its CRC or decoding).
        for i in stride(from: bytes.count / 2, to: bytes.count / 2 + 64, by: 1) { bytes[i] ^= 0x5A }
        let damaged = try dir.write("damaged", bytes)
        try Self.expectRefused(damaged, .decompressionFailed)
    }

    @Test func gzipTrailerChecksumMismatch() throws {
        let dir = try TempDir()
        try Self.noise(dir, name: "disk.raw")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try Archivers.compress("disk.raw", with: "gzip", in: dir))))
        bytes[bytes.count - 8] ^= 0xFF  // CRC-32 of the trailer
        try Self.expectRefused(try dir.write("crc.gz", bytes), .decompressionFailed)
    }

    @Test func garbageAfterTheMagic() throws {
        let dir = try TempDir()
        var bytes: [UInt8] = [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]
        for i in 0..<100_000 { bytes.append(UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13)) }
        let image = try dir.write("garbage.xz", bytes)
        let result = DiskImage.inspect(try FileByteSource(path: image))
        #expect(result.verdict == .rejected)
        #expect(["DecompressionFailed", "TruncatedImage"].contains(result.reasons.first?.code ?? ""), "\(result.reasons)")
        #expect(result.container == .xz)
    }

    @Test func streamInflatingPastTheLimit() throws {
        let dir = try TempDir()
        try Oracle.qemuImg("create", "-q", "-f", "raw", dir.path("big.raw"), "64M")
        try Oracle.qemuIO(dir.path("big.raw"), format: "raw", ["write -P 1 60m 4k"])
        let xz = try Archivers.compress("big.raw", with: "xz", in: dir)
        try Self.expectRefused(xz, .virtualSizeTooLarge, limits: .init(maxVirtualSize: 16 << 20))
        try Archivers.tar("big.tar", ["big.raw"], in: dir)
        let tgz = try Archivers.compress("big.tar", with: "zstd", in: dir)
        try Self.expectRefused(tgz, .virtualSizeTooLarge, limits: .init(maxVirtualSize: 16 << 20))
    }

    @Test func nestedCompressionIsBounded() throws {
        let dir = try TempDir()
        let disk = try Archivers.makeDisk(.raw, in: dir, name: "disk.raw")
        let reference = try Oracle.referenceRaw(disk, format: "raw")
        try Archivers.compress("disk.raw", with: "xz", in: dir)
        // gzip of xz: two levels, read.
        let twice = try Archivers.compress("disk.raw.xz", with: "gzip", in: dir)
        try Self.expectReads(twice, as: reference, format: .raw, container: .gzip)
        // Three levels: refused.
        let thrice = try Archivers.compress("disk.raw.xz.gz", with: "bzip2", in: dir)
        try Self.expectRefused(thrice, .unsupportedContainer)
    }

    @Test func cancellationStopsDecompression() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.raw, in: dir, name: "disk.raw")
        let gz = try Archivers.compress("disk.raw", with: "gzip", in: dir)
        #expect(throws: CancellationError.self) {
            try DiskImage.open(try FileByteSource(path: gz), isCancelled: { true })
        }
    }

    @Test func containerDetectionIsFromContent() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.raw, in: dir, name: "disk.raw")
        let gz = try Archivers.compress("disk.raw", with: "gzip", in: dir)
        // Renamed to look like a qcow2: still gzip.
        try FileManager.default.moveItem(atPath: gz, toPath: dir.path("looks-like.qcow2"))
        #expect(try DiskImage.detectContainer(try FileByteSource(path: dir.path("looks-like.qcow2"))) == .gzip)
        #expect(try DiskImage.detect(try FileByteSource(path: dir.path("looks-like.qcow2"))) == .raw)
        // A claimed format is the inner disk's.
        #expect(throws: DiskImageError(.formatMismatch, "")) {
            try DiskImage.open(try FileByteSource(path: dir.path("looks-like.qcow2")), claimedFormat: .qcow2)
        }
    }
}
