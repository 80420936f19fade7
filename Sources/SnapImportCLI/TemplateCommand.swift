import ArgumentParser
import Foundation
import SnapshotCore

/// `snapimport template create --instance INST` (architecture.md): snapshots every volume attached to
/// a stopped instance, all committed together with the template.
struct TemplateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "template",
        abstract: "Make templates from stopped instances.",
        subcommands: [Create.self, List.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Snapshot every volume of a stopped instance into a new template.")
        @OptionGroup var common: SnapshotCommand.Common
        @Option(name: .long, help: "The instance (i-…); it must be stopped.") var instance: String

        func run() async throws {
            let view = try await common.run(on: instance) { (service, id: InstanceID, caller) in
                TemplateView(try await service.createTemplate(instance: id, caller: caller).template)
            }
            output(view, json: common.global.json)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Templates you own.")
        @OptionGroup var common: SnapshotCommand.Common

        func run() async throws {
            let caller = try CoreContext.caller(common.project, json: common.global.json)
            let views = try await CoreContext.run(common.global) { service in
                try await service.listTemplates(caller: caller).map(TemplateView.init)
            }
            if common.global.json {
                CoreContext.printJSON(views)
            } else {
                for view in views { print(line(view)) }
            }
        }
    }
}

private func line(_ t: TemplateView) -> String {
    "\(t.id)  \(t.project)  instance \(t.instanceId)  snapshots: \(t.snapshots.joined(separator: ","))"
}

private func output(_ view: TemplateView, json: Bool) {
    if json { CoreContext.printJSON(view) } else { print(line(view)) }
}
