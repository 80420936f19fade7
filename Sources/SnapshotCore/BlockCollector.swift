public import Foundation
import Logging

/// Garbage collection of blocks, driven by reference counts (issue 11).
///
/// ## The reference-count scheme
/// The catalog keeps, per block, how many manifests name it, in the same transaction as the commit that
/// inserts a manifest (+1 per distinct block) and the delete that removes one (−1). A count that reaches
/// zero stays, at zero, as a work item: collection visits only those rows (``collectReleasedBlocks(now:)``),
/// never every manifest, and a delete looks only at its own blocks. Blocks that no manifest ever named
/// have no count at all; they come from writers that did not commit:
/// - an aborted writer registers the blocks its puts created (count zero) in its abort;
/// - a writer that vanished (crash, kill) registers nothing, so recovery, when it turns such a writer's
///   snapshot into `error`, files a *sweep request* in the same transaction; the next collection then
///   sweeps the whole store once (every stored block without a positive count), and clears the request
///   only when its cutoff lies after the vanished writer's lease (every block that writer put is then
///   old enough to go).
/// ``collectGarbage(now:)`` is that full sweep, on demand.
///
/// ## Safety against concurrent writers (unchanged)
/// A block may be needed by a pending writer that no manifest (and no count) names yet. Every collection
/// first reads the cutoff (the oldest pending snapshot's start, minus a margin), then the counts, and
/// removes only through ``BlockStore/remove(_:unlessModifiedSince:)``: a block a writer put or freshened
/// after the cutoff is kept (the freshening contract in ``BlockStore``). A count row is forgotten only for
/// blocks actually removed, and only while still zero (a commit racing in keeps it).
public struct BlockCollector: LedgerBacked {
    let ledger: Ledger

    /// How many hashes one catalog query or store removal handles.
    static let batchSize = 512

    /// Deletes a snapshot marked `deleting` (its counts drop in the same transaction), then removes its
    /// blocks whose count reached zero.
    func finishDeletion(_ snapshot: SnapshotRecord, now: Date) async throws -> CollectionReport {
        // The cutoff is read BEFORE the counts (see BlockStore).
        let cutoff = try await collectionCutoff(now: now)
        let manifest = try await catalog.manifest(snapshot.id)
        try await retrying("delete") {
            guard let current = try await catalog.snapshot(snapshot.id) else { return }
            try await catalog.apply([.deleteSnapshot(current.id, version: current.version)])
        }
        var report = CollectionReport()
        if let manifest {
            let hashes = Array(Set(manifest.entries.map(\.hash)))
            var released: [BlockHash] = []
            for start in stride(from: 0, to: hashes.count, by: Self.batchSize) {
                let batch = Array(hashes[start..<min(start + Self.batchSize, hashes.count)])
                let counts = try await catalog.blockReferences(batch)
                released += batch.filter { (counts[$0] ?? 0) <= 0 }
            }
            report = try await remove(released, cutoff: cutoff)
        }
        logger.info(
            "snapshot deleted",
            metadata: [
                "snapshot": "\(snapshot.id)", "project": "\(snapshot.owner)", "blocksFreed": "\(report.removed)",
            ])
        return report
    }

    /// `min(now, oldest pending snapshot's createdAt) - gcSafetyMargin` (see ``BlockStore``).
    func collectionCutoff(now: Date) async throws -> Date {
        let oldest = try await catalog.oldestPendingSnapshot()
        return min(now, oldest ?? now).addingTimeInterval(-options.gcSafetyMargin)
    }

    /// Removes `candidates` (blocks with a zero or no count) in batches unless touched after `cutoff`, and
    /// forgets the count rows of those removed.
    /// - Parameter sizes: the candidates' sizes, for the report's byte count, when known.
    private func remove(
        _ candidates: some Sequence<BlockHash>, sizes: [BlockHash: Int] = [:], cutoff: Date
    ) async throws -> CollectionReport {
        var report = CollectionReport()
        var batch: [BlockHash] = []
        func flush() async throws {
            let removed = try await blocks.remove(batch, unlessModifiedSince: cutoff)
            if !removed.isEmpty {
                try await catalog.apply([.forgetBlocks(removed.sorted())])
            }
            report.scanned += batch.count
            report.removed += removed.count
            report.kept += batch.count - removed.count
            report.removedBytes += removed.reduce(0) { $0 + (sizes[$1] ?? 0) }
            batch.removeAll(keepingCapacity: true)
        }
        for hash in candidates {
            batch.append(hash)
            if batch.count == Self.batchSize { try await flush() }
        }
        if !batch.isEmpty { try await flush() }
        return report
    }

    /// The collection every pass runs: the blocks whose count is zero, plus a full sweep when recovery
    /// asked for one. Its cost follows what was released, not the size of the catalog or the store.
    /// Safe while imports run.
    public func collectReleasedBlocks(now: Date = Date()) async throws -> CollectionReport {
        if try await catalog.sweepRequest() != nil { return try await collectGarbage(now: now) }
        let cutoff = try await collectionCutoff(now: now)
        var report = CollectionReport()
        var cursor: BlockHash?
        while true {
            let page = try await catalog.unreferencedBlocks(after: cursor, limit: Self.batchSize)
            guard let last = page.last else { break }
            let done = try await remove(page, cutoff: cutoff)
            report.scanned += done.scanned
            report.removed += done.removed
            report.kept += done.kept
            cursor = last
            if page.count < Self.batchSize { break }
        }
        if report.scanned > 0 {
            logger.info(
                "released blocks collected", metadata: ["removed": "\(report.removed)", "kept": "\(report.kept)"])
        }
        return report
    }

    /// The full sweep: removes every stored block that no manifest names (no positive count), except those
    /// a live writer may need (touched after the cutoff), and stale temporary files. Safe while imports run.
    /// Clears a pending sweep request when this sweep's cutoff covers it.
    /// - Parameter now: the current time. Tests may pass a later time only when no writer can begin
    ///   during the call: a writer that begins after the pending snapshots were read is protected by
    ///   its puts being later than `now`.
    public func collectGarbage(now: Date = Date()) async throws -> CollectionReport {
        let request = try await catalog.sweepRequest()
        let cutoff = try await collectionCutoff(now: now)
        let stored = try await blocks.list()
        var sizes: [BlockHash: Int] = [:]
        var unreferenced: [BlockHash] = []
        for start in stride(from: 0, to: stored.count, by: Self.batchSize) {
            let batch = stored[start..<min(start + Self.batchSize, stored.count)]
            let counts = try await catalog.blockReferences(batch.map(\.hash))
            for block in batch where (counts[block.hash] ?? 0) <= 0 {
                sizes[block.hash] = block.size
                unreferenced.append(block.hash)
            }
        }
        var report = try await remove(unreferenced, sizes: sizes, cutoff: cutoff)
        report.scanned = stored.count
        _ = try await blocks.removeStaleTemporaries(olderThan: cutoff)
        if let request, cutoff > request.before {
            do {
                try await catalog.apply([.completeSweep(version: request.version)])
            } catch let error as SnapshotError where error.code == .conflict {
                // Another vanished writer was recovered meanwhile: the next collection sweeps again.
            }
        }
        logger.info(
            "garbage collected", metadata: ["removed": "\(report.removed)", "bytes": "\(report.removedBytes)"])
        return report
    }
}
