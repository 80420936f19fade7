import Foundation
import ProcessTestSupport
import Importer
import S3
import SnapshotCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `snapimport import`, `imports list` and `watch` through the built binary.
@Suite("Importer commands", .serialized, .enabled(if: E2E.isConfigured, E2E.skipReason))
struct CommandTests {
    @Test("import s3://… and a local file print the snapshot document; the same object twice is one snapshot")
    func manualImport() async throws {
        let e2e = try #require(E2E.load("import-cmd"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let fixtures = try Fixtures.everyFormat(e2e, directory: "\(e2e.work)/fx", seed: 5)
        let qcow2 = try #require(fixtures.first { $0.name == "disk.qcow2" })
        let key = "\(e2e.prefix)some/where/a b+c.qcow2"
        try await client.putObject(
            bucket: bucket, key: key, body: Array(try Data(contentsOf: URL(fileURLWithPath: qcow2.path))))
        let data = "\(e2e.work)/data"
        let config = try e2e.writeConfig(bucket: bucket, data: data)
        let binary = try Tools.snapimportBinary()

        let first = try Tools.run(
            binary,
            ["import", "s3://\(bucket)/\(key)", "--project", "web@acme", "--description", "by hand", "--json",
             "--config", config])
        #expect(first.status == 0, "\(first.stderr)")
        let document = try jsonObject(first.stdout)
        #expect(document["project"] as? String == "web@acme")
        #expect(document["format"] as? String == "qcow2")
        #expect(document["description"] as? String == "by hand")
        #expect((document["source"] as? [String: Any])?["key"] as? String == key)
        let again = try Tools.run(
            binary, ["import", "s3://\(bucket)/\(key)", "--project", "web@acme", "--json", "--config", config])
        #expect(again.status == 0)
        #expect(try jsonObject(again.stdout)["id"] as? String == document["id"] as? String)

        let local = try Tools.run(
            binary, ["import", qcow2.path, "--project", "web@acme", "--format", "qcow2", "--json", "--config", config])
        #expect(local.status == 0, "\(local.stderr)")
        #expect((try jsonObject(local.stdout)["source"] as? [String: Any])?["kind"] as? String == "file")

        let mismatch = try Tools.run(
            binary, ["import", qcow2.path, "--project", "web@acme", "--format", "vdi", "--json", "--config", config])
        #expect(mismatch.status == 1)
        #expect((try jsonObject(mismatch.stdout)["error"] as? [String: Any])?["code"] as? String == "FormatMismatch")

        let reference = try Fixtures.reference(e2e, qcow2)
        let bytes = try await withStore(data: data, catalogURL: nil) { service in
            let all = try await service.listSnapshots(caller: .operator)
            #expect(all.count == 2)
            return try await snapshotBytes(service, try #require(all.first))
        }
        #expect(bytes == reference)

        let list = try Tools.run(binary, ["imports", "list", "--json", "--config", config])
        #expect(list.status == 0)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]])
        #expect(rows.count == 1)
        #expect(rows.first?["state"] as? String == "imported")
        #expect(rows.first?["snapshot"] as? String == document["id"] as? String)
    }

    @Test("an object under incoming/<owner>/ belongs to that owner: --project defaults to it, another is OwnerMismatch")
    func manualImportOwner() async throws {
        let e2e = try #require(E2E.load("import-owner"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let key = "\(e2e.prefix)incoming/web@acme/o.raw"
        try await client.putObject(bucket: bucket, key: key, body: Fixtures.baseDisk(size: 1 << 20, seed: 3))
        let data = "\(e2e.work)/data"
        let config = try e2e.writeConfig(bucket: bucket, data: data)
        let binary = try Tools.snapimportBinary()

        let stolen = try Tools.run(
            binary, ["import", "s3://\(bucket)/\(key)", "--project", "qa@acme", "--json", "--config", config])
        #expect(stolen.status == 1)
        #expect((try jsonObject(stolen.stdout)["error"] as? [String: Any])?["code"] as? String == "OwnerMismatch")
        let nothing = try await withStore(data: data, catalogURL: nil) { service in
            (try await service.listSnapshots(caller: .operator), try await service.listImports())
        }
        #expect(nothing.0.isEmpty && nothing.1.isEmpty, "nothing was imported or claimed")

        let owned = try Tools.run(binary, ["import", "s3://\(bucket)/\(key)", "--json", "--config", config])
        #expect(owned.status == 0, "\(owned.stderr)")
        #expect(try jsonObject(owned.stdout)["project"] as? String == "web@acme")
        let same = try Tools.run(
            binary, ["import", "s3://\(bucket)/\(key)", "--project", "web@acme", "--json", "--config", config])
        #expect(same.status == 0)
        #expect(try jsonObject(same.stdout)["id"] as? String == (try jsonObject(owned.stdout)["id"] as? String))

        let outside = "\(e2e.prefix)elsewhere/o.raw"
        try await client.putObject(bucket: bucket, key: outside, body: Fixtures.baseDisk(size: 1 << 20, seed: 4))
        let unnamed = try Tools.run(binary, ["import", "s3://\(bucket)/\(outside)", "--json", "--config", config])
        #expect(unnamed.status == 2, "an object outside incoming/ needs --project")
    }

    @Test("watch imports what arrives and stops cleanly on SIGTERM")
    func watchStopsOnSIGTERM() async throws {
        let e2e = try #require(E2E.load("watch"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let data = "\(e2e.work)/data"
        let config = try e2e.writeConfig(bucket: bucket, data: data)
        let binary = try Tools.snapimportBinary()
        let watcher = try Tools.start(binary, ["watch", "--interval", "0.2", "--config", config])
        try await Task.sleep(for: .milliseconds(500))
        try await client.putObject(bucket: bucket, key: "\(e2e.prefix)incoming/p@c/late.raw", body: Fixtures.baseDisk(size: 1 << 20, seed: 7))
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while clock.now < deadline, try await keys(client, bucket, "\(e2e.prefix)processed/").isEmpty {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await keys(client, bucket, "\(e2e.prefix)processed/").contains("\(e2e.prefix)processed/p@c/late.raw"))
        let stopping = clock.now
        kill(watcher.processIdentifier, SIGTERM)
        let result = Tools.finish(watcher)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(clock.now - stopping < .seconds(10))
        #expect(result.stderr.contains("snap-"), "logs carry the snapshot ID")
    }

    /// `Tests/fault_proxy.py` in `delay` mode in front of the S3 server: every ranged GET and copy waits
    /// `milliseconds` (a slow S3, so that an import is caught reading, or moving to processed/).
    func slowProxy(_ e2e: E2E, milliseconds: Int) throws -> (Process, String) {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fault_proxy.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, e2e.endpoint, "\(e2e.work)/proxy.log", "\(milliseconds)", "delay"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let port = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard Int(port) != nil else { throw HarnessError("fault_proxy.py printed no port: \(port)") }
        return (process, "http://127.0.0.1:\(port)")
    }

    @Test("watch on SIGTERM: it logs what it really does, abandons uncommitted work within the grace, finishes moves")
    func watchShutdownIsHonest() async throws {
        let e2e = try #require(E2E.load("watch-shutdown"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let (proxy, slowEndpoint) = try slowProxy(e2e, milliseconds: 2000)
        defer { kill(proxy.processIdentifier, SIGKILL) }
        var big = [UInt8](repeating: 0, count: 48 << 20)
        var generator = SystemRandomNumberGenerator()
        big.withUnsafeMutableBytes { buffer in
            for i in buffer.bindMemory(to: UInt64.self).indices {
                buffer.bindMemory(to: UInt64.self)[i] = generator.next()
            }
        }
        let key = "\(e2e.prefix)incoming/p@c/slow.raw"
        try await client.putObject(bucket: bucket, key: key, body: big)
        let data = "\(e2e.work)/data"
        let direct = try e2e.writeConfig(bucket: bucket, data: data)
        let config = "\(e2e.work)/slow.toml"
        try String(contentsOfFile: direct, encoding: .utf8).replacingOccurrences(of: e2e.endpoint, with: slowEndpoint)
            .write(toFile: config, atomically: false, encoding: .utf8)
        let binary = try Tools.snapimportBinary()
        let clock = ContinuousClock()

        func snapshots() async throws -> [SnapshotRecord] {
            try await withStore(data: data, catalogURL: nil) { try await $0.listSnapshots(caller: .operator) }
        }
        func importRow() async throws -> ImportRecord? {
            try await withStore(data: data, catalogURL: nil) { try await $0.listImports().first { $0.key.key == key } }
        }
        func waitFor(_ what: String, _ condition: () async throws -> Bool) async throws {
            let deadline = clock.now + .seconds(90)
            while clock.now < deadline {
                if try await condition() { return }
                try await Task.sleep(for: .milliseconds(30))
            }
            Issue.record("timed out waiting for \(what)")
        }

        // 1. SIGTERM while the image is being read, grace 1 s: the import is abandoned, not failed.
        let first = try Tools.start(binary, ["watch", "--interval", "0.2", "--shutdown-grace", "1", "--config", config])
        try await waitFor("the pending snapshot") { try await snapshots().contains { $0.state == .pending } }
        let stopping = clock.now
        kill(first.processIdentifier, SIGTERM)
        let stopped = Tools.finish(first)
        let took = clock.now - stopping
        print("watch SIGTERM mid-read with a 1 s grace and 2 s S3 requests: stopped after \(took)")
        #expect(stopped.status == 0, "\(stopped.stderr)")
        #expect(took < .seconds(1 + 2 + 4), "the grace plus one in-flight S3 request (and some slack)")
        let log = stopped.stderr
        for line in log.split(separator: "\n") where line.contains("shut") || line.contains("grace period") {
            print("watch log (abandon): \(line)")
        }
        #expect(log.contains("finishing the move of 0 committed import(s); 1 import(s) in progress get"), "\(log)")
        #expect(log.contains("grace period over: cancelling 1 uncommitted import(s)"), "\(log)")
        #expect(log.contains("shutdown: 0 imported"), "\(log)")
        #expect(log.contains("abandoned 1 (released, not counted as an attempt"), "\(log)")
        #expect(!log.contains("transient failure"), "an abandoned import is not a failure: \(log)")
        #expect(try await snapshots().isEmpty, "nothing pending, nothing visible")
        let released = try #require(try await importRow())
        #expect(released.state == .retry && released.attempts == 0 && released.errorCode == "Cancelled")
        #expect(try await keys(client, bucket, "\(e2e.prefix)incoming/") == [key])

        // 2. SIGTERM while the committed import moves to processed/ (copies take 2 s): the move is finished.
        let second = try Tools.start(binary, ["watch", "--interval", "0.2", "--shutdown-grace", "20", "--config", config])
        try await waitFor("the committed snapshot") { try await snapshots().contains { $0.state == .available } }
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await keys(client, bucket, "\(e2e.prefix)incoming/") == [key], "caught before the move ended")
        kill(second.processIdentifier, SIGTERM)
        let finished = Tools.finish(second)
        #expect(finished.status == 0, "\(finished.stderr)")
        let log2 = finished.stderr
        for line in log2.split(separator: "\n") where line.contains("shut") || line.contains("grace period") {
            print("watch log (move): \(line)")
        }
        // The test sees the catalog commit a moment before the worker counts it as committed: on a loaded
        // machine SIGTERM can land in between, and the worker then (truthfully) reports it as in progress.
        #expect(
            log2.contains("finishing the move of 1 committed import(s); 0 import(s) in progress")
                || log2.contains("finishing the move of 0 committed import(s); 1 import(s) in progress"),
            "\(log2)")
        #expect(log2.contains("shutdown: 1 imported (0 of them left for the next pass"), "\(log2)")
        #expect(log2.contains("abandoned 0"), "\(log2)")
        #expect(!log2.contains("grace period over"), "\(log2)")
        #expect(try await keys(client, bucket, "\(e2e.prefix)incoming/").isEmpty)
        #expect(try await keys(client, bucket, "\(e2e.prefix)processed/").contains("\(e2e.prefix)processed/p@c/slow.raw"))
        let imported = try #require(try await importRow())
        #expect(imported.state == .imported)
        #expect(imported.attempts == 1, "the shut-down attempt was given back: this is the first counted one")
    }

    @Test("kill -9 of a manual import s3://… mid-way, then the same import at once (600 s lease): one snapshot")
    func killedManualImportIsTakenOver() async throws {
        let e2e = try #require(E2E.load("import-kill"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let (proxy, slowEndpoint) = try slowProxy(e2e, milliseconds: 1500)
        defer { kill(proxy.processIdentifier, SIGKILL) }
        var disk = [UInt8](repeating: 0, count: 32 << 20)
        var generator = SystemRandomNumberGenerator()
        for i in stride(from: 0, to: disk.count, by: 8) {
            withUnsafeBytes(of: generator.next()) { disk.replaceSubrange(i..<i + 8, with: $0) }
        }
        let key = "\(e2e.prefix)incoming/p@c/manual.raw"
        try await client.putObject(bucket: bucket, key: key, body: disk)
        let data = "\(e2e.work)/data"
        let direct = try e2e.writeConfig(bucket: bucket, data: data)
        let slow = "\(e2e.work)/slow.toml"
        try String(contentsOfFile: direct, encoding: .utf8).replacingOccurrences(of: e2e.endpoint, with: slowEndpoint)
            .write(toFile: slow, atomically: false, encoding: .utf8)
        let binary = try Tools.snapimportBinary()
        var environment = e2e.environment
        environment["SNAPIMPORT_LEASE_SECONDS"] = "600"

        let victim = try Tools.start(binary, ["import", "s3://\(bucket)/\(key)", "--config", slow], environment: environment)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(60)
        var sawPending = false
        while !sawPending, clock.now < deadline, victim.isRunning {
            sawPending = try await withStore(data: data, catalogURL: nil) { service in
                try await service.listSnapshots(caller: .operator).contains { $0.state == .pending }
            }
            if !sawPending { try await Task.sleep(for: .milliseconds(30)) }
        }
        kill(victim.processIdentifier, SIGKILL)
        _ = Tools.finish(victim)
        try #require(sawPending, "the import was killed while writing its snapshot")

        let again = try Tools.run(
            binary, ["import", "s3://\(bucket)/\(key)", "--json", "--config", direct], environment: environment)
        #expect(again.status == 0, "taken over at once, not 'being imported by another worker': \(again.stderr)")
        let (all, row, bytes) = try await withStore(data: data, catalogURL: nil) { service in
            let all = try await service.listSnapshots(caller: .operator)
            var bytes: [UInt8]?
            if let first = all.first { bytes = try await snapshotBytes(service, first) }
            return (all, try await service.listImports().first, bytes)
        }
        #expect(all.count == 1 && all.first?.state == .available, "\(all.map { $0.state })")
        #expect(bytes == disk)
        #expect(row?.state == .imported && row?.attempts == 2)
    }
}
