import CCurl
import Foundation
import Synchronization

/// The body of a request; re-readable from the start so that every retry sends it again.
public enum HTTPRequestBody: Sendable {
    case none
    case bytes([UInt8])
    /// `length` bytes of the file at `path` from `offset` (read with `pread`).
    case file(path: String, offset: UInt64, length: UInt64)

    var length: UInt64 {
        switch self {
        case .none: 0
        case .bytes(let bytes): UInt64(bytes.count)
        case .file(_, _, let length): length
        }
    }
}

/// One HTTP exchange as the transport sees it (already signed).
public struct HTTPRequest: Sendable {
    public var method: String
    /// Full URL with the path and query exactly as signed.
    public var url: String
    public var headers: [(name: String, value: String)]
    public var body: HTTPRequestBody

    /// The first header named `name` (case-insensitive).
    public func header(_ name: String) -> String? { firstHeader(name, in: headers) }
}

/// Status and headers of a response, plus the body when it was not streamed (error answers).
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    /// The body of a non-2xx answer (at most 1 MiB), for error parsing.
    public var errorBody: [UInt8]

    /// The first header named `name` (case-insensitive).
    public func header(_ name: String) -> String? { firstHeader(name, in: headers) }
}

private func firstHeader(_ name: String, in headers: [(name: String, value: String)]) -> String? {
    let lower = name.lowercased()
    return headers.first { $0.name.lowercased() == lower }?.value
}

/// The I/O seam of the S3 client: performs one signed exchange, blocking the calling thread. `S3Client`
/// calls it only on a `BlockingExecutor` pool thread, never on Swift's cooperative pool.
public protocol S3Transport: Sendable {
    /// Performs `request`. Body bytes of a 2xx answer go to `onData` as they arrive; the body of any
    /// other answer is collected into `HTTPResponse.errorBody`. An error thrown by `onData` aborts the
    /// transfer and is rethrown.
    /// - Throws: `S3Error` (`.transport`, `.timeout`) when no complete answer was received, or
    ///   what `onData` threw.
    func perform(_ request: HTTPRequest, onData: (UnsafeRawBufferPointer) throws -> Void) throws -> HTTPResponse
}

/// libcurl's result code with a readable name (house style: C codes become RawRepresentable structs).
struct CurlCode: RawRepresentable, Sendable, CustomStringConvertible {
    var rawValue: Int
    init(rawValue: Int) { self.rawValue = rawValue }
    init(_ code: CURLcode) { rawValue = Int(code.rawValue) }

    var description: String { String(cString: curl_easy_strerror(CURLcode(UInt32(rawValue)))) }
    var isTimeout: Bool { rawValue == Int(CURLE_OPERATION_TIMEDOUT.rawValue) }
    /// Failures that a retry cannot fix: bad URL or protocol, TLS peer or CA problems.
    var isPermanent: Bool {
        [CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE,
         CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER, CURLE_SSL_ENGINE_NOTFOUND]
            .contains { Int($0.rawValue) == rawValue }
    }
}

/// A libcurl transport with keep-alive: a pool of easy handles, each used by one thread at a time.
///
/// libcurl is initialized once per process through `CurlTransport.globalInit`, a `static let` whose
/// initializer Swift runs exactly once, thread-safely (swift_once), before the first handle is made.
public final class CurlTransport: S3Transport {
    /// `curl_global_init(CURL_GLOBAL_ALL)` exactly once (lazy static initializer; never cleaned up,
    /// as the process may use libcurl until it exits).
    private static let globalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_ALL))

    private let configuration: TransportOptions
    private let idle: Mutex<[CurlEasy]>

    struct TransportOptions: Sendable {
        var caFile: String?
        var connectTimeout: Int
        var stallTimeout: Int
        var stallSpeedLimit: Int
        var resolve: [String]
        var maxIdle: Int
        var verifyTLS: Bool
    }

    init(options: TransportOptions) {
        _ = Self.globalInit
        configuration = options
        idle = Mutex([])
    }

    public convenience init(configuration: S3Configuration) {
        self.init(
            options: TransportOptions(
                caFile: configuration.caFile, connectTimeout: configuration.connectTimeout,
                stallTimeout: configuration.stallTimeout, stallSpeedLimit: configuration.stallSpeedLimit,
                resolve: configuration.resolve, maxIdle: configuration.maxIdleConnections,
                verifyTLS: configuration.verifyTLS))
    }

    public func perform(_ request: HTTPRequest, onData: (UnsafeRawBufferPointer) throws -> Void) throws
        -> HTTPResponse
    {
        let easy = try checkOut()
        // After a failed transfer libcurl has already closed a broken connection; the handle stays usable.
        defer { checkIn(easy) }
        return try easy.perform(request, options: configuration, onData: onData)
    }

    private func checkOut() throws -> CurlEasy {
        if let easy = idle.withLock({ $0.popLast() }) { return easy }
        guard let easy = CurlEasy() else {
            throw S3Error(code: .transport, message: "curl_easy_init failed")
        }
        return easy
    }

    private func checkIn(_ easy: CurlEasy) {
        let keep = idle.withLock { handles -> Bool in
            guard handles.count < configuration.maxIdle else { return false }
            handles.append(easy)
            return true
        }
        _ = keep  // a handle not kept is released here, closing its connection
    }
}

/// One curl easy handle. Not safe for concurrent use: `CurlTransport` hands it to exactly one thread
/// at a time (checked out of the pool under its mutex, checked back in after the transfer), which is
/// what libcurl requires of an easy handle. That hand-over is why it is `@unchecked Sendable`.
final class CurlEasy: @unchecked Sendable {
    private let handle: UnsafeMutableRawPointer

    init?() {
        guard let handle = curl_easy_init() else { return nil }
        self.handle = handle
    }

    deinit { curl_easy_cleanup(handle) }

    /// Runs one transfer. `curl_easy_reset` clears the options of the previous request but keeps the
    /// live connection cache, so consecutive requests on this handle reuse the connection.
    func perform(
        _ request: HTTPRequest, options: CurlTransport.TransportOptions,
        onData: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> HTTPResponse {
        curl_easy_reset(handle)
        let context = try TransferContext(body: request.body)
        defer { context.close() }

        var lists = SList()
        defer { lists.free() }
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        for (name, value) in request.headers {
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        // No `Expect: 100-continue` round trip; no `Accept: */*`.
        headerList = curl_slist_append(headerList, "Expect:")
        headerList = curl_slist_append(headerList, "Accept:")
        lists.add(headerList)
        var resolveList: UnsafeMutablePointer<curl_slist>? = nil
        for entry in options.resolve { resolveList = curl_slist_append(resolveList, entry) }
        lists.add(resolveList)

        try check(snap_easy_setopt_str(handle, CURLOPT_URL, request.url), "URL")
        try check(snap_easy_setopt_str(handle, CURLOPT_PROTOCOLS_STR, "http,https"), "PROTOCOLS_STR")
        try check(snap_easy_setopt_str(handle, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"), "REDIR_PROTOCOLS_STR")
        _ = snap_easy_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0)
        // S3 keys are literal: never let curl squash `/./`, `/../` or `//` in the path.
        _ = snap_easy_setopt_long(handle, CURLOPT_PATH_AS_IS, 1)
        _ = snap_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        _ = snap_easy_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1)
        _ = snap_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, options.connectTimeout)
        _ = snap_easy_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, options.stallTimeout)
        _ = snap_easy_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, options.stallSpeedLimit)
        _ = snap_easy_setopt_long(handle, CURLOPT_BUFFERSIZE, 512 * 1024)
        _ = snap_easy_setopt_long(handle, CURLOPT_UPLOAD_BUFFERSIZE, 512 * 1024)
        _ = snap_easy_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, options.verifyTLS ? 1 : 0)
        _ = snap_easy_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, options.verifyTLS ? 2 : 0)
        if let caFile = options.caFile {
            try check(snap_easy_setopt_str(handle, CURLOPT_CAINFO, caFile), "CAINFO")
        }
        if resolveList != nil { try check(snap_easy_setopt_slist(handle, CURLOPT_RESOLVE, resolveList), "RESOLVE") }
        try check(snap_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList), "HTTPHEADER")

        switch (request.method, request.body) {
        case ("GET", .none):
            _ = snap_easy_setopt_long(handle, CURLOPT_HTTPGET, 1)
        case ("HEAD", _):
            _ = snap_easy_setopt_long(handle, CURLOPT_NOBODY, 1)
        case ("DELETE", .none):
            _ = snap_easy_setopt_str(handle, CURLOPT_CUSTOMREQUEST, "DELETE")
        default:
            // PUT/POST (with or without a body): an upload with a known length, so curl sends
            // Content-Length; CUSTOMREQUEST sets the method word.
            _ = snap_easy_setopt_long(handle, CURLOPT_UPLOAD, 1)
            _ = snap_easy_setopt_off(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(request.body.length))
            _ = snap_easy_setopt_str(handle, CURLOPT_CUSTOMREQUEST, request.method)
        }

        let userdata = Unmanaged.passUnretained(context).toOpaque()
        _ = snap_easy_setopt_data_cb(handle, CURLOPT_READFUNCTION, { buffer, size, count, userdata in
            guard let buffer, let userdata else { return Int(CURL_READFUNC_ABORT) }
            let context = Unmanaged<TransferContext>.fromOpaque(userdata).takeUnretainedValue()
            return context.read(into: UnsafeMutableRawPointer(buffer), capacity: size * count)
        })
        _ = snap_easy_setopt_ptr(handle, CURLOPT_READDATA, userdata)
        _ = snap_easy_setopt_seek_cb(handle, CURLOPT_SEEKFUNCTION, { userdata, offset, origin in
            guard let userdata, origin == SEEK_SET else { return Int32(CURL_SEEKFUNC_CANTSEEK) }
            let context = Unmanaged<TransferContext>.fromOpaque(userdata).takeUnretainedValue()
            return context.seek(to: offset) ? Int32(CURL_SEEKFUNC_OK) : Int32(CURL_SEEKFUNC_FAIL)
        })
        _ = snap_easy_setopt_ptr(handle, CURLOPT_SEEKDATA, userdata)
        _ = snap_easy_setopt_data_cb(handle, CURLOPT_HEADERFUNCTION, { buffer, size, count, userdata in
            guard let buffer, let userdata else { return 0 }
            let context = Unmanaged<TransferContext>.fromOpaque(userdata).takeUnretainedValue()
            context.headerLine(UnsafeRawBufferPointer(start: buffer, count: size * count))
            return size * count
        })
        _ = snap_easy_setopt_ptr(handle, CURLOPT_HEADERDATA, userdata)
        _ = snap_easy_setopt_data_cb(handle, CURLOPT_WRITEFUNCTION, { buffer, size, count, userdata in
            guard let buffer, let userdata else { return 0 }
            let context = Unmanaged<TransferContext>.fromOpaque(userdata).takeUnretainedValue()
            return context.write(UnsafeRawBufferPointer(start: buffer, count: size * count))
        })
        _ = snap_easy_setopt_ptr(handle, CURLOPT_WRITEDATA, userdata)

        let result: CURLcode = withoutActuallyEscaping(onData) { sink in
            context.sink = sink
            defer { context.sink = nil }
            return withExtendedLifetime(context) { curl_easy_perform(handle) }
        }
        if let error = context.sinkError { throw error }
        guard result == CURLE_OK else {
            let code = CurlCode(result)
            throw S3Error(
                code: code.isTimeout ? .timeout : code.isPermanent ? .tls : .transport,
                message: "\(request.method) \(Self.redactedURL(request.url)): \(code) (curl \(code.rawValue))",
                curlCode: code.rawValue)
        }
        var status: Int = 0
        _ = snap_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return HTTPResponse(
            status: status == 0 ? context.status : status, headers: context.headers, errorBody: context.errorBody)
    }

    /// The URL without its query (a query could carry a presigned signature; ours never does, but
    /// messages stay safe either way).
    static func redactedURL(_ url: String) -> String {
        if let q = url.firstIndex(of: "?") { return String(url[..<q]) + "?…" }
        return url
    }

    private func check(_ code: CURLcode, _ option: String) throws {
        guard code == CURLE_OK else {
            throw S3Error(
                code: .transport, message: "curl option \(option) refused: \(CurlCode(code))",
                curlCode: Int(code.rawValue))
        }
    }
}

/// curl_slist lists that must outlive the transfer.
private struct SList {
    private var lists: [UnsafeMutablePointer<curl_slist>] = []
    mutating func add(_ list: UnsafeMutablePointer<curl_slist>?) { if let list { lists.append(list) } }
    func free() { for list in lists { curl_slist_free_all(list) } }
}

/// Per-transfer state reached from the C callbacks (through an unretained pointer kept alive by
/// `withExtendedLifetime` for the duration of `curl_easy_perform`).
private final class TransferContext {
    let body: HTTPRequestBody
    private var fd: Int32 = -1
    private var position: UInt64 = 0

    var sink: ((UnsafeRawBufferPointer) throws -> Void)?
    var sinkError: (any Error)?
    var status = 0
    var headers: [(name: String, value: String)] = []
    var errorBody: [UInt8] = []
    static let maxErrorBody = 1 << 20

    init(body: HTTPRequestBody) throws {
        self.body = body
        if case .file(let path, _, _) = body {
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                let err = errno
                throw S3Error(
                    code: .fileIO, message: "cannot open \(path): \(String(cString: strerror(err)))")
            }
        }
    }

    func close() {
        if fd >= 0 {
            _ = Glibc.close(fd)
            fd = -1
        }
    }

    func read(into buffer: UnsafeMutableRawPointer, capacity: Int) -> Int {
        let remaining = body.length - position
        let count = Int(min(UInt64(capacity), remaining))
        guard count > 0 else { return 0 }
        switch body {
        case .none:
            return 0
        case .bytes(let bytes):
            bytes.withUnsafeBytes { source in
                buffer.copyMemory(from: source.baseAddress! + Int(position), byteCount: count)
            }
        case .file(_, let offset, _):
            let n = pread(fd, buffer, count, off_t(offset + position))
            guard n > 0 else { return Int(CURL_READFUNC_ABORT) }
            position += UInt64(n)
            return n
        }
        position += UInt64(count)
        return count
    }

    func seek(to offset: curl_off_t) -> Bool {
        guard offset >= 0, UInt64(offset) <= body.length else { return false }
        position = UInt64(offset)
        return true
    }

    /// One header line as curl delivers it (with its CR LF). Parsed on the bytes: this runs for every
    /// header of every answer, and Foundation's trimming was a visible share of a worker's CPU.
    func headerLine(_ raw: UnsafeRawBufferPointer) {
        let bytes = raw.bindMemory(to: UInt8.self)
        var end = bytes.count
        while end > 0, bytes[end - 1] == UInt8(ascii: "\n") || bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        let line = UnsafeBufferPointer(rebasing: bytes[0..<end])
        if line.starts(with: "HTTP/".utf8) {
            // A new status line (after `100 Continue`, or a new response): start over.
            headers.removeAll()
            let parts = line.split(separator: UInt8(ascii: " "), maxSplits: 2)
            status = parts.count > 1 ? Int(String(decoding: parts[1], as: UTF8.self)) ?? 0 : 0
            return
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return }
        func isBlank(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        var start = colon + 1
        var stop = line.count
        while start < stop, isBlank(line[start]) { start += 1 }
        while stop > start, isBlank(line[stop - 1]) { stop -= 1 }
        headers.append(
            (String(decoding: line[..<colon], as: UTF8.self), String(decoding: line[start..<stop], as: UTF8.self)))
    }

    func write(_ data: UnsafeRawBufferPointer) -> Int {
        if status >= 200 && status < 300 {
            guard let sink else { return data.count }
            do {
                try sink(data)
            } catch {
                sinkError = error
                return 0  // makes curl abort with CURLE_WRITE_ERROR
            }
        } else if errorBody.count < Self.maxErrorBody {
            errorBody.append(contentsOf: data.prefix(Self.maxErrorBody - errorBody.count))
        }
        return data.count
    }
}
