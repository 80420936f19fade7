import Testing

@Suite struct SnapshotCorePlaceholder {
    @Test func builds() {}
}
