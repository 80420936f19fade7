/// Decodes integer fields of on-disk headers and tables. Callers check bounds before reading.
///
/// A small named type rather than an extension on `[UInt8]`, so several readers in this module can each
/// keep their own helpers without clashing.
struct FieldReader {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func u8(_ offset: Int) -> UInt8 { bytes[offset] }

    func be16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }

    func be32(_ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8
            | UInt32(bytes[offset + 3])
    }

    func be64(_ offset: Int) -> UInt64 { UInt64(be32(offset)) << 32 | UInt64(be32(offset + 4)) }

    func le16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8 }

    func le32(_ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
            | UInt32(bytes[offset + 3]) << 24
    }

    func le64(_ offset: Int) -> UInt64 { UInt64(le32(offset)) | UInt64(le32(offset + 4)) << 32 }

    /// True when every byte of `bytes` is zero (checked a word at a time).
    static func isAllZero(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { isAllZero($0) }
    }

    /// True when every byte of `raw` is zero (checked a word at a time).
    static func isAllZero(_ raw: UnsafeRawBufferPointer) -> Bool {
        let words = raw.count / 8
        var i = 0
        while i < words {
            if raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            i += 1
        }
        var j = words * 8
        while j < raw.count {
            if raw[j] != 0 { return false }
            j += 1
        }
        return true
    }
}
