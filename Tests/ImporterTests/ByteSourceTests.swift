import DiskImage
import Importer
import Testing

@Suite("S3 object byte source")
struct ByteSourceTests {
    func pattern(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) } }

    @Test("reads any range across chunk boundaries with bounded caching")
    func ranges() throws {
        let store = MemoryObjectStore()
        let body = pattern(100_000)
        let etag = store.store("k", body)
        let source = S3ObjectByteSource(
            store: store, key: "k", etag: etag, size: UInt64(body.count), chunkSize: 4096, cachedChunks: 2)
        for (offset, count) in [(0, 10), (4090, 20), (0, 100_000), (99_990, 100), (50_000, 9000), (100_000, 5)] {
            let expected = Array(body[min(offset, body.count)..<min(offset + count, body.count)])
            #expect(try source.read(at: UInt64(offset), count: count) == expected)
        }
        // Sequential small reads inside one chunk cost one request (no read-ahead here: its GETs run in
        // the background and would be counted whenever they finish).
        let quiet = S3ObjectByteSource(
            store: store, key: "k", etag: etag, size: UInt64(body.count), chunkSize: 4096, cachedChunks: 2,
            readAhead: 0)
        _ = try quiet.read(at: 8192, count: 10)
        _ = try quiet.read(at: 8202, count: 10)
        #expect(quiet.requests == 1)
    }

    @Test("every GET is pinned to the listed ETag: a replaced object fails with ObjectChanged")
    func pinned() throws {
        let store = MemoryObjectStore()
        let etag = store.store("k", pattern(10_000))
        let source = S3ObjectByteSource(store: store, key: "k", etag: etag, size: 10_000, chunkSize: 4096)
        _ = try source.read(at: 0, count: 100)
        store.store("k", pattern(10_000))
        #expect(throws: ImporterError(.objectChanged, "")) { try source.read(at: 5000, count: 100) }
    }

    @Test("a cancelled source stops before the next request")
    func cancelled() throws {
        let store = MemoryObjectStore()
        let etag = store.store("k", pattern(10_000))
        let source = S3ObjectByteSource(store: store, key: "k", etag: etag, size: 10_000, chunkSize: 4096)
        source.cancel()
        #expect(throws: ImporterError(.cancelled, "")) { try source.read(at: 0, count: 1) }
        #expect(source.requests == 0)
    }
}

@Suite("S3 object byte source read-ahead")
struct ReadAheadTests {
    @Test("a sequential reader gets every byte once in order, with the next chunks fetched ahead")
    func sequential() throws {
        let store = MemoryObjectStore()
        let body = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 10) }
        let etag = store.store("k", body)
        let source = S3ObjectByteSource(
            store: store, key: "k", etag: etag, size: UInt64(body.count), chunkSize: 4096, cachedChunks: 3,
            readAhead: 2)
        var out: [UInt8] = []
        var offset: UInt64 = 0
        while offset < UInt64(body.count) {
            out += try source.read(at: offset, count: 1000)
            offset += 1000
        }
        #expect(out == body)
        // Every chunk fetched (prefetches included) at most about once: no refetch storm.
        #expect(source.requests <= 49 + 2)
    }

    @Test("a replaced object fails a read that a prefetch already tried")
    func prefetchFailure() throws {
        let store = MemoryObjectStore()
        let etag = store.store("k", [UInt8](repeating: 7, count: 40_000))
        let source = S3ObjectByteSource(
            store: store, key: "k", etag: etag, size: 40_000, chunkSize: 4096, cachedChunks: 3, readAhead: 2)
        _ = try source.read(at: 0, count: 10)
        store.store("k", [UInt8](repeating: 8, count: 40_000))
        #expect(throws: ImporterError(.objectChanged, "")) {
            for offset in stride(from: 4096, to: 40_000, by: 4096) { _ = try source.read(at: UInt64(offset), count: 10) }
        }
    }
}
