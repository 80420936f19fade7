import ArgumentParser
import Foundation
import SnapshotCore

/// `snapimport imports list [--json]`: the import history and state (one row per bucket, key, ETag).
struct ImportsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imports", abstract: "Import history and state.", subcommands: [List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List every import.")

        @OptionGroup var global: GlobalOptions

        /// The `--json` form of one import.
        struct View: Encodable {
            var bucket: String
            var key: String
            var etag: String
            var project: String
            var state: String
            var attempts: Int
            var snapshot: String?
            var worker: String?
            var leaseExpiresAt: String?
            var errorCode: String?
            var errorMessage: String?
            var createdAt: String
            var updatedAt: String

            init(_ r: ImportRecord) {
                bucket = r.key.bucket
                key = r.key.key
                etag = r.key.etag
                project = r.owner
                state = r.state.rawValue
                attempts = r.attempts
                snapshot = r.snapshotID?.rawValue
                worker = r.worker
                leaseExpiresAt = r.leaseExpiresAt.map(RFC3339.string)
                errorCode = r.errorCode
                errorMessage = r.errorMessage
                createdAt = RFC3339.string(r.createdAt)
                updatedAt = RFC3339.string(r.updatedAt)
            }
        }

        func run() async throws {
            let imports = try await AppContext(global).withExistingStore { service in try await service.listImports() }
            if global.json {
                CommandOutput.printDocument(imports.map(View.init))
                return
            }
            for r in imports {
                var line = "\(RFC3339.string(r.updatedAt))  \(r.state.rawValue)  attempts:\(r.attempts)"
                if let id = r.snapshotID { line += "  \(id)" }
                line += "  s3://\(r.key.bucket)/\(r.key.key)"
                if let code = r.errorCode { line += "  \(code): \(r.errorMessage ?? "")" }
                print(line)
            }
        }
    }
}
