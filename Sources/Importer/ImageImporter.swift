import AsyncAlgorithms
public import DiskImage
import Foundation
public import Logging
public import SnapshotCore

/// One image into one snapshot: a byte source is validated and converted by DiskImage, its extents are
/// cut into blocks and written into a pending snapshot, which is committed. Knows no bucket: the object
/// import (``ImportPipeline``) calls it under a claim, and `snapimport import FILE` calls it directly.
public struct ImageImporter: Sendable {
    public let catalog: any ImportCatalog
    public let limits: InspectionLimits
    /// The claim lease; a local-file import renews its writer every third of it.
    public let leaseDuration: Duration
    /// How often a long import logs its progress.
    public let progressInterval: Duration

    public init(
        catalog: any ImportCatalog, limits: InspectionLimits = InspectionLimits(),
        leaseDuration: Duration = .seconds(60), progressInterval: Duration = .seconds(10)
    ) {
        self.catalog = catalog
        self.limits = limits
        self.leaseDuration = leaseDuration
        self.progressInterval = progressInterval
    }

    /// Block writes in flight at once (each hashes its block, then stores it): hashing spreads over the
    /// cores and stores overlap with the download. Memory: this many blocks plus two handed over.
    public static let blockWriters = 6

    /// Validates `source`, writes its blocks into a pending snapshot and commits it.
    ///
    /// The conversion is one task group of stages joined by rendezvous channels (so memory is a fixed
    /// number of extents and blocks, whatever the image size):
    /// 1. **read**: the disk reader's `next()` on the blocking executor (DiskImage parses, the byte
    ///    source downloads with read-ahead), one extent at a time;
    /// 2. **cut**: extents into fixed-size blocks (``ExtentBlocker``; whole blocks are slices, no copy);
    /// 3. **store**: ``blockWriters`` tasks that hash and store blocks concurrently.
    /// A local-file import (no claim) adds the lease-owning child that renews its writer; a claimed
    /// import's lease is owned by the object import. Cancellation (shutdown, a lost lease) ends every
    /// stage; the pending snapshot is then aborted.
    ///
    /// - Parameters:
    ///   - source: the image bytes; cancelled (``S3ObjectByteSource/cancel()``) when the import is, so a
    ///     read in progress stops before its next request.
    ///   - claim: the import claim (nil for a local file).
    ///   - formatClaim: the uploader's claim including its container form (`raw.xz`, `ova`); nil for none.
    ///   - progress: called with (virtual bytes done, virtual size) after each extent.
    /// - Returns: the committed snapshot.
    /// - Throws: `DiskImageError` (rejection), `ImporterError`, `CancellationError`, or the core's errors.
    public func importImage(
        source: any ByteSource, claim: ImportClaim?, owner: ProjectRef, description: String,
        claimedFormat: ImageFormat?, formatClaim: FormatClaim? = nil, snapshotSource: SnapshotSource,
        logger: inout Logger, progress: @escaping @Sendable (UInt64, UInt64) -> Void
    ) async throws -> SnapshotRecord {
        try await importImage(
            source: source, claim: claim, owner: owner, describedBy: { description }, claimedFormat: claimedFormat,
            formatClaim: formatClaim, snapshotSource: snapshotSource, logger: &logger, progress: progress)
    }

    /// ``importImage(source:claim:owner:description:claimedFormat:formatClaim:snapshotSource:logger:progress:)``
    /// with the description worked out once the image is open and valid, before the pending snapshot is
    /// begun: an object import takes it from the metadata its first GET answered, without a HEAD.
    public func importImage(
        source: any ByteSource, claim: ImportClaim?, owner: ProjectRef,
        describedBy description: @Sendable () async throws -> String,
        claimedFormat: ImageFormat?, formatClaim: FormatClaim? = nil, snapshotSource: SnapshotSource,
        logger: inout Logger, progress: @escaping @Sendable (UInt64, UInt64) -> Void
    ) async throws -> SnapshotRecord {
        let limits = limits
        // Whatever the outcome, nothing reads the source after this: its stream (if any) stops now.
        defer { (source as? S3ObjectByteSource)?.cancel() }
        // Opening can take long (a compressed stream is decompressed first): DiskImage is synchronous, so
        // it polls this flag, which the task's cancellation sets.
        let cancelled = CancellationSignal()
        let reader = try await withTaskCancellationHandler {
            try await offload {
                ReaderBox(
                    try DiskImage.open(
                        source, claimedFormat: claimedFormat, claim: formatClaim, limits: limits,
                        isCancelled: { cancelled.isSet }))
            }
        } onCancel: {
            cancelled.set()
            (source as? S3ObjectByteSource)?.cancel()
        }
        let info = reader.reader.info
        try Task.checkCancellation()
        let description = try await description()
        let writer = try await catalog.beginSnapshot(
            claim: claim, owner: owner, description: description, source: snapshotSource,
            format: info.format.rawValue, bootable: info.bootable, virtualSize: info.virtualSize)
        logger[metadataKey: "snapshot"] = "\(writer.id)"
        logger.info(
            "importing",
            metadata: [
                "format": "\(info.format.rawValue)", "virtualSize": "\(info.virtualSize)",
                "bootable": "\(info.bootable)",
            ])
        let started = ContinuousClock.now
        do {
            try await withTaskCancellationHandler {
                try await convert(
                    reader, source: source, into: writer, ownsLease: claim == nil, logger: logger, progress: progress)
            } onCancel: {
                (source as? S3ObjectByteSource)?.cancel()
            }
            try Task.checkCancellation()
            let record = try await writer.commit()
            let elapsed = ContinuousClock.now - started
            logger.debug("committed", metadata: ["seconds": "\((elapsed.seconds * 1000).rounded() / 1000)"])
            return record
        } catch {
            _ = try? await uncancelled { await writer.abort() }
            throw error
        }
    }

    /// The stages (see ``importImage(source:claim:owner:description:claimedFormat:snapshotSource:logger:progress:)``).
    private func convert(
        _ reader: ReaderBox, source: any ByteSource, into writer: any SnapshotWriting, ownsLease: Bool,
        logger: Logger, progress: @escaping @Sendable (UInt64, UInt64) -> Void
    ) async throws {
        let extents = AsyncChannel<Extent>()
        let blocks = AsyncChannel<Block>()
        let (progressInterval, leaseInterval) = (progressInterval, leaseDuration / 3)
        let virtualSize = writer.virtualSize
        try await withThrowingTaskGroup(of: Void.self) { group in
            if ownsLease {
                group.addTask {
                    while true {
                        try await Task.sleep(for: leaseInterval)
                        try await writer.renewLease()
                    }
                }
            }
            group.addTask {  // 1. read
                defer { extents.finish() }
                var lastReport = ContinuousClock.now
                while let extent = try await offload({ try reader.next() }) {
                    await extents.send(extent)
                    try Task.checkCancellation()  // `send` returns without sending once cancelled
                    let done = extent.offset + extent.length
                    progress(done, virtualSize)
                    if ContinuousClock.now - lastReport >= progressInterval {
                        lastReport = ContinuousClock.now
                        logger.info("progress", metadata: ["done": "\(done)", "of": "\(virtualSize)"])
                    }
                }
            }
            group.addTask {  // 2. cut
                defer { blocks.finish() }
                var blocker = ExtentBlocker(blockSize: writer.blockSize, virtualSize: virtualSize)
                for await extent in extents {
                    try await blocker.feed(extent) { index, bytes in
                        await blocks.send(Block(index: index, bytes: bytes))
                        try Task.checkCancellation()
                    }
                }
                try Task.checkCancellation()  // an early end of `extents` after cancellation is no disk
                try blocker.finish()
            }
            for _ in 0..<Self.blockWriters {  // 3. hash and store
                group.addTask {
                    for await block in blocks {
                        try await writer.writeBlock(index: block.index, bytes: block.bytes)
                    }
                }
            }
            // Every stage but the lease child ends by itself; the first failure cancels the others.
            for _ in 0..<(2 + Self.blockWriters) { try await group.next() }
            group.cancelAll()
        }
    }

    /// A block of the virtual disk on its way from the cutter to a writer.
    private struct Block: Sendable {
        let index: UInt64
        let bytes: ArraySlice<UInt8>
    }
}
