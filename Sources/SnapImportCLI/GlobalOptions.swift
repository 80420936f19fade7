import ArgumentParser
import Observability

/// Options every subcommand accepts.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file (default: $SNAPIMPORT_CONFIG, then ./config/snapimport.toml).")
    var config: String?

    @Flag(name: .long, help: "Print one JSON document on stdout.")
    var json = false

    @Flag(name: .long, help: "Log more detail to stderr (never secrets).")
    var verbose = false

    @Option(name: .customLong("log-format"), help: "Log lines on stderr as text or json (one JSON object per line).")
    var logFormatOption: LogFormatOption = .text

    /// `--log-format`, as Observability's ``LogFormat``.
    var logFormat: LogFormat { logFormatOption == .json ? .json : .text }
}

/// The values of `--log-format` (Observability's ``LogFormat`` is public: its argument conformance stays here).
enum LogFormatOption: String, CaseIterable, ExpressibleByArgument {
    case text, json
}

extension GlobalOptions {
    /// The global options that take a value, and those that do not.
    private static let valued: Set<String> = ["--config", "--log-format"]
    private static let flags: Set<String> = ["--json", "--verbose"]

    /// Moves the global options written before the subcommand (`snapimport --config F run`) to after
    /// it, where every subcommand's `@OptionGroup` parses them (before a `--`, if any). `--help` and
    /// `--version` stay where they are.
    static func movingLeadingOptions(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name = String(argument.prefix { $0 != "=" })
            if flags.contains(argument) {
                leading.append(argument)
                index += 1
            } else if valued.contains(name) && argument.contains("=") {
                leading.append(argument)
                index += 1
            } else if valued.contains(argument) && index + 1 < arguments.count {
                leading += [argument, arguments[index + 1]]
                index += 2
            } else {
                break
            }
        }
        // Only before a subcommand: `snapimport --json no-such` stays an unknown command.
        let subcommands = SnapImport.configuration.subcommands.map { $0._commandName }
        guard !leading.isEmpty, index < arguments.count, subcommands.contains(arguments[index]) else {
            return arguments
        }
        var rest = Array(arguments[index...])
        let end = rest.firstIndex(of: "--") ?? rest.endIndex
        rest.insert(contentsOf: leading, at: end)
        return rest
    }

    /// Whether `--json` is among the options (before any `--`).
    static func asksForJSON(_ arguments: [String]) -> Bool {
        arguments.prefix { $0 != "--" }.contains("--json")
    }
}
