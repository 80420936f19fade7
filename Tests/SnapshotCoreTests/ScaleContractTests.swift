import BlockStoreFS
import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

/// Issue 11: the targeted catalog queries, block reference counts, sweep requests and one-statement
/// claims, against every catalog.
@Suite("Catalog at scale (contract, every catalog)")
struct ScaleContractTests {
    static let alice = ProjectRef.make("web@acme")
    static let bob = ProjectRef.make("db@acme")
    static let carol = ProjectRef.make("ops@other")

    /// A disk of `count` blocks: block i is filled with `bytes[i]` (0 = a zero block).
    static func disk(_ bytes: [UInt8]) -> [UInt8] {
        bytes.flatMap { [UInt8](repeating: $0, count: Harness.blockSize) }
    }

    static func hash(_ byte: UInt8) -> BlockHash { Blocks.hash([UInt8](repeating: byte, count: Harness.blockSize)) }

    @Test(
        "pages of visible snapshots equal the rules' filter, for the operator and for each project",
        arguments: CatalogFactory.all)
    func visiblePages(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            var made: [SnapshotRecord] = []
            for (i, owner) in [Self.alice, Self.bob, Self.carol, Self.alice, Self.bob, Self.carol, Self.alice]
                .enumerated()
            {
                made.append(try await h.snapshot(owner: owner, disk: Self.disk([UInt8(i + 1)])))
            }
            _ = try await s.share(made[1].id, with: Self.alice.description, caller: .project(Self.bob))
            _ = try await s.share(made[2].id, with: Self.alice.description, caller: .project(Self.carol))
            _ = try await s.share(made[2].id, with: Self.bob.description, caller: .project(Self.carol))
            _ = try await s.publish(made[5].id, confirmBootable: false, caller: .project(Self.carol))
            // Pending and deleting rows: the owner sees its pending one, nobody sees a deleting one.
            let pending = try await s.beginSnapshot(
                NewSnapshot(owner: Self.bob, source: .file(path: "/p"), format: "raw", virtualSize: 4096),
                caller: .operator)
            var deleting = try #require(try await s.catalog.snapshot(made[4].id))
            deleting.state = .deleting
            try await s.catalog.apply([.updateSnapshot(deleting)])

            let all = try await s.catalog.snapshots()
            for caller in [Caller.operator, .project(Self.alice), .project(Self.bob), .project(Self.carol)] {
                let expected = all.filter { SnapshotService.canSee($0, caller) && $0.state != .deleting }.map(\.id)
                var paged: [SnapshotID] = []
                var cursor: SnapshotCursor?
                repeat {
                    let page = try await s.listSnapshots(caller: caller, after: cursor, limit: 2)
                    #expect(page.snapshots.count <= 2)
                    paged += page.snapshots.map(\.id)
                    cursor = page.next
                    if let next = page.next { #expect(SnapshotCursor(token: next.token) == next) }
                } while cursor != nil
                #expect(paged == expected, "\(caller)")
                #expect(try await s.listSnapshots(caller: caller).map(\.id) == expected, "\(caller)")
            }
            #expect(try await s.listSnapshots(caller: .project(Self.bob)).contains { $0.id == pending.id })
            #expect(!(try await s.listSnapshots(caller: .operator).contains { $0.id == deleting.id }))
            #expect(try await s.listSnapshots(caller: .project(Self.alice)).map(\.id).contains(made[5].id))
        }
    }

    @Test(
        "pending and deleting snapshots, the oldest pending, the snapshot of an object", arguments: CatalogFactory.all)
    func stateQueries(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            #expect(try await s.catalog.oldestPendingSnapshot() == nil)
            let start = Date()
            let first = try await s.beginSnapshot(
                NewSnapshot(owner: Self.alice, source: .file(path: "/a"), format: "raw", virtualSize: 4096),
                caller: .operator, now: start)
            let second = try await s.beginSnapshot(
                NewSnapshot(owner: Self.alice, source: .file(path: "/b"), format: "raw", virtualSize: 4096),
                caller: .operator, now: start.addingTimeInterval(5))
            let done = try await h.snapshot(owner: Self.alice, disk: Self.disk([9]))
            let pending = try await s.catalog.snapshots(in: .pending, after: nil, limit: 10).map(\.id)
            #expect(pending == [first.id, second.id])
            #expect(try await s.catalog.snapshots(in: .pending, after: nil, limit: 1).map(\.id) == [first.id])
            let rest = try await s.catalog.snapshots(
                in: .pending, after: SnapshotCursor(after: first.record), limit: 10)
            #expect(rest.map(\.id) == [second.id])
            #expect(try await s.catalog.snapshots(in: .available, after: nil, limit: 10).map(\.id) == [done.id])
            let oldest = try #require(try await s.catalog.oldestPendingSnapshot())
            #expect(abs(oldest.timeIntervalSince(first.record.createdAt)) < 0.002)

            let key = ImportKey(bucket: "b", key: "incoming/web@acme/x.raw", etag: "\"e\"")
            #expect(try await s.catalog.availableSnapshot(of: key) == nil)
            let writer = try await s.beginSnapshot(
                NewSnapshot(
                    owner: Self.alice, source: .object(bucket: key.bucket, key: key.key, etag: key.etag),
                    format: "raw", virtualSize: 4096),
                caller: .operator)
            #expect(try await s.catalog.availableSnapshot(of: key) == nil, "pending is not available")
            try await writer.write(offset: 0, bytes: Self.disk([3]))
            let committed = try await writer.commit()
            #expect(try await s.catalog.availableSnapshot(of: key)?.id == committed.id)
        }
    }

    @Test(
        "a claim is one statement: first wins, a live lease refuses, an expired or retry one is taken over",
        arguments: CatalogFactory.all)
    func claims(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let c = h.service.catalog
            let key = ImportKey(bucket: "b", key: "incoming/web@acme/y.raw", etag: "\"1\"")
            let now = Date(timeIntervalSince1970: 1_800_000_000)
            let first = try #require(
                try await c.claimImport(key, owner: "web@acme", worker: "w1", leaseExpiresAt: now + 60, now: now))
            #expect(first.state == .claimed && first.attempts == 1 && first.worker == "w1")
            #expect(
                try await c.claimImport(key, owner: "web@acme", worker: "w2", leaseExpiresAt: now + 70, now: now + 10)
                    == nil)
            #expect(try await c.expiredClaims(before: now + 30, limit: 10).isEmpty)
            #expect(try await c.expiredClaims(before: now + 61, limit: 10).map(\.key) == [key])
            let taken = try #require(
                try await c.claimImport(key, owner: "web@acme", worker: "w2", leaseExpiresAt: now + 200, now: now + 60))
            #expect(taken.worker == "w2" && taken.attempts == 2 && taken.version == first.version + 1)
            var row = try #require(try await c.importRecord(key))
            row.state = .retry
            row.worker = nil
            row.leaseExpiresAt = nil
            try await c.apply([.updateImport(row)])
            let again = try #require(
                try await c.claimImport(key, owner: "web@acme", worker: "w3", leaseExpiresAt: now + 300, now: now + 100)
            )
            #expect(again.attempts == 3 && again.worker == "w3")
            row = try #require(try await c.importRecord(key))
            row.state = .imported
            try await c.apply([.updateImport(row)])
            #expect(
                try await c.claimImport(key, owner: "web@acme", worker: "w4", leaseExpiresAt: now + 900, now: now + 800)
                    == nil)
        }
    }

    @Test(
        "3 workers claiming 60 objects at once: each object claimed exactly once, no error",
        arguments: CatalogFactory.all)
    func concurrentClaims(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let keys = (0..<60).map { "incoming/web@acme/\($0).raw" }
            let won = try await withThrowingTaskGroup(of: [String].self) { group in
                for worker in 0..<3 {
                    group.addTask {
                        var mine: [String] = []
                        for key in keys.shuffled() {
                            if try await s.claimImport(
                                bucket: "b", key: key, etag: "e", owner: "web@acme", worker: "w\(worker)",
                                leaseSeconds: 60) != nil
                            {
                                mine.append(key)
                            }
                        }
                        return mine
                    }
                }
                return try await group.reduce(into: [String]()) { $0 += $1 }
            }
            #expect(won.sorted() == keys.sorted())
        }
    }

    @Test(
        "workers on different objects never conflict: claims, snapshots begun, renewals and commits with no retry allowed",
        arguments: CatalogFactory.all)
    func noConflictsAcrossObjects(_ factory: CatalogFactory) async throws {
        // With maxConflictRetries 0 any optimistic-version conflict would reach the caller as an error.
        let options = SnapshotServiceOptions(blockSize: Harness.blockSize, maxConflictRetries: 0)
        try await Harness.with(factory, options: options) { h in
            let s = h.service
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<3 {
                    group.addTask {
                        for round in 0..<4 {
                            let key = ImportKey(
                                bucket: "b", key: "incoming/web@acme/w\(worker)-\(round).raw", etag: "e")
                            var claim = try #require(
                                try await s.claimImport(
                                    bucket: key.bucket, key: key.key, etag: key.etag, owner: "web@acme",
                                    worker: "w\(worker)", leaseSeconds: 60))
                            let writer = try await s.beginSnapshot(
                                NewSnapshot(
                                    owner: Self.alice,
                                    source: .object(bucket: key.bucket, key: key.key, etag: key.etag),
                                    format: "raw", virtualSize: 4096, claim: claim),
                                caller: .operator)
                            try await writer.write(offset: 0, bytes: Self.disk([UInt8(1 + round % 2)]))  // shared blocks
                            for _ in 0..<3 {
                                claim = try await s.renewLease(claim, leaseSeconds: 60)
                                try await writer.renewLease()
                            }
                            _ = try await writer.commit()
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await s.catalog.snapshots(in: .available, after: nil, limit: 100).count == 12)
            #expect(
                try await s.catalog.blockReferences([Self.hash(1), Self.hash(2)]) == [Self.hash(1): 6, Self.hash(2): 6])
        }
    }

    @Test(
        "reference counts follow commits and deletes; a delete frees only its own unshared blocks",
        arguments: CatalogFactory.all)
    func referenceCounts(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            // a: blocks 1 2 3 (2 twice); b: blocks 2 3 4.
            let a = try await h.snapshot(owner: Self.alice, disk: Self.disk([1, 2, 0, 3, 2]))
            let b = try await h.snapshot(owner: Self.alice, disk: Self.disk([2, 3, 4]))
            let hashes = [1, 2, 3, 4].map { Self.hash(UInt8($0)) }
            #expect(
                try await s.catalog.blockReferences(hashes) == [hashes[0]: 1, hashes[1]: 2, hashes[2]: 2, hashes[3]: 1])
            #expect(try await s.catalog.unreferencedBlocks(after: nil, limit: 10).isEmpty)

            let report = try await s.deleteSnapshot(a.id, caller: .operator, now: Date().addingTimeInterval(3600))
            #expect(report.removed == 1, "only block 1 was a's alone")
            #expect(try await !h.store.contains(hashes[0]))
            for hash in hashes.dropFirst() { #expect(try await h.store.contains(hash)) }
            #expect(try await s.catalog.blockReferences(hashes) == [hashes[1]: 1, hashes[2]: 1, hashes[3]: 1])
            #expect(try await h.verifyAllManifests() == 3)

            try await s.deleteSnapshot(b.id, caller: .operator, now: Date().addingTimeInterval(3600))
            #expect(try await h.store.list().isEmpty)
            #expect(try await s.catalog.blockReferences(hashes).isEmpty, "removed blocks' counts are forgotten")
        }
    }

    @Test(
        "a delete while a pending writer reuses its blocks keeps them; the zero counts are collected later",
        arguments: CatalogFactory.all)
    func releasedBlocksWaitForWriters(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let old = try await h.snapshot(owner: Self.alice, disk: Self.disk([5, 6]))
            let writer = try await s.beginSnapshot(
                NewSnapshot(owner: Self.alice, source: .file(path: "/w"), format: "raw", virtualSize: 4096),
                caller: .operator)
            try await writer.write(offset: 0, bytes: Self.disk([7]))
            let report = try await s.deleteSnapshot(old.id, caller: .operator)
            #expect(report.removed == 0 && report.kept == 2, "the pending writer's cutoff protects them")
            #expect(try await s.catalog.unreferencedBlocks(after: nil, limit: 10).count == 2)
            _ = try await writer.commit()
            let collected = try await s.collectReleasedBlocks(now: Date().addingTimeInterval(3600))
            #expect(collected.removed == 2)
            #expect(try await s.catalog.unreferencedBlocks(after: nil, limit: 10).isEmpty)
            #expect(try await h.store.list().map(\.hash) == [Self.hash(7)])
        }
    }

    @Test(
        "an aborted writer registers its new blocks; a released-block collection removes them",
        arguments: CatalogFactory.all)
    func abortedWriterBlocks(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let kept = try await h.snapshot(owner: Self.alice, disk: Self.disk([1]))
            let writer = try await s.beginSnapshot(
                NewSnapshot(owner: Self.alice, source: .file(path: "/w"), format: "raw", virtualSize: 3 * 4096),
                caller: .operator)
            try await writer.write(offset: 0, bytes: Self.disk([1, 8, 9]))
            await writer.abort(reason: "test")
            try await h.store.sync()  // a store indexes puts at its next sync (another writer's commit)
            #expect(Set(try await s.catalog.unreferencedBlocks(after: nil, limit: 10)) == [Self.hash(8), Self.hash(9)])
            let report = try await s.collectReleasedBlocks(now: Date().addingTimeInterval(3600))
            #expect(report.removed == 2)
            #expect(try await h.store.list().map(\.hash) == [Self.hash(1)])
            #expect(try await h.verifyAllManifests() == 1)
            _ = kept
        }
    }

    @Test(
        "recovering a vanished writer requests one full sweep, which removes its orphans and is then cleared",
        arguments: CatalogFactory.all)
    func sweepAfterVanishedWriter(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            _ = try await h.snapshot(owner: Self.alice, disk: Self.disk([1]))
            #expect(try await s.catalog.sweepRequest() == nil)
            // A block put outside any writer (e.g. a crash before counts existed) is not visited without a sweep.
            let stray = [UInt8](repeating: 0x42, count: 4096)
            _ = try await h.store.put(Blocks.hash(stray), stray)
            try await h.store.sync()
            _ = try await s.collectReleasedBlocks(now: Date().addingTimeInterval(3600))
            #expect(try await h.store.contains(Blocks.hash(stray)))

            let ghost = try await s.beginSnapshot(
                NewSnapshot(owner: Self.alice, source: .file(path: "/g"), format: "raw", virtualSize: 4096, lease: 30),
                caller: .operator)
            try await ghost.write(offset: 0, bytes: Self.disk([2]))  // then it "vanishes": no commit, no abort
            try await h.store.sync()
            let report = try await s.recover(now: Date().addingTimeInterval(60))
            #expect(report.failedSnapshots == [ghost.id])
            let request = try #require(try await s.catalog.sweepRequest())
            #expect(request.before <= Date().addingTimeInterval(31))

            // A collection whose cutoff does not pass the writer's lease sweeps but keeps the request.
            _ = try await s.collectReleasedBlocks(now: Date())
            #expect(try await s.catalog.sweepRequest() != nil)
            let swept = try await s.collectReleasedBlocks(now: Date().addingTimeInterval(3600))
            #expect(swept.removed == 2, "the ghost's block and the stray one")
            #expect(try await s.catalog.sweepRequest() == nil)
            #expect(try await h.store.list().map(\.hash) == [Self.hash(1)])
        }
    }
}
