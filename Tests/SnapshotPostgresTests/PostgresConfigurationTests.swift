import Testing

@testable import CatalogTestSupport

@testable import SnapshotPostgres

/// Parsing of catalog URLs: no server needed.
@Suite("PostgreSQL catalog URL")
struct PostgresConfigurationTests {
    @Test("a full URL gives host, port, user, percent-decoded password, database")
    func fullURL() throws {
        let config = try PostgresCatalogConfiguration(url: "postgres://snap:p%40ss%2Fw@db.example:6543/catalog")
        #expect(config.host == "db.example")
        #expect(config.port == 6543)
        #expect(config.username == "snap")
        #expect(config.password == "p@ss/w")
        #expect(config.database == "catalog")
        #expect(config.schema == nil)
        #expect(config.tls == .prefer)
    }

    @Test("defaults: port 5432, database = user, TLS off on loopback")
    func defaults() throws {
        let config = try PostgresCatalogConfiguration(url: "postgresql://postgres@127.0.0.1")
        #expect(config.port == 5432)
        #expect(config.database == "postgres")
        #expect(config.password == nil)
        #expect(config.tls == .disable)
        #expect(try PostgresCatalogConfiguration(url: "postgres://u@localhost/x").tls == .disable)
    }

    @Test("sslmode is honoured, also on loopback", arguments: [
        ("disable", PostgresCatalogConfiguration.TLSMode.disable), ("prefer", .prefer), ("allow", .prefer),
        ("require", .require), ("verify-ca", .verifyCA), ("verify-full", .verifyFull),
    ])
    func sslmode(value: String, mode: PostgresCatalogConfiguration.TLSMode) throws {
        let config = try PostgresCatalogConfiguration(url: "postgres://u@127.0.0.1:5432/db?sslmode=\(value)")
        #expect(config.tls == mode)
    }

    @Test("schema parameter", arguments: ["snap", "test_0a1b", "_x"])
    func schema(name: String) throws {
        #expect(try PostgresCatalogConfiguration(url: "postgres://u@h/db?schema=\(name)").schema == name)
    }

    @Test("malformed URLs are refused with InvalidCatalogURL", arguments: [
        "mysql://u@h/db", "postgres://h/db", "postgres:///db", "postgres://u@h/db?sslmode=maybe",
        "postgres://u@h/db?schema=Bad-Name", "postgres://u@h/db?schema=x;drop", "postgres://u@h/a/b",
        "postgres://u@h/db?frobnicate=1", "not a url", "postgres://u@h:0/db",
    ])
    func malformed(url: String) {
        #expect(throws: PostgresCatalogError(.invalidURL, "")) { try PostgresCatalogConfiguration(url: url) }
    }

    @Test("the password never appears in the redacted URL or in errors")
    func redaction() throws {
        let config = try PostgresCatalogConfiguration(url: "postgres://snap:hunter2@db:5432/c?schema=s")
        #expect(config.redactedURL == "postgres://snap:***@db:5432/c?schema=s")
        do {
            _ = try PostgresCatalogConfiguration(url: "postgres://snap:hunter2@db/c?sslmode=bogus")
            Issue.record("expected an error")
        } catch {
            #expect(!String(describing: error).contains("hunter2"))
        }
    }
}
