/// What `snapimport --version` prints: the release number (kept here, raised with each release) and the
/// git commit the binary was built from (written by the `GitCommitPlugin` prebuild command).
public enum BuildInfo {
    /// The release number, `X.Y.Z`.
    public static let version = "0.14.0"

    /// The short git commit of the build, `-dirty` when tracked files had changes; nil when it was not
    /// built from a git checkout (a source archive).
    public static var commit: String? { gitCommit.isEmpty ? nil : gitCommit }

    /// `snapimport 0.14.0 (commit 1a2b3c4d5e6f)`, or `snapimport 0.14.0` without a commit.
    public static var versionLine: String {
        "snapimport \(version)" + (commit.map { " (commit \($0))" } ?? "")
    }
}
