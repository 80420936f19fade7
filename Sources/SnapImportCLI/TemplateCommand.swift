import ArgumentParser
import Foundation
import SnapshotCore

/// `snapimport template create --instance INST` snapshots every volume attached to a stopped instance,
/// all committed together with the template; `template delete TMPL` removes one, after which its
/// snapshots can be deleted (docs/cli.md).
struct TemplateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "template",
        abstract: "Make templates from stopped instances.",
        subcommands: [Create.self, List.self, Delete.self]
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
            let caller = try Arguments.caller(common.project, json: common.global.json)
            let views = try await AppContext(common.global).withExistingStore { service in
                try await service.listTemplates(caller: caller).map(TemplateView.init)
            }
            if common.global.json {
                CommandOutput.printDocument(views)
            } else {
                for view in views { print(line(view)) }
            }
        }
    }
}

extension TemplateCommand {
    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a template (owner only); its snapshots stay and become deletable.")
        @OptionGroup var common: SnapshotCommand.Common
        @Argument(help: "The template (tmpl-…).") var template: String

        struct Deleted: Encodable {
            var id: String
            var deleted: Bool
        }

        func run() async throws {
            try await common.run(on: template) { (service, id: TemplateID, caller) in
                try await service.deleteTemplate(id, caller: caller)
            }
            if common.global.json {
                CommandOutput.printDocument(Deleted(id: template, deleted: true))
            } else {
                print("deleted \(template)")
            }
        }
    }
}

private func line(_ t: TemplateView) -> String {
    "\(t.id)  \(t.project)  instance \(t.instanceId)  snapshots: \(t.snapshots.joined(separator: ","))"
}

private func output(_ view: TemplateView, json: Bool) {
    if json { CommandOutput.printDocument(view) } else { print(line(view)) }
}
