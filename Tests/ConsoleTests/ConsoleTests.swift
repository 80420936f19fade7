import Console
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SnapshotCore
import Synchronization
import Testing

/// The console over an in-memory catalog, through Hummingbird's test client: sessions and their expiry,
/// cookie flags, CSRF, escaping of hostile text, the groups and their pagination.
@Suite("Console: sessions, CSRF, cookies, rendering")
struct ConsoleTests {
    /// A clock the test moves.
    final class TestClock: Sendable {
        let now = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
        func advance(_ seconds: TimeInterval) { now.withLock { $0 += seconds } }
        var date: Date { now.withLock { $0 } }
    }

    @Test("a session ends after the idle timeout, and after the absolute timeout however busy it is")
    func expiry() async {
        let clock = TestClock()
        let store = ConsoleSessionStore(idleTimeout: 60, absoluteTimeout: 300) { clock.date }
        let idle = await store.create(accessKeyID: "AKIA1", caller: .project(try! ProjectRef(parsing: "a@b")))
        clock.advance(59)
        #expect(await store.session(idle.id) != nil, "used within the idle timeout")
        clock.advance(59)
        #expect(await store.session(idle.id) != nil, "each use restarts the idle clock")
        clock.advance(60)
        #expect(await store.session(idle.id) == nil, "idle for 60 s: gone")

        let busy = await store.create(accessKeyID: "AKIA2", caller: .operator)
        for _ in 0..<5 {
            clock.advance(50)
            #expect(await store.session(busy.id) != nil)
        }
        clock.advance(50)
        #expect(await store.session(busy.id) == nil, "300 s old: gone although never idle")
        #expect(await store.session("unknown") == nil)
    }

    @Test("tokens are 43 base64url characters, distinct; the comparison is exact")
    func tokens() {
        let tokens = (0..<100).map { _ in SecureToken.make() }
        #expect(Set(tokens).count == 100)
        #expect(
            tokens.allSatisfy {
                $0.count == 43 && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }
            })
        #expect(SecureToken.equal(tokens[0], tokens[0]))
        #expect(!SecureToken.equal(tokens[0], tokens[1]))
        #expect(!SecureToken.equal(tokens[0], String(tokens[0].dropLast())))
        #expect(!SecureToken.equal("", tokens[0]))
    }

    @Test("sign-in: the login token, HttpOnly + SameSite=Strict cookies (Secure under TLS), a wrong secret refused")
    func signIn() async throws {
        for secure in [false, true] {
            try await Fixture.with(secure: secure) { f in
                let (status, cookies, _) = try await f.signIn(secret: "wrong")
                #expect(status == 401)
                #expect(!cookies.contains { $0.hasPrefix("snapimport_console=") }, "no session: \(cookies)")
                let (ok, set, _) = try await f.signIn()
                #expect(ok == 303)
                let session = try #require(set.first { $0.hasPrefix("snapimport_console=") }, "\(set)")
                #expect(session.contains("HttpOnly"))
                #expect(session.contains("SameSite=Strict"))
                #expect(session.contains("Path=/console"))
                #expect(session.contains("Secure") == secure)
                // Without the sign-in page's token (login CSRF), a correct secret is still refused.
                let bare = try await f.post("/console/signin", "access_key_id=\(f.keyID)&secret_access_key=\(f.secret)")
                #expect(bare.status == 403 && bare.body.contains("InvalidCSRFToken"), "\(bare.body)")
            }
        }
    }

    @Test("every POST needs the session's CSRF token; without it nothing changes")
    func csrf() async throws {
        try await Fixture.with { f in
            let snap = try await f.snapshot(f.alice, "before")
            try await f.signInOK()
            for body in ["description=evil", "description=evil&csrf=", "description=evil&csrf=\(SecureToken.make())"] {
                let refused = try await f.post("/console/snapshots/\(snap.id)/description", body)
                #expect(refused.status == 403, "\(body)")
                #expect(refused.body.contains("InvalidCSRFToken"))
            }
            #expect(try await f.service.snapshot(snap.id, caller: .operator).description == "before")
            let done = try await f.post("/console/snapshots/\(snap.id)/description", "description=after&csrf=\(f.csrf)")
            #expect(done.status == 303)
            #expect(try await f.service.snapshot(snap.id, caller: .operator).description == "after")
            // Signed out: the cookie no longer works.
            #expect(try await f.post("/console/signout", "csrf=\(f.csrf)").status == 303)
            #expect(try await f.get("/console/").status == 303)
        }
    }

    @Test("hostile descriptions are escaped on every page; error pages carry the code, never a trace")
    func escaping() async throws {
        try await Fixture.with { f in
            let hostile = "<script>alert(\"x\")</script><img src=x onerror='y'>&amp;"
            let snap = try await f.snapshot(f.alice, hostile)
            try await f.signInOK()
            for path in [
                "/console/", "/console/snapshots/\(snap.id)", "/console/snapshots/\(snap.id)/description",
                "/console/snapshots/\(snap.id)/delete", "/console/?q=%3Cscript%3E",
            ] {
                let page = try await f.get(path)
                #expect(page.status == 200, "\(path)")
                #expect(!page.body.contains("<script>alert"), "\(path)")
                #expect(!page.body.contains("<img src=x"), "\(path)")
            }
            let list = try await f.get("/console/")
            #expect(
                list.body.contains(
                    "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=&#39;y&#39;&gt;&amp;amp;"))
            let missing = try await f.get("/console/snapshots/snap-0000abcd")
            #expect(missing.status == 404 && missing.body.contains("NotFound"))
            let malformed = try await f.get("/console/snapshots/%3Cb%3E")
            #expect(malformed.status == 404 && malformed.body.contains("InvalidSnapshotID.Malformed"))
            #expect(!malformed.body.contains("<b>"))
            #expect(list.headers[.init("Content-Security-Policy")!]?.contains("script-src 'self'") == true)
        }
    }

    @Test("not signed in: pages redirect to the sign-in page, POSTs are refused; a deleted key ends the session")
    func guarded() async throws {
        try await Fixture.with { f in
            let page = try await f.get("/console/")
            #expect(page.status == 303 && page.headers[.location] == "/console/signin")
            let post = try await f.post("/console/snapshots/snap-0000abcd/delete", "csrf=x")
            #expect(post.status == 401 && post.body.contains("SessionExpired"))
            try await f.signInOK()
            #expect(try await f.get("/console/").status == 200)
            try await f.service.accessKeys.deleteAccessKey(f.keyID)
            #expect(try await f.get("/console/").status == 303, "the key is gone: so is the session")
        }
    }

    @Test("three groups, each paginated with its own cursor, and the filter")
    func groups() async throws {
        try await Fixture.with(pageSize: 2) { f in
            let bob = try ProjectRef(parsing: "bob@acme")
            let carol = try ProjectRef(parsing: "carol@other")
            var mine: [String] = []
            for i in 0..<5 { mine.append(try await f.snapshot(f.alice, "mine \(i)").id.rawValue) }
            let shared = try await f.snapshot(bob, "granted")
            _ = try await f.service.share(shared.id, with: "alice@acme", caller: .project(bob))
            let hidden = try await f.snapshot(carol, "carol private")
            let open = try await f.snapshot(carol, "carol public")
            _ = try await f.service.publish(open.id, confirmBootable: false, caller: .project(carol))
            try await f.signInOK()

            var seen: [String] = []
            var path = "/console/"
            for _ in 0..<5 {
                let page = try await f.get(path)
                #expect(page.body.contains(shared.id.rawValue) && page.body.contains(open.id.rawValue))
                #expect(!page.body.contains(hidden.id.rawValue))
                seen += mine.filter { page.body.contains("href=\"/console/snapshots/\($0)\"") }
                guard
                    let range = page.body.range(
                        of: #"href="(/console/\?mine=[^"]+)">Next page"#, options: .regularExpression)
                else { break }
                path = String(page.body[range].dropFirst(6).prefix { $0 != "\"" }).replacingOccurrences(
                    of: "&amp;", with: "&")
            }
            #expect(seen == mine, "every owned snapshot once, in order, two a page")
            let filtered = try await f.get("/console/?q=MINE%203")
            #expect(filtered.body.contains(mine[3]) && !filtered.body.contains(mine[2]))
            #expect(filtered.body.contains("No snapshot matches the filter."))
        }
    }

    // MARK: - Fixture

    struct Response {
        var status: Int
        var headers: HTTPFields
        var body: String
    }

    final class Fixture: @unchecked Sendable {
        // Unchecked: used by one test task at a time (the cookie jar is set between sequential requests).
        let service: SnapshotService
        let client: any TestClientProtocol
        let alice = try! ProjectRef(parsing: "alice@acme")
        var keyID = ""
        var secret = ""
        var cookies: [String: String] = [:]
        var csrf = ""

        init(service: SnapshotService, client: any TestClientProtocol) {
            self.service = service
            self.client = client
        }

        static func with(secure: Bool = false, pageSize: Int = 20, _ body: @Sendable (Fixture) async throws -> Void)
            async throws
        {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "console-\(UUID().uuidString)"
            )
            .path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            var logger = Logger(label: "test.console")
            logger.logLevel = .critical
            let service = try SnapshotService(
                catalog: MemoryCatalog(), blocks: MemoryBlockStore(), volumesDirectory: directory + "/volumes",
                options: SnapshotServiceOptions(blockSize: 4096), logger: logger)
            let console = try ConsoleResponder(
                service: service, imports: nil, settings: .init(secureCookies: secure, pageSize: pageSize),
                logger: logger
            ) { id in
                try await service.accessKey(id).map { ConsoleResponder.Key(secret: $0.secret, caller: $0.caller) }
            }
            let app = Application(
                responder: console, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logger)
            try await app.test(.router) { client in
                let fixture = Fixture(service: service, client: client)
                let key = try await service.accessKeys.createAccessKey(for: .project(fixture.alice))
                fixture.keyID = key.id
                fixture.secret = key.secret
                try await body(fixture)
            }
        }

        func snapshot(_ owner: ProjectRef, _ description: String) async throws -> SnapshotRecord {
            let writer = try await service.beginSnapshot(
                NewSnapshot(
                    owner: owner, description: description, source: .file(path: "/images/x"), format: "raw",
                    virtualSize: 8192),
                caller: .operator)
            try await writer.write(offset: 0, bytes: (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 31 + 7) })
            return try await writer.commit()
        }

        func request(_ path: String, method: HTTPRequest.Method, body: String?) async throws -> Response {
            var headers: HTTPFields = [:]
            if !cookies.isEmpty {
                headers[.cookie] = cookies.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")
            }
            if body != nil { headers[.contentType] = "application/x-www-form-urlencoded" }
            let response = try await client.execute(
                uri: path, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }
            ) { $0 }
            for line in response.headers[values: .setCookie] {
                let pair = line.prefix { $0 != ";" }.split(
                    separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let value = pair.count > 1 ? String(pair[1]) : ""
                cookies[String(pair[0])] = line.contains("Max-Age=0") ? nil : value
            }
            return Response(
                status: response.status.code, headers: response.headers, body: String(buffer: response.body))
        }

        func get(_ path: String) async throws -> Response { try await request(path, method: .get, body: nil) }
        func post(_ path: String, _ body: String) async throws -> Response {
            try await request(path, method: .post, body: body)
        }

        /// The sign-in page, then its form: (status, Set-Cookie lines of the POST, body).
        func signIn(secret: String? = nil) async throws -> (Int, [String], String) {
            let page = try await get("/console/signin")
            let token = try #require(Self.value(of: "signin_token", in: page.body))
            let id = keyID.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
            let pass = (secret ?? self.secret).addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
            let response = try await post(
                "/console/signin", "signin_token=\(token)&access_key_id=\(id)&secret_access_key=\(pass)")
            let lines = response.headers[values: .setCookie].filter { !$0.contains("Max-Age=0") }
            return (response.status, lines, response.body)
        }

        func signInOK() async throws {
            let (status, _, _) = try await signIn()
            try #require(status == 303)
            let page = try await get("/console/")
            csrf = try #require(Self.value(of: "csrf", in: page.body))
        }

        static func value(of name: String, in html: String) -> String? {
            guard let range = html.range(of: "name=\"\(name)\" value=\"") else { return nil }
            return String(html[range.upperBound...].prefix { $0 != "\"" })
        }
    }
}
