import DiskImage
import Foundation
import Testing

/// Detection from content only, the claimed-format check, and the raw/ISO readers.
@Suite struct DetectionTests {
    /// An ISO 9660 image: system area, primary volume descriptor, optional El Torito boot record, terminator.
    static func iso(bootRecord: Bool, sectors: Int = 40) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: sectors * 2048)
        func descriptor(_ sector: Int, type: UInt8) {
            let base = sector * 2048
            bytes[base] = type
            bytes.replaceSubrange(base + 1..<base + 6, with: Array("CD001".utf8))
            bytes[base + 6] = 1
        }
        descriptor(16, type: 1)
        bytes.replaceSubrange(16 * 2048 + 40..<16 * 2048 + 46, with: Array("VOLUME".utf8))
        // Volume space size (both-endian 32-bit at 80) and logical block size (both-endian 16-bit at 128).
        let pvd = 16 * 2048
        for i in 0..<4 {
            bytes[pvd + 80 + i] = UInt8(truncatingIfNeeded: sectors >> (8 * i))
            bytes[pvd + 87 - i] = UInt8(truncatingIfNeeded: sectors >> (8 * i))
        }
        bytes[pvd + 128] = 0x00
        bytes[pvd + 129] = 0x08
        bytes[pvd + 130] = 0x08
        bytes[pvd + 131] = 0x00
        var next = 17
        if bootRecord {
            descriptor(17, type: 0)
            let ident = Array("EL TORITO SPECIFICATION".utf8)
            bytes.replaceSubrange(17 * 2048 + 7..<17 * 2048 + 7 + ident.count, with: ident)
            next = 18
        }
        descriptor(next, type: 255)
        for i in (30 * 2048)..<(31 * 2048) { bytes[i] = UInt8(truncatingIfNeeded: i) }
        return bytes
    }

    static func qcow2Magic(_ bytes: inout [UInt8]) {
        bytes.replaceSubrange(0..<4, with: [0x51, 0x46, 0x49, 0xFB])
    }

    @Test func emptyFileIsEmptyImage() {
        #expect(throws: DiskImageError(.emptyImage, "")) { try DiskImage.detect(MemoryByteSource([])) }
        let result = DiskImage.inspect(MemoryByteSource([]))
        #expect(result.verdict == .rejected)
        #expect(result.reasons.map(\.code) == ["EmptyImage"])
    }

    @Test func plainBytesAreRaw() throws {
        let bytes = [UInt8](repeating: 7, count: 10_000)
        #expect(try DiskImage.detect(MemoryByteSource(bytes)) == .raw)
        let reader = try DiskImage.open(MemoryByteSource(bytes))
        // Rounded up to whole sectors, as qemu does; the padding reads as zeros.
        #expect(reader.info.virtualSize == 10_240)
        #expect(reader.info.bootable == false)
        #expect(try Oracle.readAll(reader) == bytes + [UInt8](repeating: 0, count: 240))
    }

    @Test func textIsNotADiskImage() throws {
        let text = Array(String(repeating: "#cloud-config\nhostname: é-host\n", count: 300).utf8)
        #expect(throws: DiskImageError(.unknownFormat, "")) { try DiskImage.detect(MemoryByteSource(text)) }
        let result = DiskImage.inspect(MemoryByteSource(text))
        #expect(result.reasons.map(\.code) == ["UnknownFormat"])
        #expect(throws: DiskImageError(.unknownFormat, "")) { try DiskImage.open(MemoryByteSource(Array("hi\n".utf8))) }
        // Binary bytes that happen to be high (not UTF-8) stay raw.
        #expect(try DiskImage.detect(MemoryByteSource([UInt8](repeating: 0xAB, count: 4096))) == .raw)
    }

    @Test func rawWithMBRIsBootable() throws {
        var bytes = [UInt8](repeating: 0, count: 8192)
        bytes[510] = 0x55
        bytes[511] = 0xAA
        let reader = try DiskImage.open(MemoryByteSource(bytes))
        #expect(reader.info.format == .raw)
        #expect(reader.info.bootable)
        #expect(try Oracle.readAll(reader) == bytes)
    }

    @Test func rawWithGPTIsBootable() throws {
        var bytes = [UInt8](repeating: 0, count: 16384)
        bytes.replaceSubrange(512..<520, with: Array("EFI PART".utf8))
        #expect(try DiskImage.open(MemoryByteSource(bytes)).info.bootable)
    }

    @Test func rawZeroChunksAreZeroExtents() throws {
        var bytes = [UInt8](repeating: 0, count: 12 << 20)
        bytes[5 << 20] = 1
        var reader = try DiskImage.open(MemoryByteSource(bytes))
        var kinds: [String] = []
        while let extent = try reader.next() {
            if case .data = extent { kinds.append("data") } else { kinds.append("zero") }
        }
        #expect(kinds == ["zero", "data", "zero"])
    }

    @Test func isoIsDetectedAndElToritoMakesItBootable() throws {
        let plain = Self.iso(bootRecord: false)
        let boot = Self.iso(bootRecord: true)
        #expect(try DiskImage.detect(MemoryByteSource(plain)) == .iso)
        let plainReader = try DiskImage.open(MemoryByteSource(plain))
        #expect(plainReader.info.format == .iso)
        #expect(plainReader.info.bootable == false)
        let bootReader = try DiskImage.open(MemoryByteSource(boot))
        #expect(bootReader.info.bootable)
        #expect(try Oracle.readAll(bootReader) == boot)
    }

    @Test func isoWithMBRIsNotAmbiguous() throws {
        var bytes = Self.iso(bootRecord: true)
        bytes[510] = 0x55
        bytes[511] = 0xAA
        bytes.replaceSubrange(512..<520, with: Array("EFI PART".utf8))
        #expect(try DiskImage.detect(MemoryByteSource(bytes)) == .iso)
    }

    @Test func isoCarryingQcow2HeaderIsAmbiguous() {
        var bytes = Self.iso(bootRecord: false)
        Self.qcow2Magic(&bytes)
        #expect(throws: DiskImageError(.ambiguousFormat, "")) { try DiskImage.detect(MemoryByteSource(bytes)) }
        let result = DiskImage.inspect(MemoryByteSource(bytes))
        #expect(result.reasons.first?.message.contains("qcow2") == true)
        #expect(result.reasons.first?.message.contains("iso") == true)
    }

    @Test func qcow2WithVHDFooterIsAmbiguous() {
        var bytes = [UInt8](repeating: 0, count: 4096)
        Self.qcow2Magic(&bytes)
        bytes.replaceSubrange(4096 - 512..<4096 - 504, with: Array("conectix".utf8))
        #expect(throws: DiskImageError(.ambiguousFormat, "")) { try DiskImage.detect(MemoryByteSource(bytes)) }
    }

    @Test func claimedRawForAnISOIsAccepted() throws {
        let bytes = Self.iso(bootRecord: false)
        #expect(try DiskImage.open(MemoryByteSource(bytes), claimedFormat: .raw).info.format == .iso)
    }

    @Test func claimedFormatMustMatch() {
        let bytes = [UInt8](repeating: 1, count: 4096)
        #expect(throws: DiskImageError(.formatMismatch, "")) {
            try DiskImage.open(MemoryByteSource(bytes), claimedFormat: .qcow2)
        }
        let result = DiskImage.inspect(MemoryByteSource(bytes), claimedFormat: .vmdk)
        #expect(result.verdict == .rejected)
        #expect(result.format == .raw)
        #expect(result.reasons.map(\.code) == ["FormatMismatch"])
    }

    @Test func bareVMDKDescriptorIsExternalExtent() {
        let text = """
            # Disk DescriptorFile
            version=1
            createType="monolithicFlat"
            RW 2048 FLAT "/etc/shadow" 0
            """
        #expect(throws: DiskImageError(.externalExtentNotAllowed, "")) {
            try DiskImage.detect(MemoryByteSource(Array(text.utf8)))
        }
    }

    @Test func luksIsEncrypted() {
        var bytes = [UInt8](repeating: 0, count: 4096)
        bytes.replaceSubrange(0..<6, with: [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE])
        #expect(throws: DiskImageError(.encryptedImage, "")) { try DiskImage.detect(MemoryByteSource(bytes)) }
    }

    @Test func unsupportedQemuFormatIsUnknown() {
        var bytes = [UInt8](repeating: 0, count: 4096)
        bytes.replaceSubrange(0..<4, with: Array("QED".utf8) + [0])
        #expect(throws: DiskImageError(.unknownFormat, "")) { try DiskImage.detect(MemoryByteSource(bytes)) }
    }

    @Test func virtualSizeLimitAppliesToRaw() {
        let bytes = [UInt8](repeating: 1, count: 8192)
        #expect(throws: DiskImageError(.virtualSizeTooLarge, "")) {
            try DiskImage.open(MemoryByteSource(bytes), limits: .init(maxVirtualSize: 4096))
        }
    }

    @Test func inspectNeverThrowsOnGarbage() {
        // qcow2 magic followed by garbage: a reason, not a crash.
        var bytes = [UInt8](repeating: 0xFF, count: 1024)
        Self.qcow2Magic(&bytes)
        let result = DiskImage.inspect(MemoryByteSource(bytes))
        #expect(result.verdict == .rejected)
        #expect(result.format == .qcow2)
        #expect(!result.reasons.isEmpty)
    }

    @Test func convertReportsAnUnwritableOutput() throws {
        var reader = try DiskImage.open(MemoryByteSource([UInt8](repeating: 1, count: 4096)))
        #expect(throws: DiskImageError(.ioError, "")) {
            try DiskImage.convert(&reader, toRawFile: "/nonexistent-\(UInt32.random(in: 0...UInt32.max))/disk.raw")
        }
    }

    @Test func convertWritesExactBytes() throws {
        let dir = try TempDir()
        var bytes = [UInt8](repeating: 0, count: 9 << 20)
        for i in stride(from: 0, to: bytes.count, by: 65537) { bytes[i] = 0x5A }
        bytes.replaceSubrange(0..<(4 << 20), with: [UInt8](repeating: 0, count: 4 << 20))
        var reader = try DiskImage.open(MemoryByteSource(bytes))
        let result = try DiskImage.convert(&reader, toRawFile: dir.path("out.raw"))
        #expect(try dir.read("out.raw") == bytes)
        #expect(result.virtualSize == UInt64(bytes.count))
        #expect(result.dataBytesWritten == 5 << 20)  // the all-zero first 4 MiB chunk is a hole
    }

    @Test func inspectionJSONHasEveryField() throws {
        let result = DiskImage.inspect(MemoryByteSource([]))
        let json = String(decoding: try JSONEncoder().encode(result), as: UTF8.self)
        for key in ["\"format\":null", "\"virtualSize\":0", "\"allocatedBytes\":0", "\"bootable\":false",
            "\"verdict\":\"rejected\"", "\"code\":\"EmptyImage\""]
        {
            #expect(json.contains(key), "\(json)")
        }
    }

    @Test(.enabled(if: Oracle.available, Oracle.skipReason))
    func rawAndISOMatchQemu() throws {
        let dir = try TempDir()
        var odd = [UInt8](repeating: 0, count: 3 * 1024 * 1024 + 777)
        for i in stride(from: 0, to: odd.count, by: 4093) { odd[i] = UInt8(truncatingIfNeeded: i / 4093 + 1) }
        let raw = try dir.write("odd.img", odd)
        try Oracle.assertMatchesReference(raw, qemuFormat: "raw", expected: .raw)
        try Oracle.assertConvertMatchesReference(raw, qemuFormat: "raw", in: dir)
        let iso = try dir.write("boot.iso", Self.iso(bootRecord: true))
        let info = try Oracle.assertMatchesReference(iso, qemuFormat: "raw", expected: .iso)
        #expect(info.bootable)
    }
}
