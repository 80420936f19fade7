import BlockingIO
@testable import DiskImage
import Foundation
import Testing

/// `DiskImage.convert`'s writer overlaps with reading through the blocking executor, and never depends
/// on a pool thread being free.
@Suite("WriterPipe")
struct WriterPipeTests {
    /// Extents of 64 KiB at scattered offsets, every third one all zero (it must stay a hole).
    static func extents() -> [(offset: UInt64, bytes: [UInt8])] {
        (0..<64).map { i in
            let offset = UInt64((i * 7919) % 64) * 65536
            let fill: UInt8 = i % 3 == 0 ? 0 : UInt8(truncatingIfNeeded: i + 1)
            return (offset, [UInt8](repeating: fill, count: 65536))
        }
    }

    static func expected(_ extents: [(offset: UInt64, bytes: [UInt8])]) -> [UInt8] {
        var file = [UInt8](repeating: 0, count: 64 * 65536)
        for e in extents { file.replaceSubrange(Int(e.offset)..<Int(e.offset) + e.bytes.count, with: e.bytes) }
        return file
    }

    @Test("writes every extent once it finishes, skipping zeros", arguments: [1, 4])
    func writesEverything(depth: Int) async throws {
        let dir = try TempDir()
        let extents = Self.extents()
        let path = dir.path("out.raw")
        let written = try await BlockingExecutor(threads: 2).run {
            let writer = try SparseRawWriter(path: path, size: 64 * 65536)
            let pipe = WriterPipe(writer: writer, depth: depth, executor: BlockingExecutor(threads: 2))
            for e in extents { #expect(pipe.send(e.bytes, at: e.offset)) }
            let written = try pipe.finish()
            try writer.finish()
            return written
        }
        #expect(try dir.read("out.raw") == Self.expected(extents))
        #expect(written == UInt64(extents.filter { $0.bytes.first != 0 }.count * 65536))
    }

    @Test("a pool whose only thread is busy: the caller writes everything itself")
    func saturatedPool() async throws {
        let dir = try TempDir()
        let busy = BlockingExecutor(threads: 1)
        let release = BlockingMonitor(false)
        busy.submit { release.wait(until: { $0 }, then: { _ in }) }
        let extents = Self.extents()
        let path = dir.path("out.raw")
        try await BlockingExecutor(threads: 1).run {
            let writer = try SparseRawWriter(path: path, size: 64 * 65536)
            let pipe = WriterPipe(writer: writer, depth: 2, executor: busy)
            for e in extents { _ = pipe.send(e.bytes, at: e.offset) }
            // The background job never started (the pool is busy): finish calls it off and writes the
            // rest itself instead of waiting for a thread.
            _ = try pipe.finish()
            try writer.finish()
        }
        release.withLock { $0 = true }
        #expect(try dir.read("out.raw") == Self.expected(extents))
    }
}
