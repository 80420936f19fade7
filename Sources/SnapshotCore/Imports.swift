public import Foundation
import Logging

/// Import claims: exactly one snapshot per (bucket, key, ETag), with leases (issue 5).
///
/// The import row's primary key is (bucket, key, etag). A claim is a conditional insert (first
/// claim) or a versioned update (re-claim after the lease expired or a transient failure); the
/// completion is part of the snapshot's commit batch (``SnapshotWriter/commit(now:)`` of a writer
/// begun with the claim), so an object can never yield two available snapshots.
public struct ImportClaims: LedgerBacked {
    let ledger: Ledger

    /// Claims an object for import.
    ///
    /// - Parameters:
    ///   - owner: the project text from the key (kept verbatim, even when malformed).
    ///   - worker: a token unique to this worker and attempt (e.g. `host:pid:uuid`).
    ///   - leaseSeconds: how long the claim holds without ``renewLease(_:leaseSeconds:now:)``.
    /// - Returns: the claim, or nil when the object was already imported, failed for good, or is
    ///   leased by another worker whose lease has not expired and who is not provably dead (a service
    ///   made ``SnapshotService/forWorker(_:)`` tests that). Every successful claim increments
    ///   `attempts` (so a claim on an expired lease, or taken from a dead worker, counts the lost attempt).
    public func claimImport(
        bucket: String, key: String, etag: String, owner: String, worker: String, leaseSeconds: TimeInterval,
        now: Date = Date()
    ) async throws -> ImportClaim? {
        let attempt = try await claimImportOrRead(
            bucket: bucket, key: key, etag: etag, owner: owner, worker: worker, leaseSeconds: leaseSeconds, now: now)
        guard case .claimed(let claim) = attempt else { return nil }
        return claim
    }

    /// ``claimImport(bucket:key:etag:owner:worker:leaseSeconds:now:)`` that, when the object is not
    /// claimable, also answers the row that stands in the way (imported, failed, leased by whom), read by
    /// the same statement: a claim lost to another worker costs one statement (plus, when the holder's
    /// lease still runs, the test of its proof of life).
    public func claimImportOrRead(
        bucket: String, key: String, etag: String, owner: String, worker: String, leaseSeconds: TimeInterval,
        now: Date = Date()
    ) async throws -> ClaimAttempt {
        let importKey = ImportKey(bucket: bucket, key: key, etag: etag)
        let stamp = Self.stamp(now)
        let expires = Self.stamp(now.addingTimeInterval(leaseSeconds))
        // One conditional statement: no read first, no retry. Workers racing for one object each pay
        // that one statement; claims of different objects touch different rows.
        switch try await catalog.claimImportOrRead(
            importKey, owner: owner, worker: worker, leaseExpiresAt: expires, now: stamp)
        {
        case .claimed(let row):
            return .claimed(
                ImportClaim(
                    key: importKey, owner: row.owner, worker: worker, attempts: row.attempts, leaseExpiresAt: expires))
        case .notClaimable(let row):
            // Rare: the statement could not see the row (a racing first insert); read it.
            var row = row
            if row == nil { row = try await catalog.importRecord(importKey) }
            if let row, let claim = try await takeOverFromDeadWorker(
                importKey, row: row, worker: worker, leaseExpiresAt: expires, now: stamp)
            {
                return .claimed(claim)
            }
            return .notClaimed(row)
        }
    }

    /// What ``claimImportOrRead(bucket:key:etag:owner:worker:leaseSeconds:now:)`` found.
    public enum ClaimAttempt: Sendable {
        case claimed(ImportClaim)
        /// Not claimable: the row as the claim found it (nil when there is none).
        case notClaimed(ImportRecord?)
    }

    /// Takes a claim over at once when its lease still runs but its worker is provably dead (its proof of
    /// life is free: see ``WorkerLiveness``): the claim passes to `worker` (one more attempt, as a claim
    /// on an expired lease counts), and the dead worker's pending snapshot is dropped in the same batch,
    /// with a sweep request for the blocks it put. Only the row read is updated (its version): of two
    /// workers taking over the same claim, one wins.
    /// - Returns: the claim, or nil (nothing to take over, the holder lives or cannot be proven dead, or
    ///   another worker took it over first).
    private func takeOverFromDeadWorker(
        _ key: ImportKey, row: ImportRecord, worker: String, leaseExpiresAt: Date, now: Date
    ) async throws -> ImportClaim? {
        guard let me = ledger.worker, row.state == .claimed, let holder = row.worker, holder != worker,
            await me.provesDeath(ofHolder: holder)
        else { return nil }
        var taken = row
        taken.worker = worker
        taken.leaseExpiresAt = leaseExpiresAt
        taken.attempts += 1
        taken.snapshotID = nil
        taken.updatedAt = now
        var writes: [CatalogWrite] = [.updateImport(taken)]
        if let id = row.snapshotID, let snapshot = try await catalog.snapshot(id), snapshot.state == .pending,
            snapshot.writer == holder
        {
            writes.append(.deleteSnapshot(id, version: snapshot.version))
            writes.append(.requestSweep(before: now))
        }
        do {
            try await catalog.apply(writes)
        } catch let error as SnapshotError where error.code == .conflict {
            return nil  // another worker took it over (or the row moved on) first
        }
        logger.notice(
            "took over the claim of a dead worker",
            metadata: ["key": "\(key.key)", "deadWorker": "\(holder)", "attempts": "\(taken.attempts)"])
        return ImportClaim(
            key: key, owner: row.owner, worker: worker, attempts: taken.attempts, leaseExpiresAt: leaseExpiresAt)
    }

    /// Claims whose lease ended before `now` (their workers vanished; any worker may claim them again).
    public func expiredClaims(now: Date = Date(), limit: Int = 1000) async throws -> [ImportRecord] {
        try await catalog.expiredClaims(before: now, limit: limit)
    }

    /// The import row, if `claim` still holds it. - Throws: `.leaseLost`, `.notFound`.

    /// Extends a claim's lease (and its pending snapshot's, if one was begun).
    /// - Throws: `.leaseLost` when another worker took it over or it was completed/failed.
    public func renewLease(_ claim: ImportClaim, leaseSeconds: TimeInterval, now: Date = Date()) async throws
        -> ImportClaim
    {
        let expires = Self.stamp(now.addingTimeInterval(leaseSeconds))
        try await retrying("renew claim") {
            var row = try await heldImport(claim)
            row.leaseExpiresAt = expires
            row.updatedAt = Self.stamp(now)
            var writes: [CatalogWrite] = [.updateImport(row)]
            if let id = row.snapshotID, var snapshot = try await catalog.snapshot(id), snapshot.state == .pending,
                snapshot.writer == claim.worker
            {
                snapshot.leaseExpiresAt = expires
                writes.append(.updateSnapshot(snapshot))
            }
            try await catalog.apply(writes)
        }
        var renewed = claim
        renewed.leaseExpiresAt = expires
        return renewed
    }

    /// Records a failure. A transient one (`permanent: false`) leaves the object claimable by the
    /// next pass; a permanent one (rejected image, or too many attempts) ends it. A pending snapshot
    /// begun under the claim is removed in the same transaction.
    /// - Parameter countsAsAttempt: false for an attempt that was interrupted rather than failed (a
    ///   shutdown, a signal): the claim's attempt is given back, so restarts never use up `max_attempts`.
    public func failImport(
        _ claim: ImportClaim, code: String, message: String, permanent: Bool, countsAsAttempt: Bool = true,
        now: Date = Date()
    ) async throws {
        try await retrying("fail import") {
            var row = try await heldImport(claim)
            var writes: [CatalogWrite] = []
            if let id = row.snapshotID, let snapshot = try await catalog.snapshot(id), snapshot.state == .pending,
                snapshot.writer == claim.worker
            {
                writes.append(.deleteSnapshot(id, version: snapshot.version))
                row.snapshotID = nil
            }
            row.state = permanent ? .failed : .retry
            if !countsAsAttempt { row.attempts = max(0, row.attempts - 1) }
            row.worker = nil
            row.leaseExpiresAt = nil
            row.errorCode = code
            row.errorMessage = String(message.prefix(2000))
            row.updatedAt = Self.stamp(now)
            writes.insert(.updateImport(row), at: 0)
            try await catalog.apply(writes)
        }
        logger.info(
            "import failed", metadata: ["key": "\(claim.key.key)", "code": "\(code)", "permanent": "\(permanent)"])
    }

    /// Records how far the attempt holding `claim` has read its object (see
    /// ``Catalog/recordImportProgress(_:worker:bytesRead:bytesTotal:)``): a single statement, no retry, no
    /// version change. - Returns: false when another worker has taken the import over.
    @discardableResult
    public func recordImportProgress(_ claim: ImportClaim, bytesRead: UInt64, bytesTotal: UInt64?) async throws -> Bool {
        try await catalog.recordImportProgress(
            claim.key, worker: claim.worker, bytesRead: Int64(clamping: bytesRead),
            bytesTotal: bytesTotal.map { Int64(clamping: $0) })
    }

    /// Every import, oldest first (checks and tests; `imports list` reads pages).
    public func listImports() async throws -> [ImportRecord] {
        try await catalog.imports()
    }

    /// One page of the import history matching `filter`, by `createdAt` then import ID (`imports list`).
    /// - Parameters:
    ///   - cursor: where the previous page ended (its ``ImportPage/next``), nil for the first page.
    ///   - limit: the page size, 1 to 1,000 (clamped).
    /// - Returns: the page; `next` is nil on the last one.
    public func listImports(_ filter: ImportFilter, after cursor: ImportCursor?, limit: Int) async throws -> ImportPage {
        let limit = min(max(limit, 1), Self.pageSize)
        // One row more than asked tells whether another page follows without a second query.
        var rows = try await catalog.imports(filter, after: cursor, limit: limit + 1)
        let more = rows.count > limit
        if more { rows.removeLast(rows.count - limit) }
        return ImportPage(imports: rows, next: more ? rows.last.map(ImportCursor.init(after:)) : nil)
    }

    /// Every import matching `filter`, oldest first, read page by page.
    public func listImports(_ filter: ImportFilter, after cursor: ImportCursor? = nil) async throws -> [ImportRecord] {
        var all: [ImportRecord] = []
        var cursor = cursor
        while true {
            let page = try await listImports(filter, after: cursor, limit: Self.pageSize)
            all += page.imports
            guard let next = page.next else { return all }
            cursor = next
        }
    }

    /// The import with this ID (`imp-…`), if any.
    public func importRecord(id: String) async throws -> ImportRecord? {
        try await catalog.imports(id: id).max { $0.updatedAt < $1.updatedAt }
    }

    /// The latest import (by `updatedAt`) of the object `bucket`/`key`, whatever its ETag.
    public func latestImport(bucket: String, key: String) async throws -> ImportRecord? {
        try await catalog.imports(bucket: bucket, key: key).first
    }

    /// The largest page read from the catalog at once.
    static let pageSize = 1000

    /// One import row.
    public func importRecord(bucket: String, key: String, etag: String) async throws -> ImportRecord? {
        try await catalog.importRecord(ImportKey(bucket: bucket, key: key, etag: etag))
    }
}

/// One page of the import history.
public struct ImportPage: Sendable, Equatable {
    public var imports: [ImportRecord]
    /// Where the next page starts; nil when this is the last page.
    public var next: ImportCursor?

    public init(imports: [ImportRecord], next: ImportCursor?) {
        self.imports = imports
        self.next = next
    }
}
