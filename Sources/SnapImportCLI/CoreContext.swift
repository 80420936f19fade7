import ArgumentParser
import Foundation
import Logging
import SnapshotCore

/// What the snapshot, volume, instance and template commands need: the snapshot service opened from
/// the configuration's `[store]` section (data directory, optional PostgreSQL catalog, block size),
/// and the caller from `--project`.
enum CoreContext {
    /// Opens the store, runs `body`, closes the store. Configuration problems exit 2; a
    /// `SnapshotError` from `body` is printed in the CLI contract's terms (see ``fail(_:json:)``).
    static func run<R: Sendable>(
        _ global: GlobalOptions, environment: [String: String] = ProcessInfo.processInfo.environment,
        _ body: (SnapshotService) async throws -> R
    ) async throws -> R {
        let config: Configuration
        do {
            config = try Configuration.load(path: global.config, environment: environment)
        } catch {
            throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: global.json, exit: 2)
        }
        var logger = Logger(label: "snapimport.core", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = global.verbose ? .debug : .warning
        do {
            return try await StoreContext.withService(
                config, json: global.json, verbose: global.verbose, logger: logger, environment: environment, body)
        } catch {
            throw failure(error, json: global.json)
        }
    }

    /// The caller: the operator without `--project`, else that project (exit 2 when malformed).
    static func caller(_ project: String?, json: Bool) throws -> Caller {
        guard let project else { return .operator }
        return .project(try self.project(project, json: json))
    }

    /// Parses a project reference `P@C` (exit 2 when malformed).
    static func project(_ text: String, json: Bool) throws -> ProjectRef {
        do {
            return try ProjectRef(parsing: text)
        } catch {
            throw failure(error, json: json)
        }
    }

    /// Parses an ID argument (exit 2 when malformed).
    static func id<T: ResourceID>(_ text: String, json: Bool) throws -> T {
        do {
            return try T(parsing: text)
        } catch {
            throw failure(error, json: json)
        }
    }

    /// Prints an error and exits: 2 for malformed input (InvalidArgument, InvalidProject), 1 for a refused
    /// or failed operation (NotFound, AccessDenied, InUse, ConfirmationRequired …).
    static func failure(_ error: any Error, json: Bool) -> CommandError {
        if let error = error as? CommandError { return error }
        guard let error = error as? SnapshotError else {
            return CommandOutput.failure(code: "Error", message: "\(error)", json: json, exit: 1)
        }
        let usage = error.code == .invalidArgument || error.code == .invalidProject
        return CommandOutput.failure(code: error.code.description, message: error.message, json: json, exit: usage ? 2 : 1)
    }

    /// Prints `value` as one JSON document on stdout.
    static func printJSON(_ value: some Encodable) {
        guard let data = try? SnapshotJSON.encode(value), let text = String(data: data, encoding: .utf8) else { return }
        print(text)
    }

    /// One human line per snapshot.
    /// The grants only for the owner and the operator (see ``SnapshotView``).
    static func line(_ s: SnapshotRecord, caller: Caller = .operator) -> String {
        let grants = s.isOwned(by: caller) ? s.sharedWith : []
        let shared = grants.isEmpty ? "" : " shared:\(grants.map(\.description).joined(separator: ","))"
        return "\(s.id)  \(s.owner)  \(s.state.rawValue)  \(s.visibility.rawValue)\(shared)  \(s.virtualSize) bytes  "
            + "\(s.format)\(s.bootable ? " bootable" : "")  \(s.description)"
    }
}
