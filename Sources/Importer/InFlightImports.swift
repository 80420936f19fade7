import Synchronization

/// The imports a pipeline is running right now and how far each has got: what `run` on a terminal
/// draws as one live line per import. The pipeline adds an import when it has claimed the object and
/// removes it when the import ends, whatever the outcome.
public final class InFlightImports: Sendable {
    /// One import in flight.
    public struct Entry: Sendable {
        public let key: String
        public let progress: ImportProgress
        /// The order in which imports began, so lines keep their place while they run.
        public let sequence: Int
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var next = 0
    }
    private let state = Mutex(State())

    public init() {}

    /// Records that `key` is being imported, with its progress.
    public func begin(_ key: String, progress: ImportProgress) {
        state.withLock { state in
            state.entries[key] = Entry(key: key, progress: progress, sequence: state.next)
            state.next += 1
        }
    }

    /// Records that the import of `key` ended.
    public func end(_ key: String) {
        _ = state.withLock { $0.entries.removeValue(forKey: key) }
    }

    /// The imports in flight, oldest first.
    public var entries: [Entry] {
        state.withLock { Array($0.entries.values) }.sorted { $0.sequence < $1.sequence }
    }
}
