import DiskImage
import Foundation
public import SnapshotCore

/// The bucket side of an import: reads an object's sidecar, and moves a settled object out of
/// incoming/ — to processed/ with its receipt (`.snapshot.json`) or to failed/ with its error report
/// (`.error.json`). Copies first (pinned to the listed ETag), deletes last, so that an interrupted
/// move is found and finished by the next pass and nothing is ever lost.
public struct BucketMover: Sendable {
    public let store: any ObjectStore
    public let layout: BucketLayout
    /// Renders the receipt (the snapshot document).
    let catalog: any ImportCatalog

    public init(store: any ObjectStore, layout: BucketLayout, catalog: any ImportCatalog) {
        self.store = store
        self.layout = layout
        self.catalog = catalog
    }


    func readSidecar(_ candidate: BucketLayout.Candidate) async throws -> Sidecar? {
        guard let sidecarKey = candidate.sidecarKey else { return nil }
        let bytes: [UInt8]
        do {
            bytes = try await store.get(key: sidecarKey, range: 0..<UInt64(Sidecar.maxSize + 1), ifMatch: nil)
        } catch let error as ImporterError where error.code == .notFound {
            return nil  // removed since the listing
        }
        return try Sidecar.parse(bytes, key: sidecarKey)
    }

    /// Receipt, copies to processed/ (image, then sidecar), deletes from incoming/ (sidecar, then
    /// image last, so that an interrupted move is found and finished by the next pass).
    func moveToProcessed(_ candidate: BucketLayout.Candidate, record: SnapshotRecord) async throws {
        let receipt = catalog.document(record)
        let destination = layout.processedKey(for: candidate.key)
        try await store.copy(from: candidate.key, to: destination, ifMatch: candidate.etag, sourceSize: candidate.size)
        try await store.put(key: BucketLayout.receiptKey(for: destination), body: receipt, contentType: "application/json")
        try await moveSidecar(candidate, toProcessed: true)
        try await deleteIfUnchanged(key: candidate.key, etag: candidate.etag)
    }

    /// Copies a rejected object to failed/ with its `.error.json`, then deletes it from incoming/.
    func moveToFailed(_ candidate: BucketLayout.Candidate, code: String, message: String) async throws {
        let report = ErrorReport(code: code, message: message, key: candidate.key, etag: candidate.etag, at: Date())
        let destination = layout.failedKey(for: candidate.key)
        try await store.copy(from: candidate.key, to: destination, ifMatch: candidate.etag, sourceSize: candidate.size)
        try await store.put(
            key: BucketLayout.errorReportKey(for: destination), body: report.encoded(), contentType: "application/json")
        try await moveSidecar(candidate, toProcessed: false)
        try await deleteIfUnchanged(key: candidate.key, etag: candidate.etag)
    }

    private func moveSidecar(_ candidate: BucketLayout.Candidate, toProcessed: Bool) async throws {
        // No sidecar in the listing: none was read for this import, so there is none to file with it (and
        // no request to spend finding that out). One uploaded since is left, reported as an orphan.
        guard candidate.sidecarKey != nil else { return }
        let sidecarKey = BucketLayout.sidecarKey(for: candidate.key)
        let destination = BucketLayout.sidecarKey(
            for: toProcessed ? layout.processedKey(for: candidate.key) : layout.failedKey(for: candidate.key))
        do {
            try await store.copy(from: sidecarKey, to: destination, ifMatch: nil)
        } catch let error as ImporterError where error.code == .notFound {
            return  // no sidecar, or already moved
        }
        try await store.delete(key: sidecarKey)
    }

    /// Deletes the object only while it still has the imported ETag, so that an object replaced after
    /// the import is kept for the next pass: one conditional DELETE (`If-Match`) where the store honours
    /// it; otherwise the ETag is checked with a HEAD just before the DELETE (closed in all but a tiny window).
    private func deleteIfUnchanged(key: String, etag: String) async throws {
        do {
            if try await store.delete(key: key, ifMatch: etag) { return }
        } catch let error as ImporterError where error.code == .notFound || error.code == .objectChanged {
            return  // replaced or removed since: kept (or nothing to delete)
        }
        let head: ObjectMetadata
        do {
            head = try await store.head(key: key)
        } catch let error as ImporterError where error.code == .notFound {
            return
        }
        guard head.etag == etag else { return }
        try await store.delete(key: key)
    }
}
