import CCompression

extension DiskImage {
    /// Tunes the C allocator for a conversion: keeps multi-MiB buffers (extents) in the heap instead of
    /// mapping and unmapping each one, and stops the heap from being trimmed after every free.
    ///
    /// With glibc's defaults every extent freed on the writer thread returns its pages to the kernel and the
    /// next one faults in fresh zeroed pages; measured here, conversion runs markedly faster with this set
    /// (scripts/bench-convert); for an import (`import`, `run`, `watch`) it saves about a third of the
    /// system CPU (page faults of fresh 8 MiB chunks and 1 MiB blocks) for ~10–20 MiB more peak RSS
    /// (scripts/bench). The heap then keeps up to its peak until exit, which for `watch` stays bounded
    /// by the pipelines' own limits. It changes process-wide settings, so only an executable calls it
    /// (once, at the start of a command); the library never does. A no-op where the allocator is not glibc's.
    public static func tuneAllocatorForLargeExtents() {
        #if canImport(Glibc)
        _ = mallopt(M_MMAP_THRESHOLD, 64 << 20)
        _ = mallopt(M_TRIM_THRESHOLD, 512 << 20)
        #endif
    }
}
