import DiskImage
import Foundation
import Testing

/// The Debian archivers the container tests wrap disks with (tar, gzip, xz, zstd, bzip2, zip; scripts/test
/// installs them), and fixture helpers around them.
enum Archivers {
    static let tools = ["tar", "gzip", "xz", "zstd", "bzip2", "zip"]

    static func path(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// True when qemu-img/qemu-io and every archiver are installed.
    static let available: Bool = Oracle.available && tools.allSatisfy { path($0) != nil }

    static let skipReason: Comment =
        "qemu-img/qemu-io or tar/gzip/xz/zstd/bzip2/zip missing: install qemu-utils xz-utils zstd bzip2 zip (scripts/test does)"

    /// Runs `tool args…` (tests run in parallel: never change the working directory; paths are absolute, or
    /// relative to `dir` through `tar -C`).
    @discardableResult
    static func run(_ tool: String, _ args: [String]) throws -> String {
        guard let binary = path(tool) else { throw Oracle.ToolError(description: "\(tool) not found") }
        return try Oracle.run(binary, args)
    }

    /// Runs tar with `dir` as its directory (`-C`), so member names are relative.
    @discardableResult
    static func tarIn(_ dir: TempDir, _ args: [String]) throws -> String {
        try run("tar", ["-C", dir.url.path] + args)
    }

    /// The disk formats wrapped in the tests, with qemu-img's name and its create options.
    enum Disk: String, CaseIterable, CustomStringConvertible {
        case raw, qcow2, vmdk, vhd, vhdx, vdi
        var description: String { rawValue }
        var qemuFormat: String { self == .vhd ? "vpc" : rawValue }
        var options: [String] {
            switch self {
            case .vmdk: ["-o", "subformat=streamOptimized"]
            case .vhd: ["-o", "subformat=dynamic"]
            case .qcow2: ["-c", "-o", "cluster_size=65536"]
            default: []
            }
        }
        var format: ImageFormat {
            switch self {
            case .raw: .raw
            case .qcow2: .qcow2
            case .vmdk: .vmdk
            case .vhd: .vhd
            case .vhdx: .vhdx
            case .vdi: .vdi
            }
        }
    }

    /// A 4 MiB disk with an MBR and a few patterns, converted to `disk`'s format as `name` in `dir`.
    @discardableResult
    static func makeDisk(_ disk: Disk, in dir: TempDir, name: String, size: String = "4M", seed: UInt8 = 1) throws
        -> String
    {
        let base = dir.path("\(name).base.raw")
        try Oracle.qemuImg("create", "-q", "-f", "raw", base, size)
        try Oracle.qemuIO(
            base, format: "raw",
            ["write -P \(seed) 0 4k", "write -P 0x55 510 1", "write -P 0xaa 511 1", "write -P 0x5a 1m 192k",
             "write -P \(seed &+ 7) 3m 12k"])
        let out = dir.path(name)
        if disk == .raw {
            try FileManager.default.moveItem(atPath: base, toPath: out)
        } else {
            try Oracle.qemuImg(["convert", "-q", "-f", "raw", "-O", disk.qemuFormat] + disk.options + [base, out])
            try FileManager.default.removeItem(atPath: base)
        }
        return out
    }

    /// A minimal OVF descriptor naming `hrefs` (one Disk per file).
    static func ovf(_ hrefs: [String], compression: String? = nil) -> String {
        let files = hrefs.enumerated().map { index, href in
            "    <File ovf:href=\"\(href)\" ovf:id=\"file\(index)\"\(compression.map { " ovf:compression=\"\($0)\"" } ?? "")/>"
        }.joined(separator: "\n")
        let disks = hrefs.indices.map { index in
            "    <Disk ovf:capacity=\"4\" ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:diskId=\"vmdisk\(index)\" "
                + "ovf:fileRef=\"file\(index)\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>"
        }.joined(separator: "\n")
        return """
            <?xml version="1.0" encoding="UTF-8"?>
            <!-- written by the DiskImage tests -->
            <Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
              <References>
            \(files)
              </References>
              <DiskSection>
                <Info>Virtual disk information</Info>
            \(disks)
              </DiskSection>
              <VirtualSystem ovf:id="vm">
                <Info>A virtual machine</Info>
                <Name>vm &amp; co</Name>
              </VirtualSystem>
            </Envelope>
            """
    }

    /// A tar (pax format) of `members` (names in `dir`), in that order.
    @discardableResult
    static func tar(_ name: String, _ members: [String], in dir: TempDir, options: [String] = ["--format=pax"])
        throws -> String
    {
        try tarIn(dir, options + ["-cf", dir.path(name)] + members)
        return dir.path(name)
    }

    /// An OVA: `descriptor.ovf` first, then the disk members.
    @discardableResult
    static func ova(_ name: String, ovf text: String, disks: [String], in dir: TempDir) throws -> String {
        try dir.write("descriptor.ovf", Array(text.utf8))
        return try tar(name, ["descriptor.ovf"] + disks, in: dir, options: ["--format=ustar"])
    }

    /// Compresses `file` (a name in `dir`) with `tool`, keeping it; returns the compressed file's path.
    @discardableResult
    static func compress(_ file: String, with tool: String, in dir: TempDir) throws -> String {
        let path = dir.path(file)
        switch tool {
        case "gzip": try run("gzip", ["-k", "-n", "-f", path]); return path + ".gz"
        case "xz": try run("xz", ["-k", "-f", "-T1", path]); return path + ".xz"
        case "zstd": try run("zstd", ["-q", "-k", "-f", path]); return path + ".zst"
        case "bzip2": try run("bzip2", ["-k", "-f", path]); return path + ".bz2"
        default: throw Oracle.ToolError(description: "unknown compressor \(tool)")
        }
    }

    /// A zip (deflate) of `members`.
    @discardableResult
    static func zip(_ name: String, _ members: [String], in dir: TempDir, stored: Bool = false) throws -> String {
        try run("zip", ["-q", "-X", "-j"] + (stored ? ["-0"] : []) + [dir.path(name)] + members.map { dir.path($0) })
        return dir.path(name)
    }
}
