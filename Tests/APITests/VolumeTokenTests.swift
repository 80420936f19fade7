import Foundation
import ProcessTestSupport
import Testing

/// CreateVolume's `ClientToken` survives a crash of serve (it is kept in the catalog), through the real aws CLI.
extension EndToEndTests {
    @Test(
        """
        create-volume --client-token: the same VolumeId across a serve crash (SQLite catalog); another size is \
        IdempotentParameterMismatch; racing calls make one volume
        """,
        .enabled(if: Tools.missing == nil, "\(Tools.missing ?? "")"))
    func volumeClientTokenSQLite() async throws {
        try await Session.with(catalog: nil) { try await $0.volumeClientToken() }
    }

    @Test(
        "create-volume --client-token across a serve crash (PostgreSQL catalog)",
        .enabled(if: Tools.missing == nil, "\(Tools.missing ?? "")"),
        .enabled(if: postgresURL != nil, "SNAPIMPORT_TEST_POSTGRES_URL is unset (scripts/test sets it)"))
    func volumeClientTokenPostgres() async throws {
        let schema = "token_" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let base = Self.postgresURL!
        let url = base + (base.contains("?") ? "&" : "?") + "schema=" + schema
        try await Session.with(catalog: url) { try await $0.volumeClientToken() }
    }
}

extension EndToEndTests.Session {
    func volumeClientToken() async throws {
        let snapshot = try importDisk("alice@acme", "token disk", seed: 41)
        #expect(EndToEndTests.Session.ids(try awsOK("alice@acme", ["describe-snapshots"])) == [snapshot])
        let create = ["create-volume", "--snapshot-id", snapshot, "--availability-zone", "croc-1a", "--client-token"]
        let first = try awsOK("alice@acme", create + ["T"])
        let volumeID = try #require(first["VolumeId"] as? String, "\(first)")
        #expect(first["SnapshotId"] as? String == snapshot)

        // kill -9 and a new serve on the same catalog: the retry answers the same volume, and makes no other.
        try await server.crashAndRestart()
        let again = try awsOK("alice@acme", create + ["T"])
        #expect(again["VolumeId"] as? String == volumeID, "\(again)")
        #expect(again["SnapshotId"] as? String == snapshot)
        func volumes(_ who: String) throws -> [String] {
            (try awsOK(who, ["describe-volumes"])["Volumes"] as? [[String: Any]] ?? []).compactMap {
                $0["VolumeId"] as? String
            }
        }
        #expect(try volumes("alice@acme") == [volumeID])

        // The same token with a size (the snapshot's own, so valid alone) is other parameters.
        let sized = try aws("alice@acme", create + ["T", "--size", "1"])
        #expect(sized.status == 255 && sized.awsErrorCode == "IdempotentParameterMismatch", "\(sized)")
        // Another project's token of the same text is its own.
        _ = try awsOK(
            "alice@acme",
            [
                "modify-snapshot-attribute", "--snapshot-id", snapshot, "--attribute", "createVolumePermission",
                "--operation-type", "add", "--user-ids", "bob@acme",
            ])
        let bobs = try awsOK("bob@acme", create + ["T"])
        #expect(bobs["VolumeId"] as? String != volumeID, "\(bobs)")

        // Four aws processes at once with one new token: one volume, all four answer it.
        let session = self
        let ids = try await withThrowingTaskGroup(of: String?.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    try session.awsOK("alice@acme", create + ["T-race", "--size", "1"])["VolumeId"] as? String
                }
            }
            return try await group.reduce(into: [String?]()) { $0.append($1) }
        }
        #expect(Set(ids).count == 1 && ids.first! != nil, "\(ids)")
        #expect(Set(try volumes("alice@acme")) == Set([volumeID, ids.first!!]))
    }
}
