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
    /// The root command's help text about these options: each subcommand's help lists them, but the
    /// root's would not, although they are accepted before the subcommand too.
    static let summary = """
        Global options, accepted before or after any subcommand:
          --config <file>         Configuration file (default: $SNAPIMPORT_CONFIG, then
                                  ./config/snapimport.toml).
          --json                  Print one JSON document on stdout (errors too).
          --verbose               Log more detail to stderr (never secrets).
          --log-format text|json  Log lines on stderr as text or one JSON object per line.

        Exit status: 0 success, 1 the work failed, 2 bad usage or configuration.
        """

    /// The global options that take a value, and those that do not.
    private static let valued: Set<String> = ["--config", "--log-format"]
    private static let flags: Set<String> = ["--json", "--verbose"]

    /// Moves the global options written before the subcommand (`snapimport --config F run`) to after
    /// it, where every subcommand's `@OptionGroup` parses them (before a `--`, if any). `--help` and
    /// `--version` stay where they are.
    static func movingLeadingOptions(_ arguments: [String]) -> [String] {
        let (leading, index) = leadingOptions(arguments)
        // Only before a subcommand: `snapimport --json no-such` stays an unknown command.
        guard !leading.isEmpty, index < arguments.count, subcommandNames.contains(arguments[index]) else {
            return arguments
        }
        var rest = Array(arguments[index...])
        let end = rest.firstIndex(of: "--") ?? rest.endIndex
        rest.insert(contentsOf: leading, at: end)
        return rest
    }

    /// The word in the subcommand's place when it names no subcommand (`snapimport --json no-such`,
    /// `snapimport lst`), so that the error says "unknown command" instead of blaming an option or an
    /// "unexpected argument".
    static func unknownCommand(_ arguments: [String]) -> String? {
        let (_, index) = leadingOptions(arguments)
        guard index < arguments.count else { return nil }
        let word = arguments[index]
        guard !word.hasPrefix("-"), word != "help", !subcommandNames.contains(word) else { return nil }
        return word
    }

    static var subcommandNames: [String] { SnapImport.configuration.subcommands.map { $0._commandName } }

    /// The global options at the start of `arguments`, and the index of the first argument after them.
    private static func leadingOptions(_ arguments: [String]) -> (options: [String], end: Int) {
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
        return (leading, index)
    }

    /// Whether `--json` is among the options (before any `--`).
    static func asksForJSON(_ arguments: [String]) -> Bool {
        arguments.prefix { $0 != "--" }.contains("--json")
    }
}
