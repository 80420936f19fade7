import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

/// CreateVolume's `ClientToken` kept in the catalog (issue 15), against every catalog.
@Suite("Volume client tokens (contract, every catalog)")
struct VolumeTokenContractTests {
    static let web = ProjectRef.make("web@acme")
    static let db = ProjectRef.make("db@globex")
    static let at = Date(timeIntervalSince1970: 1_800_000_000)

    static func volume(_ id: String, _ owner: ProjectRef) -> VolumeRecord {
        VolumeRecord(
            id: VolumeID(rawValue: id)!, owner: owner, snapshotID: SnapshotID(rawValue: "snap-0000abcd"), size: 4096,
            fileName: "\(id).raw", attachedTo: nil, snapshotInProgress: nil, createdAt: at, version: 1)
    }

    static func token(_ requester: Caller, _ token: String, volume: String, size: Int? = nil) -> VolumeTokenRecord {
        VolumeTokenRecord(
            requester: requester, clientToken: token, snapshotID: SnapshotID(rawValue: "snap-0000abcd")!, size: size,
            volumeID: VolumeID(rawValue: volume)!, createdAt: at)
    }

    @Test(
        "a token reads back; a second one of the same requester rolls its whole batch back",
        arguments: CatalogFactory.all)
    func catalogRecords(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let catalog = h.service.catalog
            let first = Self.token(.project(Self.web), "tok", volume: "vol-00000001", size: 8)
            try await catalog.apply([.insertVolume(Self.volume("vol-00000001", Self.web)), .insertVolumeToken(first)])
            #expect(try await catalog.volumeToken(requester: .project(Self.web), clientToken: "tok") == first)
            #expect(try await catalog.volumeToken(requester: .project(Self.web), clientToken: "other") == nil)
            #expect(try await catalog.volumeToken(requester: .operator, clientToken: "tok") == nil)
            await expectCode(.conflict) {
                try await catalog.apply([
                    .insertVolume(Self.volume("vol-00000002", Self.web)),
                    .insertVolumeToken(Self.token(.project(Self.web), "tok", volume: "vol-00000002")),
                ])
            }
            #expect(try await catalog.volume(VolumeID(rawValue: "vol-00000002")!) == nil, "the batch rolled back")
            // Tokens are scoped to the requester; a size left out reads back as nil.
            let other = Self.token(.project(Self.db), "tok", volume: "vol-00000003")
            let byOperator = Self.token(.operator, "tok", volume: "vol-00000004")
            try await catalog.apply([
                .insertVolume(Self.volume("vol-00000003", Self.db)), .insertVolumeToken(other),
                .insertVolume(Self.volume("vol-00000004", Self.web)), .insertVolumeToken(byOperator),
            ])
            #expect(try await catalog.volumeToken(requester: .project(Self.db), clientToken: "tok") == other)
            #expect(try await catalog.volumeToken(requester: .operator, clientToken: "tok") == byOperator)
        }
    }

    @Test(
        """
        createVolume with a token: a repeat (also through another service on the catalog) answers the same volume, \
        other parameters are a mismatch, racing calls make one volume
        """,
        arguments: CatalogFactory.all)
    func serviceTokens(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let snapshot = try await h.snapshot(owner: Self.web, disk: Disks.make(blocks: 3, seed: 7))
            let caller = Caller.project(Self.web)
            let request = VolumeRequestToken(clientToken: "T1", snapshotID: snapshot.id, size: nil)
            let first = try await h.service.createVolume(from: snapshot.id, caller: caller, clientToken: request)
            // Another service over the same catalog: a restarted server, or another host.
            let other = try SnapshotService(
                catalog: h.service.catalog, blocks: h.store, volumesDirectory: h.directory + "/volumes",
                options: SnapshotServiceOptions(blockSize: Harness.blockSize), logger: Harness.logger)
            let again = try await other.createVolume(from: snapshot.id, caller: caller, clientToken: request)
            #expect(again.id == first.id)
            #expect(try await h.service.listVolumes(caller: .operator).map(\.id) == [first.id])
            // The same token with another size is a mismatch, and makes nothing.
            var sized = request
            sized.size = 1
            await #expect(throws: ClientTokenMismatch.self) {
                _ = try await other.createVolume(from: snapshot.id, caller: caller, clientToken: sized)
            }
            // Another requester's token of the same text is its own.
            let byOperator = try await h.service.createVolume(
                from: snapshot.id, caller: .operator, clientToken: request)
            #expect(byOperator.id != first.id)

            // Eight racing calls with one new token: one volume, every call answers it, no file left over.
            let racing = VolumeRequestToken(clientToken: "T2", snapshotID: snapshot.id, size: 1)
            let ids = try await withThrowingTaskGroup(of: VolumeID.self) { group in
                for i in 0..<8 {
                    let service = i.isMultiple(of: 2) ? h.service : other
                    group.addTask {
                        try await service.createVolume(from: snapshot.id, caller: caller, clientToken: racing).id
                    }
                }
                return try await group.reduce(into: Set<VolumeID>()) { $0.insert($1) }
            }
            #expect(ids.count == 1)
            let volumes = try await h.service.listVolumes(caller: .operator)
            #expect(volumes.count == 3, "\(volumes.map(\.id))")
            #expect(volumes.contains { $0.id == ids.first })
            let files = try FileManager.default.contentsOfDirectory(atPath: h.directory + "/volumes").sorted()
            #expect(files == volumes.map(\.fileName).sorted(), "one file per volume, no temporary left")
            let bytes = try h.fileBytes(h.service.volumePath(try #require(volumes.first { $0.id == ids.first })))
            #expect(bytes == Disks.make(blocks: 3, seed: 7))
        }
    }
}
