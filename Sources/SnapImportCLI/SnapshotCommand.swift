import ArgumentParser
import Foundation
import SnapshotCore

/// `snapimport snapshot …` (architecture.md, "Command-line contract"). The rules live in SnapshotCore;
/// these commands parse, call the service as the caller (`--project`, else the operator), and print.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "List, show, share, publish and delete snapshots.",
        subcommands: [
            List.self, Create.self, Show.self, SetDescription.self, Share.self, Unshare.self, Publish.self,
            Unpublish.self, Delete.self,
        ]
    )

    /// Options every snapshot subcommand takes.
    struct Common: ParsableArguments {
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "Act as this project (P@C); without it, act as the operator.")
        var project: String?

        /// The shape of every command on one resource (snapshot, volume, instance): parse the caller,
        /// then the resource's ID (exit 2 when malformed), and run `body` through the service
        /// (``AppContext/withExistingStore(_:)``: its errors end the command).
        func run<ID: ResourceID, R: Sendable>(
            on resource: String, _ body: (SnapshotService, ID, Caller) async throws -> R
        ) async throws -> R {
            let caller = try Arguments.caller(project, json: global.json)
            let id: ID = try Arguments.id(resource, json: global.json)
            return try await AppContext(global).withExistingStore { try await body($0, id, caller) }
        }

        /// The shape of every owner-only change: ``run(on:_:)`` on the snapshot, print the updated snapshot.
        func change(
            _ snapshot: String, _ change: (SnapshotService, SnapshotID, Caller) async throws -> SnapshotRecord
        ) async throws {
            output(try await run(on: snapshot, change), json: global.json)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Snapshots you own, shared with you, or public: a table, or an array with --json.")
        @OptionGroup var common: Common
        @Option(name: .long, help: "Only snapshots in this state (pending, available, error, deleting).")
        var state: String?
        @Option(name: .long, help: "Only snapshots owned by this project (P@C).")
        var owner: String?
        @Flag(name: .long, help: "Only shared snapshots: yours that you granted, or others' granted to you.")
        var shared = false
        @Flag(name: .long, help: "Only public snapshots.")
        var `public` = false

        func validate() throws {
            if let state, SnapshotState(rawValue: state) == nil {
                throw ValidationError(
                    "--state must be one of \(SnapshotState.allCases.map(\.rawValue).joined(separator: ", ")), got '\(state)'"
                )
            }
            if let owner {
                do {
                    _ = try ProjectRef(parsing: owner)
                } catch {
                    throw ValidationError("--owner \(owner): \(error)")
                }
            }
        }

        func run() async throws {
            let caller = try Arguments.caller(common.project, json: common.global.json)
            let owner = try owner.map { try Arguments.project($0, json: common.global.json) }
            let wanted = state.flatMap(SnapshotState.init(rawValue:))
            let all = try await AppContext(common.global).withExistingStore {
                try await $0.listSnapshots(caller: caller)
            }
            let snapshots = all.filter { snapshot in
                if let wanted, snapshot.state != wanted { return false }
                if let owner, snapshot.owner != owner { return false }
                if self.public, snapshot.visibility != .public { return false }
                if shared {
                    guard !snapshot.sharedWith.isEmpty else { return false }
                    if case .project(let me) = caller, snapshot.owner != me, !snapshot.sharedWith.contains(me) {
                        return false
                    }
                }
                return true
            }
            let views = snapshots.map { SnapshotView($0, caller: caller) }
            if common.global.json {
                CommandOutput.printDocument(views)
            } else {
                print(Self.table(views), terminator: "")
            }
        }

        /// The human listing: one row per snapshot, the virtual size as `1.0 GiB (1073741824 bytes)`.
        static func table(_ views: [SnapshotView]) -> String {
            var table = Table(
                "ID", "PROJECT", "STATE", "VISIBILITY", "SIZE", "FORMAT", "BOOTABLE", "CREATED", "SHARED WITH",
                "DESCRIPTION", rightAligned: [4])
            for view in views {
                table.append(
                    view.id, view.project, view.state, view.visibility, ByteCount.human(view.virtualSize), view.format,
                    view.bootable ? "yes" : "no", view.createdAt,
                    view.sharedWith.map { $0.isEmpty ? "-" : $0.joined(separator: ",") } ?? "-",
                    view.description.isEmpty ? "-" : view.description)
            }
            return table.render()
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Snapshot a volume (not attached to a running instance).")
        @OptionGroup var common: Common
        @Option(name: .long, help: "The volume (vol-…).") var volume: String
        @Option(name: .long, help: "A brief description.") var description: String = ""

        func run() async throws {
            let snapshot = try await common.run(on: volume) { (service, id: VolumeID, caller) in
                try await service.snapshotVolume(id, description: description, caller: caller)
            }
            output(snapshot, json: common.global.json)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show every property of a snapshot.")
        @OptionGroup var common: Common
        @Argument(help: "The snapshot (snap-…).") var snapshot: String

        func run() async throws {
            let caller = try Arguments.caller(common.project, json: common.global.json)
            let record = try await common.run(on: snapshot) { (service, id: SnapshotID, caller) in
                try await service.snapshot(id, caller: caller)
            }
            let view = SnapshotView(record, caller: caller)
            if common.global.json {
                CommandOutput.printDocument(view)
            } else {
                var source = "-"
                switch view.source {
                case .object(let bucket, let key, let etag): source = "object s3://\(bucket)/\(key) etag \(etag)"
                case .file(let path): source = "file \(path)"
                case .volume(let volume): source = "volume \(volume)"
                case .template(let template): source = "template \(template)"
                case nil: source = "-"
                }
                print(
                    """
                    id:           \(view.id)
                    project:      \(view.project)
                    description:  \(view.description)
                    state:        \(view.state)
                    visibility:   \(view.visibility)
                    sharedWith:   \(view.sharedWith.map { $0.joined(separator: ", ") } ?? "-")
                    virtualSize:  \(ByteCount.human(view.virtualSize))
                    storedBytes:  \(ByteCount.human(view.storedBytes))
                    format:       \(view.format)
                    bootable:     \(view.bootable)
                    source:       \(source)
                    checksum:     \(view.checksum ?? "-")
                    createdAt:    \(view.createdAt)
                    """)
            }
        }
    }

    struct SetDescription: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-description", abstract: "Change a snapshot's description (owner only).")
        @OptionGroup var common: Common
        @Argument(help: "The snapshot (snap-…).") var snapshot: String
        @Argument(help: "The new description.") var text: String

        func run() async throws {
            try await common.change(snapshot) { try await $0.setDescription($1, text, caller: $2) }
        }
    }

    struct Share: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grant a project use of a snapshot (owner only).")
        @OptionGroup var common: Common
        @Argument(help: "The snapshot (snap-…).") var snapshot: String
        @Option(name: .long, help: "The project to grant (P@C).") var with: String

        func run() async throws {
            try await common.change(snapshot) { try await $0.share($1, with: with, caller: $2) }
        }
    }

    struct Unshare: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a project's access (owner only).")
        @OptionGroup var common: Common
        @Argument(help: "The snapshot (snap-…).") var snapshot: String
        @Option(name: .long, help: "The project to revoke (P@C).") var with: String

        func run() async throws {
            try await common.change(snapshot) { try await $0.unshare($1, with: with, caller: $2) }
        }
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a snapshot public (owner only).")
        @OptionGroup var common: Common
        @Argument(help: "The snapshot (snap-…).") var snapshot: String
        @Flag(name: .long, help: "Confirm that a bootable snapshot was checked (no preset administrator password).")
        var confirmBootable = false

        func run() async throws {
            try await common.change(snapshot) { try await $0.publish($1, confirmBootable: confirmBootable, caller: $2) }
        }
    }

    struct Unpublish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a snapshot private again (owner only).")
        @OptionGroup var common: Common
        @Argument(help: "The snapshot (snap-…).") var snapshot: String

        func run() async throws {
            try await common.change(snapshot) { try await $0.unpublish($1, caller: $2) }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a snapshot (owner only; refused while a template uses it).")
        @OptionGroup var common: Common
        @Argument(help: "The snapshot (snap-…).") var snapshot: String

        func run() async throws {
            let (id, report) = try await common.run(on: snapshot) { (service, id: SnapshotID, caller) in
                (id, try await service.deleteSnapshot(id, caller: caller))
            }
            if common.global.json {
                CommandOutput.printDocument(DeleteResult(id: id.rawValue, deleted: true, blocksFreed: report.removed))
            } else {
                print(
                    "deleted \(id) (\(report.removed) blocks freed"
                        + (report.kept > 0 ? ", \(report.kept) kept for a later collection)" : ")"))
            }
        }
    }

    struct DeleteResult: Encodable {
        var id: String
        var deleted: Bool
        var blocksFreed: Int
    }
}

/// Prints a snapshot: the document with --json, else one line.
private func output(_ snapshot: SnapshotRecord, json: Bool) {
    if json {
        CommandOutput.printDocument(SnapshotView(snapshot))
    } else {
        print(CommandOutput.line(snapshot))
    }
}
