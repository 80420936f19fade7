public import Foundation
public import Logging
import Synchronization

public import Foundation
public import Logging

/// Tunables of ``SnapshotService``.
public struct SnapshotServiceOptions: Sendable {
    /// Block size for new snapshots (see ``Blocks/defaultSize`` for the choice).
    public var blockSize: Int
    /// Longest description, in characters.
    public var maxDescriptionLength: Int
    /// Lease of a snapshot writer that was not given one; renewed automatically while it writes.
    public var writerLease: TimeInterval
    /// Garbage collection keeps unreferenced blocks touched less than this before the oldest live
    /// writer began (or before now): covers clock skew between hosts and coarse file timestamps.
    public var gcSafetyMargin: TimeInterval
    /// How often a batch that lost a race is re-read and retried before `.conflict` reaches the caller.
    public var maxConflictRetries: Int

    public init(
        blockSize: Int = Blocks.defaultSize, maxDescriptionLength: Int = 255, writerLease: TimeInterval = 300,
        gcSafetyMargin: TimeInterval = 30, maxConflictRetries: Int = 50
    ) {
        self.blockSize = blockSize
        self.maxDescriptionLength = maxDescriptionLength
        self.writerLease = writerLease
        self.gcSafetyMargin = gcSafetyMargin
        self.maxConflictRetries = maxConflictRetries
    }
}

/// What a new snapshot is made of (``SnapshotService/beginSnapshot(_:caller:now:)``).
public struct NewSnapshot: Sendable {
    public var owner: ProjectRef
    public var description: String
    /// `.object` (importer) or `.file` (manual import); volumes and templates have their own calls.
    public var source: SnapshotSource
    public var format: String
    public var bootable: Bool
    public var virtualSize: UInt64
    /// The import claim this snapshot completes: the commit marks it imported in the same transaction.
    public var claim: ImportClaim?
    /// The writer's token (defaults to the claim's worker, else a random UUID).
    public var writer: String?
    /// Lease length (defaults to ``SnapshotServiceOptions/writerLease``).
    public var lease: TimeInterval?

    public init(
        owner: ProjectRef, description: String = "", source: SnapshotSource, format: String, bootable: Bool = false,
        virtualSize: UInt64, claim: ImportClaim? = nil, writer: String? = nil, lease: TimeInterval? = nil
    ) {
        self.owner = owner
        self.description = description
        self.source = source
        self.format = format
        self.bootable = bootable
        self.virtualSize = virtualSize
        self.claim = claim
        self.writer = writer
        self.lease = lease
    }
}

/// What garbage collection did.
public struct CollectionReport: Sendable, Equatable {
    public var scanned = 0
    public var removed = 0
    public var removedBytes = 0
    /// Unreferenced but kept: touched after the cutoff (a live writer may need them).
    public var kept = 0
    public init() {}
}

/// What recovery did.
public struct RecoveryReport: Sendable, Equatable {
    /// Pending snapshots whose writer vanished (lease expired, or worker provably dead), now `error`.
    public var failedSnapshots: [SnapshotID] = []
    /// Pending snapshots of vanished imports, removed; their objects' claims released for the next pass.
    public var releasedImports: [SnapshotID] = []
    /// Deletions interrupted by a crash, now finished.
    public var finishedDeletions: [SnapshotID] = []
    public init() {}
}

/// What every aggregate of the core shares: the catalog, the block store, the options and the
/// logger. Each aggregate (``Snapshots``, ``PendingSnapshots``, ``BlockCollector``, ``Volumes``,
/// ``ImportClaims``) holds one and reaches the shared helpers through ``LedgerBacked``.
public struct Ledger: Sendable {
    public let catalog: any Catalog
    public let blocks: any BlockStore
    public let options: SnapshotServiceOptions
    let logger: Logger
    /// This process's worker identity and proof of life, when it runs imports (`run`, `watch`, `import`):
    /// its claims and writers are named after it, and it takes over what a provably dead worker held
    /// without waiting for the lease (see ``WorkerLiveness``). Nil: leases only.
    public let worker: LiveWorker?

    public init(
        catalog: any Catalog, blocks: any BlockStore, options: SnapshotServiceOptions, logger: Logger,
        worker: LiveWorker? = nil
    ) {
        self.catalog = catalog
        self.blocks = blocks
        self.options = options
        self.logger = logger
        self.worker = worker
    }
}

/// The transaction and retry helpers and the access rules every aggregate uses.
///
/// Every mutation reads rows, checks the rules, and applies one conditional batch; a lost race is
/// re-read and retried (``retrying(_:_:)``; see ``Catalog``).
protocol LedgerBacked: Sendable {
    var ledger: Ledger { get }
}

extension LedgerBacked {
    var catalog: any Catalog { ledger.catalog }
    var blocks: any BlockStore { ledger.blocks }
    var options: SnapshotServiceOptions { ledger.options }
    var logger: Logger { ledger.logger }


    /// Runs `body` again while it throws `.conflict`, up to the configured number of times.
    func retrying<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await body()
            } catch let error as SnapshotError where error.code == .conflict && attempt < options.maxConflictRetries {
                attempt += 1
                CatalogConflicts.retried.add(1, ordering: .relaxed)
                logger.debug(
                    "retrying after a catalog conflict", metadata: ["operation": "\(what)", "attempt": "\(attempt)"])
                try await Task.sleep(nanoseconds: UInt64.random(in: 1_000_000...(5_000_000 * UInt64(min(attempt, 10)))))
            }
        }
    }

    /// Whole milliseconds (what every catalog stores).
    static func stamp(_ date: Date) -> Date {
        Date(timeIntervalSince1970: (date.timeIntervalSince1970 * 1000).rounded(.down) / 1000)
    }

    func checkDescription(_ text: String) throws {
        guard text.count <= options.maxDescriptionLength else {
            throw SnapshotError(
                .invalidArgument,
                "description is \(text.count) characters long; at most \(options.maxDescriptionLength) are allowed")
        }
        guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw SnapshotError(.invalidArgument, "description may not contain control characters (newlines, tabs …)")
        }
    }

    /// Whether `caller` may see `snapshot` (see the type's rules).
    public static func canSee(_ snapshot: SnapshotRecord, _ caller: Caller) -> Bool {
        switch caller {
        case .operator: return true
        case .project(let project):
            if snapshot.owner == project { return true }
            guard snapshot.state == .available else { return false }
            return snapshot.visibility == .public || snapshot.sharedWith.contains(project)
        }
    }

    static func isOwner(_ owner: ProjectRef, _ caller: Caller) -> Bool {
        switch caller {
        case .operator: true
        case .project(let project): project == owner
        }
    }

    func visibleSnapshot(_ id: SnapshotID, _ caller: Caller) async throws -> SnapshotRecord {
        guard let snapshot = try await catalog.snapshot(id), Self.canSee(snapshot, caller) else {
            throw SnapshotError.notFound("snapshot \(id)")
        }
        return snapshot
    }

    func ownedSnapshot(_ id: SnapshotID, _ caller: Caller, _ action: String) async throws -> SnapshotRecord {
        let snapshot = try await visibleSnapshot(id, caller)
        guard Self.isOwner(snapshot.owner, caller) else {
            throw SnapshotError(.accessDenied, "only the owner \(snapshot.owner) may \(action) snapshot \(id)")
        }
        return snapshot
    }

    func ownedVolume(_ id: VolumeID, _ caller: Caller) async throws -> VolumeRecord {
        guard let volume = try await catalog.volume(id), Self.isOwner(volume.owner, caller) else {
            throw SnapshotError.notFound("volume \(id)")
        }
        return volume
    }

    func ownedInstance(_ id: InstanceID, _ caller: Caller) async throws -> InstanceRecord {
        guard let instance = try await catalog.instance(id), Self.isOwner(instance.owner, caller) else {
            throw SnapshotError.notFound("instance \(id)")
        }
        return instance
    }

    func heldImport(_ claim: ImportClaim) async throws -> ImportRecord {
        guard let row = try await catalog.importRecord(claim.key) else {
            throw SnapshotError.notFound("import of \(claim.key)")
        }
        guard row.state == .claimed, row.worker == claim.worker else {
            throw SnapshotError(.leaseLost, "the claim on \(claim.key) is no longer held by \(claim.worker)")
        }
        return row
    }

    /// Writes clearing `snapshotInProgress` on the volumes a pending snapshot holds.
    func releaseVolumes(of id: SnapshotID, source: SnapshotSource) async throws -> [CatalogWrite] {
        let candidates: [VolumeRecord]
        switch source {
        case .volume(let volumeID): candidates = [try await catalog.volume(volumeID)].compactMap { $0 }
        case .template: candidates = try await catalog.volumes()
        default: return []
        }
        return candidates.filter { $0.snapshotInProgress == id }.map { volume in
            var volume = volume
            volume.snapshotInProgress = nil
            return .updateVolume(volume)
        }
    }

    static func requireAvailable(_ snapshot: SnapshotRecord, _ what: String) throws {
        guard snapshot.state == .available else {
            throw SnapshotError(
                .invalidState,
                "snapshot \(snapshot.id) is \(snapshot.state.rawValue); only an available one can be \(what)")
        }
    }
}

/// How many catalog batches of this process lost an optimistic-version race and were re-read and retried
/// (a figure for a worker's pass summary: workers on different objects should cause none).
public enum CatalogConflicts {
    static let retried = Atomic<Int>(0)

    /// The retries so far, process-wide.
    public static var retriedSoFar: Int { retried.load(ordering: .relaxed) }
}
