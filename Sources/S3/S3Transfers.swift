import Foundation
import Synchronization

extension S3Client {
    /// Progress of a transfer: bytes done so far and the total.
    public typealias Progress = @Sendable (_ done: UInt64, _ total: UInt64) -> Void

    /// Uploads a local file: one PutObject when it fits in one part, a multipart upload otherwise
    /// (parts uploaded `concurrency` at a time; on any failure the upload is aborted and the first
    /// error thrown). Memory use is bounded by `partSize × concurrency`.
    /// - Parameters:
    ///   - partSize: the wanted part size; raised to 5 MiB and to what 10,000 parts need.
    ///   - progress: called after each part (from any thread).
    /// - Returns: the object's ETag without quotes.
    @discardableResult
    public func uploadFile(
        path: String, bucket: String, key: String, metadata: [String: String] = [:], contentType: String? = nil,
        partSize: Int = 16 << 20, concurrency: Int = 4, progress: Progress? = nil
    ) throws -> String {
        let file = try ReadOnlyFile(path: path)
        let size = file.size
        let part = Self.partSize(for: size, requested: partSize)
        if size <= UInt64(part) {
            let body = try file.read(offset: 0, count: Int(size))
            let etag = try putObject(bucket: bucket, key: key, body: body, metadata: metadata, contentType: contentType)
            progress?(size, size)
            return etag
        }
        let partCount = Int((size + UInt64(part) - 1) / UInt64(part))
        let uploadID = try createMultipartUpload(bucket: bucket, key: key, metadata: metadata, contentType: contentType)
        var report: (@Sendable (UInt64) -> Void)?
        if let progress { report = { progress($0, size) } }
        return try runMultipart(
            bucket: bucket, key: key, uploadID: uploadID, partCount: partCount, concurrency: concurrency,
            progress: report
        ) { number in
            let offset = UInt64(number - 1) * UInt64(part)
            let count = Int(min(UInt64(part), size - offset))
            let body = try file.read(offset: offset, count: count)
            let etag = try self.uploadPart(bucket: bucket, key: key, uploadID: uploadID, partNumber: number, body: body)
            return UploadedPart(partNumber: number, etag: etag, size: UInt64(count))
        }
    }

    /// Finishes a multipart upload already created: parts 1...`partCount` by `concurrency` threads
    /// (the first failure stops the others from taking more), then CompleteMultipartUpload, or
    /// AbortMultipartUpload when anything failed. Shared by uploads and multipart copies.
    /// - Parameters:
    ///   - progress: called with the bytes done after each part (from any thread).
    ///   - uploadPart: sends part `number` and describes it.
    /// - Returns: the object's ETag without quotes.
    func runMultipart(
        bucket: String, key: String, uploadID: String, partCount: Int, concurrency: Int,
        progress: (@Sendable (UInt64) -> Void)? = nil, uploadPart: @escaping @Sendable (Int) throws -> UploadedPart
    ) throws -> String {
        struct State {
            var next = 1
            var parts: [UploadedPart] = []
            var done: UInt64 = 0
            var failure: (any Error)?
        }
        let state = Mutex(State())
        runThreads(min(max(1, concurrency), partCount)) {
            while true {
                let number: Int? = state.withLock { s in
                    guard s.failure == nil, s.next <= partCount else { return nil }
                    defer { s.next += 1 }
                    return s.next
                }
                guard let number else { return }
                do {
                    let uploaded = try uploadPart(number)
                    let done = state.withLock { s -> UInt64 in
                        s.parts.append(uploaded)
                        s.done += uploaded.size
                        return s.done
                    }
                    progress?(done)
                } catch {
                    state.withLock { s in if s.failure == nil { s.failure = error } }
                    return
                }
            }
        }
        let (parts, failure) = state.withLock { ($0.parts, $0.failure) }
        do {
            if let failure { throw failure }
            return try completeMultipartUpload(bucket: bucket, key: key, uploadID: uploadID, parts: parts)
        } catch {
            try? abortMultipartUpload(bucket: bucket, key: key, uploadID: uploadID)
            throw error
        }
    }

    /// Downloads an object to a local file (or `/dev/null`) with `concurrency` ranged GETs at once,
    /// each pinned to the object's ETag with `If-Match`; chunks are written in place with `pwrite`.
    /// - Returns: the object's head.
    @discardableResult
    public func downloadFile(
        bucket: String, key: String, path: String, concurrency: Int = 4, chunkSize: Int = 32 << 20,
        progress: Progress? = nil
    ) throws -> ObjectHead {
        let head = try headObject(bucket: bucket, key: key)
        let file = try WritableFile(path: path, size: head.size)
        let chunk = UInt64(max(chunkSize, 1 << 20))
        let chunks = Int((head.size + chunk - 1) / chunk)
        struct State {
            var next = 0
            var done: UInt64 = 0
            var failure: (any Error)?
        }
        let state = Mutex(State())
        runThreads(min(max(1, concurrency), max(chunks, 1))) {
            while true {
                let index: Int? = state.withLock { s in
                    guard s.failure == nil, s.next < chunks else { return nil }
                    defer { s.next += 1 }
                    return s.next
                }
                guard let index else { return }
                let start = UInt64(index) * chunk
                let end = min(start + chunk, head.size) - 1
                var offset = start
                do {
                    try self.getObject(bucket: bucket, key: key, range: start...end, ifMatch: head.etag) { bytes in
                        try file.write(bytes, at: offset)
                        offset += UInt64(bytes.count)
                    }
                    let done = state.withLock { s -> UInt64 in
                        s.done += end - start + 1
                        return s.done
                    }
                    progress?(done, head.size)
                } catch {
                    state.withLock { s in if s.failure == nil { s.failure = error } }
                    return
                }
            }
        }
        if let failure = state.withLock({ $0.failure }) { throw failure }
        try file.close()
        return head
    }

    /// Streams an object (one GET) into a local file or `/dev/null`.
    @discardableResult
    public func getObject(bucket: String, key: String, toFile path: String, ifMatch: String? = nil) throws
        -> ObjectHead?
    {
        let file = try WritableFile(path: path, size: nil)
        var offset: UInt64 = 0
        let head = try getObject(bucket: bucket, key: key, range: nil, ifMatch: ifMatch) { bytes in
            try file.write(bytes, at: offset)
            offset += UInt64(bytes.count)
        }
        try file.close()
        return head
    }
}

/// Runs `body` on `count` threads and waits for all of them (blocking work must not run on Swift's
/// cooperative pool).
func runThreads(_ count: Int, _ body: @escaping @Sendable () -> Void) {
    if count <= 1 {
        body()
        return
    }
    let group = DispatchGroup()
    for _ in 0..<count {
        group.enter()
        let thread = Thread {
            body()
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
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

extension S3Client {
    /// Runs blocking S3 work on a dedicated thread and awaits it, so that async code (the importer's
    /// services) never blocks a thread of Swift's cooperative pool with network I/O.
    /// - Parameter body: the work, e.g. `{ try $0.headObject(bucket: b, key: k) }`.
    /// - Returns: what `body` returns.
    public func run<T: Sendable>(_ body: @escaping @Sendable (S3Client) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let thread = Thread {
                continuation.resume(with: Result { try body(self) })
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }
}
