import BlockingIO
import Foundation
import Logging

extension S3Client {
    /// Progress of a transfer: bytes done so far and the total.
    public typealias Progress = @Sendable (_ done: UInt64, _ total: UInt64) -> Void

    /// Uploads a local file: one PutObject when it fits in one part, a multipart upload otherwise
    /// (parts uploaded `concurrency` at a time by child tasks; on any failure the others are cancelled,
    /// the upload is aborted and the first error thrown). Memory use is bounded by
    /// `partSize × concurrency`. File reads run on ``BlockingExecutor``.
    /// - Parameters:
    ///   - partSize: the wanted part size; raised to 5 MiB and to what 10,000 parts need.
    ///   - progress: called after each part with the bytes done so far.
    /// - Returns: the object's ETag without quotes.
    @discardableResult
    public func uploadFile(
        path: String, bucket: String, key: String, metadata: [String: String] = [:], contentType: String? = nil,
        partSize: Int = 16 << 20, concurrency: Int = 4, progress: Progress? = nil
    ) async throws -> String {
        let file = try await BlockingExecutor.shared.run { try ReadOnlyFile(path: path) }
        let size = file.size
        let part = Self.partSize(for: size, requested: partSize)
        if size <= UInt64(part) {
            let body = try await BlockingExecutor.shared.run { try file.read(offset: 0, count: Int(size)) }
            let etag = try await putObject(
                bucket: bucket, key: key, body: body, metadata: metadata, contentType: contentType)
            progress?(size, size)
            return etag
        }
        let partCount = Int((size + UInt64(part) - 1) / UInt64(part))
        let uploadID = try await createMultipartUpload(
            bucket: bucket, key: key, metadata: metadata, contentType: contentType)
        var report: (@Sendable (UInt64) -> Void)?
        if let progress { report = { progress($0, size) } }
        return try await runMultipart(
            bucket: bucket, key: key, uploadID: uploadID, partCount: partCount, concurrency: concurrency,
            progress: report
        ) { number in
            let offset = UInt64(number - 1) * UInt64(part)
            let count = Int(min(UInt64(part), size - offset))
            let body = try await BlockingExecutor.shared.run { try file.read(offset: offset, count: count) }
            let etag = try await self.uploadPart(
                bucket: bucket, key: key, uploadID: uploadID, partNumber: number, body: body)
            return UploadedPart(partNumber: number, etag: etag, size: UInt64(count))
        }
    }

    /// Finishes a multipart upload already created: parts 1...`partCount` by at most `concurrency`
    /// child tasks at a time (the first failure cancels the others and no more start), then
    /// CompleteMultipartUpload, or AbortMultipartUpload when anything failed (also when the calling
    /// task was cancelled). Shared by uploads and multipart copies.
    /// - Parameters:
    ///   - progress: called with the bytes done after each part.
    ///   - uploadPart: sends part `number` and describes it.
    /// - Returns: the object's ETag without quotes.
    func runMultipart(
        bucket: String, key: String, uploadID: String, partCount: Int, concurrency: Int,
        progress: (@Sendable (UInt64) -> Void)? = nil,
        uploadPart: @escaping @Sendable (Int) async throws -> UploadedPart
    ) async throws -> String {
        do {
            var parts: [UploadedPart] = []
            var done: UInt64 = 0
            try await Self.concurrently(count: partCount, width: concurrency) { index in
                try await uploadPart(index + 1)
            } collect: { uploaded in
                parts.append(uploaded)
                done += uploaded.size
                progress?(done)
            }
            return try await completeMultipartUpload(bucket: bucket, key: key, uploadID: uploadID, parts: parts)
        } catch {
            await abortAsCleanup(bucket: bucket, key: key, uploadID: uploadID)
            throw error
        }
    }

    /// AbortMultipartUpload after a failure, whatever the state of the calling task: it runs in an
    /// unstructured task, which does not inherit the caller's cancellation (a cancelled import must
    /// still not leave its parts stored). Its own failure is ignored: the first error is the one to report.
    private func abortAsCleanup(bucket: String, key: String, uploadID: String) async {
        let abort = Task { try await self.abortMultipartUpload(bucket: bucket, key: key, uploadID: uploadID) }
        if case .failure(let error) = await abort.result {
            logger.debug(
                "AbortMultipartUpload failed", metadata: ["bucket": "\(bucket)", "key": "\(key)", "error": "\(error)"])
        }
    }

    /// Downloads an object to a local file (or `/dev/null`) with at most `concurrency` ranged GETs at
    /// once (child tasks; the first failure cancels the others), each pinned to the object's ETag with
    /// `If-Match`; chunks are written in place with `pwrite` on the pool thread that received them.
    /// - Parameters:
    ///   - progress: called after each chunk with the bytes done so far.
    /// - Returns: the object's head.
    @discardableResult
    public func downloadFile(
        bucket: String, key: String, path: String, concurrency: Int = 4, chunkSize: Int = 32 << 20,
        progress: Progress? = nil
    ) async throws -> ObjectHead {
        let head = try await headObject(bucket: bucket, key: key)
        let file = try await BlockingExecutor.shared.run { try WritableFile(path: path, size: head.size) }
        let chunk = UInt64(max(chunkSize, 1 << 20))
        let chunks = Int((head.size + chunk - 1) / chunk)
        let download: @Sendable (Int) async throws -> UInt64 = { index in
            let start = UInt64(index) * chunk
            let end = min(start + chunk, head.size) - 1
            try await self.getObject(bucket: bucket, key: key, range: start...end, ifMatch: head.etag) { bytes, offset in
                try file.write(bytes, at: start + offset)
            }
            return end - start + 1
        }
        var done: UInt64 = 0
        try await Self.concurrently(count: chunks, width: concurrency, download) { count in
            done += count
            progress?(done, head.size)
        }
        try file.close()
        return head
    }

    /// Runs `work` for 0..<`count` with at most `width` child tasks at a time, handing each result to
    /// `collect` as it completes (in the calling task, so `collect` may mutate local state). The first
    /// failure cancels the children still running, starts no more and is thrown.
    static func concurrently<Value: Sendable>(
        count: Int, width: Int, _ work: @escaping @Sendable (Int) async throws -> Value,
        collect: (Value) -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Value.self) { group in
            var next = 0
            do {
                while next < min(max(1, width), count) {
                    let index = next
                    group.addTask { try await work(index) }
                    next += 1
                }
                while let value = try await group.next() {
                    collect(value)
                    if next < count {
                        let index = next
                        group.addTask { try await work(index) }
                        next += 1
                    }
                }
            } catch {
                group.cancelAll()
                throw error
            }
        }
    }

    /// Streams an object (one GET) into a local file or `/dev/null`.
    @discardableResult
    public func getObject(bucket: String, key: String, toFile path: String, ifMatch: String? = nil) async throws
        -> ObjectHead?
    {
        let file = try await BlockingExecutor.shared.run { try WritableFile(path: path, size: nil) }
        let head = try await getObject(bucket: bucket, key: key, range: nil, ifMatch: ifMatch) { bytes, offset in
            try file.write(bytes, at: offset)
        }
        try file.close()
        return head
    }
}

/// A file opened for `pread`; closed on deinit. Immutable after init and `pread` is thread-safe,
/// hence Sendable.
final class ReadOnlyFile: Sendable {
    let fd: Int32
    let path: String
    let size: UInt64

    init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw fileError("cannot open", path) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = fileError("cannot stat", path)
            Glibc.close(fd)
            throw error
        }
        size = UInt64(info.st_size)
    }

    deinit { Glibc.close(fd) }

    func read(offset: UInt64, count: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var done = 0
            while done < count {
                let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    initialized = done
                    throw n == 0 ? S3Error(code: .fileIO, message: "\(path) shrank while reading")
                        : fileError("cannot read", path)
                }
                done += n
            }
            initialized = done
        }
    }
}

/// A file opened for writing with `pwrite` (thread-safe for disjoint ranges), hence Sendable.
/// `/dev/null` and other non-regular files are written without truncation or sizing.
final class WritableFile: Sendable {
    let fd: Int32
    let path: String
    let isRegular: Bool

    init(path: String, size: UInt64?) throws {
        self.path = path
        var info = stat()
        let exists = stat(path, &info) == 0
        isRegular = !exists || (info.st_mode & S_IFMT) == S_IFREG
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (isRegular ? O_TRUNC : 0)
        fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw fileError("cannot open", path) }
        if isRegular, let size, ftruncate(fd, off_t(size)) != 0 {
            let error = fileError("cannot size", path)
            Glibc.close(fd)
            throw error
        }
    }

    deinit { Glibc.close(fd) }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let n =
                isRegular
                ? pwrite(fd, base + done, bytes.count - done, off_t(offset) + off_t(done))
                : Glibc.write(fd, base + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw fileError("cannot write", path) }
            done += n
        }
    }

    /// Nothing to flush (writes go straight to the kernel); kept so callers mark the end of writing.
    func close() throws {}
}

private func fileError(_ what: String, _ path: String) -> S3Error {
    let code = errno
    return S3Error(code: .fileIO, message: "\(what) \(path): \(String(cString: strerror(code)))")
}
