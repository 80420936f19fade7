import CCompression

extension DiskImage {
    /// Tunes the C allocator for a conversion: keeps multi-MiB buffers (extents) in the heap instead of
    /// mapping and unmapping each one, and stops the heap from being trimmed after every free.
    ///
    /// With glibc's defaults every extent freed on the writer thread returns its pages to the kernel and the
    /// next one faults in fresh zeroed pages; measured here, conversion runs markedly faster with this set
    /// (scripts/bench-convert). It changes process-wide settings, so only an executable calls it (once, at
    /// the start of a command); the library never does. A no-op where the allocator is not glibc's.
    public static func tuneAllocatorForLargeExtents() {
        tuneAllocator(mmapThreshold: 64 << 20, trimThreshold: 512 << 20)
    }

    /// Tunes the C allocator for imports (`import`, `run`, `watch`): 8 MiB chunks, extents and 1 MiB
    /// blocks come from the heap (no page faults of fresh mappings for each), free heap above 64 MiB
    /// is still returned, and at most 2 arenas keep free memory (glibc's default is 8 per core, each
    /// holding on to its own free chunks: the peak RSS of one import then depended on how many
    /// threads had happened to allocate).
    ///
    /// Measured on the 2 GiB raw image (scripts/bench shape, 4 runs each): 139–168 MiB peak RSS and
    /// 0.38–0.47 s of system CPU, against 169–185 MiB / 0.56–0.67 s untuned and 200–229 MiB with the
    /// same thresholds but unbounded arenas. Same rules as ``tuneAllocatorForLargeExtents()``:
    /// executables only.
    public static func tuneAllocatorForImports() {
        tuneAllocator(mmapThreshold: 16 << 20, trimThreshold: 64 << 20, arenas: 2)
    }

    private static func tuneAllocator(mmapThreshold: Int32, trimThreshold: Int32, arenas: Int32? = nil) {
        #if canImport(Glibc)
        if let arenas { _ = mallopt(M_ARENA_MAX, arenas) }
        _ = mallopt(M_MMAP_THRESHOLD, mmapThreshold)
        _ = mallopt(M_TRIM_THRESHOLD, trimThreshold)
        #endif
    }
}
