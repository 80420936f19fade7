public import Foundation
public import Hummingbird
public import Importer
public import Logging
import Mustache
import NIOCore
public import SnapshotCore

/// The web console at `/console/` (docs/console.md): sign-in with an access key, the Snapshots page, a
/// Properties page per snapshot and its actions, and imports from a bucket with their progress.
///
/// Every action goes through the same ``SnapshotService`` (or ``ImportTasks``) call as the CLI and the API,
/// with the signed-in key's caller, so the rules, the refusals and the core's log lines are the same; the
/// console adds one `console action` log line per change. Every request looks the session's access key up
/// again: a deleted key ends its sessions at once.
public struct ConsoleResponder: HTTPResponder {
    public typealias Context = BasicRequestContext

    /// An access key as the console needs it.
    public struct Key: Sendable {
        public var secret: String
        public var caller: Caller

        public init(secret: String, caller: Caller) {
            self.secret = secret
            self.caller = caller
        }
    }

    /// How the console runs.
    public struct Settings: Sendable {
        /// Mark cookies `Secure` (serve runs TLS).
        public var secureCookies: Bool
        /// Rows per group and page.
        public var pageSize: Int
        /// The import bucket of `[s3] bucket`, used when the Import form's bucket is empty.
        public var defaultBucket: String?
        /// The longest description the core accepts.
        public var maxDescriptionLength: Int

        public init(
            secureCookies: Bool = false, pageSize: Int = 20, defaultBucket: String? = nil,
            maxDescriptionLength: Int = 255
        ) {
            self.secureCookies = secureCookies
            self.pageSize = max(1, pageSize)
            self.defaultBucket = defaultBucket
            self.maxDescriptionLength = maxDescriptionLength
        }
    }

    static let sessionCookie = "snapimport_console"
    static let signinCookie = "snapimport_console_signin"
    /// The largest form body read.
    static let maxBodySize = 64 << 10

    public let service: SnapshotService
    public let imports: ImportTasks?
    public let sessions: ConsoleSessionStore
    public let settings: Settings
    public let logger: Logger
    let lookup: @Sendable (String) async throws -> Key?
    let listing: SnapshotListing
    let templates: MustacheLibrary

    /// - Parameters:
    ///   - imports: the import tasks (nil when serve has no S3 client: "Import from bucket" then says why).
    ///   - lookup: an access key by its ID, nil when unknown.
    public init(
        service: SnapshotService, imports: ImportTasks?, sessions: ConsoleSessionStore = ConsoleSessionStore(),
        settings: Settings = Settings(), logger: Logger, lookup: @escaping @Sendable (String) async throws -> Key?
    ) throws {
        self.service = service
        self.imports = imports
        self.sessions = sessions
        self.settings = settings
        self.logger = logger
        self.lookup = lookup
        self.listing = SnapshotListing(service: service)
        self.templates = try ConsoleTemplates.library()
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let started = ContinuousClock.now
        var request = request
        var session: ConsoleSession?
        let response: Response
        do {
            response = try await route(&request, session: &session)
        } catch let error as ConsoleError {
            response = errorPage(error, session: session, path: request.uri.path)
        } catch let error as SnapshotError {
            response = errorPage(ConsoleError(error), session: session, path: request.uri.path)
        } catch {
            logger.error("console request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            response = errorPage(
                ConsoleError(500, "InternalError", "An internal error has occurred. The server log has the details."),
                session: session, path: request.uri.path)
        }
        let elapsed = (ContinuousClock.now - started).components
        logger.debug(
            "\(request.method) \(request.uri.path) \(response.status.code)",
            metadata: [
                "status": "\(response.status.code)", "caller": "\(session.map { "\($0.caller)" } ?? "-")",
                "ms": "\(Double(elapsed.seconds) * 1000 + Double(elapsed.attoseconds / 100_000_000_000_000) / 10)",
            ])
        return response
    }

    // MARK: - Routing

    private func route(_ request: inout Request, session found: inout ConsoleSession?) async throws -> Response {
        let path = request.uri.path
        guard path.hasPrefix("/console/") else {
            if path == "/console" { return redirect("/console/") }
            throw ConsoleError.notFound(path)
        }
        let parts = path.dropFirst("/console/".count).split(separator: "/", omittingEmptySubsequences: false)
            .map(String.init)
        let method = request.method
        let query = ConsoleForm(request.uri.query ?? "")

        // Pages that need no session.
        switch (method, parts) {
        case (.get, ["style.css"]):
            return asset(ConsoleTemplates.stylesheet, type: "text/css; charset=utf-8")
        case (.get, ["progress.js"]):
            return asset(ConsoleTemplates.progressScript, type: "text/javascript; charset=utf-8")
        case (.get, ["signin"]):
            if await currentSession(request) != nil { return redirect("/console/") }
            return signinPage(status: .ok, failure: nil, accessKeyID: "")
        case (.post, ["signin"]):
            return try await signIn(&request)
        default:
            break
        }

        guard let session = await currentSession(request) else {
            if method == .get { return redirect("/console/signin") }
            throw ConsoleError(
                401, "SessionExpired", "You are not signed in, or your session has expired. Sign in again.")
        }
        found = session
        var form = ConsoleForm("")
        if method == .post {
            form = try await readForm(&request)
            guard let token = form["csrf"], SecureToken.equal(token, session.csrfToken) else {
                logger.notice(
                    "console request refused: missing or wrong CSRF token",
                    metadata: ["path": "\(path)", "caller": "\(session.caller)"])
                throw ConsoleError.badCSRF
            }
        }

        let segment = parts + ["", "", ""]
        switch (method, parts.count, segment[0], segment[2]) {
        case (.get, 1, "", _), (.get, 1, "snapshots", _):
            return try await snapshotsPage(session, query: query)
        case (.post, 1, "signout", _):
            await sessions.remove(session.id)
            logger.info("console sign-out", metadata: ["caller": "\(session.caller)"])
            var response = redirect("/console/signin")
            response.setCookie(clearedCookie(Self.sessionCookie))
            return response
        case (.get, 2, "snapshots", _):
            return try await propertiesPage(session, try snapshotID(segment[1]), notice: notice(query))
        case (.get, 3, "snapshots", _):
            return try await actionPage(session, try snapshotID(segment[1]), segment[2])
        case (.post, 3, "snapshots", _):
            return try await perform(session, try snapshotID(segment[1]), segment[2], form)
        case (.get, 1, "import", _):
            return try importPage(session)
        case (.post, 1, "import", _):
            return try await startImport(session, form)
        case (.get, 2, "tasks", _):
            return try await taskPage(session, try taskID(segment[1]))
        case (.get, 3, "tasks", "status"):
            return try await taskStatus(session, try taskID(segment[1]))
        default:
            if method != .get && method != .post {
                throw ConsoleError(405, "MethodNotAllowed", "The console answers GET and POST, not \(method).")
            }
            throw ConsoleError.notFound(path)
        }
    }

    // MARK: - Sessions

    /// The session of the request's cookie whose access key still names the same caller.
    private func currentSession(_ request: Request) async -> ConsoleSession? {
        guard let value = request.cookies[Self.sessionCookie]?.value, let session = await sessions.session(value)
        else { return nil }
        do {
            guard let key = try await lookup(session.accessKeyID), key.caller == session.caller else {
                await sessions.remove(session.id)
                return nil
            }
        } catch {
            logger.error("console: cannot read the access key", metadata: ["error": "\(error)"])
            return nil
        }
        return session
    }

    private func signIn(_ request: inout Request) async throws -> Response {
        let form = try await readForm(&request)
        // Login CSRF: the form's token must match the cookie the sign-in page set (double submit).
        guard let cookie = request.cookies[Self.signinCookie]?.value, let token = form["signin_token"],
            SecureToken.equal(cookie, token)
        else {
            return signinPage(
                status: .forbidden,
                failure: ConsoleError(
                    403, "InvalidCSRFToken",
                    "The sign-in form has expired or was not sent by this console. Try again (cookies must be enabled)."
                ),
                accessKeyID: form["access_key_id"] ?? "")
        }
        let id = form.trimmed("access_key_id") ?? ""
        let secret = form["secret_access_key"] ?? ""
        let key = AccessKey.isValidID(id) ? try await lookup(id) : nil
        // The comparison runs (against a dummy) even for an unknown key, and takes the same time either way.
        let matches = SecureToken.equal(secret, key?.secret ?? "\u{0}no key\u{0}") && key != nil && !secret.isEmpty
        guard matches, let key else {
            logger.notice("console sign-in refused", metadata: ["accessKeyID": "\(id.prefix(32))"])
            return signinPage(
                status: .unauthorized,
                failure: ConsoleError(401, "AuthFailure", "The access key ID or the secret access key is not valid."),
                accessKeyID: id)
        }
        let session = await sessions.create(accessKeyID: id, caller: key.caller)
        logger.info("console sign-in", metadata: ["caller": "\(key.caller)", "accessKeyID": "\(id)"])
        var response = redirect("/console/")
        response.setCookie(
            Cookie(
                name: Self.sessionCookie, value: session.id, path: "/console", secure: settings.secureCookies,
                httpOnly: true, sameSite: .strict))
        response.setCookie(clearedCookie(Self.signinCookie))
        return response
    }

    private func signinPage(status: HTTPResponse.Status, failure: ConsoleError?, accessKeyID: String) -> Response {
        let token = SecureToken.make()
        var context: [String: Any] = ["title": "Sign in", "signinToken": token, "accessKeyID": accessKeyID]
        if let failure { context["failure"] = ["code": failure.code, "message": failure.message] }
        var response = page("signin", context, status: status)
        response.setCookie(
            Cookie(
                name: Self.signinCookie, value: token, maxAge: 3600, path: "/console", secure: settings.secureCookies,
                httpOnly: true, sameSite: .strict))
        return response
    }

    private func clearedCookie(_ name: String) -> Cookie {
        Cookie(
            name: name, value: "", maxAge: 0, path: "/console", secure: settings.secureCookies, httpOnly: true,
            sameSite: .strict)
    }

    // MARK: - Snapshots page

    private func snapshotsPage(_ session: ConsoleSession, query: ConsoleForm) async throws -> Response {
        let filter = query.trimmed("q")
        var groups: [[String: Any]] = []
        for group in SnapshotGroup.allCases {
            let cursor = CursorToken.decode(query[group.rawValue])
            let page = try await listing.page(
                group, matching: filter, caller: session.caller, after: cursor, limit: settings.pageSize)
            let (heading, blurb, empty) = Self.texts(group, caller: session.caller, filtered: filter != nil)
            var entry: [String: Any] = [
                "key": group.rawValue, "heading": heading, "lowerHeading": heading.lowercased(), "blurb": blurb,
                "empty": empty, "rows": page.snapshots.map { ConsoleViews.row($0, caller: session.caller) },
                "count": page.next == nil && cursor == nil ? "\(page.snapshots.count)" : "\(page.snapshots.count)+",
            ]
            if !page.snapshots.isEmpty { entry["has_rows"] = true }
            var base: [String: String] = [:]
            if let filter { base["q"] = filter }
            for other in SnapshotGroup.allCases where other != group {
                if let value = query[other.rawValue] { base[other.rawValue] = value }
            }
            if let next = page.next {
                var parameters = base
                parameters[group.rawValue] = CursorToken.encode(next)
                entry["nextURL"] = Self.url("/console/", parameters)
            }
            if cursor != nil { entry["firstURL"] = Self.url("/console/", base) }
            groups.append(entry)
        }
        var context = base(session, title: "Snapshots")
        context["groups"] = groups
        if let filter { context["filter"] = filter }
        if let notice = notice(query) { context["notice"] = notice }
        return page("snapshots", context)
    }

    static func texts(_ group: SnapshotGroup, caller: Caller, filtered: Bool) -> (String, String, String) {
        let none = filtered ? "No snapshot matches the filter." : nil
        switch group {
        case .mine:
            if caller == .operator {
                return (
                    "All snapshots", "The operator sees and manages every project's snapshots.",
                    none ?? "No snapshots yet."
                )
            }
            return (
                "My snapshots", "Snapshots of your project. Private unless you share them.",
                none ?? "Your project has no snapshots yet. Use Import from bucket to create one."
            )
        case .shared:
            return (
                "Shared with me", "Other projects' snapshots they granted to your project.",
                none ?? "No project shared a snapshot with you."
            )
        case .public:
            return (
                "Public", "Snapshots with shared access enabled, visible to everyone.", none ?? "No public snapshots."
            )
        }
    }

    // MARK: - Properties page and actions

    private func propertiesPage(_ session: ConsoleSession, _ id: SnapshotID, notice: String?) async throws -> Response {
        let snapshot = try await service.snapshot(id, caller: session.caller)
        let owner = snapshot.isOwned(by: session.caller)
        var context = base(session, title: id.rawValue)
        context["snap"] = ConsoleViews.properties(snapshot, caller: session.caller)
        if owner {
            context["owner"] = true
            let grants = snapshot.sharedWith.map { ["project": $0.description] }
            context["grants"] = grants
            if !grants.isEmpty { context["has_grants"] = true }
        }
        if snapshot.state == .available { context["canCreateVolume"] = true }
        let volumes = try await service.listVolumes(caller: session.caller).filter { $0.snapshotID == id }
        context["volumes"] = volumes.map { v -> [String: Any] in
            var row: [String: Any] = [
                "id": v.id.rawValue, "size": ConsoleViews.humanSize(v.size), "created": ConsoleViews.date(v.createdAt),
                "createdISO": RFC3339.string(v.createdAt),
            ]
            if let instance = v.attachedTo { row["attachedTo"] = instance.rawValue }
            return row
        }
        if !volumes.isEmpty { context["has_volumes"] = true }
        let templates = try await service.listTemplates(caller: session.caller).filter { $0.snapshots.contains(id) }
        context["templates"] = templates.map {
            [
                "id": $0.id.rawValue, "instance": $0.instanceID.rawValue, "created": ConsoleViews.date($0.createdAt),
                "createdISO": RFC3339.string($0.createdAt),
            ]
        }
        if !templates.isEmpty { context["has_templates"] = true }
        if let notice { context["notice"] = notice }
        return page("properties", context)
    }

    /// The form or confirmation page of an action.
    private func actionPage(_ session: ConsoleSession, _ id: SnapshotID, _ action: String) async throws -> Response {
        let snapshot = try await service.snapshot(id, caller: session.caller)
        var context = base(session, title: id.rawValue)
        context["id"] = id.rawValue
        switch action {
        case "delete":
            context["title"] = "Delete \(id)"
            context["heading"] = "Delete"
            context["question"] =
                "Delete snapshot \(id)\(snapshot.description.isEmpty ? "" : " (\(snapshot.description))")?"
            context["detail"] = "Its blocks are freed. Volumes already made from it stay. This cannot be undone."
            context["action"] = "/console/snapshots/\(id)/delete"
            context["danger"] = true
            return page("confirm", context)
        case "description":
            context["title"] = "Change description"
            context["description"] = snapshot.description
            context["maxLength"] = "\(settings.maxDescriptionLength)"
            return page("description", context)
        case "share":
            context["title"] = "Grant access for other project"
            return page("share", context)
        case "publish":
            context["title"] = "Enable shared access"
            if snapshot.bootable { context["bootable"] = true }
            return page("publish", context)
        default:
            throw ConsoleError.notFound("/console/snapshots/\(id)/\(action)")
        }
    }

    /// Runs an action (a POST whose CSRF token was checked), then shows the snapshot (or the list).
    private func perform(_ session: ConsoleSession, _ id: SnapshotID, _ action: String, _ form: ConsoleForm)
        async throws -> Response
    {
        let caller = session.caller
        var metadata: Logger.Metadata = [
            "action": "\(action)", "snapshot": "\(id)", "caller": "\(caller)", "accessKeyID": "\(session.accessKeyID)",
        ]
        let back = "/console/snapshots/\(id)"
        let response: Response
        switch action {
        case "delete":
            try await service.deleteSnapshot(id, caller: caller)
            response = redirect("/console/?done=deleted")
        case "description":
            _ = try await service.setDescription(id, form["description"] ?? "", caller: caller)
            response = redirect(back + "?done=description")
        case "share":
            let project = form.trimmed("project") ?? ""
            guard (try? ProjectRef(parsing: project)) != nil else {
                throw ConsoleError(
                    400, "InvalidProject",
                    "\"\(project)\" is not a project: write it as <project>@<customer>, for example web@acme.")
            }
            metadata["project"] = "\(project)"
            _ = try await service.share(id, with: project, caller: caller)
            response = redirect(back + "?done=shared")
        case "unshare":
            let project = form.trimmed("project") ?? ""
            metadata["project"] = "\(project)"
            _ = try await service.unshare(id, with: project, caller: caller)
            response = redirect(back + "?done=unshared")
        case "publish":
            _ = try await service.publish(id, confirmBootable: form["confirm_bootable"] == "yes", caller: caller)
            response = redirect(back + "?done=published")
        case "unpublish":
            _ = try await service.unpublish(id, caller: caller)
            response = redirect(back + "?done=unpublished")
        case "volume":
            let volume = try await service.createVolume(from: id, caller: caller)
            metadata["volume"] = "\(volume.id)"
            response = redirect(back + "?done=volume&volume=\(volume.id)")
        default:
            throw ConsoleError.notFound("/console/snapshots/\(id)/\(action)")
        }
        logger.info("console action", metadata: metadata)
        return response
    }

    private func notice(_ query: ConsoleForm) -> String? {
        switch query["done"] {
        case "deleted": "The snapshot was deleted."
        case "description": "The description was changed."
        case "shared": "Access was granted."
        case "unshared": "Access was revoked."
        case "published": "Shared access is enabled: the snapshot is public."
        case "unpublished": "Shared access is disabled: the snapshot is private again."
        case "volume":
            query["volume"].flatMap(VolumeID.init(rawValue:)).map { "Volume \($0) was created." }
                ?? "A volume was created."
        default: nil
        }
    }

    // MARK: - Imports

    private func importPage(_ session: ConsoleSession) throws -> Response {
        guard imports != nil else { throw Self.importsUnavailable }
        var context = base(session, title: "Import from bucket")
        if let bucket = settings.defaultBucket { context["defaultBucket"] = bucket }
        context["maxLength"] = "\(settings.maxDescriptionLength)"
        return page("import", context)
    }

    private func startImport(_ session: ConsoleSession, _ form: ConsoleForm) async throws -> Response {
        guard let imports else { throw Self.importsUnavailable }
        guard let bucket = form.trimmed("bucket") ?? settings.defaultBucket else {
            throw ConsoleError(
                400, "InvalidArgument", "Name the bucket that holds the image (no bucket is configured).")
        }
        guard let key = form["key"], !key.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw ConsoleError(400, "InvalidArgument", "Give the key of the image in the bucket.")
        }
        let description = form.trimmed("description")
        let task = try await imports.start(
            ImportTaskRequest(bucket: bucket, key: key, description: description), caller: session.caller)
        logger.info(
            "console action",
            metadata: [
                "action": "import", "task": "\(task.id)", "bucket": "\(bucket)", "key": "\(key)",
                "caller": "\(session.caller)", "accessKeyID": "\(session.accessKeyID)",
            ])
        return redirect("/console/tasks/\(task.id)")
    }

    private func taskPage(_ session: ConsoleSession, _ id: ImportTaskID) async throws -> Response {
        guard let imports else { throw Self.importsUnavailable }
        let task = try await imports.task(id, caller: session.caller)
        var context = base(session, title: "Import \(id)")
        context["task"] = ConsoleViews.task(task)
        return page("task", context, status: .ok)
    }

    private func taskStatus(_ session: ConsoleSession, _ id: ImportTaskID) async throws -> Response {
        guard let imports else { throw Self.importsUnavailable }
        let task = try await imports.task(id, caller: session.caller)
        let view = ConsoleViews.task(task)
        var document: [String: Any] = [
            "id": task.id.rawValue, "state": task.state.rawValue, "message": view["message"] ?? "",
            "percentText": view["percentText"] ?? "", "percent": task.progressPercent.map { $0 as Any } ?? NSNull(),
        ]
        if let snapshot = task.snapshotID { document["snapshot"] = snapshot.rawValue }
        let data = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
        var headers = Self.securityHeaders
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static let importsUnavailable = ConsoleError(
        503, "UnsupportedOperation",
        "Imports from a bucket need the [s3] section of the configuration (endpoint and credentials); this server has none."
    )

    // MARK: - Helpers

    private func snapshotID(_ text: String) throws -> SnapshotID {
        guard let id = SnapshotID(rawValue: text) else {
            throw ConsoleError(
                404, "InvalidSnapshotID.Malformed",
                "\"\(text.prefix(64))\" is not a snapshot ID (snap- and 8 hexadecimal digits).")
        }
        return id
    }

    private func taskID(_ text: String) throws -> ImportTaskID {
        guard let id = ImportTaskID(text) else {
            throw ConsoleError(
                404, "InvalidImportTaskID.Malformed",
                "\"\(text.prefix(64))\" is not an import task ID (import-snap- and 17 hexadecimal digits).")
        }
        return id
    }

    private func readForm(_ request: inout Request) async throws -> ConsoleForm {
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: Self.maxBodySize)
        } catch {
            throw ConsoleError(413, "RequestTooLarge", "The form is larger than \(Self.maxBodySize) bytes.")
        }
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self) else {
            throw ConsoleError(400, "InvalidArgument", "The form is not UTF-8.")
        }
        return ConsoleForm(text)
    }

    /// The context every signed-in page starts from: the header's project and sign-out token.
    private func base(_ session: ConsoleSession, title: String) -> [String: Any] {
        [
            "title": title, "csrf": session.csrfToken,
            "session": ["caller": "\(session.caller)", "csrf": session.csrfToken],
        ]
    }

    func render(_ template: String, _ context: [String: Any]) -> String {
        templates.render(context, withTemplate: template) ?? "<!doctype html><title>console</title><p>page missing</p>"
    }

    private func page(_ template: String, _ context: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        var headers = Self.securityHeaders
        headers[.contentType] = "text/html; charset=utf-8"
        return Response(
            status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: render(template, context))))
    }

    private func errorPage(_ error: ConsoleError, session: ConsoleSession?, path: String) -> Response {
        var context: [String: Any] = [
            "title": error.code, "code": error.code, "message": error.message,
            "heading": Self.heading(error.status),
        ]
        if let session {
            context = base(session, title: error.code).merging(context) { $1 }
            context["back"] = "/console/"
            context["backText"] = "Back to Snapshots"
            // After a refused action on a snapshot that exists, back to it.
            let parts = path.split(separator: "/")
            if error.status != 404, parts.count >= 3, parts[1] == "snapshots",
                let id = SnapshotID(rawValue: String(parts[2]))
            {
                context["back"] = "/console/snapshots/\(id)"
                context["backText"] = "Back to \(id)"
                context["home"] = true
            }
        } else {
            context["back"] = "/console/signin"
            context["backText"] = "Sign in"
        }
        return page("error", context, status: HTTPResponse.Status(code: error.status))
    }

    static func heading(_ status: Int) -> String {
        switch status {
        case 400: "That did not work"
        case 401: "Please sign in"
        case 403: "Not allowed"
        case 404: "Not found"
        case 409: "Not possible right now"
        case 503: "Not available"
        default: "Something went wrong"
        }
    }

    private func asset(_ text: String, type: String) -> Response {
        Response(
            status: .ok,
            headers: [.contentType: type, .cacheControl: "max-age=3600", .init("X-Content-Type-Options")!: "nosniff"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    private func redirect(_ location: String) -> Response {
        var headers = Self.securityHeaders
        headers[.location] = location
        return Response(status: .seeOther, headers: headers)
    }

    /// No caching of pages, no framing, no inline script, no content sniffing.
    static let securityHeaders: HTTPFields = [
        .cacheControl: "no-store",
        .init("Content-Security-Policy")!:
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        .init("X-Frame-Options")!: "DENY",
        .init("X-Content-Type-Options")!: "nosniff",
        .init("Referrer-Policy")!: "same-origin",
    ]

    static func url(_ path: String, _ parameters: [String: String]) -> String {
        guard !parameters.isEmpty else { return path }
        return path + "?"
            + parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\(ConsoleForm.encode($0.value))" }
            .joined(separator: "&")
    }
}

/// `serve`'s responder: `/console` and below go to the console, everything else to the API.
public struct ConsoleMount<API: HTTPResponder>: HTTPResponder where API.Context == BasicRequestContext {
    public typealias Context = BasicRequestContext
    public let console: ConsoleResponder
    public let api: API

    public init(console: ConsoleResponder, api: API) {
        self.console = console
        self.api = api
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let path = request.uri.path
        if path == "/console" || path.hasPrefix("/console/") {
            return try await console.respond(to: request, context: context)
        }
        return try await api.respond(to: request, context: context)
    }
}
