import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP proxy in front of the S3 server that a test can cut (SIGKILL: every connection
/// drops, new ones are refused — as if the server stopped) and start again on the same port.
final class CuttableProxy: @unchecked Sendable {
    // Safe: `process` is only touched by the test task that owns the proxy, one call at a time.
    let port: Int
    let target: String
    let script: String
    private var process: Process?

    static let source = """
        import socket, sys, threading
        port, host, tport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
        srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port)); srv.listen(64)
        print("ready", flush=True)
        def pump(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d: break
                    b.sendall(d)
            except OSError: pass
            finally:
                for s in (a, b):
                    try: s.shutdown(socket.SHUT_RDWR)
                    except OSError: pass
        while True:
            c, _ = srv.accept()
            u = socket.create_connection((host, tport))
            threading.Thread(target=pump, args=(c, u), daemon=True).start()
            threading.Thread(target=pump, args=(u, c), daemon=True).start()
        """

    /// - Parameter endpoint: `http://127.0.0.1:PORT` of the real server.
    init(endpoint: String, work: String) throws {
        guard let url = URL(string: endpoint), let host = url.host, let targetPort = url.port else {
            throw HarnessError("bad endpoint \(endpoint)")
        }
        target = "\(host) \(targetPort)"
        script = "\(work)/proxy.py"
        try Self.source.write(toFile: script, atomically: false, encoding: .utf8)
        // A free port: bind to 0 and read it back.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        close(fd)
    }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, "\(port)"] + target.split(separator: " ").map(String.init)
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        // Wait for "ready".
        _ = out.fileHandleForReading.availableData
        self.process = process
    }

    /// Kills the proxy: connections reset, new ones refused.
    func cut() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit { cut() }
}
