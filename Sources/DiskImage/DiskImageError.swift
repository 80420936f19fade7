/// Why an image was refused or could not be read. The `code` is the stable rejection code of
/// architecture.md; the message names the offending field and its value.
public struct DiskImageError: Error, CustomStringConvertible, Sendable {
    /// A stable, machine-readable code (architecture.md, "Rejection codes").
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case unknownFormat = "UnknownFormat"
            case ambiguousFormat = "AmbiguousFormat"
            case formatMismatch = "FormatMismatch"
            case emptyImage = "EmptyImage"
            case truncatedImage = "TruncatedImage"
            case corruptImage = "CorruptImage"
            case checksumMismatch = "ChecksumMismatch"
            case unsupportedFeature = "UnsupportedFeature"
            case backingFileNotAllowed = "BackingFileNotAllowed"
            case externalDataFileNotAllowed = "ExternalDataFileNotAllowed"
            case externalExtentNotAllowed = "ExternalExtentNotAllowed"
            case differencingDiskNotAllowed = "DifferencingDiskNotAllowed"
            case encryptedImage = "EncryptedImage"
            case dirtyLog = "DirtyLog"
            case decompressionFailed = "DecompressionFailed"
            case virtualSizeTooLarge = "VirtualSizeTooLarge"
            case metadataTooLarge = "MetadataTooLarge"
            case notFound = "NotFound"
            case unsupportedContainer = "UnsupportedContainer"
            case multipleDisks = "MultipleDisks"
            /// Reading the source failed (local I/O); not a property of the image.
            case ioError = "IOError"
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The stable name, e.g. `"BackingFileNotAllowed"`.
        public var name: String { value.rawValue }
        public var description: String { value.rawValue }

        public static let unknownFormat = Code(.unknownFormat)
        public static let ambiguousFormat = Code(.ambiguousFormat)
        public static let formatMismatch = Code(.formatMismatch)
        public static let emptyImage = Code(.emptyImage)
        public static let truncatedImage = Code(.truncatedImage)
        public static let corruptImage = Code(.corruptImage)
        public static let checksumMismatch = Code(.checksumMismatch)
        public static let unsupportedFeature = Code(.unsupportedFeature)
        public static let backingFileNotAllowed = Code(.backingFileNotAllowed)
        public static let externalDataFileNotAllowed = Code(.externalDataFileNotAllowed)
        public static let externalExtentNotAllowed = Code(.externalExtentNotAllowed)
        public static let differencingDiskNotAllowed = Code(.differencingDiskNotAllowed)
        public static let encryptedImage = Code(.encryptedImage)
        public static let dirtyLog = Code(.dirtyLog)
        public static let decompressionFailed = Code(.decompressionFailed)
        public static let virtualSizeTooLarge = Code(.virtualSizeTooLarge)
        public static let metadataTooLarge = Code(.metadataTooLarge)
        public static let notFound = Code(.notFound)
        /// A container snapimport does not read: nested archives, split OVF files, several compressions.
        public static let unsupportedContainer = Code(.unsupportedContainer)
        /// An archive (OVA, tar, zip) holding more than one disk image.
        public static let multipleDisks = Code(.multipleDisks)
        public static let ioError = Code(.ioError)
    }

    public let code: Code
    public let message: String
    public let underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String { "\(code): \(message)" }
}

extension DiskImageError: Equatable {
    /// Errors compare by code only (house style): tests assert the reason, not the wording.
    public static func == (lhs: DiskImageError, rhs: DiskImageError) -> Bool { lhs.code == rhs.code }
}
