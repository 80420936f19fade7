import ArgumentParser
import DiskImage

/// Opens the byte source an image `SOURCE` argument names: a local path, or `s3://bucket/key`.
///
/// An `s3://` source is read with ranged GETs pinned to the object's ETag (`S3ObjectByteSource`).
///
/// - Parameters:
///   - string: the SOURCE argument as given (an `s3://` key is taken literally).
///   - global: the shared options (configuration path) an S3 source needs.
/// - Throws: `DiskImageError` (`NotFound`, `IOError`) for a local file, `ValidationError` for a source kind
///   that is not available.
func openSource(_ string: String, global: GlobalOptions) async throws -> any ByteSource {
    if string.hasPrefix("s3://") {
        return try await AppContext(global).openS3Source(string)
    }
    return try FileByteSource(path: string)
}

/// Parses a `--format` value with its container forms (`raw.xz`, `ova`, `tar.gz`; see `FormatClaim`).
func parseFormatClaim(_ text: String) throws -> FormatClaim {
    guard let claim = FormatClaim(text) else {
        throw ValidationError("unknown format '\(text)' (expected \(FormatClaim.names))")
    }
    return claim
}

/// Parses a `--format` value: snapimport's names plus qemu's aliases (`vpc` for VHD).
func parseImageFormat(_ text: String) throws -> ImageFormat {
    let lowered = text.lowercased()
    if let format = ImageFormat(rawValue: lowered) { return format }
    if lowered == "vpc" { return .vhd }
    let names = ImageFormat.allCases.map(\.rawValue).joined(separator: ", ")
    throw ValidationError("unknown format '\(text)' (expected one of: \(names), or vpc)")
}
