import DiskImage
import Importer
import Testing

@Suite("Extents cut into blocks")
struct ExtentBlockerTests {
    /// Random extents (data and zero runs of odd sizes) over a disk whose size is not a multiple of
    /// the block size; reassembling the emitted blocks must give the disk back, and all-zero
    /// blocks made only of zero extents are never emitted.
    @Test("any split into extents yields the disk's blocks", arguments: [1 as UInt64, 2, 3, 4, 5])
    func reassembles(seed: UInt64) async throws {
        var rng = SplitMix(seed: seed)
        let blockSize = 4096
        let size = 37 * 4096 + 1234
        var disk = [UInt8](repeating: 0, count: size)
        var extents: [Extent] = []
        var offset = 0
        while offset < size {
            let length = min(size - offset, Int(rng.next() % 20_000) + 1)
            if rng.next() % 2 == 0 {
                let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next() | 1) }
                disk.replaceSubrange(offset..<offset + length, with: bytes)
                extents.append(.data(offset: UInt64(offset), bytes: bytes))
            } else {
                extents.append(.zero(offset: UInt64(offset), length: UInt64(length)))
            }
            offset += length
        }
        var blocker = ExtentBlocker(blockSize: blockSize, virtualSize: UInt64(size))
        var rebuilt = [UInt8](repeating: 0, count: size)
        var emitted = Set<UInt64>()
        for extent in extents {
            try await blocker.feed(extent) { index, bytes in
                #expect(!emitted.contains(index))
                emitted.insert(index)
                let start = Int(index) * blockSize
                #expect(bytes.count == min(blockSize, size - start))
                rebuilt.replaceSubrange(start..<start + bytes.count, with: bytes)
            }
        }
        try blocker.finish()
        #expect(rebuilt == disk)
        for index in 0..<UInt64((size + blockSize - 1) / blockSize) where !emitted.contains(index) {
            let start = Int(index) * blockSize
            #expect(disk[start..<min(size, start + blockSize)].allSatisfy { $0 == 0 })
        }
    }

    @Test("a gap between extents is an error")
    func gap() async throws {
        var blocker = ExtentBlocker(blockSize: 4096, virtualSize: 8192)
        try await blocker.feed(.zero(offset: 0, length: 100)) { _, _ in }
        await #expect(throws: ImporterError(.internalError, "")) {
            try await blocker.feed(.zero(offset: 200, length: 100)) { _, _ in }
        }
    }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
