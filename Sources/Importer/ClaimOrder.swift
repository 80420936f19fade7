/// The order in which one worker walks a listing, so that concurrent workers divide the work (issue 11).
///
/// Every worker lists the same `incoming/` in the same (lexicographic) order. Walked from the top by all of
/// them, they would race for the same first objects: all but one lose each claim, and they move through the
/// listing in lock step. Instead each worker walks the listing *circularly from its own random starting
/// point*: workers begin in different regions, each imports a stretch of its own, and a worker meets
/// another's work only where its stretch runs into the next worker's start — there a claim already taken
/// costs one conditional statement (see `Catalog.claimImport`), not a retry. With `n` objects and `k`
/// workers each worker starts about `n / k` objects from the nearest other, on average.
///
/// Random rather than derived from the worker's name: a fixed point per worker would send every pass of
/// that worker to the same region first, and two names may hash close together for every pass.
public enum ClaimOrder {
    /// `candidates` rotated to begin at `start` (taken modulo the count) and wrap around; nothing is
    /// dropped or repeated.
    public static func rotated<Element>(_ candidates: [Element], startingAt start: Int) -> [Element] {
        guard !candidates.isEmpty else { return candidates }
        let offset = ((start % candidates.count) + candidates.count) % candidates.count
        return Array(candidates[offset...] + candidates[..<offset])
    }

    /// `candidates` rotated to begin at a random point: the order one worker's pass walks them in.
    public static func forThisWorker<Element>(_ candidates: [Element]) -> [Element] {
        rotated(candidates, startingAt: Int.random(in: 0..<max(1, candidates.count)))
    }
}
