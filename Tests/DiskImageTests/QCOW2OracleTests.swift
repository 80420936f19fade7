import DiskImage
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// qcow2 images made by qemu-img/qemu-io, converted by snapimport and by `qemu-img convert -O raw`: the bytes
/// must be identical.
@Suite(.enabled(if: Oracle.available, Oracle.skipReason))
struct QCOW2OracleTests {
    /// Writes a mix of patterns, a zero write and an overwrite into `image`, with offsets chosen so that data
    /// lands on cluster boundaries, inside clusters and at the very end of an odd-sized disk.
    static func scribble(_ image: String, size: UInt64) throws {
        let end = size
        try Oracle.qemuIO(
            image, format: "qcow2",
            [
                "write -P 0xab 0 4k",
                "write -P 0x11 65024 1536",  // crosses 64 KiB
                "write -P 0x22 1m 300k",
                "write -P 0x33 \(end - 1536) 1536",  // the last sectors
                "write -z 1100k 64k",  // zero write inside data
                "write -P 0x44 2m 64k",
                "write -P 0x55 512 512",  // overwrite in place
            ])
    }

    @Test(arguments: [
        ("0.10", 512), ("0.10", 4096), ("0.10", 65536), ("0.10", 2 << 20),
        ("1.1", 512), ("1.1", 4096), ("1.1", 65536), ("1.1", 2 << 20),
    ])
    func writtenInPlace(compat: String, clusterSize: Int) throws {
        let dir = try TempDir()
        let image = dir.path("disk.qcow2")
        let size: UInt64 = 3 * 1024 * 1024 + 5 * 512  // not a multiple of any cluster size above 512
        try Oracle.qemuImg(
            "create", "-f", "qcow2", "-o", "compat=\(compat),cluster_size=\(clusterSize)", image, "\(size)")
        try Self.scribble(image, size: size)
        let info = try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
        #expect(info.virtualSize == size)
    }

    @Test func headerSizeNotMultipleOfSector() throws {
        let dir = try TempDir()
        let image = dir.path("odd.qcow2")
        try Oracle.qemuImg("create", "-f", "qcow2", image, "1M")
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 7 0 1M"])
        var bytes = try dir.read("odd.qcow2")
        bytes.putBE64(1_000_001, at: 24)
        try dir.write("odd.qcow2", bytes)
        let info = try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
        #expect(info.virtualSize == 999_936)
    }

    @Test func compressedWithExtendedL2() throws {
        let dir = try TempDir()
        let source = dir.path("source.qcow2")
        try Oracle.qemuImg("create", "-f", "qcow2", source, "3M")
        try Self.scribble(source, size: 3 << 20)
        let image = dir.path("compressed.qcow2")
        try Oracle.qemuImg("convert", "-c", "-f", "qcow2", "-O", "qcow2", "-o", "extended_l2=on", source, image)
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0x66 1m 2k", "write -z 2m 4k"])
        try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
    }

    @Test(arguments: ["zlib", "zstd"], [512, 4096, 65536, 2 << 20])
    func compressed(type: String, clusterSize: Int) throws {
        let dir = try TempDir()
        let source = dir.path("source.qcow2")
        let size: UInt64 = 3 * 1024 * 1024 + 12345
        try Oracle.qemuImg("create", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)", source, "\(size)")
        try Self.scribble(source, size: (size / 512) * 512)
        let image = dir.path("compressed.qcow2")
        try Oracle.qemuImg(
            "convert", "-c", "-f", "qcow2", "-O", "qcow2", "-o",
            "compression_type=\(type),cluster_size=\(clusterSize)", source, image)
        // Written after compression: mixes compressed and plain clusters.
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0x66 1m 4k"])
        try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
    }

    @Test(arguments: [65536, 2 << 20])
    func extendedL2(clusterSize: Int) throws {
        let dir = try TempDir()
        let image = dir.path("ext.qcow2")
        let size: UInt64 = 7 * 1024 * 1024 + 512
        try Oracle.qemuImg(
            "create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=\(clusterSize)", image, "\(size)")
        let sub = clusterSize / 32
        try Oracle.qemuIO(
            image, format: "qcow2",
            [
                "write -P 0x71 \(sub) \(sub)",  // one subcluster, not the first
                "write -P 0x72 \(3 * sub + 512) 512",  // partial subcluster
                "write -z \(5 * sub) \(2 * sub)",  // zero subclusters
                "write -P 0x73 \(clusterSize) \(clusterSize * 2)",  // whole clusters
                "write -z \(clusterSize + sub) \(sub)",  // zero inside allocated cluster
                "write -P 0x74 \(size - 512) 512",
            ])
        try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
    }

    @Test(arguments: [512, 4096, 65536])
    func manyScatteredWrites(clusterSize: Int) throws {
        // Hundreds of small writes in a pseudo-random order: L2 tables, refcount blocks and data clusters
        // end up interleaved all over the file, and host order differs from guest order.
        let dir = try TempDir()
        let image = dir.path("scattered.qcow2")
        let size: UInt64 = 6 * 1024 * 1024 + 3 * 512
        try Oracle.qemuImg("create", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)", image, "\(size)")
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        var commands: [String] = []
        for i in 0..<300 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let sector = (state >> 33) % (size / 512 - 16)
            let length = 512 * (1 + (state >> 20) % 16)
            let verb = i % 7 == 6 ? "write -z" : "write -P \(i % 250 + 1)"
            commands.append("\(verb) \(sector * 512) \(length)")
        }
        try Oracle.qemuIO(image, format: "qcow2", commands)
        try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
    }

    @Test func internalSnapshotThenWrites() throws {
        let dir = try TempDir()
        let image = dir.path("snap.qcow2")
        try Oracle.qemuImg("create", "-f", "qcow2", image, "4M")
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0x01 0 1m", "write -P 0x02 2m 64k"])
        try Oracle.qemuImg("snapshot", "-c", "before", image)
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0x03 512k 128k", "write -z 2m 64k", "write -P 0x04 3m 4k"])
        try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
    }

    @Test func zeroWritesV3AndV2() throws {
        for compat in ["0.10", "1.1"] {
            let dir = try TempDir()
            let image = dir.path("zero.qcow2")
            try Oracle.qemuImg("create", "-f", "qcow2", "-o", "compat=\(compat)", image, "2M")
            try Oracle.qemuIO(
                image, format: "qcow2",
                ["write -P 0x9 0 1m", "write -z 64k 128k", "write -z 1536k 64k", "write -z -u 256k 64k"])
            try Oracle.assertMatchesReference(image, qemuFormat: "qcow2", expected: .qcow2)
        }
    }

    @Test func convertWritesSparseFile() throws {
        let dir = try TempDir()
        let image = dir.path("disk.qcow2")
        try Oracle.qemuImg("create", "-f", "qcow2", image, "64M")
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0xee 10m 1m"])
        try Oracle.assertConvertMatchesReference(image, qemuFormat: "qcow2", in: dir)
        var st = stat()
        #expect(stat(dir.path("converted.raw"), &st) == 0)
        #expect(st.st_size == 64 << 20)
        // Holes: far fewer blocks than the virtual size (1 MiB written of 64 MiB).
        #expect(Int(st.st_blocks) * 512 < 8 << 20)
    }

    @Test func emptyImageIsAllZeroExtents() throws {
        let dir = try TempDir()
        let image = dir.path("big.qcow2")
        try Oracle.qemuImg("create", "-f", "qcow2", image, "100G")
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 0x5a 50g 64k"])
        var reader = try DiskImage.open(try FileByteSource(path: image))
        var extents: [Extent] = []
        while let extent = try reader.next() { extents.append(extent) }
        // Unallocated ranges come out as a handful of zero extents, not one per cluster.
        #expect(extents.count == 3)
        #expect(extents.reduce(0) { $0 + $1.length } == 100 << 30)
        guard extents.count == 3, case .data(let offset, let bytes) = extents[1] else {
            Issue.record("expected zero, data, zero")
            return
        }
        #expect(offset == 50 << 30)
        #expect(bytes == [UInt8](repeating: 0x5a, count: 65536))
    }

    @Test func sparseImageCostsWhatItHolds() throws {
        // 100 GiB virtual, 8 MiB of data: the reader touches about 8 MiB of the file plus metadata.
        let dir = try TempDir()
        let image = dir.path("sparse.qcow2")
        try Oracle.qemuImg("create", "-f", "qcow2", image, "100G")
        try Oracle.qemuIO(
            image, format: "qcow2", ["write -P 1 0 2m", "write -P 2 30g 2m", "write -P 3 70g 2m", "write -P 4 99g 2m"])
        let source = CountingByteSource(try FileByteSource(path: image))
        var reader = try DiskImage.open(source)
        var dataBytes: UInt64 = 0
        var extents = 0
        while let extent = try reader.next() {
            extents += 1
            if case .data(_, let bytes) = extent { dataBytes += UInt64(bytes.count) }
        }
        #expect(dataBytes == 8 << 20)
        #expect(extents < 20)
        #expect(source.bytesRead < (8 << 20) + (1 << 20), "read \(source.bytesRead) bytes")
    }

    @Test func inspectReportsAllocatedBytes() throws {
        let dir = try TempDir()
        let image = dir.path("disk.qcow2")
        try Oracle.qemuImg("create", "-f", "qcow2", image, "1G")
        try Oracle.qemuIO(image, format: "qcow2", ["write -P 1 0 128k", "write -P 2 512m 64k"])
        let result = DiskImage.inspect(try FileByteSource(path: image))
        #expect(result.verdict == .ok)
        #expect(result.format == .qcow2)
        #expect(result.virtualSize == 1 << 30)
        #expect(result.allocatedBytes == 192 << 10)
        #expect(result.reasons.isEmpty)
    }
}


/// Counts the bytes read through it.
final class CountingByteSource: ByteSource {
    private let base: any ByteSource
    private let counter = Mutex<UInt64>(0)
    var size: UInt64 { base.size }
    var bytesRead: UInt64 { counter.withLock { $0 } }

    init(_ base: any ByteSource) { self.base = base }

    func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        let bytes = try base.read(at: offset, count: count)
        counter.withLock { $0 += UInt64(bytes.count) }
        return bytes
    }
}
