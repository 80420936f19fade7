import Synchronization

/// How far one import attempt has read its object: bytes fetched so far and the object's size.
///
/// The byte source adds what each GET returned (``S3ObjectByteSource``); the pipeline's progress child
/// (``ImportPipeline``) samples it a few times a second and writes it to the import row when it changed,
/// so the catalog sees at most ``ImportPipeline/Settings/progressWriteInterval``-spaced writes per import
/// whatever the block or chunk size.
public final class ImportProgress: Sendable {
    private let read = Atomic<UInt64>(0)
    private let total = Atomic<UInt64>(UInt64.max)

    /// - Parameter total: the object's size, when already known.
    public init(total: UInt64? = nil) {
        if let total { self.total.store(total, ordering: .relaxed) }
    }

    /// Adds `count` bytes read.
    public func add(_ count: UInt64) {
        read.add(count, ordering: .relaxed)
    }

    /// Sets the object's size.
    public func setTotal(_ bytes: UInt64) {
        total.store(bytes, ordering: .relaxed)
    }

    /// Bytes read so far (never more than the total once known).
    public var bytesRead: UInt64 {
        let value = read.load(ordering: .relaxed)
        return bytesTotal.map { min(value, $0) } ?? value
    }

    /// The object's size, nil until known.
    public var bytesTotal: UInt64? {
        let value = total.load(ordering: .relaxed)
        return value == UInt64.max ? nil : value
    }
}
