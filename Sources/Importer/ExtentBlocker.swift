public import DiskImage

/// Cuts the ordered extents of a virtual disk into the snapshot's fixed-size blocks.
///
/// A whole block inside a data extent is emitted as a slice of it (no copy); a block the extents
/// split is gathered into a buffer; zero extents either pad the current block or skip whole blocks
/// (blocks never emitted are zeros in a snapshot, so they cost nothing). Memory is one block plus
/// the extents whose slices are still in use.
public struct ExtentBlocker {
    public let blockSize: Int
    public let virtualSize: UInt64
    private var index: UInt64 = 0
    private var buffer: [UInt8] = []
    private var bufferHasData = false

    public init(blockSize: Int, virtualSize: UInt64) {
        self.blockSize = blockSize
        self.virtualSize = virtualSize
    }

    private func length(of index: UInt64) -> Int {
        let start = index * UInt64(blockSize)
        guard start < virtualSize else { return 0 }
        return Int(min(UInt64(blockSize), virtualSize - start))
    }

    /// Feeds the next extent (extents must be contiguous and in order).
    /// - Parameter emit: called with each completed block holding data (`index`, `bytes`).
    public mutating func feed(_ extent: Extent, emit: (UInt64, ArraySlice<UInt8>) async throws -> Void) async throws {
        let position = index * UInt64(blockSize) + UInt64(buffer.count)
        guard extent.offset == position else {
            throw ImporterError(
                .internalError, "extent at \(extent.offset) does not follow the previous one (expected \(position))")
        }
        switch extent {
        case .zero(_, var remaining):
            while remaining > 0 {
                let room = length(of: index) - buffer.count
                guard room > 0 else { break }
                if buffer.isEmpty && remaining >= UInt64(room) {
                    // A whole zero block: skip it.
                    index += 1
                    remaining -= UInt64(room)
                    continue
                }
                let take = Int(min(UInt64(room), remaining))
                buffer.append(contentsOf: repeatElement(0, count: take))
                remaining -= UInt64(take)
                try await flushIfFull(emit)
            }
        case .data(_, let bytes):
            var at = 0
            while at < bytes.count {
                let blockLength = length(of: index)
                let room = blockLength - buffer.count
                guard room > 0 else {
                    throw ImporterError(.internalError, "extent data runs past the virtual size \(virtualSize)")
                }
                let take = min(room, bytes.count - at)
                if buffer.isEmpty && take == blockLength {
                    // A whole block straight from the extent.
                    try await emit(index, bytes[at..<at + take])
                    index += 1
                } else {
                    buffer.append(contentsOf: bytes[at..<at + take])
                    bufferHasData = true
                    try await flushIfFull(emit)
                }
                at += take
            }
        }
    }

    private mutating func flushIfFull(_ emit: (UInt64, ArraySlice<UInt8>) async throws -> Void) async throws {
        guard buffer.count == length(of: index) else { return }
        if bufferHasData { try await emit(index, buffer[...]) }
        buffer.removeAll(keepingCapacity: true)
        bufferHasData = false
        index += 1
    }

    /// Checks that the extents covered the whole virtual disk.
    public func finish() throws {
        let position = index * UInt64(blockSize) + UInt64(buffer.count)
        guard position >= virtualSize, buffer.isEmpty else {
            throw ImporterError(.internalError, "extents ended at \(position) of \(virtualSize) bytes")
        }
    }
}
