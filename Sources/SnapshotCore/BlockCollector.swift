public import Foundation
import Logging

/// Garbage collection of blocks: what a deleted snapshot leaves unreferenced, and a full collection of
/// every stored block no manifest names. Safe while writers run: blocks touched after the cutoff (the
/// oldest pending snapshot's start, minus a margin) are kept (the freshening contract in ``BlockStore``).
public struct BlockCollector: LedgerBacked {
    let ledger: Ledger


    func finishDeletion(_ snapshot: SnapshotRecord, now: Date) async throws -> CollectionReport {
        // Candidates: this manifest's blocks no other manifest names. Pending writers are protected
        // by the cutoff (see BlockStore), read BEFORE the other manifests.
        let cutoff = try await collectionCutoff(now: now)
        var report = CollectionReport()
        if let manifest = try await catalog.manifest(snapshot.id) {
            var candidates = Set(manifest.entries.map(\.hash))
            for (other, otherManifest) in try await catalog.manifests() where other != snapshot.id {
                for entry in otherManifest.entries { candidates.remove(entry.hash) }
                if candidates.isEmpty { break }
            }
            report = try await remove(candidates, cutoff: cutoff)
        }
        try await retrying("delete") {
            guard let current = try await catalog.snapshot(snapshot.id) else { return }
            try await catalog.apply([.deleteSnapshot(current.id, version: current.version)])
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
        let oldest = try await catalog.snapshots().filter { $0.state == .pending }.map(\.createdAt).min()
        return min(now, oldest ?? now).addingTimeInterval(-options.gcSafetyMargin)
    }

    /// Removes unreferenced blocks in batches (a store makes each batch durable at once).
    /// - Parameter sizes: the candidates' sizes, for the report's byte count, when known.
    private func remove(
        _ candidates: some Sequence<BlockHash>, sizes: [BlockHash: Int] = [:], cutoff: Date
    ) async throws -> CollectionReport {
        var report = CollectionReport()
        var batch: [BlockHash] = []
        func flush() async throws {
            let removed = try await blocks.remove(batch, unlessModifiedSince: cutoff)
            report.scanned += batch.count
            report.removed += removed.count
            report.kept += batch.count - removed.count
            report.removedBytes += removed.reduce(0) { $0 + (sizes[$1] ?? 0) }
            batch.removeAll(keepingCapacity: true)
        }
        for hash in candidates {
            batch.append(hash)
            if batch.count == 512 { try await flush() }
        }
        if !batch.isEmpty { try await flush() }
        return report
    }

    /// Removes every stored block no manifest names, except those a live writer may need
    /// (touched after the cutoff), and stale temporary files. Safe while imports run.
    /// - Parameter now: the current time. Tests may pass a later time only when no writer can begin
    ///   during the call: a writer that begins after the pending snapshots were read is protected by
    ///   its puts being later than `now`.
    public func collectGarbage(now: Date = Date()) async throws -> CollectionReport {
        let cutoff = try await collectionCutoff(now: now)
        var referenced = Set<BlockHash>()
        for (_, manifest) in try await catalog.manifests() {
            for entry in manifest.entries { referenced.insert(entry.hash) }
        }
        let stored = try await blocks.list()
        var sizes: [BlockHash: Int] = [:]
        for block in stored where !referenced.contains(block.hash) { sizes[block.hash] = block.size }
        var report = try await remove(sizes.keys, sizes: sizes, cutoff: cutoff)
        report.scanned = stored.count
        _ = try await blocks.removeStaleTemporaries(olderThan: cutoff)
        logger.info(
            "garbage collected", metadata: ["removed": "\(report.removed)", "bytes": "\(report.removedBytes)"])
        return report
    }

    /// Turns pending snapshots whose writer's lease expired into `error` (releasing their volumes),
    /// and finishes deletions a crash interrupted. Run it at the start of every pass.
}
