import ArgumentParser
import Foundation
import Importer
import S3
import SnapshotCore

/// What commands print: JSON documents (Codable only) and human lines on stdout, messages on stderr,
/// and the mapping of every module's errors to the CLI contract's `CommandError` (code, exit status).
enum CommandOutput {
    static func printJSON(_ value: some Encodable) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value), let text = String(data: data, encoding: .utf8) else { return }
        print(text)
    }

    static func stderr(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    /// The error a command throws; `main.swift` prints it (stderr, and `{"error":{code,message}}` on
    /// stdout with --json) and exits with `status`.
    static func failure(code: String, message: String, json: Bool, exit status: Int32) -> CommandError {
        CommandError(code: code, message: message, exitStatus: status, json: json)
    }

    /// A failure of the snapshot core in the CLI contract's terms: 2 for malformed input (InvalidArgument,
    /// InvalidProject), 1 for a refused or failed operation (NotFound, AccessDenied, InUse, ConfirmationRequired …).
    static func failure(_ error: any Error, json: Bool) -> CommandError {
        if let error = error as? CommandError { return error }
        guard let error = error as? SnapshotError else {
            return failure(code: "Error", message: ErrorText.plain(error), json: json, exit: 1)
        }
        let usage = error.code == .invalidArgument || error.code == .invalidProject
        return failure(code: error.code.description, message: error.message, json: json, exit: usage ? 2 : 1)
    }

    /// An S3 failure in the CLI contract's terms: exit 1; 2 for a refused request and for credentials
    /// the server refuses (`AccessDenied`: an unknown key, a wrong secret, no right on the bucket), which
    /// are configuration errors like any other.
    static func s3Failure(_ error: any Error, json: Bool) -> CommandError {
        if let error = error as? CommandError { return error }
        guard let error = error as? S3Error else {
            return failure(code: "Error", message: "\(error)", json: json, exit: 1)
        }
        let code: String
        var status: Int32 = error.code == .invalidRequest ? 2 : 1
        switch error.code {
        case .noSuchKey, .noSuchBucket, .noSuchUpload: code = "NotFound"
        case .accessDenied, .signatureDoesNotMatch, .invalidAccessKeyID:
            code = "AccessDenied"
            status = 2
        default: code = error.awsCode ?? error.code.description
        }
        return failure(code: code, message: error.description, json: json, exit: status)
    }

    /// Prints `value` as one pretty JSON document on stdout (the snapshot, volume, … documents).
    static func printDocument(_ value: some Encodable) {
        guard let data = try? SnapshotJSON.encode(value), let text = String(data: data, encoding: .utf8) else { return }
        print(text)
    }

    /// One human line per snapshot.
    /// The grants only for the owner and the operator (see ``SnapshotView``).
    static func line(_ s: SnapshotRecord, caller: Caller = .operator) -> String {
        let grants = s.isOwned(by: caller) ? s.sharedWith : []
        let shared = grants.isEmpty ? "" : " shared:\(grants.map(\.description).joined(separator: ","))"
        return
            "\(s.id)  \(s.owner)  \(s.state.rawValue)  \(s.visibility.rawValue)\(shared)  \(ByteCount.human(s.virtualSize))  "
            + "\(s.format)\(s.bootable ? " bootable" : "")  \(s.description)"
    }

    /// Prints a pass summary: JSON on stdout with `--json`, else human lines (stdout when `verbose`
    /// or when something needs a person; nothing on a quiet success).
    static func report(_ summary: PassSummary, json: Bool, verbose: Bool) {
        if json {
            printDocument(summary.document)
            return
        }
        guard verbose || !summary.succeeded else { return }
        if let error = summary.listingError { print("error: \(error.code): \(error.message)") }
        for result in summary.results {
            switch result.outcome {
            case .imported(let id): print("imported  \(id)  \(result.key)")
            case .alreadyImported(let id): print("done      \(id)  \(result.key) (already imported)")
            case .rejected(let code, let message): print("rejected  \(code)  \(result.key): \(message)")
            case .retried(let code, let message, let attempts):
                print("retry     \(code)  \(result.key) (attempt \(attempts)): \(message)")
            case .skipped(let reason): print("skipped   \(result.key): \(reason)")
            }
        }
        print(
            "\(summary.imported.count) imported, \(summary.rejected.count) rejected, \(summary.retried.count) retried, "
                + "\(summary.skipped.count) skipped")
    }
}

/// Parsing of the arguments every snapshot, volume, instance and template command shares.
enum Arguments {
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
            throw CommandOutput.failure(error, json: json)
        }
    }

    /// Parses an ID argument (exit 2 when malformed).
    static func id<T: ResourceID>(_ text: String, json: Bool) throws -> T {
        do {
            return try T(parsing: text)
        } catch {
            throw CommandOutput.failure(error, json: json)
        }
    }
}
