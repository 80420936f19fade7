public import SigV4
import Foundation
public import Hummingbird
public import Logging
import NIOCore

/// The HTTP face of the API: `GET /healthz`, and the EC2 query protocol at `/` (`POST` form body or
/// `GET` query string). Every answer but the health check is XML; every failure — a bad path, an
/// oversized body, a refused signature, an unknown action, a crash inside an action — is EC2's error
/// document with its status, never an HTML page.
public struct EC2Responder: HTTPResponder {
    public typealias Context = BasicRequestContext

    public let actions: EC2Actions
    public let authenticator: any EC2Authenticator
    public let logger: Logger
    /// The largest request body read (EC2's own limit for query requests is far below this).
    public var maxBodySize = 1 << 20
    /// Told about every answered request: the `Action` the client named (nil when none), the HTTP status
    /// and the time taken (`serve --metrics` counts them).
    public var onResponse: (@Sendable (_ action: String?, _ status: Int, _ duration: Duration) -> Void)?

    public init(actions: EC2Actions, authenticator: any EC2Authenticator, logger: Logger) {
        self.actions = actions
        self.authenticator = authenticator
        self.logger = logger
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let started = ContinuousClock.now
        let requestID = UUID().uuidString.lowercased()
        var request = request
        var action = "-"
        var who = "-"
        let response: Response
        if request.uri.path == "/healthz" {
            response = Response(
                status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
        } else {
            do {
                let (name, authenticated, body) = try await handle(&request, requestID: requestID) { name in
                    action = name
                }
                action = name
                who = "\(authenticated.caller) \(authenticated.accessKeyID)"
                response = Self.xml(.ok, body)
            } catch let error as EC2Error {
                response = Self.xml(.init(code: error.status), error.xml(requestID: requestID))
            } catch {
                logger.error(
                    "request failed", metadata: ["action": "\(action)", "request": "\(requestID)", "error": "\(error)"])
                let failure = EC2Error(.internalError, "An internal error has occurred")
                response = Self.xml(.internalServerError, failure.xml(requestID: requestID))
            }
        }
        let elapsed = ContinuousClock.now - started
        onResponse?(action == "-" ? nil : action, response.status.code, elapsed)
        logger.debug(
            "\(request.method) \(request.uri.path) \(action) \(response.status.code)",
            metadata: [
                "action": "\(action)", "status": "\(response.status.code)", "request": "\(requestID)",
                "caller": "\(who)",
                "ms": "\(Self.milliseconds(elapsed))",
            ])
        return response
    }

    /// Reads, authenticates and runs one API request. `named` learns the action as soon as it is
    /// known (for the log line of a failure).
    private func handle(
        _ request: inout Request, requestID: String, named: (String) -> Void
    ) async throws -> (String, Authenticated, String) {
        guard request.uri.path == "/" else {
            throw EC2Error(.notFoundPath, "No such resource \(quoted(request.uri.path)); the API answers at /")
        }
        guard request.method == .post || request.method == .get else {
            throw EC2Error(.unsupportedHTTPVerb, "The API answers GET and POST, not \(request.method)")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: maxBodySize)
        } catch {
            throw EC2Error(.requestTooLarge, "The request body is larger than \(maxBodySize) bytes")
        }
        let body = Array(buffer.readableBytesView)
        let rawQuery = request.uri.query ?? ""
        var parameters = try QueryParameters(formEncoded: rawQuery)
        if request.method == .post {
            guard let text = String(validating: body, as: UTF8.self) else {
                throw EC2Error(.malformedQueryString, "the request body is not UTF-8")
            }
            parameters = parameters.merging(try QueryParameters(formEncoded: text))
        }
        if let name = parameters["Action"] { named(name) }
        // HTTPTypes carries the Host header as the request's authority, not among the fields; the
        // signature covers it.
        var headers = request.headers.map { (name: $0.name.rawName, value: $0.value) }
        if let authority = request.head.authority { headers.insert((name: "Host", value: authority), at: 0) }
        let signed = SigV4IncomingRequest(
            method: request.method.rawValue, path: request.uri.path, query: rawQuery, headers: headers, body: body)
        let authenticated = try await authenticator.authenticate(signed)
        guard let action = parameters["Action"], !action.isEmpty else {
            throw EC2Error(.missingAction, "The request must contain the parameter Action")
        }
        if let version = parameters["Version"], version != EC2Document.version {
            throw EC2Error(
                .invalidParameterValue,
                "Value (\(version)) for parameter Version is invalid. This server speaks \(EC2Document.version).")
        }
        let call = EC2Call(
            action: action, parameters: parameters, caller: authenticated.caller, requestID: requestID)
        return (action, authenticated, try await actions.handle(call))
    }

    /// `12.3` (one decimal).
    static func milliseconds(_ duration: Duration) -> String {
        let ms = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        return String((ms * 10).rounded() / 10)
    }

    static func xml(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(
            status: status, headers: [.contentType: "text/xml;charset=UTF-8"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
