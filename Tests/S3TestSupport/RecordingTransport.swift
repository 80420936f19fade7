public import S3
import Synchronization

/// A transport that passes requests to another one (usually the real `CurlTransport`) and records them:
/// what a test counts or inspects on the wire.
public final class RecordingTransport: S3Transport {
    public let base: any S3Transport
    private let recorded = Mutex<[HTTPRequest]>([])

    public init(_ base: any S3Transport) { self.base = base }

    /// Every request so far, in the order they were made.
    public var requests: [HTTPRequest] { recorded.withLock { $0 } }
    public func reset() { recorded.withLock { $0.removeAll() } }

    public func perform(_ request: HTTPRequest, onData: (UnsafeRawBufferPointer) throws -> Void) throws
        -> HTTPResponse
    {
        recorded.withLock { $0.append(request) }
        return try base.perform(request, onData: onData)
    }
}
