import ArgumentParser
import Foundation
import SnapshotCore

/// `snapimport instance create|start|stop|list` (architecture.md): instances exist to hold volumes,
/// so that the running/stopped rules of snapshots and templates can be exercised.
struct InstanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "instance",
        abstract: "Create, start, stop and list instances.",
        subcommands: [Create.self, Start.self, Stop.self, List.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a stopped instance owned by --project (the operator names it with --owner).")
        @OptionGroup var common: SnapshotCommand.Common
        @Option(name: .long, help: "Owner project (P@C) when acting as the operator.") var owner: String?

        func run() async throws {
            let json = common.global.json
            let caller = try Arguments.caller(common.project, json: json)
            let ownerRef: ProjectRef
            switch (caller, owner) {
            case (.project(let project), nil): ownerRef = project
            case (_, let text?): ownerRef = try Arguments.project(text, json: json)
            case (.operator, nil):
                throw CommandOutput.failure(
                    code: "InvalidArgument", message: "instance create needs --project P@C (or --owner P@C)",
                    json: json, exit: 2)
            }
            let view = try await AppContext(common.global).withExistingStore { service in
                InstanceView(try await service.createInstance(owner: ownerRef, caller: caller), volumes: [])
            }
            output(view, json: json)
        }
    }

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start an instance.")
        @OptionGroup var common: SnapshotCommand.Common
        @Argument(help: "The instance (i-…).") var instance: String

        func run() async throws {
            try await change(common, instance) { try await $0.startInstance($1, caller: $2) }
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop an instance.")
        @OptionGroup var common: SnapshotCommand.Common
        @Argument(help: "The instance (i-…).") var instance: String

        func run() async throws {
            try await change(common, instance) { try await $0.stopInstance($1, caller: $2) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Instances you own.")
        @OptionGroup var common: SnapshotCommand.Common

        func run() async throws {
            let caller = try Arguments.caller(common.project, json: common.global.json)
            let views = try await AppContext(common.global).withExistingStore { service in
                let volumes = try await service.listVolumes(caller: .operator)
                return try await service.listInstances(caller: caller).map { instance in
                    InstanceView(instance, volumes: volumes.filter { $0.attachedTo == instance.id }.map(\.id).sorted())
                }
            }
            if common.global.json {
                CommandOutput.printDocument(views)
            } else {
                for view in views { print(line(view)) }
            }
        }
    }
}

private func line(_ i: InstanceView) -> String {
    "\(i.id)  \(i.project)  \(i.state)  volumes: \(i.volumes.isEmpty ? "-" : i.volumes.joined(separator: ","))"
}

/// Starts or stops an instance (``SnapshotCommand/Common/run(on:_:)``) and prints it with its volumes.
private func change(
    _ common: SnapshotCommand.Common, _ instance: String,
    _ change: @escaping (SnapshotService, InstanceID, Caller) async throws -> InstanceRecord
) async throws {
    let view = try await common.run(on: instance) { (service, id: InstanceID, caller) in
        InstanceView(try await change(service, id, caller), volumes: try await service.attachedVolumes(id).map(\.id))
    }
    output(view, json: common.global.json)
}

private func output(_ view: InstanceView, json: Bool) {
    if json { CommandOutput.printDocument(view) } else { print(line(view)) }
}
