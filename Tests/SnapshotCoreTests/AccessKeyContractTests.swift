import Foundation
import SnapshotCore
import Testing

@testable import CatalogTestSupport

/// API access keys (issue 15, "Identity"), written once and run against every catalog in
/// ``CatalogFactory/all`` (memory, SQLite, and PostgreSQL when configured).
@Suite("Access keys (contract, every catalog)")
struct AccessKeyContractTests {
    static let project = ProjectRef.make("web@acme")
    static let base64 = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    static let base32 = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")

    @Test(
        "a key has an AKIA ID of 20 characters and a 40-character secret; it reads back equal",
        arguments: CatalogFactory.all)
    func create(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let now = Date(timeIntervalSince1970: 1_796_056_092.1234)
            let key = try await h.service.createAccessKey(for: .project(Self.project), now: now)
            #expect(key.id.count == 20 && key.id.hasPrefix("AKIA"))
            #expect(key.id.dropFirst(4).allSatisfy { Self.base32.contains($0) }, "\(key.id)")
            #expect(key.secret.count == 40 && key.secret.allSatisfy { Self.base64.contains($0) })
            #expect(key.caller == .project(Self.project))
            #expect(key.createdAt == Date(timeIntervalSince1970: 1_796_056_092.123), "whole milliseconds")
            #expect(try await h.service.accessKey(key.id) == key)
            #expect(try await h.service.catalog.accessKey(key.id) == key)

            let operatorKey = try await h.service.createAccessKey(for: .operator, now: now.addingTimeInterval(1))
            #expect(operatorKey.caller == .operator)
            #expect(try await h.service.accessKey(operatorKey.id) == operatorKey)
            #expect(try await h.service.listAccessKeys() == [key, operatorKey], "oldest first, secrets included")
        }
    }

    @Test("unknown and malformed IDs read as nil", arguments: CatalogFactory.all)
    func unknown(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            _ = try await h.service.createAccessKey(for: .operator)
            for id in [
                "AKIAAAAAAAAAAAAAAAAA", "", "akiaaaaaaaaaaaaaaaaa", "AKIA'; DROP TABLE access_keys; --", "AKIDEXAMPLE",
            ] {
                #expect(try await h.service.accessKey(id) == nil, "\(id)")
            }
            #expect(try await h.service.listAccessKeys().count == 1)
        }
    }

    @Test(
        "delete removes a key; a second delete is NotFound; a malformed ID is InvalidArgument",
        arguments: CatalogFactory.all)
    func delete(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let a = try await h.service.createAccessKey(for: .project(Self.project))
            let b = try await h.service.createAccessKey(for: .operator)
            try await h.service.deleteAccessKey(a.id)
            #expect(try await h.service.accessKey(a.id) == nil)
            #expect(try await h.service.listAccessKeys() == [b])
            await expectCode(.notFound) { try await h.service.deleteAccessKey(a.id) }
            await expectCode(.notFound) { try await h.service.deleteAccessKey("AKIAAAAAAAAAAAAAAAAA") }
            await expectCode(.invalidArgument) { try await h.service.deleteAccessKey("not-a-key") }
            #expect(try await h.service.accessKey(b.id) == b)
        }
    }

    @Test(
        "catalog writes: a duplicate ID or a missing key is a conflict, and a failed batch changes nothing",
        arguments: CatalogFactory.all)
    func catalogWrites(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let catalog = h.service.catalog
            let key = AccessKey(
                id: "AKIAABCDEFGHIJKLMNOP", secret: String(repeating: "s", count: 40), caller: .project(Self.project),
                createdAt: Date(timeIntervalSince1970: 1000))
            try await catalog.apply([.insertAccessKey(key)])
            var twin = key
            twin.secret = String(repeating: "t", count: 40)
            await expectCode(.conflict) { try await catalog.apply([.insertAccessKey(twin)]) }
            #expect(try await catalog.accessKey(key.id)?.secret == key.secret, "the first secret stays")
            let other = AccessKey(
                id: "AKIAZZZZZZZZZZZZZZZZ", secret: String(repeating: "o", count: 40), caller: .operator,
                createdAt: Date(timeIntervalSince1970: 2000))
            await expectCode(.conflict) { try await catalog.apply([.insertAccessKey(other), .insertAccessKey(twin)]) }
            #expect(try await catalog.accessKey(other.id) == nil, "the whole batch rolled back")
            await expectCode(.conflict) { try await catalog.apply([.deleteAccessKey(other.id)]) }
            await expectCode(.conflict) {
                try await catalog.apply([.deleteAccessKey(key.id), .deleteAccessKey(key.id)])
            }
            #expect(try await catalog.accessKey(key.id) == key, "the delete rolled back with its batch")
            try await catalog.apply([.deleteAccessKey(key.id), .insertAccessKey(other)])
            #expect(try await catalog.accessKeys() == [other])
        }
    }

    @Test("32 keys created at once are all distinct, in IDs and in secrets", arguments: CatalogFactory.all)
    func concurrentCreates(_ factory: CatalogFactory) async throws {
        try await Harness.with(factory) { h in
            let service = h.service
            let keys = try await withThrowingTaskGroup(of: AccessKey.self) { group in
                for i in 0..<32 {
                    group.addTask {
                        try await service.createAccessKey(for: i % 2 == 0 ? .operator : .project(Self.project))
                    }
                }
                return try await group.reduce(into: [AccessKey]()) { $0.append($1) }
            }
            #expect(Set(keys.map(\.id)).count == 32)
            #expect(Set(keys.map(\.secret)).count == 32)
            #expect(Set(try await service.listAccessKeys().map(\.id)) == Set(keys.map(\.id)))
        }
    }

    @Test("a key's description, debug description and dump never show the secret")
    func redaction() {
        var generator = SystemRandomNumberGenerator()
        let (id, secret) = AccessKey.random(using: &generator)
        let key = AccessKey(id: id, secret: secret, caller: .operator, createdAt: Date())
        var dumped = ""
        dump(key, to: &dumped)
        for text in [String(describing: key), String(reflecting: key), "\(key)", dumped] {
            #expect(!text.contains(secret), "\(text)")
            #expect(text.contains(id))
        }
        #expect(AccessKey.isValidID(id))
    }
}
