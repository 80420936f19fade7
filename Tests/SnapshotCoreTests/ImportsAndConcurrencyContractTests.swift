import Foundation
import BlockStoreFS
import SnapshotCore
import Testing

@testable import CatalogTestSupport

/// Import claims, recovery, garbage collection and concurrency, against every catalog.
@Suite("Imports, recovery, GC and concurrency (contract, every catalog)")
struct ImportsAndConcurrencyContractTests {
    static let owner = ProjectRef.make("web@acme")
    static let key = ImportKey(bucket: "images", key: "incoming/web@acme/disk +1 ?#.qcow2", etag: "\"abc123\"")

    static func begin(_ h: Harness, claim: ImportClaim, size: Int = 3 * 4096) async throws -> SnapshotWriter {
        try await h.service.beginSnapshot(
            NewSnapshot(
                owner: owner, source: .object(bucket: key.bucket, key: key.key, etag: key.etag), format: "qcow2",
                virtualSize: UInt64(size), claim: claim),
            caller: .operator)
    }

    @Test(
        "8 workers claim one object at once: exactly one gets it; a completed import is never claimed again",
        arguments: CatalogFactory.all)
    func exactlyOnceClaim(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let claims = try await withThrowingTaskGroup(of: ImportClaim?.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        try await s.claimImport(
                            bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag, owner: "web@acme",
                            worker: "w\(worker)", leaseSeconds: 60)
                    }
                }
                return try await group.reduce(into: [ImportClaim]()) { if let c = $1 { $0.append(c) } }
            }
            #expect(claims.count == 1)
            let claim = try #require(claims.first)
            #expect(claim.attempts == 1)
            let writer = try await Self.begin(h, claim: claim)
            try await writer.write(offset: 0, bytes: Disks.make(blocks: 3))
            let snapshot = try await writer.commit()
            #expect(snapshot.state == .available)
            let row = try #require(
                try await s.importRecord(bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag))
            #expect(row.state == .imported)
            #expect(row.snapshotID == snapshot.id)
            for worker in ["w0", "later"] {
                let again = try await s.claimImport(
                    bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag, owner: "web@acme", worker: worker,
                    leaseSeconds: 60, now: Date().addingTimeInterval(3600))
                #expect(again == nil)
            }
            // A new ETag is a new object.
            #expect(
                try await s.claimImport(
                    bucket: Self.key.bucket, key: Self.key.key, etag: "\"new\"", owner: "web@acme", worker: "w9",
                    leaseSeconds: 60) != nil)
            #expect(try await s.listImports().count == 2)
        }
    }

    @Test(
        "an expired lease is taken over (attempts counted); the old worker's commit fails and nothing is duplicated",
        arguments: CatalogFactory.all)
    func leaseTakeover(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let t0 = Date()
            let first = try #require(
                try await s.claimImport(
                    bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag, owner: "web@acme", worker: "A",
                    leaseSeconds: 30, now: t0))
            let slow = try await Self.begin(h, claim: first)
            try await slow.write(offset: 0, bytes: Disks.make(blocks: 3, seed: 3))
            #expect(
                try await s.claimImport(
                    bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag, owner: "web@acme", worker: "B",
                    leaseSeconds: 30, now: t0.addingTimeInterval(10)) == nil, "lease still valid")
            let second = try #require(
                try await s.claimImport(
                    bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag, owner: "web@acme", worker: "B",
                    leaseSeconds: 30, now: t0.addingTimeInterval(31)))
            #expect(second.attempts == 2)
            await expectCode(.leaseLost) { try await s.renewLease(first, leaseSeconds: 30) }
            let fast = try await Self.begin(h, claim: second)
            try await fast.write(offset: 0, bytes: Disks.make(blocks: 3, seed: 3))
            let committed = try await fast.commit()
            await expectCode(.leaseLost) { try await slow.commit() }
            let available = try await s.listSnapshots(caller: .operator).filter { $0.state == .available }
            #expect(available.map(\.id) == [committed.id])
        }
    }

    @Test(
        "transient failures keep the object claimable and count attempts; permanent ones end it",
        arguments: CatalogFactory.all)
    func failures(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            func claim(_ worker: String) async throws -> ImportClaim? {
                try await s.claimImport(
                    bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag, owner: "web@acme", worker: worker,
                    leaseSeconds: 60)
            }
            let c1 = try #require(try await claim("A"))
            let writer = try await Self.begin(h, claim: c1)
            try await s.failImport(c1, code: "NetworkError", message: "connection reset", permanent: false)
            #expect(try await s.catalog.snapshot(writer.id) == nil, "the pending snapshot went with the failure")
            let c2 = try #require(try await claim("B"))
            #expect(c2.attempts == 2)
            let renewed = try await s.renewLease(c2, leaseSeconds: 120)
            #expect(renewed.leaseExpiresAt > c2.leaseExpiresAt)
            try await s.failImport(c2, code: "CorruptImage", message: "bad L2 table", permanent: true)
            #expect(try await claim("C") == nil)
            let row = try #require(try await s.listImports().first)
            #expect(row.state == .failed)
            #expect(row.errorCode == "CorruptImage")
            #expect(row.attempts == 2)
        }
    }

    @Test(
        "a lost claim answers, in the same call, the row in the way: leased by whom, imported, or failed",
        arguments: CatalogFactory.all)
    func lostClaimAnswersTheRow(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            func attempt(_ worker: String, etag: String = Self.key.etag) async throws -> ImportClaims.ClaimAttempt {
                try await s.claimImportOrRead(
                    bucket: Self.key.bucket, key: Self.key.key, etag: etag, owner: "web@acme", worker: worker,
                    leaseSeconds: 60)
            }
            guard case .claimed(let claim) = try await attempt("w1") else {
                Issue.record("the first claim must win")
                return
            }
            // Leased by w1 (alive: the token names no provable worker): w2 learns by whom.
            guard case .notClaimed(let leased?) = try await attempt("w2") else {
                Issue.record("a leased object is not claimable and its row is answered")
                return
            }
            #expect(leased.state == .claimed)
            #expect(leased.worker == "w1")
            #expect(leased.attempts == 1)
            // Imported: the row names the snapshot.
            let writer = try await Self.begin(h, claim: claim)
            try await writer.write(offset: 0, bytes: Disks.make(blocks: 3))
            let snapshot = try await writer.commit()
            guard case .notClaimed(let imported?) = try await attempt("w3") else {
                Issue.record("an imported object is not claimable and its row is answered")
                return
            }
            #expect(imported.state == .imported)
            #expect(imported.snapshotID == snapshot.id)
            // Failed for good: the row carries the failure.
            guard case .claimed(let other) = try await attempt("w4", etag: "\"bad\"") else {
                Issue.record("a new ETag is a new object")
                return
            }
            try await s.failImport(other, code: "CorruptImage", message: "broken", permanent: true)
            guard case .notClaimed(let failed?) = try await attempt("w5", etag: "\"bad\"") else {
                Issue.record("a failed object is not claimable and its row is answered")
                return
            }
            #expect(failed.state == .failed)
            #expect(failed.errorCode == "CorruptImage")
            #expect(try await s.listImports().count == 2, "lost claims wrote nothing")
        }
    }

    @Test("at most one available snapshot per (bucket, key, ETag), even without claims", arguments: CatalogFactory.all)
    func oneAvailablePerObject(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let request = NewSnapshot(
                owner: Self.owner, source: .object(bucket: Self.key.bucket, key: Self.key.key, etag: Self.key.etag),
                format: "raw", virtualSize: 4096)
            let first = try await h.service.beginSnapshot(request, caller: .operator)
            let second = try await h.service.beginSnapshot(request, caller: .operator)
            _ = try await first.commit()
            await expectCode(.invalidState) { try await second.commit() }
            // The catalog itself refuses it too (the partial unique index).
            var raw = try #require(try await h.service.catalog.snapshot(second.id))
            raw.state = .available
            await expectCode(.conflict) { try await h.service.catalog.apply([.updateSnapshot(raw)]) }
            let available = try await h.service.listSnapshots(caller: .operator).filter { $0.state == .available }
            #expect(available.map(\.id) == [first.id])
        }
    }

    @Test("recovery finishes a deletion a crash interrupted", arguments: CatalogFactory.all)
    func recoverDeleting(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            var snapshot = try await h.snapshot(owner: Self.owner, disk: Disks.make(blocks: 3))
            snapshot.state = .deleting
            try await h.service.catalog.apply([.updateSnapshot(snapshot)])
            let report = try await h.service.recover(now: Date().addingTimeInterval(3600))
            #expect(report.finishedDeletions == [snapshot.id])
            #expect(try await h.service.catalog.snapshot(snapshot.id) == nil)
            #expect(try await h.store.list().isEmpty)
        }
    }

    @Test(
        "recovery turns a vanished writer's pending snapshot into error and releases its volume",
        arguments: CatalogFactory.all)
    func recovery(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let writer = try await s.beginSnapshot(
                NewSnapshot(owner: Self.owner, source: .file(path: "/x"), format: "raw", virtualSize: 4096, lease: 30),
                caller: .operator)
            let snapshot = try await h.snapshot(owner: Self.owner, disk: Disks.make(blocks: 2))
            let volume = try await s.createVolume(from: snapshot.id, caller: .operator)
            var busy = try #require(try await s.catalog.volume(volume.id))
            let ghost = try await s.beginSnapshot(
                NewSnapshot(owner: Self.owner, source: .file(path: "/y"), format: "raw", virtualSize: 4096, lease: 30),
                caller: .operator)
            // Pretend the ghost was a volume snapshot holding the volume.
            var ghostRecord = try #require(try await s.catalog.snapshot(ghost.id))
            ghostRecord.source = .volume(volume.id)
            busy.snapshotInProgress = ghost.id
            try await s.catalog.apply([.updateSnapshot(ghostRecord), .updateVolume(busy)])

            #expect(try await s.recover(now: Date()).failedSnapshots.isEmpty, "leases still valid")
            let report = try await s.recover(now: Date().addingTimeInterval(31))
            #expect(Set(report.failedSnapshots) == [writer.id, ghost.id])
            #expect(try await s.catalog.snapshot(writer.id)?.state == .error)
            #expect(try await s.catalog.volume(volume.id)?.snapshotInProgress == nil)
            await expectCode(.leaseLost) { try await writer.commit() }
            try await s.deleteSnapshot(writer.id, caller: .project(Self.owner))
            #expect(try await s.catalog.snapshot(writer.id) == nil)
        }
    }

    @Test(
        "GC never collects a block a pending writer put (even a deduplicated one), and collects orphans",
        arguments: CatalogFactory.all)
    func collectionSparesPendingWriters(_ factory: CatalogFactory) async throws {
        let options = SnapshotServiceOptions(blockSize: Harness.blockSize, gcSafetyMargin: 0.5)
        try await Harness.with(factory, options: options) { h in
            let s = h.service
            let disk = Disks.make(blocks: 3, seed: 11)
            let old = try await h.snapshot(owner: Self.owner, disk: disk)
            // Age every stored block so only freshening can protect it.
            for block in try await h.store.list() {
                try h.store.setModified(block.hash, to: Date().addingTimeInterval(-3600))
            }
            let writer = try await s.beginSnapshot(
                NewSnapshot(
                    owner: Self.owner, source: .file(path: "/x"), format: "raw", virtualSize: UInt64(disk.count)),
                caller: .operator)
            try await writer.write(offset: 0, bytes: disk)  // all deduplicated: freshens
            #expect(writer.statistics.newBlocks == 0)
            try await s.deleteSnapshot(old.id, caller: .operator, now: Date().addingTimeInterval(3600))
            _ = try await s.collectGarbage(now: Date().addingTimeInterval(3600))
            let committed = try await writer.commit()
            #expect(try await h.verifyAllManifests() == 2)
            let volume = try await s.createVolume(from: committed.id, caller: .operator)
            #expect(try h.fileBytes(s.volumePath(volume)) == disk)

            // An orphan (a crashed writer's block) goes at the next collection once no writer is older.
            let orphan = [UInt8](repeating: 0x77, count: 4096)
            _ = try await h.store.put(Blocks.hash(orphan), orphan)
            try await h.store.sync()
            let report = try await s.collectGarbage(now: Date().addingTimeInterval(10))
            #expect(report.removed == 1)
            #expect(try await !h.store.contains(Blocks.hash(orphan)))
            #expect(try await h.verifyAllManifests() == 2)
        }
    }

    @Test(
        "8 tasks creating and deleting snapshots that share blocks never lose a block another snapshot needs",
        arguments: CatalogFactory.all)
    func concurrentCreateDelete(_ factory: CatalogFactory) async throws {
        // A small safety margin, and writers that pause before committing: a deleted snapshot's block that a
        // pending writer reused more than the margin ago is protected only by the pending-writer cutoff.
        let options = SnapshotServiceOptions(blockSize: Harness.blockSize, gcSafetyMargin: 0.02)
        try await Harness.with(factory, options: options) { h in
            // A pool of 16 shared blocks; every disk is 4 of them plus one block of its own.
            var generator = SplitMix(seed: 99)
            let pool: [[UInt8]] = (0..<16).map { _ in
                (0..<4096).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            }
            let rounds = 10
            let deletedTotal = try await withThrowingTaskGroup(of: Int.self) { group in
                for task in 0..<8 {
                    group.addTask {
                        var random = SplitMix(seed: UInt64(task + 1))
                        var previous: SnapshotRecord?
                        var deleted = 0
                        for round in 0..<rounds {
                            var disk: [UInt8] = []
                            for _ in 0..<4 { disk += pool[Int(random.next() % UInt64(pool.count))] }
                            disk += [UInt8](repeating: UInt8(task * rounds + round + 1), count: 4096)
                            let writer = try await h.service.beginSnapshot(
                                NewSnapshot(
                                    owner: Self.owner, source: .file(path: "/t\(task)"), format: "raw",
                                    virtualSize: UInt64(disk.count)),
                                caller: .operator)
                            try await writer.write(offset: 0, bytes: disk)
                            try await Task.sleep(nanoseconds: random.next() % 60_000_000)
                            let snapshot = try await writer.commit()
                            if let victim = previous {
                                try await h.service.deleteSnapshot(victim.id, caller: .operator)
                                deleted += 1
                            }
                            previous = snapshot
                            if round % 4 == 3 { _ = try await h.service.collectGarbage() }
                        }
                        return deleted
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(deletedTotal == 8 * (rounds - 1))
            let remaining = try await h.service.listSnapshots(caller: .operator)
            #expect(remaining.count == 8)
            #expect(remaining.allSatisfy { $0.state == .available })
            #expect(try await h.verifyAllManifests() == 8 * 5)
            for snapshot in remaining {
                let volume = try await h.service.createVolume(from: snapshot.id, caller: .operator)
                let copy = try await h.service.snapshotVolume(volume.id, caller: .operator)
                #expect(copy.checksum == snapshot.checksum, "the volume holds the snapshot's exact bytes")
            }
            // With nothing pending and the clock an hour on, a collection leaves exactly the referenced blocks.
            _ = try await h.service.collectGarbage(now: Date().addingTimeInterval(3600))
            #expect(try await h.verifyAllManifests() == 16 * 5)
            var referenced = Set<BlockHash>()
            for (_, manifest) in try await h.service.catalog.manifests() {
                referenced.formUnion(manifest.entries.map(\.hash))
            }
            #expect(try await h.store.list().count == referenced.count)
        }
    }
}
