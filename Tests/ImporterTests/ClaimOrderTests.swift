import Importer
import Testing

/// Issue 11: each worker walks the listing circularly from its own point.
@Suite("Claim order")
struct ClaimOrderTests {
    @Test("a rotation keeps every candidate exactly once, in listing order from the start, wrapping around")
    func rotation() {
        let listing = Array(0..<10)
        #expect(ClaimOrder.rotated(listing, startingAt: 3) == [3, 4, 5, 6, 7, 8, 9, 0, 1, 2])
        #expect(ClaimOrder.rotated(listing, startingAt: 13) == ClaimOrder.rotated(listing, startingAt: 3))
        #expect(ClaimOrder.rotated(listing, startingAt: -1).first == 9)
        #expect(ClaimOrder.rotated([Int](), startingAt: 5).isEmpty)
        for _ in 0..<20 {
            let walk = ClaimOrder.forThisWorker(listing)
            #expect(walk.sorted() == listing)
            let start = walk[0]
            #expect(walk == ClaimOrder.rotated(listing, startingAt: start))
        }
    }

    @Test("workers start at different points: over many passes every point is chosen")
    func spread() {
        let listing = Array(0..<8)
        var starts = Set<Int>()
        for _ in 0..<400 { starts.insert(ClaimOrder.forThisWorker(listing)[0]) }
        #expect(starts == Set(listing))
    }
}
