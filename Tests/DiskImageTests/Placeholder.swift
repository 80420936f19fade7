import Testing

@Suite struct DiskImagePlaceholder {
    @Test func builds() {}
}
