import Foundation
import BlockStoreFS
import SnapshotCore
import Testing

@testable import CatalogTestSupport

@Suite("Domain: project references, IDs, manifests, documents")
struct DomainTests {
    @Test(
        "valid project references parse",
        arguments: ["web@acme", "a@b", "web-1.prod_x@acme-corp", "0@9", String(repeating: "a", count: 63) + "@c"])
    func validProjects(_ text: String) throws {
        let ref = try ProjectRef(parsing: text)
        #expect(ref.description == text)
    }

    @Test(
        "malformed project references are InvalidProject",
        arguments: [
            "", "web", "@acme", "web@", "web@acme@x", "Web@acme", "web@ACME", "-web@acme", ".web@acme", "we b@acme",
            "web@ac/me", "wéb@acme", "web@acme\n", String(repeating: "a", count: 64) + "@c",
        ])
    func invalidProjects(_ text: String) async {
        await expectCode(.invalidProject, "\(text)") { try ProjectRef(parsing: text) }
    }

    @Test("IDs are prefix + 8 lower-case hex digits; random ones parse back")
    func ids() async throws {
        #expect(try SnapshotID(parsing: "snap-0123abcd").rawValue == "snap-0123abcd")
        #expect(try VolumeID(parsing: "vol-ffffffff").rawValue == "vol-ffffffff")
        #expect(try InstanceID(parsing: "i-00000000").rawValue == "i-00000000")
        #expect(try TemplateID(parsing: "tmpl-89abcdef").rawValue == "tmpl-89abcdef")
        for bad in [
            "snap-0123abc", "snap-0123abcde", "snap-0123ABCD", "vol-0123abcd", "snap_0123abcd", "", "snap-0123abcg",
        ] {
            await expectCode(.invalidArgument, "\(bad)") { try SnapshotID(parsing: bad) }
        }
        for _ in 0..<100 {
            let id = SnapshotID.random()
            #expect(try SnapshotID(parsing: id.rawValue) == id)
            #expect(VolumeID.random().rawValue.hasPrefix("vol-"))
        }
    }

    @Test("manifests round-trip through their binary encoding and refuse disorder")
    func manifests() async throws {
        let hashes = (0..<3).map { Blocks.hash([UInt8($0)]) }
        let manifest = try Manifest(entries: [
            .init(index: 0, hash: hashes[0]), .init(index: 7, hash: hashes[1]), .init(index: 1 << 40, hash: hashes[2]),
        ])
        let encoded = manifest.encoded()
        #expect(encoded.count == 120)
        #expect(try Manifest(decoding: encoded) == manifest)
        await expectCode(.invalidArgument) {
            try Manifest(entries: [.init(index: 2, hash: hashes[0]), .init(index: 2, hash: hashes[1])])
        }
        await expectCode(.catalog) { try Manifest(decoding: encoded.dropLast()) }
        #expect(BlockHash(hex: hashes[1].hex) == hashes[1])
        #expect(BlockHash(hex: "xyz") == nil)
    }

    @Test("the LINEAR checksum covers zero blocks, so it depends only on the disk's bytes")
    func checksum() throws {
        let bs = 4096
        var disk = [UInt8](repeating: 0, count: 3 * bs + 100)
        disk[bs + 5] = 9
        let blockHashes = stride(from: 0, to: disk.count, by: bs).map {
            Blocks.hash(Array(disk[$0..<min($0 + bs, disk.count)]))
        }
        let expected = Blocks.hash(blockHashes.flatMap(\.bytes)).hex
        let manifest = try Manifest(entries: [.init(index: 1, hash: blockHashes[1])])
        #expect(SnapshotWriter.checksum(manifest, blockSize: bs, virtualSize: UInt64(disk.count)) == expected)
    }

    @Test("the snapshot document has exactly the architecture's fields, checksum null while pending")
    func document() throws {
        let record = SnapshotRecord(
            id: try SnapshotID(parsing: "snap-0000abcd"), owner: .make("web@acme"), description: "d", state: .pending,
            visibility: .private, sharedWith: [.make("db@acme")], virtualSize: 10, storedBytes: 0, format: "qcow2",
            bootable: true, source: .object(bucket: "b", key: "incoming/web@acme/a b", etag: "\"e\""), checksum: nil,
            blockSize: 4096, createdAt: Date(timeIntervalSince1970: 1_790_000_000.5), writer: "w", leaseExpiresAt: nil,
            failure: nil, version: 1)
        let data = try SnapshotJSON.encode(SnapshotView(record))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "id", "project", "description", "state", "visibility", "sharedWith", "virtualSize", "storedBytes",
                "format", "bootable", "source", "checksum", "createdAt", "failure",
            ])
        #expect(object["checksum"] is NSNull)
        #expect(object["failure"] is NSNull)
        #expect(object["createdAt"] as? String == "2026-09-21T14:13:20.500Z")
        let source = try #require(object["source"] as? [String: String])
        #expect(source == ["kind": "object", "bucket": "b", "key": "incoming/web@acme/a b", "etag": "\"e\""])
        #expect(try JSONDecoder().decode(SnapshotView.self, from: data) == SnapshotView(record))
    }
}
