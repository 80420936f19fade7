import DiskImage
import SnapshotCore

/// What a failed import attempt means for its object: a property of the error, decided here once.
public enum ImportDisposition: Sendable, Equatable {
    /// A property of the object (or its sidecar): it will never import; it goes to failed/.
    case reject
    /// Trouble of the moment (network, 5xx, lease lost, shutdown): the object stays in incoming/.
    case retry
}

/// An error that knows its disposition.
protocol DispositionCarrying: Error {
    var disposition: ImportDisposition { get }
}

extension DiskImageError: DispositionCarrying {
    /// Every DiskImage code is a rejection except reading trouble.
    var disposition: ImportDisposition { code == .ioError || code == .notFound ? .retry : .reject }
}

extension ImporterError: DispositionCarrying {
    var disposition: ImportDisposition {
        [.invalidProject, .formatMismatch, .invalidSidecar].contains(code) ? .reject : .retry
    }
}

extension SnapshotError: DispositionCarrying {
    /// A description over the limit, a malformed owner: properties of the object and its sidecar.
    var disposition: ImportDisposition { code == .invalidArgument || code == .invalidProject ? .reject : .retry }
}

/// The classification of any error an import meets.
enum ImportFailure {
    static func disposition(_ error: any Error) -> ImportDisposition {
        (error as? any DispositionCarrying)?.disposition ?? .retry
    }

    /// True for errors that are properties of the object: it will never import.
    static func isRejection(_ error: any Error) -> Bool { disposition(error) == .reject }

    /// The stable code of any error the pipeline meets (a rejection keeps its DiskImage code).
    static func codeName(_ error: any Error) -> String {
        switch error {
        case let error as ImporterError: error.code.name
        case let error as DiskImageError: error.code.name
        case let error as SnapshotError: error.code.description
        default: importerError(error).code.name
        }
    }

    static func importerError(_ error: any Error) -> ImporterError {
        switch error {
        case let error as ImporterError: return error
        case let error as DiskImageError:
            if error.code == .ioError { return ImporterError(.storageUnavailable, error.message, underlying: error) }
            return ImporterError(.internalError, error.message, underlying: error)
        case let error as SnapshotError:
            if error.code == .leaseLost { return ImporterError(.leaseLost, "\(error)", underlying: error) }
            return ImporterError(.internalError, "\(error)", underlying: error)
        default:
            return ImporterError(.internalError, "\(error)", underlying: error)
        }
    }
}
