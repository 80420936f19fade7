import DiskImage
import Dispatch

/// Runs blocking work (libcurl calls, disk-image parsing) on a dispatch thread so that it never
/// occupies one of the few cooperative-pool threads the lease renewals and the catalog need.
func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try work() })
        }
    }
}

/// A `DiskReader` handed between an async task and the dispatch thread doing its blocking reads.
final class ReaderBox: @unchecked Sendable {
    // Safe: the box belongs to one import; its task awaits each `next()` before issuing the next,
    // so the reader is only ever touched by one thread at a time.
    var reader: any DiskReader
    init(_ reader: any DiskReader) { self.reader = reader }
    func next() throws -> Extent? { try reader.next() }
}
