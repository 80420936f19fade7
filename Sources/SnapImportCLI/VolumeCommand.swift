import ArgumentParser
import Foundation
import SnapshotCore

/// `snapimport volume create|list|attach|detach|delete` (architecture.md). A volume is a sparse raw
/// file in the data directory, an independent copy of the snapshot it was made from.
struct VolumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume",
        abstract: "Create volumes from snapshots, attach them to instances, delete them.",
        subcommands: [Create.self, List.self, Attach.self, Detach.self, Delete.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a volume (sparse raw file) from a snapshot.")
        @OptionGroup var common: SnapshotCommand.Common
        @Option(name: .long, help: "The snapshot (snap-…).") var snapshot: String
        @Option(name: .long, help: "Also write the volume's bytes to FILE (sparse raw).") var output: String?

        func run() async throws {
            let view = try await common.run(on: snapshot) { (service, id: SnapshotID, caller) in
                let volume = try await service.createVolume(from: id, caller: caller, output: output)
                return VolumeView(volume, path: service.volumePath(volume))
            }
            print(view, json: common.global.json)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Volumes you own: a table, or an array with --json.")
        @OptionGroup var common: SnapshotCommand.Common
        @Option(name: .long, help: "Only volumes in this state: available (detached) or in-use (attached).")
        var state: String?
        @Option(name: .long, help: "Only volumes made from this snapshot (snap-…).")
        var snapshot: String?

        func validate() throws {
            if let state, !["available", "in-use"].contains(state) {
                throw ValidationError("--state must be available or in-use, got '\(state)'")
            }
        }

        func run() async throws {
            let caller = try Arguments.caller(common.project, json: common.global.json)
            let all = try await AppContext(common.global).withExistingStore { service in
                try await service.listVolumes(caller: caller).map { VolumeView($0, path: service.volumePath($0)) }
            }
            let views = all.filter { view in
                if let state, (view.attachedTo == nil ? "available" : "in-use") != state { return false }
                if let snapshot, view.snapshotId != snapshot { return false }
                return true
            }
            if common.global.json {
                CommandOutput.printDocument(views)
            } else {
                Swift.print(Self.table(views), terminator: "")
            }
        }

        /// The human listing: one row per volume.
        static func table(_ views: [VolumeView]) -> String {
            var table = Table(
                "ID", "PROJECT", "STATE", "SIZE", "SNAPSHOT", "ATTACHED TO", "CREATED", "PATH", rightAligned: [3])
            for view in views {
                table.append(
                    view.id, view.project, view.attachedTo == nil ? "available" : "in-use", ByteCount.human(view.size),
                    view.snapshotId ?? "-", view.attachedTo ?? "-", view.createdAt, view.path)
            }
            return table.render()
        }
    }

    struct Attach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Attach a volume to an instance.")
        @OptionGroup var common: SnapshotCommand.Common
        @Argument(help: "The volume (vol-…).") var volume: String
        @Option(name: .long, help: "The instance (i-…).") var instance: String

        func run() async throws {
            let caller = try Arguments.caller(common.project, json: common.global.json)
            let id: VolumeID = try Arguments.id(volume, json: common.global.json)
            let instanceID: InstanceID = try Arguments.id(instance, json: common.global.json)
            let view = try await AppContext(common.global).withExistingStore { service in
                let volume = try await service.attachVolume(id, to: instanceID, caller: caller)
                return VolumeView(volume, path: service.volumePath(volume))
            }
            print(view, json: common.global.json)
        }
    }

    struct Detach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Detach a volume from its instance.")
        @OptionGroup var common: SnapshotCommand.Common
        @Argument(help: "The volume (vol-…).") var volume: String

        func run() async throws {
            let view = try await common.run(on: volume) { (service, id: VolumeID, caller) in
                let volume = try await service.detachVolume(id, caller: caller)
                return VolumeView(volume, path: service.volumePath(volume))
            }
            print(view, json: common.global.json)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a detached volume and its file.")
        @OptionGroup var common: SnapshotCommand.Common
        @Argument(help: "The volume (vol-…).") var volume: String

        func run() async throws {
            let id = try await common.run(on: volume) { (service, id: VolumeID, caller) in
                try await service.deleteVolume(id, caller: caller)
                return id
            }
            if common.global.json {
                CommandOutput.printDocument(["id": id.rawValue, "deleted": "true"])
            } else {
                Swift.print("deleted \(id)")
            }
        }
    }
}

private func line(_ v: VolumeView) -> String {
    "\(v.id)  \(v.project)  \(ByteCount.human(v.size))  from \(v.snapshotId ?? "-")  attached \(v.attachedTo ?? "-")  \(v.path)"
}

private func print(_ view: VolumeView, json: Bool) {
    if json { CommandOutput.printDocument(view) } else { Swift.print(line(view)) }
}
