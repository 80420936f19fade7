// Placeholder until the VDI reader lands: same shape as every reader.

/// Reads a VDI image (placeholder: refuses every image).
public struct VDIReader: DiskReader {
    public let info: ImageInfo

    /// Validates the image's metadata against `limits`; throws `DiskImageError` on any violation.
    public init(source: any ByteSource, limits: InspectionLimits) throws {
        throw DiskImageError(.unsupportedFeature, "VDI images are not supported yet")
    }

    public mutating func next() throws -> Extent? { nil }
}
