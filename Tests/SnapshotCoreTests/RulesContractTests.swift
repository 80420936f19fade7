import Foundation
import BlockStoreFS
import SnapshotCore
import Testing

@testable import CatalogTestSupport

/// Every rule of issue 4, written once and run against every catalog in ``CatalogFactory/all``.
@Suite("Snapshot rules (contract, every catalog)")
struct RulesContractTests {
    static let owner = ProjectRef.make("web@acme")
    static let granted = ProjectRef.make("db@acme")
    static let viewer = ProjectRef.make("ops@globex")
    static let stranger = ProjectRef.make("evil@initech")

    enum Role: String, CaseIterable { case owner, granted, publicViewer, stranger }

    /// A fresh snapshot owned by `owner`, shared with `granted`; public when `role` is the public viewer.
    static func setUp(_ h: Harness, for role: Role) async throws -> (SnapshotRecord, Caller) {
        var snapshot = try await h.snapshot(owner: owner, disk: Disks.make(blocks: 6))
        snapshot = try await h.service.share(snapshot.id, with: granted.description, caller: .project(owner))
        let caller: Caller
        switch role {
        case .owner: caller = .project(owner)
        case .granted: caller = .project(granted)
        case .publicViewer:
            snapshot = try await h.service.publish(snapshot.id, confirmBootable: false, caller: .project(owner))
            caller = .project(viewer)
        case .stranger: caller = .project(stranger)
        }
        return (snapshot, caller)
    }

    @Test(
        "isolation matrix: owner, granted project, public viewer, stranger × every snapshot operation",
        arguments: CatalogFactory.all, Role.allCases)
    func isolationMatrix(_ factory: CatalogFactory, _ role: Role) async throws {
        try await Harness.with(factory) { h in
            let (snapshot, caller) = try await Self.setUp(h, for: role)
            let s = h.service
            let id = snapshot.id
            let canSee = role != .stranger
            let isOwner = role == .owner
            let denied: SnapshotError.Code = canSee ? .accessDenied : .notFound

            // Reads
            let listed = try await s.listSnapshots(caller: caller).map(\.id)
            #expect(listed.contains(id) == canSee)
            if canSee {
                #expect(try await s.snapshot(id, caller: caller).id == id)
                let volume = try await s.createVolume(from: id, caller: caller)
                if case .project(let p) = caller { #expect(volume.owner == p) }
            } else {
                await expectCode(.notFound) { try await s.snapshot(id, caller: caller) }
                await expectCode(.notFound) { try await s.createVolume(from: id, caller: caller) }
                #expect(try await s.listVolumes(caller: caller).isEmpty)
            }

            // Mutations: only the owner; others change nothing.
            let before = try await s.snapshot(id, caller: .operator)
            if isOwner {
                #expect(try await s.setDescription(id, "new", caller: caller).description == "new")
                #expect(try await s.share(id, with: "x@y", caller: caller).sharedWith.contains(.make("x@y")))
                #expect(try await !s.unshare(id, with: "x@y", caller: caller).sharedWith.contains(.make("x@y")))
                #expect(try await s.publish(id, confirmBootable: false, caller: caller).visibility == .public)
                #expect(try await s.unpublish(id, caller: caller).visibility == .private)
                try await s.deleteSnapshot(id, caller: caller)
                await expectCode(.notFound) { try await s.snapshot(id, caller: .operator) }
            } else {
                await expectCode(denied, "set-description") { try await s.setDescription(id, "mine", caller: caller) }
                await expectCode(denied, "share") { try await s.share(id, with: "x@y", caller: caller) }
                await expectCode(denied, "unshare") {
                    try await s.unshare(id, with: Self.granted.description, caller: caller)
                }
                await expectCode(denied, "publish") { try await s.publish(id, confirmBootable: true, caller: caller) }
                await expectCode(denied, "unpublish") { try await s.unpublish(id, caller: caller) }
                await expectCode(denied, "delete") { try await s.deleteSnapshot(id, caller: caller) }
                #expect(try await s.snapshot(id, caller: .operator) == before, "nothing changed")
            }
        }
    }

    @Test(
        "volumes, instances and templates of another project are NotFound for every operation",
        arguments: CatalogFactory.all)
    func resourceIsolation(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let mine = Caller.project(Self.owner)
            let other = Caller.project(Self.stranger)
            let snapshot = try await h.snapshot(owner: Self.owner, disk: Disks.make(blocks: 3))
            let volume = try await s.createVolume(from: snapshot.id, caller: mine)
            let instance = try await s.createInstance(owner: Self.owner, caller: mine)
            let theirs = try await s.createInstance(owner: Self.stranger, caller: other)
            await expectCode(.notFound) { try await s.attachVolume(volume.id, to: theirs.id, caller: other) }
            await expectCode(.notFound) { try await s.attachVolume(volume.id, to: theirs.id, caller: mine) }
            await expectCode(.notFound) { try await s.detachVolume(volume.id, caller: other) }
            await expectCode(.notFound) { try await s.deleteVolume(volume.id, caller: other) }
            await expectCode(.notFound) { try await s.snapshotVolume(volume.id, caller: other) }
            await expectCode(.notFound) { try await s.startInstance(instance.id, caller: other) }
            await expectCode(.notFound) { try await s.stopInstance(instance.id, caller: other) }
            await expectCode(.notFound) { try await s.createTemplate(instance: instance.id, caller: other) }
            await expectCode(.accessDenied) { try await s.createInstance(owner: Self.owner, caller: other) }
            #expect(try await s.listVolumes(caller: other).isEmpty)
            #expect(try await s.listInstances(caller: other).map(\.id) == [theirs.id])
            #expect(try await s.listVolumes(caller: .operator).count == 1)
        }
    }

    @Test(
        "sharing: refused with the owner's own project or a malformed name; a grant lets the grantee see it",
        arguments: CatalogFactory.all)
    func sharing(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let snapshot = try await h.snapshot(owner: Self.owner, disk: Disks.make(blocks: 2))
            let me = Caller.project(Self.owner)
            await expectCode(.invalidArgument) {
                try await s.share(snapshot.id, with: Self.owner.description, caller: me)
            }
            for bad in ["", "db", "DB@acme", "db@acme@x", "db@"] {
                await expectCode(.invalidProject, "\(bad)") { try await s.share(snapshot.id, with: bad, caller: me) }
            }
            #expect(try await s.snapshot(snapshot.id, caller: .operator).sharedWith.isEmpty)
            await expectCode(.notFound) { try await s.snapshot(snapshot.id, caller: .project(Self.granted)) }
            _ = try await s.share(snapshot.id, with: Self.granted.description, caller: me)
            _ = try await s.share(snapshot.id, with: Self.granted.description, caller: me)  // idempotent
            #expect(try await s.snapshot(snapshot.id, caller: .operator).sharedWith == [Self.granted])
            #expect(try await s.snapshot(snapshot.id, caller: .project(Self.granted)).id == snapshot.id)
            _ = try await s.unshare(snapshot.id, with: Self.granted.description, caller: me)
            await expectCode(.notFound) { try await s.snapshot(snapshot.id, caller: .project(Self.granted)) }
        }
    }

    @Test("publishing a bootable snapshot needs the confirmation", arguments: CatalogFactory.all)
    func publishBootable(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let me = Caller.project(Self.owner)
            let snapshot = try await h.snapshot(owner: Self.owner, disk: Disks.make(blocks: 2), bootable: true)
            await expectCode(.confirmationRequired) {
                try await s.publish(snapshot.id, confirmBootable: false, caller: me)
            }
            #expect(try await s.snapshot(snapshot.id, caller: .operator).visibility == .private)
            #expect(try await s.publish(snapshot.id, confirmBootable: true, caller: me).visibility == .public)
            #expect(try await s.snapshot(snapshot.id, caller: .project(Self.stranger)).id == snapshot.id)
        }
    }

    @Test(
        "round trip: a volume is byte-identical to the source disk; its snapshot adds zero new blocks",
        arguments: CatalogFactory.all)
    func roundTrip(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let me = Caller.project(Self.owner)
            let disk = Disks.make(blocks: 12, tail: 1000, seed: 42)
            let snapshot = try await h.snapshot(owner: Self.owner, disk: disk)
            #expect(snapshot.state == .available)
            #expect(snapshot.checksum?.count == 64)
            // 12 blocks: 4 zero (0,3,6,9), 8 data of which block 4 repeats block 1, plus the tail.
            #expect(snapshot.storedBytes == UInt64(8 * Harness.blockSize + 1000))
            #expect(try await h.store.list().count == 8, "7 distinct data blocks + the tail; zeros never stored")
            let output = h.directory + "/out.raw"
            let volume = try await s.createVolume(from: snapshot.id, caller: me, output: output)
            #expect(try h.fileBytes(s.volumePath(volume)) == disk)
            #expect(try h.fileBytes(output) == disk)
            let blocksBefore = try await h.store.list().count
            let copy = try await s.snapshotVolume(volume.id, description: "copy", caller: me)
            #expect(copy.checksum == snapshot.checksum)
            #expect(copy.source == .volume(volume.id))
            #expect(try await h.store.list().count == blocksBefore, "zero new blocks")
            #expect(try await s.volume(volume.id, caller: me).snapshotInProgress == nil)
            // Deleting the original keeps every block the copy needs.
            try await s.deleteSnapshot(snapshot.id, caller: me)
            let again = try await s.createVolume(from: copy.id, caller: me)
            #expect(try h.fileBytes(s.volumePath(again)) == disk)
            // Deleting the last user frees the blocks (no writer is pending; cutoff in the future).
            try await s.deleteSnapshot(copy.id, caller: me, now: Date().addingTimeInterval(3600))
            #expect(try await h.store.list().isEmpty)
        }
    }

    @Test(
        "instances and templates: running-instance refusals, template of a stopped instance, its snapshots InUse",
        arguments: CatalogFactory.all)
    func instancesAndTemplates(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let me = Caller.project(Self.owner)
            let disk = Disks.make(blocks: 5, seed: 7)
            let base = try await h.snapshot(owner: Self.owner, disk: disk)
            let v1 = try await s.createVolume(from: base.id, caller: me)
            let v2 = try await s.createVolume(from: base.id, caller: me)
            let instance = try await s.createInstance(owner: Self.owner, caller: me)
            _ = try await s.attachVolume(v1.id, to: instance.id, caller: me)
            _ = try await s.attachVolume(v2.id, to: instance.id, caller: me)
            let other = try await s.createInstance(owner: Self.owner, caller: me)
            await expectCode(.inUse) { try await s.attachVolume(v1.id, to: other.id, caller: me) }
            await expectCode(.inUse) { try await s.deleteVolume(v1.id, caller: me) }

            _ = try await s.startInstance(instance.id, caller: me)
            let countBefore = try await s.listSnapshots(caller: .operator).count
            await expectCode(.invalidState) { try await s.snapshotVolume(v1.id, caller: me) }
            await expectCode(.invalidState) { try await s.createTemplate(instance: instance.id, caller: me) }
            #expect(try await s.listSnapshots(caller: .operator).count == countBefore, "nothing created")
            #expect(try await s.volume(v1.id, caller: me).snapshotInProgress == nil)

            _ = try await s.stopInstance(instance.id, caller: me)
            let (template, snapshots) = try await s.createTemplate(instance: instance.id, caller: me)
            #expect(template.snapshots.count == 2)
            #expect(snapshots.map(\.id) == template.snapshots)
            #expect(snapshots.allSatisfy { $0.state == .available && $0.source == .template(template.id) })
            #expect(snapshots.allSatisfy { $0.checksum == base.checksum })
            #expect(try await s.listTemplates(caller: me).map(\.id) == [template.id])
            for id in template.snapshots {
                await expectCode(.inUse) { try await s.deleteSnapshot(id, caller: me) }
                #expect(try await s.snapshot(id, caller: me).state == .available)
            }
            // The base snapshot is not referenced by the template: deletable while volumes from it exist.
            try await s.deleteSnapshot(base.id, caller: me)

            // Start is refused while a snapshot of an attached volume is being taken.
            var busy = try #require(try await s.catalog.volume(v1.id))
            busy.snapshotInProgress = SnapshotID.random()
            try await s.catalog.apply([.updateVolume(busy)])
            await expectCode(.inUse) { try await s.startInstance(instance.id, caller: me) }
            #expect(try await s.instance(instance.id, caller: me).state == .stopped)

            let empty = try await s.createInstance(owner: Self.owner, caller: me)
            await expectCode(.invalidArgument) { try await s.createTemplate(instance: empty.id, caller: me) }
        }
    }

    @Test(
        "bad input: malformed IDs, long descriptions, unknown IDs give clear errors and change nothing",
        arguments: CatalogFactory.all)
    func badInput(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let me = Caller.project(Self.owner)
            let snapshot = try await h.snapshot(owner: Self.owner, disk: Disks.make(blocks: 2))
            let before = try await s.listSnapshots(caller: .operator)
            await expectCode(.invalidArgument) { try SnapshotID(parsing: "snap-12") }
            await expectCode(.invalidArgument) {
                try await s.setDescription(snapshot.id, String(repeating: "x", count: 256), caller: me)
            }
            await expectCode(.invalidArgument) { try await s.setDescription(snapshot.id, "two\nlines", caller: me) }
            #expect(
                try await s.setDescription(snapshot.id, String(repeating: "é", count: 255), caller: me).description
                    .count == 255)
            _ = try await s.setDescription(snapshot.id, before[0].description, caller: me)
            let unknown = try SnapshotID(parsing: "snap-00000000")
            await expectCode(.notFound) { try await s.snapshot(unknown, caller: .operator) }
            await expectCode(.notFound) { try await s.deleteSnapshot(unknown, caller: .operator) }
            await expectCode(.notFound) { try await s.share(unknown, with: "a@b", caller: .operator) }
            await expectCode(.notFound) { try await s.createVolume(from: unknown, caller: .operator) }
            await expectCode(.notFound) {
                try await s.snapshotVolume(try VolumeID(parsing: "vol-00000000"), caller: .operator)
            }
            await expectCode(.notFound) {
                try await s.startInstance(try InstanceID(parsing: "i-00000000"), caller: .operator)
            }
            await expectCode(.invalidArgument) {
                try await s.beginSnapshot(
                    NewSnapshot(owner: Self.owner, source: .file(path: "x"), format: "raw", virtualSize: 0), caller: me)
            }
            await expectCode(.accessDenied) {
                try await s.beginSnapshot(
                    NewSnapshot(owner: Self.owner, source: .file(path: "x"), format: "raw", virtualSize: 1),
                    caller: .project(Self.stranger))
            }
            let after = try await s.listSnapshots(caller: .operator)
            #expect(after.map(\.id) == before.map(\.id))
            #expect(after.map(\.description) == before.map(\.description))
            #expect(try await s.listVolumes(caller: .operator).isEmpty)
        }
    }

    @Test(
        "a writer: pending is invisible to others, abort leaves nothing, bad block sizes are refused",
        arguments: CatalogFactory.all)
    func writerLifecycle(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let s = h.service
            let writer = try await s.beginSnapshot(
                NewSnapshot(owner: Self.owner, source: .file(path: "/x"), format: "raw", virtualSize: 10_000),
                caller: .operator)
            #expect(writer.blockCount == 3)
            #expect(writer.blockLength(2) == 10_000 - 2 * 4096)
            let pending = try await s.snapshot(writer.id, caller: .project(Self.owner))
            #expect(pending.state == .pending)
            #expect(pending.checksum == nil)
            await expectCode(.notFound) { try await s.snapshot(writer.id, caller: .project(Self.stranger)) }
            await expectCode(.invalidState) { try await s.createVolume(from: writer.id, caller: .operator) }
            await expectCode(.invalidState) { try await s.deleteSnapshot(writer.id, caller: .operator) }
            await expectCode(.invalidArgument) { try await writer.writeBlock(index: 0, bytes: [1, 2, 3]) }
            await expectCode(.invalidArgument) { try await writer.writeBlock(index: 3, bytes: [1]) }
            await expectCode(.invalidArgument) { try await writer.write(offset: 1, bytes: [1]) }
            try await writer.writeBlock(index: 1, bytes: [UInt8](repeating: 5, count: 4096))
            await writer.abort(reason: "test")
            #expect(try await s.catalog.snapshot(writer.id) == nil)
            await expectCode(.invalidState) { try await writer.commit() }
            #expect(try await s.listSnapshots(caller: .operator).isEmpty)
        }
    }
}
