// Placeholder until the VHDX reader lands: same shape as every reader.

/// Reads a VHDX image (placeholder: refuses every image).
public struct VHDXReader: DiskReader {
    public let info: ImageInfo

    /// Validates the image's metadata against `limits`; throws `DiskImageError` on any violation.
    public init(source: any ByteSource, limits: InspectionLimits) throws {
        throw DiskImageError(.unsupportedFeature, "VHDX images are not supported yet")
    }

    public mutating func next() throws -> Extent? { nil }
}
