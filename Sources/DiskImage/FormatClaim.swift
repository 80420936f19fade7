/// What an uploader says a file is (a sidecar's `format`, `--format`): a disk format, a container, or both.
///
/// Names, case-insensitive, parts joined by dots as file suffixes are:
/// - a disk format (`raw`, `iso`, `qcow2`, `vmdk`, `vhd` or `vpc`, `vhdx`, `vdi`): the disk, bare or inside
///   any container;
/// - an archive (`tar`, `ova`, `zip`): that archive, uncompressed; `tar` also accepts an OVA (an OVA is a tar);
/// - a compression (`gz`/`gzip`, `xz`, `zst`/`zstd`, `bz2`/`bzip2`): content compressed so, archive or not;
/// - a disk format and a compression (`raw.xz`, `qcow2.gz`): that disk, alone in that compressed stream;
/// - an archive and a compression (`tar.gz`, `ova.xz`): that archive, compressed so.
///
/// Content that is not what was claimed is `FormatMismatch`.
public struct FormatClaim: Sendable, Equatable, CustomStringConvertible {
    /// The disk format claimed, if any.
    public var format: ImageFormat?
    /// The archive claimed (`tar`, `ova`, `zip`), if any.
    public var archive: ContainerKind?
    /// The compression claimed (`gzip`, `xz`, `zstd`, `bzip2`), if any.
    public var compression: ContainerKind?
    /// The name as given.
    public var description: String

    /// Parses `text`; nil when it is not one of the names above.
    public init?(_ text: String) {
        description = text
        let parts = text.lowercased().split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard (1...2).contains(parts.count) else { return nil }
        func disk(_ part: String) -> ImageFormat? { part == "vpc" ? .vhd : ImageFormat(rawValue: part) }
        func archive(_ part: String) -> ContainerKind? {
            ["tar": .tar, "ova": .ova, "zip": .zip][part]
        }
        func compression(_ part: String) -> ContainerKind? {
            [
                "gz": .gzip, "gzip": .gzip, "xz": .xz, "zst": .zstd, "zstd": .zstd, "bz2": .bzip2,
                "bzip2": .bzip2,
            ][part]
        }
        let first = parts[0]
        if parts.count == 1 {
            format = disk(first)
            self.archive = archive(first)
            self.compression = compression(first)
            guard format != nil || self.archive != nil || self.compression != nil else { return nil }
            return
        }
        guard let packed = compression(parts[1]) else { return nil }
        self.compression = packed
        if let format = disk(first) {
            self.format = format
        } else if let kind = archive(first), kind != .zip {
            self.archive = kind
        } else {
            return nil
        }
    }

    /// Every name `init` accepts, for messages.
    public static let names =
        "a disk format (raw, iso, qcow2, vmdk, vhd|vpc, vhdx, vdi), an archive (tar, ova, zip), a compression "
        + "(gz, xz, zst, bz2), or FORMAT.COMPRESSION (raw.xz, qcow2.gz, tar.gz, ova.gz …)"

    /// Refuses content that is not what was claimed.
    ///
    /// - Parameters:
    ///   - container: the outermost archive, else the compression of a single stream (`ImageInfo.container`).
    ///   - compression: the compression around everything (`ImageInfo.compression`).
    /// - Throws: `FormatMismatch` naming the claim and what the content is.
    func check(format detected: ImageFormat, container: ContainerKind?, compression detectedCompression: ContainerKind?)
        throws
    {
        try DiskImage.check(claimed: format, detected: detected)
        let detectedArchive = container.flatMap { $0.isCompression ? nil : $0 }
        var matches = true
        if let compression, compression != detectedCompression { matches = false }
        if let archive {
            if !(detectedArchive == archive || (archive == .tar && detectedArchive == .ova)) { matches = false }
            if self.compression == nil && detectedCompression != nil { matches = false }
        } else if format != nil && compression != nil && detectedArchive != nil {
            // raw.xz: a disk alone in the stream, not an archive.
            matches = false
        }
        guard matches else {
            let parts = [detectedArchive?.rawValue, detectedCompression?.rawValue].compactMap { $0 }
            let what = parts.isEmpty ? "a bare \(detected) image" : "\(detected) inside \(parts.joined(separator: "+"))"
            throw DiskImageError(.formatMismatch, "the image was declared as \(description) but its content is \(what)")
        }
    }
}
