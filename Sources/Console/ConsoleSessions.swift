import Crypto
public import Foundation
public import SnapshotCore

/// A signed-in browser: who it acts as, its CSRF token and its age.
public struct ConsoleSession: Sendable, Equatable {
    /// The cookie value: 32 random bytes, base64url.
    public let id: String
    /// The token every form of this session carries (checked on every POST): 32 random bytes, base64url.
    public let csrfToken: String
    /// The access key it signed in with; every request looks the key up again.
    public let accessKeyID: String
    public let caller: Caller
    public let createdAt: Date
    public internal(set) var lastSeen: Date
}

/// The server-side sessions of the console, in memory: one `serve` process holds them, and a restart
/// signs everyone out.
///
/// A session ends when it has been idle for `idleTimeout`, when it is `absoluteTimeout` old (whatever its
/// use), on sign-out, or when its access key no longer names the same caller (checked by the console on
/// every request). At most `maxSessions` live at once: the least recently used one makes room.
public actor ConsoleSessionStore {
    public let idleTimeout: TimeInterval
    public let absoluteTimeout: TimeInterval
    public let maxSessions: Int
    private let clock: @Sendable () -> Date
    private var sessions: [String: ConsoleSession] = [:]

    public init(
        idleTimeout: TimeInterval = 30 * 60, absoluteTimeout: TimeInterval = 8 * 3600, maxSessions: Int = 10_000,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.idleTimeout = idleTimeout
        self.absoluteTimeout = absoluteTimeout
        self.maxSessions = max(1, maxSessions)
        self.clock = clock
    }

    /// A new session for `caller`.
    public func create(accessKeyID: String, caller: Caller) -> ConsoleSession {
        let now = clock()
        purge(now)
        if sessions.count >= maxSessions, let oldest = sessions.values.min(by: { $0.lastSeen < $1.lastSeen }) {
            sessions[oldest.id] = nil
        }
        let session = ConsoleSession(
            id: SecureToken.make(), csrfToken: SecureToken.make(), accessKeyID: accessKeyID, caller: caller,
            createdAt: now, lastSeen: now)
        sessions[session.id] = session
        return session
    }

    /// The live session with this cookie value (its idle clock restarted), nil when unknown or expired.
    public func session(_ id: String) -> ConsoleSession? {
        let now = clock()
        guard var session = sessions[id] else { return nil }
        guard !isExpired(session, now) else {
            sessions[id] = nil
            return nil
        }
        session.lastSeen = now
        sessions[id] = session
        return session
    }

    /// Ends a session (sign-out, or its key no longer matches).
    public func remove(_ id: String) {
        sessions[id] = nil
    }

    /// How many sessions are live.
    public var count: Int {
        purge(clock())
        return sessions.count
    }

    private func isExpired(_ session: ConsoleSession, _ now: Date) -> Bool {
        now.timeIntervalSince(session.lastSeen) >= idleTimeout
            || now.timeIntervalSince(session.createdAt) >= absoluteTimeout
    }

    private func purge(_ now: Date) {
        sessions = sessions.filter { !isExpired($0.value, now) }
    }
}

/// Random tokens and comparisons that take the same time whatever the input.
public enum SecureToken {
    /// 32 bytes from the system's cryptographic generator, base64url without padding (43 characters, safe in a
    /// cookie and a form).
    public static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Whether `a` equals `b`, in a time that depends on neither (both are hashed to 32 bytes first, then every
    /// byte is compared).
    public static func equal(_ a: String, _ b: String) -> Bool {
        let x = SHA256.hash(data: Data(a.utf8))
        let y = SHA256.hash(data: Data(b.utf8))
        var difference: UInt8 = 0
        for (p, q) in zip(x, y) { difference |= p ^ q }
        return difference == 0
    }
}
