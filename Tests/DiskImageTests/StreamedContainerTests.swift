import DiskImage
import Foundation
import Testing

/// Raw and streamOptimized VMDK disks inside compressed streams are converted while they are decompressed,
/// with no temporary file (architecture.md "Inputs"). Every test that expects streaming points the scratch
/// directory at a folder that does not exist: a temporary file would fail with `IOError`.
@Suite(.enabled(if: Archivers.available, Archivers.skipReason))
struct StreamedContainerTests {
    static func noScratch(_ dir: TempDir) -> InspectionLimits {
        InspectionLimits(scratchDirectory: dir.path("no-such-directory"))
    }

    /// A 16 MiB raw disk whose size is not a multiple of 4 MiB chunks and whose last sector holds data.
    static func rawDisk(_ dir: TempDir, name: String = "disk.raw") throws -> String {
        let disk = try Archivers.makeDisk(.raw, in: dir, name: name, size: "16M")
        try Oracle.qemuImg("resize", "-q", "-f", "raw", disk, "\(16 * 1024 * 1024 + 3 * 512)")
        try Oracle.qemuIO(disk, format: "raw", ["write -P 0x3c \(16 * 1024 * 1024 + 1024) 512"])
        return disk
    }

    @Test(arguments: ["gzip", "xz", "zstd", "bzip2"])
    func rawStreamsWithoutATemporaryFile(_ tool: String) throws {
        let dir = try TempDir()
        let disk = try Self.rawDisk(dir)
        let reference = try Oracle.referenceRaw(disk, format: "raw")
        let image = try Archivers.compress("disk.raw", with: tool, in: dir)
        let kind = ContainerKind(rawValue: tool)!
        try ContainerTests.expectReads(image, as: reference, format: .raw, container: kind, limits: Self.noScratch(dir))
    }

    @Test(arguments: ["gzip", "xz"])
    func streamOptimizedVMDKStreamsWithoutATemporaryFile(_ tool: String) throws {
        let dir = try TempDir()
        let disk = try Archivers.makeDisk(.vmdk, in: dir, name: "disk.vmdk", size: "16M")
        let reference = try Oracle.referenceRaw(disk, format: "vmdk")
        let image = try Archivers.compress("disk.vmdk", with: tool, in: dir)
        let kind = ContainerKind(rawValue: tool)!
        try ContainerTests.expectReads(image, as: reference, format: .vmdk, container: kind, limits: Self.noScratch(dir))
    }

    @Test func gceTarGzAndCompressedOVAStream() throws {
        let dir = try TempDir()
        let disk = try Self.rawDisk(dir)
        let reference = try Oracle.referenceRaw(disk, format: "raw")
        let limits = Self.noScratch(dir)
        // GCE: disk.raw in a sparse GNU tar, gzipped; and a plain one with a second file.
        try Archivers.tarIn(dir, ["--format=oldgnu", "-Sczf", dir.path("gce.tar.gz"), "disk.raw"])
        try ContainerTests.expectReads(dir.path("gce.tar.gz"), as: reference, format: .raw, container: .tar, limits: limits)
        try dir.write("README.txt", Array("notes\n".utf8))
        try Archivers.tar("two.tar", ["README.txt", "disk.raw"], in: dir)
        let txz = try Archivers.compress("two.tar", with: "xz", in: dir)
        try ContainerTests.expectReads(txz, as: reference, format: .raw, container: .tar, limits: limits)
        // An OVA holding a raw disk, gzipped as a whole.
        try Archivers.ova("raw.ova", ovf: Archivers.ovf(["disk.raw"]), disks: ["disk.raw"], in: dir)
        let ovaGz = try Archivers.compress("raw.ova", with: "gzip", in: dir)
        try ContainerTests.expectReads(ovaGz, as: reference, format: .raw, container: .ova, limits: limits)
    }

    @Test func streamOptimizedVMDKInCompressedTarAndOVA() throws {
        let dir = try TempDir()
        let disk = try Archivers.makeDisk(.vmdk, in: dir, name: "disk.vmdk", size: "16M")
        let reference = try Oracle.referenceRaw(disk, format: "vmdk")
        let limits = Self.noScratch(dir)
        try Archivers.ova("vm.ova", ovf: Archivers.ovf(["disk.vmdk"]), disks: ["disk.vmdk"], in: dir)
        let ovaXz = try Archivers.compress("vm.ova", with: "xz", in: dir)
        try ContainerTests.expectReads(ovaXz, as: reference, format: .vmdk, container: .ova, limits: limits)
        try dir.write("README.txt", Array("notes\n".utf8))
        try Archivers.tar("vm.tar", ["disk.vmdk", "README.txt"], in: dir)
        let tgz = try Archivers.compress("vm.tar", with: "gzip", in: dir)
        try ContainerTests.expectReads(tgz, as: reference, format: .vmdk, container: .tar, limits: limits)
    }

    /// Random-access formats still need the temporary file: without a scratch directory they fail with
    /// `IOError`, with one they read. A fixed VHD looks raw until its last sector.
    @Test(arguments: [Archivers.Disk.qcow2, .vhd])
    func randomAccessFormatsStillSpill(_ disk: Archivers.Disk) throws {
        let dir = try TempDir()
        let name = "disk.\(disk.rawValue)"
        let inner = try Archivers.makeDisk(disk, in: dir, name: name)
        if disk == .vhd {
            try Oracle.qemuImg("convert", "-q", "-f", "vpc", "-O", "vpc", "-o", "subformat=fixed", inner, dir.path("fixed.vhd"))
        }
        let file = disk == .vhd ? "fixed.vhd" : name
        let reference = try Oracle.referenceRaw(dir.path(file), format: disk.qemuFormat)
        let xz = try Archivers.compress(file, with: "xz", in: dir)
        try ContainerTests.expectRefused(xz, .ioError, mentioning: "no-such-directory", limits: Self.noScratch(dir))
        let scratch = try TempDir()
        try ContainerTests.expectReads(
            xz, as: reference, format: disk.format, container: .xz, limits: .init(scratchDirectory: scratch.url.path))
    }

    @Test func inflatingPastTheLimitIsRefusedWhileStreaming() throws {
        let dir = try TempDir()
        try Oracle.qemuImg("create", "-q", "-f", "raw", dir.path("big.raw"), "64M")
        try Oracle.qemuIO(dir.path("big.raw"), format: "raw", ["write -P 1 0 4k", "write -P 1 60m 4k"])
        var limits = Self.noScratch(dir)
        limits.maxVirtualSize = 16 << 20
        for tool in ["xz", "gzip"] {
            let image = try Archivers.compress("big.raw", with: tool, in: dir)
            try ContainerTests.expectRefused(image, .virtualSizeTooLarge, limits: limits)
        }
    }

    @Test func damagedStreamIsRefusedBeforeTheEnd() throws {
        let dir = try TempDir()
        try Self.rawDisk(dir)
        let xz = try Archivers.compress("disk.raw", with: "xz", in: dir)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: xz)))
        // Flip a byte of the stream's last block check (CRC64 before the index): only the end tells.
        bytes[bytes.count - 40] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: dir.path("bad.raw.xz")))
        let source = MemoryByteSource(bytes)
        let result = DiskImage.inspect(source, limits: Self.noScratch(dir))
        #expect(result.verdict == .rejected)
        #expect(
            [DiskImageError.Code.decompressionFailed.name, DiskImageError.Code.corruptImage.name,
             DiskImageError.Code.truncatedImage.name].contains(result.reasons.first?.code ?? ""),
            "\(result.reasons)")
    }

    @Test func cancellationStopsAStreamingConversion() throws {
        let dir = try TempDir()
        try Self.rawDisk(dir)
        let gz = try Archivers.compress("disk.raw", with: "gzip", in: dir)
        let flag = StreamFlag()
        var reader = try DiskImage.open(
            try FileByteSource(path: gz), limits: Self.noScratch(dir), isCancelled: { flag.isSet })
        _ = try reader.next()
        flag.set()
        #expect(throws: CancellationError.self) {
            while try reader.next() != nil {}
        }
    }

    /// A source whose content changes between the measuring pass and the streaming pass is refused.
    @Test func streamChangingBetweenPassesIsRefused() throws {
        let dir = try TempDir()
        try Self.rawDisk(dir)
        let first = try Array(Data(contentsOf: URL(fileURLWithPath: try Archivers.compress("disk.raw", with: "zstd", in: dir))))
        try Oracle.qemuImg("resize", "-q", "-f", "raw", dir.path("disk.raw"), "\(17 * 1024 * 1024)")
        try Oracle.qemuIO(dir.path("disk.raw"), format: "raw", ["write -P 9 \(17 * 1024 * 1024 - 4096) 4096"])
        let second = try Array(Data(contentsOf: URL(fileURLWithPath: try Archivers.compress("disk.raw", with: "zstd", in: dir))))
        let source = SwitchingSource(first: first, second: second)
        #expect {
            var reader = try DiskImage.open(source, limits: Self.noScratch(dir))
            while try reader.next() != nil {}
        } throws: { error in
            (error as? DiskImageError)?.code == .corruptImage
        }
    }
}

/// A thread-safe flag for `isCancelled`.
final class StreamFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

/// An object replaced while it is read: serves `first` until the container is opened for decompression a
/// second time (a read of a whole 4 MiB chunk at offset 0), then `second`; sized as the larger.
final class SwitchingSource: ByteSource, @unchecked Sendable {
    private let lock = NSLock()
    private let first: [UInt8]
    private let second: [UInt8]
    private var opens = 0
    let size: UInt64

    init(first: [UInt8], second: [UInt8]) {
        self.first = first
        self.second = second
        size = UInt64(max(first.count, second.count))
    }

    func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        let bytes = lock.withLock {
            if offset == 0 && count == 4 << 20 { opens += 1 }
            return opens >= 2 ? second : first
        }
        guard offset < UInt64(bytes.count), count > 0 else { return [] }
        return Array(bytes[Int(offset)..<min(bytes.count, Int(offset) + count)])
    }
}

/// Claims with container forms (a sidecar's `format`, `--format`): accepted when the content is what they say,
/// `FormatMismatch` otherwise.
@Suite(.enabled(if: Archivers.available, Archivers.skipReason))
struct FormatClaimTests {
    @Test func namesParse() {
        #expect(FormatClaim("raw.xz")?.format == .raw)
        #expect(FormatClaim("raw.xz")?.compression == .xz)
        #expect(FormatClaim("QCOW2.GZ")?.compression == .gzip)
        #expect(FormatClaim("vpc.zst")?.format == .vhd)
        #expect(FormatClaim("ova")?.archive == .ova)
        #expect(FormatClaim("tar.bz2")?.archive == .tar)
        #expect(FormatClaim("tar.bz2")?.compression == .bzip2)
        #expect(FormatClaim("xz")?.compression == .xz)
        for bad in ["", "raw.", "raw.tar", "zip.gz", "raw.xz.gz", "qcow3", "gz.raw", ".xz"] {
            #expect(FormatClaim(bad) == nil, "\(bad)")
        }
    }

    @Test func claimsAreCheckedAgainstTheContent() throws {
        let dir = try TempDir()
        try Archivers.makeDisk(.raw, in: dir, name: "disk.raw")
        let xz = try Archivers.compress("disk.raw", with: "xz", in: dir)
        try Archivers.ova("vm.ova", ovf: Archivers.ovf(["disk.raw"]), disks: ["disk.raw"], in: dir)
        let ovaGz = try Archivers.compress("vm.ova", with: "gzip", in: dir)
        try dir.write("README.txt", Array("notes\n".utf8))
        let tar = try Archivers.tar("plain.tar", ["disk.raw", "README.txt"], in: dir)
        let cases: [(String, String, Bool)] = [
            (xz, "raw.xz", true), (xz, "xz", true), (xz, "raw", true), (xz, "qcow2.xz", false), (xz, "raw.gz", false),
            (xz, "tar.xz", false), (xz, "ova", false),
            (ovaGz, "ova.gz", true), (ovaGz, "tar.gz", true), (ovaGz, "gz", true), (ovaGz, "ova", false),
            (ovaGz, "raw.gz", false), (ovaGz, "tar.xz", false),
            (tar, "tar", true), (tar, "raw", true), (tar, "ova", false), (tar, "tar.gz", false), (tar, "zip", false),
            (dir.path("disk.raw"), "raw", true), (dir.path("disk.raw"), "raw.xz", false),
            (dir.path("disk.raw"), "tar", false),
        ]
        for (image, name, accepted) in cases {
            let claim = try #require(FormatClaim(name))
            let source = try FileByteSource(path: image)
            let result = DiskImage.inspect(source, claimedFormat: claim.format, claim: claim)
            if accepted {
                #expect(result.verdict == .ok, "\(image) as \(name): \(result.reasons)")
            } else {
                #expect(result.reasons.map(\.code) == [DiskImageError.Code.formatMismatch.name], "\(image) as \(name)")
                #expect(throws: DiskImageError.self) {
                    _ = try DiskImage.open(source, claimedFormat: claim.format, claim: claim)
                }
            }
        }
    }
}
