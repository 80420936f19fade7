public import DiskImage
import Foundation
public import Logging
public import SnapshotCore

/// The per-object import: claim → read (ranged GETs pinned to the ETag) → validate → blocks →
/// commit → receipt → copy to processed/ → delete from incoming/ (architecture.md, "Data flow").
///
/// Nothing is lost: the source leaves incoming/ only after the snapshot is committed and its copy
/// succeeded. A crash between commit and move is repaired by the next pass (the catalog answers
/// `imported`, the move is finished, nothing is imported twice).
public struct ImportPipeline: ObjectImporting {
    public struct Settings: Sendable {
        public var bucket: String
        public var layout: BucketLayout
        public var limits: InspectionLimits
        /// Failed passes after which a transiently failing object goes to failed/.
        public var maxAttempts: Int
        public var leaseDuration: Duration
        /// Identifies this worker in claims: a `WorkerID` (`name:pid:nonce`) whose proof of life the
        /// store's `WorkerLiveness` holds, so another worker can take its claims over when it dies.
        public var workerID: String
        /// How often a long import logs its progress.
        public var progressInterval: Duration
        /// Bytes per ranged GET, chunks kept by the byte source, and chunks fetched ahead (in
        /// parallel) of a sequential reader. Memory is bounded by `chunkSize × (cachedChunks + readAhead)`.
        /// Large, parallel ranges measured fastest against SeaweedFS (scripts/bench).
        public var chunkSize: Int
        public var cachedChunks: Int
        public var readAhead: Int
        /// How often at most an import writes its progress (bytes read) to its import row.
        public var progressWriteInterval: Duration

        public init(
            bucket: String, layout: BucketLayout = BucketLayout(), limits: InspectionLimits = InspectionLimits(),
            maxAttempts: Int = 5, leaseDuration: Duration = .seconds(60), workerID: String,
            progressInterval: Duration = .seconds(10), chunkSize: Int = 8 << 20, cachedChunks: Int = 6,
            readAhead: Int = 3, progressWriteInterval: Duration = .milliseconds(500)
        ) {
            self.progressWriteInterval = progressWriteInterval
            self.bucket = bucket
            self.layout = layout
            self.limits = limits
            self.maxAttempts = max(1, maxAttempts)
            self.leaseDuration = leaseDuration
            self.workerID = workerID
            self.progressInterval = progressInterval
            self.chunkSize = chunkSize
            self.cachedChunks = cachedChunks
            self.readAhead = readAhead
        }
    }

    public let store: any ObjectStore
    public let catalog: any ImportCatalog
    public let settings: Settings
    public let logger: Logger
    /// Where the imports in flight are announced with their progress (for a live display), if anywhere.
    public let inFlight: InFlightImports?

    public init(
        store: any ObjectStore, catalog: any ImportCatalog, settings: Settings, logger: Logger,
        inFlight: InFlightImports? = nil
    ) {
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.logger = logger
        self.inFlight = inFlight
    }

    private var layout: BucketLayout { settings.layout }
    /// Byte source → committed snapshot (no bucket).
    public var imageImporter: ImageImporter {
        ImageImporter(
            catalog: catalog, limits: settings.limits, leaseDuration: settings.leaseDuration,
            progressInterval: settings.progressInterval)
    }
    /// processed/, failed/, receipts, error reports.
    public var mover: BucketMover { BucketMover(store: store, layout: settings.layout, catalog: catalog) }

    // MARK: - ObjectImporting

    public func preparePass() async {
        do {
            try await catalog.recoverAbandoned()
        } catch {
            logger.warning("recovering abandoned imports failed: \(error)")
        }
    }

    public func listCandidates() async throws -> [BucketLayout.Candidate] {
        let listedAt = Date()
        let objects = try await store.list(prefix: layout.incoming)
        // Each worker walks the listing from its own random point, so concurrent workers divide it (ClaimOrder).
        let listed = objects.map { (key: $0.key, etag: $0.etag, size: $0.size) }
        let candidates = layout.candidates(from: listed).map { candidate in
            var candidate = candidate
            candidate.listedAt = listedAt
            return candidate
        }
        // Objects that will never be imported (a sidecar without its image) come last, as skipped
        // candidates: every pass reports them with the reason instead of ignoring them silently.
        return ClaimOrder.forThisWorker(candidates) + layout.unimportable(from: listed)
    }

    /// The skip reason of an object another worker imported while this pass ran.
    public static let importedByAnotherWorker = "imported by another worker during this pass"

    public func ownerText(of candidate: BucketLayout.Candidate) -> String? {
        try? layout.ownerText(of: candidate.key)
    }

    public func importObject(_ candidate: BucketLayout.Candidate) async -> ImportResult {
        await importObject(candidate, committed: {})
    }

    public func importObject(_ candidate: BucketLayout.Candidate, committed: @escaping @Sendable () -> Void) async
        -> ImportResult
    {
        let ownerText = ownerText(of: candidate)
        var logger = logger
        logger[metadataKey: "key"] = "\(candidate.key)"
        logger[metadataKey: "etag"] = "\(candidate.etag)"
        if let ownerText { logger[metadataKey: "project"] = "\(ownerText)" }
        var movePending = false
        let outcome: ImportOutcome
        if let reason = candidate.skipReason {
            outcome = .skipped(reason: reason)
        } else {
            outcome = await importObject(
                candidate, ownerText: ownerText, committed: committed, movePending: &movePending, logger: &logger)
        }
        let moveNote = movePending ? " (the move to processed/ is left to the next pass)" : ""
        switch outcome {
        case .imported(let id): logger.info("imported\(moveNote)", metadata: ["snapshot": "\(id)"])
        case .alreadyImported(let id): logger.info("already imported\(moveNote)", metadata: ["snapshot": "\(id)"])
        case .rejected(let code, let message):
            logger.warning("rejected: \(code): \(message)", metadata: ["code": "\(code)"])
        case .retried(let code, _, let attempts) where code == ImporterError.Code.cancelled.name:
            // Interrupted, not failed: the claim was released and the attempt given back.
            logger.info(
                """
                abandoned (shutting down): nothing of it remains; the next pass imports it again \
                (\(attempts) of \(settings.maxAttempts) attempts used)
                """)
        case .retried(let code, let message, let attempts):
            logger.warning(
                "transient failure (attempt \(attempts) of \(settings.maxAttempts)): \(code): \(message)",
                metadata: ["code": "\(code)", "attempt": "\(attempts)"])
        case .skipped(let reason) where candidate.skipReason != nil:
            // Not an image (an orphan sidecar …): said once per pass, at a level an operator sees.
            logger.info("skipped: \(reason)")
        case .skipped(let reason): logger.debug("skipped: \(reason)")
        }
        return ImportResult(
            key: candidate.key, etag: candidate.etag, owner: ownerText ?? "", outcome: outcome, movePending: movePending)
    }

    private func importObject(
        _ candidate: BucketLayout.Candidate, ownerText: String?, committed: @Sendable () -> Void,
        movePending: inout Bool, logger: inout Logger
    ) async -> ImportOutcome {
        let key = ImportKey(bucket: settings.bucket, key: candidate.key, etag: candidate.etag)
        let claimOutcome: ClaimOutcome
        do {
            claimOutcome = try await catalog.claim(
                key, owner: ownerText ?? "", worker: attemptToken(), leaseDuration: settings.leaseDuration)
        } catch {
            let failure = ImportFailure.importerError(error)
            return .retried(code: failure.code.name, message: "claim failed: \(failure.message)", attempts: 0)
        }
        switch claimOutcome {
        case .busy(let worker):
            return .skipped(reason: "being imported by \(worker ?? "another worker")")
        case .imported(let id, let committedAt):
            logger[metadataKey: "snapshot"] = "\(id)"
            if let committedAt, let listedAt = candidate.listedAt, committedAt >= listedAt {
                // Another worker committed it after this pass listed incoming/: that worker moves it (and
                // should it die first, the object stays in incoming/ and a later pass finishes the move).
                // Concurrent workers meet many such objects; skipping them costs nothing but the claim.
                return .skipped(reason: Self.importedByAnotherWorker)
            }
            committed()  // an earlier pass committed it: only the move remains
            do {
                guard var record = try await catalog.snapshot(id) else {
                    return .alreadyImported(snapshotID: id.rawValue)
                }
                // Sharing is idempotent: re-apply it in case the earlier pass died before it.
                if let sidecar = try? await mover.readSidecar(candidate),
                    let shared = try? await applySidecarSharing(sidecar, candidate, record: record, logger: logger)
                {
                    record = shared
                }
                try await mover.moveToProcessed(candidate, record: record)
                return .alreadyImported(snapshotID: id.rawValue)
            } catch {
                let failure = ImportFailure.importerError(error)
                if failure.code == .notFound || failure.code == .objectChanged {
                    return .alreadyImported(snapshotID: id.rawValue)  // someone else finished the move
                }
                if Task.isCancelled {
                    movePending = true  // shutting down: the next pass goes on with the move
                    return .alreadyImported(snapshotID: id.rawValue)
                }
                return .retried(code: failure.code.name, message: "finishing the move: \(failure.message)", attempts: 0)
            }
        case .failed(let code, let message):
            do {
                try await mover.moveToFailed(candidate, code: code, message: message)
            } catch {
                let failure = ImportFailure.importerError(error)
                if failure.code != .notFound && failure.code != .objectChanged {
                    return .retried(
                        code: failure.code.name, message: "moving to failed/: \(failure.message)", attempts: 0)
                }
            }
            return .rejected(code: code, message: message)
        case .claimed(let claim):
            return await runClaimed(
                candidate, claim: claim, ownerText: ownerText, committed: committed, movePending: &movePending,
                logger: &logger)
        }
    }

    private func runClaimed(
        _ candidate: BucketLayout.Candidate, claim: ImportClaim, ownerText: String?, committed: @Sendable () -> Void,
        movePending: inout Bool, logger: inout Logger
    ) async -> ImportOutcome {
        let importLogger = logger
        let attempt: Result<(SnapshotRecord, Sidecar?), any Error>
        let progress = ImportProgress(total: candidate.size)
        inFlight?.begin(candidate.key, progress: progress)
        defer { inFlight?.end(candidate.key) }
        do {
            attempt = .success(
                try await whileHoldingLease(claim, progress: progress) {
                    var logger = importLogger
                    return try await importClaimed(
                        candidate, claim: claim, ownerText: ownerText, progress: progress, logger: &logger)
                })
        } catch {
            attempt = .failure(error)
        }
        var record: SnapshotRecord
        let sidecar: Sidecar?
        switch attempt {
        case .success(let (committed, read)):
            record = committed
            sidecar = read
        case .failure(let error):
            // Cancelled from outside (shutdown) whatever the error it surfaced as; a lost lease says so.
            let shutdown = Task.isCancelled
            let failure =
                shutdown ? ImporterError(.cancelled, "the worker is shutting down") : ImportFailure.importerError(error)
            let rejection = !shutdown && ImportFailure.isRejection(error)
            let code = rejection ? ImportFailure.codeName(error) : failure.code.name
            return await settle(
                candidate, claim: claim, failure: failure, code: code, rejection: rejection, logger: logger)
        }
        // Committed: from here on nothing may undo the snapshot. Sharing and the move are finished
        // by a later pass when they fail now (or when the worker shuts down meanwhile).
        committed()
        do {
            record = try await applySidecarSharing(sidecar, candidate, record: record, logger: logger)
        } catch {
            if !Task.isCancelled { logger.warning("applying the sidecar's sharing failed: \(error)") }
        }
        do {
            try await mover.moveToProcessed(candidate, record: record)
        } catch {
            movePending = true
            if !Task.isCancelled { logger.warning("moving to processed/ failed (the next pass finishes it): \(error)") }
        }
        return .imported(snapshotID: record.id.rawValue)
    }

    /// Records a failed attempt and moves rejected objects to failed/.
    private func settle(
        _ candidate: BucketLayout.Candidate, claim: ImportClaim, failure: ImporterError, code: String,
        rejection: Bool, logger: Logger
    ) async -> ImportOutcome {
        let message = failure.message
        let permanent = rejection || claim.attempts >= settings.maxAttempts
        if failure.code == .cancelled {
            // Interrupted, not failed: the attempt is given back (a restart never uses up max_attempts).
            do {
                let catalog = catalog
                try await uncancelled { try await catalog.release(claim, reason: message) }
            } catch {
                logger.warning("releasing the interrupted import failed (its lease will expire): \(error)")
            }
            return .retried(code: code, message: message, attempts: max(0, claim.attempts - 1))
        }
        if !permanent || failure.code == .leaseLost {
            // Transient, or taken over: leave it (a lost lease belongs to someone else now).
            if failure.code != .leaseLost {
                do {
                    let catalog = catalog
                    try await uncancelled {
                        try await catalog.fail(claim, code: code, message: message, permanent: false)
                    }
                } catch {
                    logger.warning("recording the failed attempt failed (its lease will expire): \(error)")
                }
            }
            return .retried(code: code, message: message, attempts: claim.attempts)
        }
        let finalMessage = rejection ? message : "gave up after \(claim.attempts) attempts: \(message)"
        do {
            try await catalog.fail(claim, code: code, message: finalMessage, permanent: true)
        } catch {
            return .retried(
                code: code, message: "\(message) (recording the rejection failed: \(error))", attempts: claim.attempts)
        }
        do {
            try await mover.moveToFailed(candidate, code: code, message: finalMessage)
        } catch {
            logger.warning("moving to failed/ failed (the next pass finishes it): \(error)")
        }
        return .rejected(code: code, message: finalMessage)
    }

    /// Reads the sidecar and the object's head, then imports the image under the claim.
    /// - Returns: the committed snapshot and the sidecar it was imported with (its sharing is applied
    ///   next, without reading it again).
    private func importClaimed(
        _ candidate: BucketLayout.Candidate, claim: ImportClaim, ownerText: String?, progress: ImportProgress,
        logger: inout Logger
    ) async throws -> (SnapshotRecord, Sidecar?) {
        guard let ownerText else {
            _ = try layout.ownerText(of: candidate.key)  // throws the precise InvalidProject
            throw ImporterError(.invalidProject, "key \(candidate.key) has no project")
        }
        let owner: ProjectRef
        do {
            owner = try ProjectRef(parsing: ownerText)
        } catch {
            throw ImporterError(.invalidProject, "folder of key \(candidate.key): \(error)", underlying: error)
        }
        let sidecar = try await mover.readSidecar(candidate)
        let claimed = try Self.claim(sidecar?.format, key: candidate.key)
        _ = try Self.shareTargets(sidecar, key: candidate.key)
        // No HEAD: the size is the listing's and every GET is pinned to the listed ETag (a replaced object
        // fails the first one with `objectChanged`); the first GET's answer also carries the metadata.
        let source = S3ObjectByteSource(
            store: store, key: candidate.key, etag: candidate.etag, size: candidate.size,
            chunkSize: settings.chunkSize, cachedChunks: settings.cachedChunks, readAhead: settings.readAhead,
            progress: progress)
        let (store, key, etag) = (store, candidate.key, candidate.etag)
        let description: @Sendable () async throws -> String = {
            if let text = sidecar?.description { return text }
            var metadata = source.userMetadata
            if metadata == nil {  // a store that answers no metadata with a GET (or nothing was read)
                let head = try await store.head(key: key)
                guard head.etag == etag else {
                    throw ImporterError(.objectChanged, "\(key) was replaced since the listing (ETag \(head.etag), not \(etag))")
                }
                metadata = head.metadata
            }
            return metadata?["description"] ?? Self.defaultDescription(key)
        }
        let record = try await imageImporter.importImage(
            source: source, claim: claim, owner: owner, describedBy: description, claimedFormat: claimed?.format,
            formatClaim: claimed,
            snapshotSource: .object(bucket: settings.bucket, key: candidate.key, etag: candidate.etag),
            logger: &logger, progress: { _, _ in })
        return (record, sidecar)
    }

    /// Runs `body` under `claim` with the import's one lease owner: a child task that renews the claim
    /// (and with it the pending snapshot) every third of the lease. A failed renewal throws `LeaseLost`,
    /// which cancels `body`; the writer would also learn of the loss at its commit.
    ///
    /// With `progress`, a second child writes the bytes read to the import row every
    /// ``Settings/progressWriteInterval`` when they changed, and the last figure is written once `body`
    /// ended (committed or not): a few cheap writes a second at most, whatever the block size.
    func whileHoldingLease<T: Sendable>(
        _ claim: ImportClaim, progress: ImportProgress? = nil, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let result: Result<T, any Error>
        do {
            result = .success(try await holdingLease(claim, progress: progress, body))
        } catch {
            result = .failure(error)
        }
        if let progress {
            let catalog = catalog
            let (read, total) = (progress.bytesRead, progress.bytesTotal)
            do {
                try await uncancelled { try await catalog.recordProgress(claim, bytesRead: read, bytesTotal: total) }
            } catch {
                logger.debug("recording the import's progress failed: \(error)")
            }
        }
        return try result.get()
    }

    private func holdingLease<T: Sendable>(
        _ claim: ImportClaim, progress: ImportProgress?, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let (catalog, lease, interval, logger) = (catalog, settings.leaseDuration, settings.progressWriteInterval, logger)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            if let progress {
                group.addTask {
                    var written: (UInt64, UInt64?) = (0, nil)
                    while true {
                        try await Task.sleep(for: interval)
                        let now = (progress.bytesRead, progress.bytesTotal)
                        guard now != written else { continue }
                        do {
                            try await catalog.recordProgress(claim, bytesRead: now.0, bytesTotal: now.1)
                            written = now
                        } catch is CancellationError {
                            throw CancellationError()
                        } catch {
                            logger.debug("recording the import's progress failed: \(error)")
                        }
                    }
                }
            }
            group.addTask {
                var current = claim
                while true {
                    try await Task.sleep(for: lease / 3)
                    do {
                        current = try await catalog.renew(current, leaseDuration: lease)
                    } catch {
                        throw ImporterError(.leaseLost, "lease renewal failed: \(error)", underlying: error)
                    }
                }
            }
            group.addTask { try await body() }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            throw ImporterError(.internalError, "the import ended without a result")
        }
    }

    /// A claim token unique to this worker and attempt: `<workerID>/<random>`, the form from which
    /// `WorkerID(token:)` reads the worker back (to test its proof of life).
    func attemptToken() -> String {
        "\(settings.workerID)/\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }

    // MARK: - Manual import of one object (`snapimport import s3://…`)

    /// What a manual import of an object produced.
    public enum ManualResult: Sendable {
        case imported(SnapshotRecord)
        /// The same object (key and ETag) was imported before: no second snapshot.
        case alreadyImported(SnapshotRecord)
    }

    /// Imports one object of `settings.bucket` by hand, exactly once like the pass does (the same
    /// claim), without moving it. Rejections are recorded as failed imports.
    ///
    /// - Throws: `DiskImageError` or `ImporterError` (rejection or transient trouble), `SnapshotError`.
    public func importObjectManually(
        key: String, owner: ProjectRef, description: String?, claimedFormat: ImageFormat?,
        progress: @escaping @Sendable (UInt64, UInt64) -> Void
    ) async throws -> ManualResult {
        var logger = logger
        logger[metadataKey: "key"] = "\(key)"
        logger[metadataKey: "project"] = "\(owner)"
        let head = try await store.head(key: key)
        let importKey = ImportKey(bucket: settings.bucket, key: key, etag: head.etag)
        switch try await catalog.claim(
            importKey, owner: owner.description, worker: attemptToken(), leaseDuration: settings.leaseDuration)
        {
        case .imported(let id, _):
            guard let record = try await catalog.snapshot(id) else {
                throw ImporterError(.notFound, "snapshot \(id) of \(key) is gone")
            }
            return .alreadyImported(record)
        case .failed(let code, let message):
            throw ImporterError(.internalError, "\(key) (ETag \(head.etag)) was rejected before: \(code): \(message)")
        case .busy(let worker):
            throw ImporterError(.storageUnavailable, "\(key) is being imported by \(worker ?? "another worker")")
        case .claimed(let claim):
            do {
                let meter = ImportProgress(total: head.size)
                let source = S3ObjectByteSource(
                    store: store, key: key, etag: head.etag, size: head.size, chunkSize: settings.chunkSize,
                    cachedChunks: settings.cachedChunks, readAhead: settings.readAhead, progress: meter)
                let (importer, bucket, importLogger) = (imageImporter, settings.bucket, logger)
                let text = description ?? head.metadata["description"] ?? Self.defaultDescription(key)
                let record = try await whileHoldingLease(claim, progress: meter) {
                    var logger = importLogger
                    return try await importer.importImage(
                        source: source, claim: claim, owner: owner, description: text, claimedFormat: claimedFormat,
                        snapshotSource: .object(bucket: bucket, key: key, etag: head.etag), logger: &logger,
                        progress: progress)
                }
                return .imported(record)
            } catch {
                let interrupted = Task.isCancelled
                let rejection = !interrupted && ImportFailure.isRejection(error)
                let catalog = catalog
                try? await uncancelled {
                    if interrupted {
                        try await catalog.release(claim, reason: "the import was interrupted")
                    } else {
                        try await catalog.fail(
                            claim, code: ImportFailure.codeName(error), message: "\(error)", permanent: rejection)
                    }
                }
                throw error
            }
        }
    }

    // MARK: - Sidecar, sharing, moves

    /// The disk format of a sidecar/flag format name (`vpc` is qemu's name for VHD); nil for none, or for a
    /// name that claims only a container (see ``claim(_:key:)``).
    public static func format(_ name: String?, key: String) throws -> ImageFormat? {
        try claim(name, key: key)?.format
    }

    /// A sidecar/flag format name: a disk format, a container form (`ova`, `tar`, `zip`, `gz` …) or both
    /// (`raw.xz`, `qcow2.gz`, `tar.gz`); DiskImage refuses content that differs (`FormatMismatch`).
    ///
    /// - Throws: `InvalidSidecar` for a name that is none of these.
    public static func claim(_ name: String?, key: String) throws -> FormatClaim? {
        guard let name else { return nil }
        guard let claim = FormatClaim(name) else {
            throw ImporterError(.invalidSidecar, "format '\(name)' for \(key) is not \(FormatClaim.names)")
        }
        return claim
    }

    private static func shareTargets(_ sidecar: Sidecar?, key: String) throws -> [ProjectRef] {
        try (sidecar?.shareWith ?? []).map { text in
            do {
                return try ProjectRef(parsing: text)
            } catch {
                throw ImporterError(.invalidSidecar, "shareWith '\(text)' in the sidecar of \(key): \(error)")
            }
        }
    }

    /// Applies the sidecar's `shareWith`/`public` (idempotent). The sidecar is the one read for the
    /// import, or read again when a later pass finishes an interrupted one.
    private func applySidecarSharing(
        _ sidecar: Sidecar?, _ candidate: BucketLayout.Candidate, record: SnapshotRecord, logger: Logger
    ) async throws -> SnapshotRecord {
        guard let sidecar else { return record }
        let targets = try Self.shareTargets(sidecar, key: candidate.key)
        let makePublic = sidecar.public ?? false
        guard !targets.isEmpty || makePublic else { return record }
        let updated = try await catalog.share(record.id, owner: record.owner, with: targets, makePublic: makePublic)
        logger.info(
            "sharing applied from the sidecar",
            metadata: ["sharedWith": "\(targets.map(\.description))", "public": "\(makePublic)"])
        return updated
    }

    static func defaultDescription(_ key: String) -> String {
        String(key.split(separator: "/").last ?? Substring(key))
    }
}
