import Foundation
import PackagePlugin

/// Writes `GitCommit.swift` (`let gitCommit = "<short commit>[-dirty]"`, empty outside a git checkout) into
/// the plugin's output folder before every build of the target that uses it, so `snapimport --version`
/// names the commit it was built from, whatever builds it (`swift build`, scripts/install, CI).
///
/// A prebuild command runs on every build; the file is replaced only when the commit changed, so an
/// unchanged checkout recompiles nothing.
@main
struct GitCommitPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) async throws -> [Command] {
        let output = context.pluginWorkDirectoryURL.appending(path: "generated")
        let script = """
            set -u
            mkdir -p "$2"
            commit=$(git -C "$1" rev-parse --short=12 HEAD 2>/dev/null || true)
            if [ -n "$commit" ] && [ -n "$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
                commit="$commit-dirty"
            fi
            printf '/// The git commit of this build (empty when not built from a checkout); written by GitCommitPlugin.\\n' >"$2/.GitCommit.tmp"
            printf 'let gitCommit = "%s"\\n' "$commit" >>"$2/.GitCommit.tmp"
            if cmp -s "$2/.GitCommit.tmp" "$2/GitCommit.swift"; then rm -f "$2/.GitCommit.tmp"
            else mv "$2/.GitCommit.tmp" "$2/GitCommit.swift"; fi
            """
        return [
            .prebuildCommand(
                displayName: "Recording the git commit of \(target.name)",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: ["-c", script, "sh", context.package.directoryURL.path, output.path],
                outputFilesDirectory: output)
        ]
    }
}
