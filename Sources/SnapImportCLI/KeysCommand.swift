import ArgumentParser
import Foundation
import SnapshotCore

/// `snapimport keys create|list|delete` (architecture.md, "Command-line contract"): the access keys of the
/// EC2-compatible API (`snapimport serve`). A key acts as one project (`--project P@C`) or as the operator.
///
/// The secret is printed once, by `create`; `list` never prints secrets. Like the snapshot commands, these
/// need an existing store and read only `[store]` from the configuration.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Create, list and delete access keys of the EC2-compatible API.",
        subcommands: [Create.self, List.self, Delete.self]
    )

    /// The `--json` form of a key: `{"accessKeyId", "secretAccessKey", "project"}` or `"operator": true`
    /// instead of `project`; `secretAccessKey` only from `create`, `createdAt` only from `list`.
    struct View: Encodable {
        var accessKeyId: String
        var secretAccessKey: String?
        var project: String?
        var `operator`: Bool?
        var createdAt: String?

        init(_ key: AccessKey, secret: Bool) {
            accessKeyId = key.id
            secretAccessKey = secret ? key.secret : nil
            switch key.caller {
            case .operator: self.operator = true
            case .project(let p): project = p.description
            }
            createdAt = secret ? nil : RFC3339.string(key.createdAt)
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an access key for a project (--project P@C) or for the operator (--operator).",
            discussion: "Prints the access key ID and its secret. The secret is shown only this once.")
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "The project the key acts as (P@C).") var project: String?
        @Flag(name: .long, help: "The key acts as the operator (every project's rights).") var `operator` = false

        func run() async throws {
            let json = global.json
            let caller: Caller
            switch (project, self.operator) {
            case (let text?, false): caller = .project(try Arguments.project(text, json: json))
            case (nil, true): caller = .operator
            default:
                throw CommandOutput.failure(
                    code: "Usage", message: "keys create needs exactly one of --project P@C and --operator",
                    json: json, exit: 2)
            }
            let key = try await AppContext(global).withExistingStore { try await $0.createAccessKey(for: caller) }
            if json {
                CommandOutput.printDocument(View(key, secret: true))
                return
            }
            print(
                """
                Access key ID:     \(key.id)
                Secret access key: \(key.secret)
                Acts as \(key.caller). The secret is not shown again: export AWS_ACCESS_KEY_ID and \
                AWS_SECRET_ACCESS_KEY (or run `aws configure`), then `aws --endpoint-url http://HOST:PORT ec2 …`.
                """)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List access keys: ID, principal, creation time (never the secrets).")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let keys = try await AppContext(global).withExistingStore { try await $0.listAccessKeys() }
            if global.json {
                CommandOutput.printDocument(keys.map { View($0, secret: false) })
                return
            }
            for key in keys { print("\(key.id)  \(key.caller)  \(RFC3339.string(key.createdAt))") }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete an access key; requests signed with it are refused from then on.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The access key ID (AKIA…).") var accessKeyID: String

        func run() async throws {
            try await AppContext(global).withExistingStore { try await $0.deleteAccessKey(accessKeyID) }
            if global.json {
                CommandOutput.printDocument(DeleteResult(accessKeyId: accessKeyID, deleted: true))
            } else {
                print("deleted \(accessKeyID)")
            }
        }
    }

    struct DeleteResult: Encodable {
        var accessKeyId: String
        var deleted: Bool
    }
}
