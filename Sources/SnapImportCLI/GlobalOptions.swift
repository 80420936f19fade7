import ArgumentParser

/// Options every subcommand accepts.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file (default: $SNAPIMPORT_CONFIG, then ./config/snapimport.toml).")
    var config: String?

    @Flag(name: .long, help: "Print one JSON document on stdout.")
    var json = false

    @Flag(name: .long, help: "Log more detail to stderr (never secrets).")
    var verbose = false
}
