import ArgumentParser
import Foundation
import S3

/// `snapimport s3 ls|get|put|rm|mb`: direct access to the bucket (architecture.md, "Command-line contract").
struct S3Command: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "s3", abstract: "List, get, put and remove objects in S3.",
        subcommands: [List.self, Get.self, Put.self, Remove.self, MakeBucket.self])

    /// `s3 ls s3://B/PREFIX`: every key under the prefix (recursive, all pages).
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List every object under a prefix: a table of size, last-modified and key.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "s3://bucket/prefix (the prefix may be empty).") var location: String

        func validate() throws { _ = try S3Location(location, requireKey: false) }

        func run() async throws {
            let target = try S3Location(location, requireKey: false)
            let context = try AppContext(global)
            let objects: [S3Object]
            do {
                objects = try await context.s3().listAllObjects(bucket: target.bucket, prefix: target.key)
            } catch {
                throw CommandOutput.s3Failure(error, json: global.json)
            }
            if global.json {
                CommandOutput.printJSON(objects.map(ListedObject.init))
            } else {
                var table = Table("SIZE", "LAST MODIFIED", "KEY", rightAligned: [0])
                for object in objects {
                    table.append(ByteCount.human(object.size), object.lastModified.map(rfc3339) ?? "-", object.key)
                }
                FileHandle.standardOutput.write(Data(table.render().utf8))
            }
        }
    }

    /// `s3 get s3://B/KEY FILE` (`-` is stdout).
    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get", abstract: "Download an object to a file.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "s3://bucket/key") var location: String
        @Argument(help: "Destination file ('-' for stdout).") var file: String
        @Option(name: .long, help: ArgumentHelp("Ranged GETs in parallel (benchmarks).", visibility: .hidden))
        var parallel: Int = 1
        @Option(name: .long, help: ArgumentHelp("Bytes per ranged GET with --parallel.", visibility: .hidden))
        var chunkSize: Int = 64 << 20

        func validate() throws {
            _ = try S3Location(location, requireKey: true)
            guard parallel >= 1, parallel <= 64 else { throw ValidationError("--parallel must be 1…64") }
            if parallel > 1 && file == "-" { throw ValidationError("--parallel needs a file, not stdout") }
        }

        func run() async throws {
            let target = try S3Location(location, requireKey: true)
            let context = try AppContext(global)
            let path = file
            let bar = ProgressBar(label: "get", enabled: file != "-" && isatty(STDERR_FILENO) == 1)
            let head: ObjectHead?
            // A file is written under a temporary name beside it and renamed once complete: a failed
            // download (no such key, denied, interrupted) leaves neither an empty nor a partial file. A
            // destination that exists and is no regular file (/dev/null, a FIFO, a terminal) is written in
            // place, in order: renaming a file over it would replace the device or pipe.
            let inPlace = file != "-" && Self.isSpecialFile(path)
            let partial = file == "-" || inPlace ? "" : Self.partialPath(for: path)
            if file != "-" {
                try Self.checkDestination(path, json: global.json)
            }
            do {
                if inPlace {
                    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                    defer { try? handle.close() }
                    head = try await context.s3().getObject(
                        bucket: target.bucket, key: target.key, range: nil, ifMatch: nil
                    ) {
                        try handle.write(contentsOf: Data($0))
                    }
                } else if parallel > 1 {
                    head = try await context.s3().downloadFile(
                        bucket: target.bucket, key: target.key, path: partial, concurrency: parallel,
                        chunkSize: chunkSize, progress: { bar.update(done: $0, total: $1) })
                } else if file == "-" {
                    // Standard output is written as a stream, never reopened by path: reopening
                    // /dev/stdout would truncate a file that stdout is redirected to.
                    let stdout = FileHandle.standardOutput
                    head = try await context.s3().getObject(
                        bucket: target.bucket, key: target.key, range: nil, ifMatch: nil
                    ) {
                        stdout.write(Data($0))
                    }
                } else {
                    head = try await context.s3().getObject(bucket: target.bucket, key: target.key, toFile: partial)
                }
                if !partial.isEmpty, rename(partial, path) != 0 {
                    let reason = String(cString: strerror(errno))
                    throw CommandOutput.failure(
                        code: "IOError", message: "cannot write \(path): \(reason)", json: global.json, exit: 1)
                }
            } catch {
                bar.finish()
                if !partial.isEmpty { unlink(partial) }
                throw CommandOutput.s3Failure(error, json: global.json)
            }
            bar.finish()
            if global.json {
                CommandOutput.printJSON(
                    TransferResult(
                        bucket: target.bucket, key: target.key, size: head?.size ?? 0, etag: head?.etag ?? ""))
            }
        }
    }

    /// `s3 put FILE s3://B/KEY` (multipart for large files).
    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "put", abstract: "Upload a file (multipart when large).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Source file.") var file: String
        @Argument(help: "s3://bucket/key") var location: String
        @Option(name: .long, help: "Content-Type of the object.") var contentType: String?
        @Option(name: .long, help: "User metadata NAME=VALUE (x-amz-meta-NAME); repeatable.") var metadata: [String] =
            []

        func validate() throws {
            _ = try S3Location(location, requireKey: true)
            _ = try parseMetadata(metadata)
        }

        func run() async throws {
            let target = try S3Location(location, requireKey: true)
            let context = try AppContext(global)
            let pairs = try parseMetadata(metadata)
            let result = try await upload(
                context: context, file: file, bucket: target.bucket, key: target.key, metadata: pairs,
                contentType: contentType, json: global.json)
            if global.json { CommandOutput.printJSON(result) }
        }
    }

    /// `s3 rm s3://B/KEY`.
    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete an object.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "s3://bucket/key") var location: String

        func validate() throws { _ = try S3Location(location, requireKey: true) }

        func run() async throws {
            let target = try S3Location(location, requireKey: true)
            let context = try AppContext(global)
            do {
                try await context.s3().deleteObject(bucket: target.bucket, key: target.key)
            } catch {
                throw CommandOutput.s3Failure(error, json: global.json)
            }
            if global.json { CommandOutput.printJSON(["bucket": target.bucket, "key": target.key]) }
        }
    }

    /// `s3 mb s3://B`: create a bucket (fine if it exists and is ours).
    struct MakeBucket: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "mb", abstract: "Create a bucket.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "s3://bucket") var location: String

        func validate() throws { _ = try S3Location(location, requireKey: false) }

        func run() async throws {
            let target = try S3Location(location, requireKey: false)
            let context = try AppContext(global)
            do {
                try await context.s3().createBucket(target.bucket)
            } catch {
                throw CommandOutput.s3Failure(error, json: global.json)
            }
            if global.json { CommandOutput.printJSON(["bucket": target.bucket]) }
        }
    }
}

/// One line of `s3 ls --json`.
struct ListedObject: Encodable {
    var key: String
    var size: UInt64
    var etag: String
    var lastModified: String?

    init(_ object: S3Object) {
        key = object.key
        size = object.size
        etag = object.etag
        lastModified = object.lastModified.map(rfc3339)
    }
}

/// The result of an upload or download with `--json`.
struct TransferResult: Encodable {
    var bucket: String
    var key: String
    var size: UInt64
    var etag: String
}

/// Uploads `file` with a progress bar on a terminal; exits on failure.
func upload(
    context: AppContext, file: String, bucket: String, key: String, metadata: [String: String], contentType: String?,
    json: Bool
) async throws -> TransferResult {
    guard let attributes = try? FileManager.default.attributesOfItem(atPath: file),
        let size = (attributes[.size] as? NSNumber)?.uint64Value
    else {
        throw CommandOutput.failure(code: "NotFound", message: "cannot read \(file)", json: json, exit: 1)
    }
    let bar = ProgressBar(label: (file as NSString).lastPathComponent)
    let etag: String
    do {
        etag = try await context.s3().uploadFile(
            path: file, bucket: bucket, key: key, metadata: metadata, contentType: contentType,
            progress: { bar.update(done: $0, total: $1) })
    } catch {
        bar.finish()
        throw CommandOutput.s3Failure(error, json: json)
    }
    bar.finish()
    return TransferResult(bucket: bucket, key: key, size: size, etag: etag)
}

/// `NAME=VALUE` pairs into a metadata dictionary.
func parseMetadata(_ pairs: [String]) throws -> [String: String] {
    var metadata: [String: String] = [:]
    for pair in pairs {
        guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
            throw ValidationError("--metadata wants NAME=VALUE, got '\(pair)'")
        }
        metadata[String(pair[..<eq]).lowercased()] = String(pair[pair.index(after: eq)...])
    }
    return metadata
}

/// RFC 3339 UTC with seconds, e.g. `2026-11-24T22:31:20Z`.
func rfc3339(_ date: Date) -> String {
    date.formatted(.iso8601)
}

extension S3Command.Get {
    /// `dir/.name.snapimport-partial`: where the download goes until it is complete.
    static func partialPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).snapimport-partial")
            .path
    }

    /// Whether `path` exists and is not a regular file (a device, a FIFO, a socket), following links.
    static func isSpecialFile(_ path: String) -> Bool {
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        guard let type = try? FileManager.default.attributesOfItem(atPath: resolved)[.type] as? FileAttributeType
        else { return false }
        return type != .typeRegular && type != .typeDirectory
    }

    /// A destination that cannot be written is refused before anything is downloaded, naming the path.
    static func checkDestination(_ path: String, json: Bool) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw CommandOutput.failure(
                code: "InvalidArgument", message: "cannot write \(path): it is a directory", json: json, exit: 2)
        }
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CommandOutput.failure(
                code: "NotFound", message: "cannot write \(path): no directory \(directory)", json: json, exit: 1)
        }
    }
}
