import SnapshotCore

/// A refusal shown as a page: the HTTP status, a stable code and a sentence for a person.
struct ConsoleError: Error, CustomStringConvertible {
    var status: Int
    var code: String
    var message: String

    init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    var description: String { "\(code): \(message)" }

    static func notFound(_ path: String) -> ConsoleError {
        ConsoleError(404, "NotFound", "There is no console page at \(path).")
    }

    static let badCSRF = ConsoleError(
        403, "InvalidCSRFToken",
        "The form was not sent by this console session (its security token is missing or wrong). Go back, reload the page and try again."
    )

    /// The core's errors with their own stable codes.
    init(_ error: SnapshotError) {
        let status: Int
        switch error.code {
        case .notFound: status = 404
        case .accessDenied: status = 403
        case .inUse, .invalidState, .conflict: status = 409
        case .invalidArgument, .invalidProject, .confirmationRequired: status = 400
        default: status = 500
        }
        self.init(status, error.code.description, error.message)
    }
}
