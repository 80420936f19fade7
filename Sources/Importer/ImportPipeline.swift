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
        /// Identifies this worker in claims (`host:pid` by default).
        public var workerID: String
        /// How often a long import logs its progress.
        public var progressInterval: Duration
        /// Bytes per ranged GET, chunks kept by the byte source, and chunks fetched ahead (in
        /// parallel) of a sequential reader. Memory is bounded by `chunkSize × (cachedChunks + readAhead)`.
        /// Large, parallel ranges measured fastest against SeaweedFS (scripts/bench).
        public var chunkSize: Int
        public var cachedChunks: Int
        public var readAhead: Int

        public init(
            bucket: String, layout: BucketLayout = BucketLayout(), limits: InspectionLimits = InspectionLimits(),
            maxAttempts: Int = 5, leaseDuration: Duration = .seconds(60), workerID: String,
            progressInterval: Duration = .seconds(10), chunkSize: Int = 8 << 20, cachedChunks: Int = 6,
            readAhead: Int = 3
        ) {
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

    public init(store: any ObjectStore, catalog: any ImportCatalog, settings: Settings, logger: Logger) {
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.logger = logger
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
        let store = store
        let prefix = layout.incoming
        let objects = try await offload { try store.list(prefix: prefix) }
        // Each worker walks the listing from its own random point, so concurrent workers divide it (ClaimOrder).
        return ClaimOrder.forThisWorker(layout.candidates(from: objects.map { (key: $0.key, etag: $0.etag, size: $0.size) }))
    }

    public func ownerText(of candidate: BucketLayout.Candidate) -> String? {
        try? layout.ownerText(of: candidate.key)
    }

    public func importObject(_ candidate: BucketLayout.Candidate, cancellation: CancellationFlag) async -> ImportResult {
        let ownerText = ownerText(of: candidate)
        var logger = logger
        logger[metadataKey: "key"] = "\(candidate.key)"
        logger[metadataKey: "etag"] = "\(candidate.etag)"
        if let ownerText { logger[metadataKey: "project"] = "\(ownerText)" }
        let outcome = await importObject(candidate, ownerText: ownerText, cancellation: cancellation, logger: &logger)
        switch outcome {
        case .imported(let id): logger.info("imported", metadata: ["snapshot": "\(id)"])
        case .alreadyImported(let id): logger.info("already imported", metadata: ["snapshot": "\(id)"])
        case .rejected(let code, let message): logger.warning("rejected: \(code): \(message)")
        case .retried(let code, let message, let attempts):
            logger.warning("transient failure (attempt \(attempts) of \(settings.maxAttempts)): \(code): \(message)")
        case .skipped(let reason): logger.debug("skipped: \(reason)")
        }
        return ImportResult(key: candidate.key, etag: candidate.etag, owner: ownerText ?? "", outcome: outcome)
    }

    private func importObject(
        _ candidate: BucketLayout.Candidate, ownerText: String?, cancellation: CancellationFlag,
        logger: inout Logger
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
        case .imported(let id):
            logger[metadataKey: "snapshot"] = "\(id)"
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
                return .retried(code: failure.code.name, message: "finishing the move: \(failure.message)", attempts: 0)
            }
        case .failed(let code, let message):
            do {
                try await mover.moveToFailed(candidate, code: code, message: message)
            } catch {
                let failure = ImportFailure.importerError(error)
                if failure.code != .notFound && failure.code != .objectChanged {
                    return .retried(code: failure.code.name, message: "moving to failed/: \(failure.message)", attempts: 0)
                }
            }
            return .rejected(code: code, message: message)
        case .claimed(let claim):
            return await runClaimed(candidate, claim: claim, ownerText: ownerText, cancellation: cancellation, logger: &logger)
        }
    }

    private func runClaimed(
        _ candidate: BucketLayout.Candidate, claim: ImportClaim, ownerText: String?, cancellation: CancellationFlag,
        logger: inout Logger
    ) async -> ImportOutcome {
        // The lease is renewed by a child task for as long as the import runs (structured: it ends
        // with the import); a failed renewal cancels the import (another worker owns it now).
        let attempt: Result<(SnapshotRecord, Sidecar?), any Error> = await withTaskGroup(of: Void.self) { group in
            group.addTask { [catalog, settings] in
                var current = claim
                while true {
                    do {
                        try await Task.sleep(for: settings.leaseDuration / 3)
                    } catch {
                        return
                    }
                    do {
                        current = try await catalog.renew(current, leaseDuration: settings.leaseDuration)
                    } catch {
                        cancellation.cancel(ImporterError(.leaseLost, "lease renewal failed: \(error)"))
                        return
                    }
                }
            }
            defer { group.cancelAll() }
            do {
                return .success(
                    try await importClaimed(
                        candidate, claim: claim, ownerText: ownerText, cancellation: cancellation, logger: &logger))
            } catch {
                return .failure(error)
            }
        }
        var record: SnapshotRecord
        let sidecar: Sidecar?
        switch attempt {
        case .success(let (committed, read)):
            record = committed
            sidecar = read
        case .failure(let error):
            let failure = cancellation.error ?? ImportFailure.importerError(error)
            let rejection = cancellation.error == nil && ImportFailure.isRejection(error)
            let code = rejection ? ImportFailure.codeName(error) : failure.code.name
            return await settle(
                candidate, claim: claim, failure: failure, code: code, rejection: rejection, logger: logger)
        }
        // Committed: from here on nothing may undo the snapshot. Sharing and the move are finished
        // by a later pass when they fail now.
        do {
            record = try await applySidecarSharing(sidecar, candidate, record: record, logger: logger)
        } catch {
            logger.warning("applying the sidecar's sharing failed: \(error)")
        }
        do {
            try await mover.moveToProcessed(candidate, record: record)
        } catch {
            logger.warning("moving to processed/ failed (the next pass finishes it): \(error)")
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
        if !permanent || failure.code == .cancelled || failure.code == .leaseLost {
            // Cancelled or taken over: leave it (a lost lease belongs to someone else now).
            if failure.code != .leaseLost {
                do {
                    try await catalog.fail(claim, code: code, message: message, permanent: false)
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
            return .retried(code: code, message: "\(message) (recording the rejection failed: \(error))", attempts: claim.attempts)
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
        _ candidate: BucketLayout.Candidate, claim: ImportClaim, ownerText: String?, cancellation: CancellationFlag,
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
        let store = store
        let sidecar = try await mover.readSidecar(candidate)
        let head = try await offload { try store.head(key: candidate.key) }
        guard head.etag == candidate.etag else {
            throw ImporterError(
                .objectChanged, "\(candidate.key) was replaced since the listing (ETag \(head.etag), not \(candidate.etag))")
        }
        let claimedFormat = try Self.format(sidecar?.format, key: candidate.key)
        _ = try Self.shareTargets(sidecar, key: candidate.key)
        let description = sidecar?.description ?? head.metadata["description"] ?? Self.defaultDescription(candidate.key)
        let source = S3ObjectByteSource(
            store: store, key: candidate.key, etag: candidate.etag, size: head.size, chunkSize: settings.chunkSize,
            cachedChunks: settings.cachedChunks, readAhead: settings.readAhead, cancellation: cancellation)
        let record = try await imageImporter.importImage(
            source: source, claim: claim, owner: owner, description: description, claimedFormat: claimedFormat,
            snapshotSource: .object(bucket: settings.bucket, key: candidate.key, etag: candidate.etag),
            cancellation: cancellation, logger: &logger, progress: { _, _ in })
        return (record, sidecar)
    }

    /// A claim token unique to this worker and attempt (`host:pid:random`).
    func attemptToken() -> String {
        "\(settings.workerID):\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
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
        cancellation: CancellationFlag, progress: @escaping @Sendable (UInt64, UInt64) -> Void
    ) async throws -> ManualResult {
        let store = store
        var logger = logger
        logger[metadataKey: "key"] = "\(key)"
        logger[metadataKey: "project"] = "\(owner)"
        let head = try await offload { try store.head(key: key) }
        let importKey = ImportKey(bucket: settings.bucket, key: key, etag: head.etag)
        switch try await catalog.claim(
            importKey, owner: owner.description, worker: attemptToken(), leaseDuration: settings.leaseDuration)
        {
        case .imported(let id):
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
                let source = S3ObjectByteSource(
                    store: store, key: key, etag: head.etag, size: head.size, chunkSize: settings.chunkSize,
                    cachedChunks: settings.cachedChunks, readAhead: settings.readAhead, cancellation: cancellation)
                let record = try await imageImporter.importImage(
                    source: source, claim: claim, owner: owner,
                    description: description ?? head.metadata["description"] ?? Self.defaultDescription(key),
                    claimedFormat: claimedFormat,
                    snapshotSource: .object(bucket: settings.bucket, key: key, etag: head.etag),
                    cancellation: cancellation, logger: &logger, progress: progress)
                return .imported(record)
            } catch {
                let rejection = ImportFailure.isRejection(error)
                try? await catalog.fail(
                    claim, code: ImportFailure.codeName(error), message: "\(error)", permanent: rejection)
                throw error
            }
        }
    }

    // MARK: - Sidecar, sharing, moves

    /// A sidecar/flag format name as an ImageFormat (`vpc` is qemu's name for VHD).
    public static func format(_ name: String?, key: String) throws -> ImageFormat? {
        guard let name else { return nil }
        let normalized = name.lowercased() == "vpc" ? "vhd" : name.lowercased()
        guard let format = ImageFormat(rawValue: normalized) else {
            throw ImporterError(
                .invalidSidecar,
                "format '\(name)' for \(key) is not one of \(ImageFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return format
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
