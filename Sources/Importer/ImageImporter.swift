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


    /// Validates `source`, writes its blocks into a pending snapshot and commits it.
    ///
    /// - Parameters:
    ///   - claim: the import claim (nil for a local file).
    ///   - progress: called with (virtual bytes done, virtual size) after each extent.
    /// - Returns: the committed snapshot.
    /// - Throws: `DiskImageError` (rejection), `ImporterError`, or the core's errors.
    public func importImage(
        source: any ByteSource, claim: ImportClaim?, owner: ProjectRef, description: String,
        claimedFormat: ImageFormat?, snapshotSource: SnapshotSource, cancellation: CancellationFlag,
        logger: inout Logger, progress: @escaping @Sendable (UInt64, UInt64) -> Void
    ) async throws -> SnapshotRecord {
        let reader = try await offload {
            ReaderBox(try DiskImage.open(source, claimedFormat: claimedFormat, limits: limits))
        }
        let info = reader.reader.info
        try cancellation.check()
        let writer = try await catalog.beginSnapshot(
            claim: claim, owner: owner, description: description, source: snapshotSource,
            format: info.format.rawValue, bootable: info.bootable, virtualSize: info.virtualSize)
        logger[metadataKey: "snapshot"] = "\(writer.id)"
        logger.info(
            "importing",
            metadata: ["format": "\(info.format)", "virtualSize": "\(info.virtualSize)", "bootable": "\(info.bootable)"])
        let logged = logger
        do {
            // A claimed import's lease (and with it the pending snapshot's) is renewed by its one lease
            // task (`runClaimed`); a local file has no claim, so this import owns the writer's lease.
            return try await renewing(claim == nil ? writer : nil) {
                let clock = ContinuousClock()
                var lastReport = clock.now
                let started = clock.now
                while let extent = try await offload({ try reader.next() }) {
                    try cancellation.check()
                    try await writer.write(extent)
                    let done = extent.offset + extent.length
                    progress(done, info.virtualSize)
                    if clock.now - lastReport >= progressInterval {
                        lastReport = clock.now
                        logged.info("progress", metadata: ["done": "\(done)", "of": "\(info.virtualSize)"])
                    }
                }
                try cancellation.check()
                let record = try await writer.commit()
                logged.debug("committed", metadata: ["seconds": "\(clock.now - started)"])
                return record
            }
        } catch {
            await writer.abort()
            throw error
        }
    }

    /// Runs `body` while one child task renews `writer`'s lease every third of the claim lease; with no
    /// writer, just runs `body`. A failed renewal ends the renewals: the writer learns of the loss at commit.
    private func renewing<T: Sendable>(
        _ writer: (any SnapshotWriting)?, _ body: () async throws -> T
    ) async throws -> T {
        guard let writer else { return try await body() }
        let interval = leaseDuration / 3
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while true {
                    try await Task.sleep(for: interval)
                    try await writer.renewLease()
                }
            }
            defer { group.cancelAll() }
            return try await body()
        }
    }
}
