import Testing

@Suite struct ImporterPlaceholder {
    @Test func builds() {}
}
