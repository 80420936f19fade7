import ArgumentParser
import Foundation
import SnapshotCore

#if canImport(Glibc)
    import Glibc
#endif

/// `snapimport imports list|show`: the import history (one row per bucket, key and ETag) with each import's
/// state, progress (bytes of the object read so far), error and snapshot — for every import, whether `run`,
/// `watch`, `import s3://…` or an API import task made it.
struct ImportsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imports", abstract: "Import history, state and progress.", subcommands: [List.self, Show.self])

    /// The `--json` form of one import (architecture.md): every key is present, null when unknown.
    struct View: Encodable {
        var id: String
        var bucket: String
        var key: String
        var etag: String
        var owner: String
        var state: String
        var attempts: Int
        var bytesRead: Int64
        var bytesTotal: Int64?
        var snapshot: String?
        var error: Failure?
        var startedAt: String
        var updatedAt: String
        var worker: String?
        var leaseExpiresAt: String?
        /// What `imports list --after` takes to continue after this row.
        var cursor: String

        struct Failure: Encodable {
            var code: String
            var message: String
        }

        init(_ r: ImportRecord) {
            id = r.key.id
            bucket = r.key.bucket
            key = r.key.key
            etag = r.key.etag
            owner = r.owner
            state = r.state.rawValue
            attempts = r.attempts
            bytesRead = r.bytesRead
            bytesTotal = r.bytesTotal
            snapshot = r.snapshotID?.rawValue
            error = r.errorCode.map { Failure(code: $0, message: r.errorMessage ?? "") }
            startedAt = RFC3339.string(r.createdAt)
            updatedAt = RFC3339.string(r.updatedAt)
            worker = r.worker
            leaseExpiresAt = r.leaseExpiresAt.map(RFC3339.string)
            cursor = ImportCursor(after: r).token
        }

        private enum Keys: String, CodingKey {
            case id, bucket, key, etag, owner, state, attempts, bytesRead, bytesTotal, snapshot, error, startedAt
            case updatedAt, worker, leaseExpiresAt, cursor
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Keys.self)
            try c.encode(id, forKey: .id)
            try c.encode(bucket, forKey: .bucket)
            try c.encode(key, forKey: .key)
            try c.encode(etag, forKey: .etag)
            try c.encode(owner, forKey: .owner)
            try c.encode(state, forKey: .state)
            try c.encode(attempts, forKey: .attempts)
            try c.encode(bytesRead, forKey: .bytesRead)
            try c.encode(bytesTotal, forKey: .bytesTotal)
            try c.encode(snapshot, forKey: .snapshot)
            try c.encode(error, forKey: .error)
            try c.encode(startedAt, forKey: .startedAt)
            try c.encode(updatedAt, forKey: .updatedAt)
            try c.encode(worker, forKey: .worker)
            try c.encode(leaseExpiresAt, forKey: .leaseExpiresAt)
            try c.encode(cursor, forKey: .cursor)
        }
    }

    /// Progress as people read it: `42%`, `100%` once imported, `-` while the size is unknown.
    static func progress(_ r: ImportRecord) -> String {
        if r.state == .imported { return "100%" }
        guard let total = r.bytesTotal else { return "-" }
        guard total > 0 else { return "0%" }
        return "\(min(100, max(0, r.bytesRead) * 100 / total))%"
    }

    /// Rows as aligned columns under a header on a terminal; tab-separated without a header otherwise.
    static func table(_ header: [String], _ rows: [[String]], terminal: Bool) -> String {
        guard terminal else { return rows.map { $0.joined(separator: "\t") }.joined(separator: "\n") }
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.indices.map { column in
                column == row.count - 1
                    ? row[column] : row[column].padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List imports, oldest first, with their progress (page by page with --limit and --after).")

        @OptionGroup var global: GlobalOptions

        @Option(name: .long, help: "Only imports in this state (claimed, retry, imported, failed).")
        var state: String?

        @Option(name: .long, help: "Only imports for this project (project@customer).")
        var project: String?

        @Option(name: .long, help: "At most this many imports (1 to 1000): one page; the rest follows with --after.")
        var limit: Int?

        @Option(
            name: .long,
            help: "Continue after this cursor (a row's `cursor` in --json, or the one a page names on stderr).")
        var after: String?

        func validate() throws {
            if let limit, !(1...1000).contains(limit) {
                throw ValidationError("--limit \(limit): expected 1 to 1000")
            }
            if let after, ImportCursor(token: after) == nil {
                throw ValidationError("--after \(after): expected a cursor <milliseconds>.imp-<16 hex digits>")
            }
            if let state, ImportState(rawValue: state) == nil {
                throw ValidationError(
                    "--state \(state): expected one of \(ImportState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if let project {
                do {
                    _ = try ProjectRef(parsing: project)
                } catch {
                    throw ValidationError("--project \(project): \(error)")
                }
            }
        }

        func run() async throws {
            let filter = ImportFilter(state: state.flatMap(ImportState.init(rawValue:)), owner: project)
            let (cursor, pageSize) = (after.flatMap(ImportCursor.init(token:)), self.limit)
            // Keyset pages through the catalog's index: one page with --limit, else every page in turn.
            let page: ImportPage = try await AppContext(global).withExistingStore { service -> ImportPage in
                guard let pageSize else {
                    return ImportPage(imports: try await service.listImports(filter, after: cursor), next: nil)
                }
                return try await service.listImports(filter, after: cursor, limit: pageSize)
            }
            let (imports, next) = (page.imports, page.next)
            if let next {
                FileHandle.standardError.write(Data("more imports follow: --after \(next.token)\n".utf8))
            }
            if global.json {
                CommandOutput.printDocument(imports.map(View.init))
                return
            }
            let rows = imports.map { r in
                [
                    r.key.id, r.state.rawValue, ImportsCommand.progress(r), String(r.attempts),
                    r.snapshotID?.rawValue ?? "-", RFC3339.string(r.updatedAt), r.owner,
                    "s3://\(r.key.bucket)/\(r.key.key)"
                        + (r.errorCode.map { "  \($0): \(r.errorMessage ?? "")" } ?? ""),
                ]
            }
            guard !rows.isEmpty else { return }
            print(
                ImportsCommand.table(
                    ["ID", "STATE", "PROGRESS", "ATTEMPTS", "SNAPSHOT", "UPDATED", "PROJECT", "OBJECT"], rows,
                    terminal: isatty(STDOUT_FILENO) == 1))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Show one import: by its ID (imp-…), or the latest import of s3://bucket/key.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "An import ID (imp- and 16 hexadecimal digits) or s3://bucket/key (the key taken literally).")
        var target: String

        func validate() throws {
            guard target.hasPrefix("s3://") || Self.isImportID(target) else {
                throw ValidationError(
                    "\(target): expected an import ID (imp- and 16 hexadecimal digits) or s3://bucket/key")
            }
            if target.hasPrefix("s3://") {
                _ = try S3Location(target, requireKey: true)
            }
        }

        static func isImportID(_ text: String) -> Bool { ImportCursor.isImportID(text) }

        func run() async throws {
            let target = target
            let location = target.hasPrefix("s3://") ? try S3Location(target, requireKey: true) : nil
            // An index lookup: by the import ID column, or the primary key's (bucket, key) prefix.
            let found = try await AppContext(global).withExistingStore { service in
                guard let location else { return try await service.importRecord(id: target) }
                return try await service.latestImport(bucket: location.bucket, key: location.key)
            }
            guard let r = found else {
                throw CommandOutput.failure(
                    code: "NotFound", message: "no import \(target)", json: global.json, exit: 1)
            }
            if global.json {
                CommandOutput.printDocument(View(r))
                return
            }
            var lines: [(String, String)] = [
                ("id", r.key.id), ("object", "s3://\(r.key.bucket)/\(r.key.key)"), ("etag", r.key.etag),
                ("project", r.owner), ("state", r.state.rawValue),
                ("progress", Self.progressText(r)), ("attempts", String(r.attempts)),
                ("snapshot", r.snapshotID?.rawValue ?? "-"),
            ]
            if let code = r.errorCode { lines.append(("error", "\(code): \(r.errorMessage ?? "")")) }
            if let worker = r.worker { lines.append(("worker", worker)) }
            lines += [("started", RFC3339.string(r.createdAt)), ("updated", RFC3339.string(r.updatedAt))]
            let width = lines.map(\.0.count).max() ?? 0
            for (name, value) in lines {
                print((name + ":").padding(toLength: width + 1, withPad: " ", startingAt: 0) + "  " + value)
            }
        }

        /// `42% (440401920 of 1048576000 bytes)`.
        static func progressText(_ r: ImportRecord) -> String {
            let percent = ImportsCommand.progress(r)
            guard let total = r.bytesTotal else { return percent }
            return "\(percent) (\(r.bytesRead) of \(total) bytes)"
        }
    }
}
