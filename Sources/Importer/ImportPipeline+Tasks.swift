public import DiskImage
import Foundation
import Logging
public import SnapshotCore

/// What one attempt of an import task's object import came to (``ImportPipeline/importForTask(key:head:owner:description:claimedFormat:progress:)``).
public enum TaskImportOutcome: Sendable {
    /// A new snapshot was committed.
    case imported(SnapshotRecord)
    /// The object version was imported before (by a task, `run`, `watch` or `import s3://…`).
    case alreadyImported(SnapshotID)
    /// The object is refused for good (its stable code), now or by an earlier attempt.
    case rejected(code: String, message: String)
    /// Trouble of the moment (network, S3 5xx, a lost lease): try again later.
    case transient(code: String, message: String)
    /// Another worker holds the object's claim right now.
    case busy(worker: String?)
    /// The attempt was cancelled (shutdown or a cancelled task); its claim was released, its pending
    /// snapshot dropped.
    case interrupted
}

extension ImportPipeline {
    /// Imports one object version of `settings.bucket` for an import task: exactly once, through the same
    /// claim on (bucket, key, ETag) as `run` and `import s3://…`, with the same lease, validation and
    /// progress recording. The object is never moved (an object in incoming/ is moved by the next pass,
    /// which finds it imported or failed). Never throws: every end is an outcome.
    ///
    /// - Parameters:
    ///   - head: the object's HEAD (its ETag pins every read).
    ///   - description: the snapshot's description (default: `x-amz-meta-description`, then the file name).
    ///   - claimedFormat: the format the content must be (`FormatMismatch` otherwise).
    ///   - progress: counts the bytes read (also written to the import row).
    public func importForTask(
        key: String, head: ObjectMetadata, owner: ProjectRef, description: String?, claimedFormat: ImageFormat?,
        progress: ImportProgress
    ) async -> TaskImportOutcome {
        var logger = logger
        logger[metadataKey: "key"] = "\(key)"
        logger[metadataKey: "etag"] = "\(head.etag)"
        logger[metadataKey: "project"] = "\(owner)"
        let importKey = ImportKey(bucket: settings.bucket, key: key, etag: head.etag)
        let claim: ImportClaim
        do {
            switch try await catalog.claim(
                importKey, owner: owner.description, worker: attemptToken(), leaseDuration: settings.leaseDuration)
            {
            case .imported(let id, _): return .alreadyImported(id)
            case .failed(let code, let message): return .rejected(code: code, message: message)
            case .busy(let worker): return .busy(worker: worker)
            case .claimed(let held): claim = held
            }
        } catch {
            if Task.isCancelled { return .interrupted }
            let failure = ImportFailure.importerError(error)
            return .transient(code: failure.code.name, message: "claim failed: \(failure.message)")
        }
        progress.setTotal(head.size)
        let source = S3ObjectByteSource(
            store: store, key: key, etag: head.etag, size: head.size, chunkSize: settings.chunkSize,
            cachedChunks: settings.cachedChunks, readAhead: settings.readAhead, progress: progress)
        let (importer, bucket, importLogger) = (imageImporter, settings.bucket, logger)
        let text = description ?? head.metadata["description"] ?? Self.defaultDescription(key)
        do {
            let record = try await whileHoldingLease(claim, progress: progress) {
                var logger = importLogger
                return try await importer.importImage(
                    source: source, claim: claim, owner: owner, description: text, claimedFormat: claimedFormat,
                    snapshotSource: .object(bucket: bucket, key: key, etag: head.etag), logger: &logger,
                    progress: { _, _ in })
            }
            logger.info("imported", metadata: ["snapshot": "\(record.id)"])
            return .imported(record)
        } catch {
            let catalog = catalog
            if Task.isCancelled {
                // Interrupted, not failed: the attempt is given back and the pending snapshot dropped.
                do {
                    try await uncancelled {
                        try await catalog.release(claim, reason: "the import task was interrupted")
                    }
                } catch {
                    logger.warning("releasing the interrupted import failed (its lease will expire): \(error)")
                }
                return .interrupted
            }
            let code = ImportFailure.codeName(error)
            let message = Self.message(error)
            let rejection = ImportFailure.isRejection(error)
            let leaseLost = ImportFailure.importerError(error).code == .leaseLost
            if !leaseLost {
                do {
                    try await uncancelled {
                        try await catalog.fail(claim, code: code, message: message, permanent: rejection)
                    }
                } catch {
                    logger.warning("recording the failed attempt failed (its lease will expire): \(error)")
                }
            }
            if rejection {
                logger.warning("rejected: \(code): \(message)")
                return .rejected(code: code, message: message)
            }
            logger.warning("transient failure: \(code): \(message)")
            return .transient(code: code, message: message)
        }
    }

    /// The human part of an error (its message without the code prefix where the type has one).
    static func message(_ error: any Error) -> String {
        switch error {
        case let error as ImporterError: error.message
        case let error as DiskImageError: error.message
        case let error as SnapshotError: error.message
        default: "\(error)"
        }
    }
}
