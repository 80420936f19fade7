import Testing

@Suite struct SigV4Placeholder {
    @Test func builds() {}
}
