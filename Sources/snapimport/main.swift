// The executable: runs the command line and turns its outcome into the process's exit status.
// This is the only place in snapimport that ends the process (architecture: exit statuses 0/1/2).
import SnapImportCLI

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

let status = await SnapImport.execute(Array(CommandLine.arguments.dropFirst()))
exit(status)
