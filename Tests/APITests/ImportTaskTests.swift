import Foundation
import ProcessTestSupport
import Testing

/// ImportSnapshot end to end: objects in SeaweedFS, `snapimport serve` running the import-task engine,
/// the real aws CLI polling the tasks.
extension EndToEndTests {
    @Test(
        "import-snapshot from SeaweedFS: completed with its snapshot; a hostile image ends deleted with its code; cancel",
        .enabled(if: Tools.missing == nil, "\(Tools.missing ?? "")"),
        .enabled(if: s3Endpoint != nil, "SNAPIMPORT_TEST_S3_ENDPOINT is unset (scripts/test sets it)"))
    func importTasks() async throws {
        let (bucket, extra) = try Self.freshBucket()
        func aws3(_ args: [String]) throws -> Tools.Result { try Self.s3(args) }
        try await Session.with(catalog: nil, extraConfig: extra) { session in
            let directory = session.directory
            // A good raw disk, a raw disk declared VMDK (FormatMismatch), and a large one to cancel.
            func file(_ name: String, bytes: Int, seed: UInt8) throws -> String {
                let path = directory + "/" + name
                var data = [UInt8](repeating: 0, count: bytes)
                var state = UInt32(seed) | 1
                for i in data.indices {
                    state = state &* 1_664_525 &+ 1_013_904_223
                    data[i] = UInt8(truncatingIfNeeded: state >> 24)
                }
                try Data(data).write(to: URL(fileURLWithPath: path))
                return path
            }
            for (name, size, seed) in [("good.raw", 1 << 20, 3), ("liar.raw", 1 << 20, 5)] {
                let put = try aws3([
                    "s3", "cp", try file(name, bytes: size, seed: UInt8(seed)), "s3://\(bucket)/disks/\(name)",
                ])
                try #require(put.status == 0, "\(put)")
            }
            // 256 MiB of random bytes: long enough to import that a cancel sent at once finds it running.
            let big = directory + "/big.raw"
            let dd = try Tools.run(
                "/usr/bin/env", ["dd", "if=/dev/urandom", "of=\(big)", "bs=1M", "count=256", "status=none"])
            try #require(dd.status == 0, "\(dd)")
            let putBig = try aws3(["s3", "cp", big, "s3://\(bucket)/disks/big.raw"])
            try #require(putBig.status == 0, "\(putBig)")

            func start(_ key: String, format: String) throws -> String {
                let started = try session.awsOK(
                    "alice@acme",
                    [
                        "import-snapshot", "--description", "from \(key)",
                        "--disk-container", "Format=\(format),UserBucket={S3Bucket=\(bucket),S3Key=disks/\(key)}",
                    ])
                let detail = started["SnapshotTaskDetail"] as? [String: Any] ?? [:]
                #expect(detail["Status"] as? String == "active", "\(started)")
                return try #require(started["ImportTaskId"] as? String, "\(started)")
            }
            func task(_ id: String, as who: String = "alice@acme") throws -> [String: Any] {
                let out = try session.awsOK(who, ["describe-import-snapshot-tasks", "--import-task-ids", id])
                return (out["ImportSnapshotTasks"] as? [[String: Any]])?.first ?? [:]
            }
            func waitEnded(_ id: String) async throws -> [String: Any] {
                for _ in 0..<240 {
                    let detail = try task(id)["SnapshotTaskDetail"] as? [String: Any] ?? [:]
                    if detail["Status"] as? String != "active" { return detail }
                    try await Task.sleep(for: .milliseconds(500))
                }
                Issue.record("task \(id) still active after 120 s")
                return [:]
            }

            let good = try start("good.raw", format: "RAW")
            #expect(good.hasPrefix("import-snap-") && good.count == "import-snap-".count + 17)
            let liar = try start("liar.raw", format: "VMDK")
            let done = try await waitEnded(good)
            #expect(done["Status"] as? String == "completed", "\(done)")
            #expect(done["DiskImageSize"] as? Double == Double(1 << 20), "\(done)")
            let snapshotID = try #require(done["SnapshotId"] as? String, "\(done)")
            let snapshot = try session.awsOK("alice@acme", ["describe-snapshots", "--snapshot-ids", snapshotID])
            let record = (snapshot["Snapshots"] as? [[String: Any]])?.first ?? [:]
            #expect(record["OwnerId"] as? String == "alice@acme" && record["State"] as? String == "completed")
            #expect(record["Description"] as? String == "from good.raw")
            // The same task through boto3's view of the list, and not visible to another project.
            let hidden = try session.aws("bob@acme", ["describe-import-snapshot-tasks", "--import-task-ids", good])
            #expect(hidden.status == 255 && hidden.awsErrorCode == "InvalidConversionTaskId", "\(hidden)")

            let rejected = try await waitEnded(liar)
            #expect(rejected["Status"] as? String == "deleted", "\(rejected)")
            let message = rejected["StatusMessage"] as? String ?? ""
            #expect(message.hasPrefix("ClientError: FormatMismatch: "), "\(message)")
            #expect(rejected["SnapshotId"] == nil)

            // Cancel while it runs: the task ends deleted and no snapshot is left behind.
            let before = Set(Session.ids(try session.awsOK("operator", ["describe-snapshots"])))
            let cancelled = try session.boto("alice@acme", ["start-cancel", bucket, "disks/big.raw"])
            #expect(cancelled.object["previous"] as? String == "active", "\(cancelled)")
            let bigTask = try #require(cancelled.object["id"] as? String, "\(cancelled)")
            let ended = try await waitEnded(bigTask)
            #expect(ended["Status"] as? String == "deleted", "\(ended)")
            #expect((ended["StatusMessage"] as? String ?? "").contains("Cancelled"), "\(ended)")
            try await Task.sleep(for: .seconds(2))
            let after = Set(Session.ids(try session.awsOK("operator", ["describe-snapshots"])))
            #expect(after == before, "no snapshot (pending or not) is left by the cancelled import")
            let again = try session.aws("alice@acme", ["cancel-import-task", "--import-task-id", bigTask])
            #expect(again.awsErrorCode == "IncorrectState", "\(again)")
            let malformed = try session.aws("alice@acme", ["cancel-import-task", "--import-task-id", "import-snap-1"])
            #expect(malformed.awsErrorCode == "InvalidConversionTaskId.Malformed", "\(malformed)")
            // Plural Filters.N with task-state.
            let filtered = try session.awsOK(
                "alice@acme", ["describe-import-snapshot-tasks", "--filters", "Name=task-state,Values=completed"])
            let ids = (filtered["ImportSnapshotTasks"] as? [[String: Any]] ?? []).compactMap {
                $0["ImportTaskId"] as? String
            }
            #expect(ids == [good], "\(filtered)")
        }
    }
}

extension EndToEndTests {
    @Test(
        "an import task survives a crash of serve: after kill -9 a restart takes it over at once (no lease wait) and completes",
        .enabled(if: Tools.missing == nil, "\(Tools.missing ?? "")"),
        .enabled(if: s3Endpoint != nil, "SNAPIMPORT_TEST_S3_ENDPOINT is unset (scripts/test sets it)"))
    func importTaskSurvivesCrash() async throws {
        let (bucket, _) = try Self.freshBucket()
        // A slow S3 (every ranged GET held 1.5 s) in front of SeaweedFS, so that the crash catches the import
        // in the middle however fast the machine is.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("proxy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let proxy = Process()
        proxy.executableURL = URL(fileURLWithPath: Tools.python!)
        proxy.arguments = [
            Tools.root.appendingPathComponent("Tests/fault_proxy.py").path, Self.s3Endpoint!, directory + "/proxy.log", "1500",
            "delay",
        ]
        let out = Pipe()
        proxy.standardOutput = out
        try proxy.run()
        defer { kill(proxy.processIdentifier, SIGKILL) }
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let port = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(Int(port) != nil, "fault_proxy.py printed no port: \(port)")
        let extra = "[s3]\nendpoint = \"http://127.0.0.1:\(port)\"\nregion = \"us-east-1\"\nbucket = \"\(bucket)\"\n"
        try await Session.with(catalog: nil, extraConfig: extra) { session in
            let big = session.directory + "/big.raw"
            let dd = try Tools.run(
                "/usr/bin/env", ["dd", "if=/dev/urandom", "of=\(big)", "bs=1M", "count=256", "status=none"])
            try #require(dd.status == 0, "\(dd)")
            let put = try Self.s3(["s3", "cp", big, "s3://\(bucket)/disks/big.raw"])
            try #require(put.status == 0, "\(put)")
            let started = try session.awsOK(
                "alice@acme",
                [
                    "import-snapshot", "--disk-container",
                    "Format=RAW,UserBucket={S3Bucket=\(bucket),S3Key=disks/big.raw}",
                ])
            let id = try #require(started["ImportTaskId"] as? String, "\(started)")
            // Crash once the runner holds the task (under the default 60 s lease).
            for _ in 0..<100 {
                let out = try session.awsOK("alice@acme", ["describe-import-snapshot-tasks", "--import-task-ids", id])
                let detail =
                    (out["ImportSnapshotTasks"] as? [[String: Any]])?.first?["SnapshotTaskDetail"] as? [String: Any]
                if detail?["StatusMessage"] as? String == "downloading/converting" { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            // Same lease: the new process takes the task over because the dead one's proof of life (its
            // worker lock) is free, not because the lease ran out.
            let restarted = ContinuousClock.now
            try await session.server.crashAndRestart()
            var tookOver = false
            while ContinuousClock.now - restarted < .seconds(45) {
                if session.server.log.contains("the runner holding an import task died") {
                    tookOver = true
                    break
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(tookOver, "taken over well before the 60 s lease ends: \(session.server.log.suffix(3000))")
            var detail: [String: Any] = [:]
            for _ in 0..<240 {
                let out = try session.awsOK("alice@acme", ["describe-import-snapshot-tasks", "--import-task-ids", id])
                detail =
                    (out["ImportSnapshotTasks"] as? [[String: Any]])?.first?["SnapshotTaskDetail"] as? [String: Any]
                    ?? [:]
                if detail["Status"] as? String != "active" { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(detail["Status"] as? String == "completed", "\(detail)")
            let snapshotID = try #require(detail["SnapshotId"] as? String, "\(detail)")
            // Exactly one completed snapshot; the crashed attempt's own pending snapshot is never completed
            // (the core recovers it to `error` once its writer's lease has run out).
            let all = try session.awsOK("operator", ["describe-snapshots"])["Snapshots"] as? [[String: Any]] ?? []
            let completed = all.filter { $0["State"] as? String == "completed" }.compactMap {
                $0["SnapshotId"] as? String
            }
            #expect(completed == [snapshotID], "\(all)")
            #expect(all.count <= 2, "at most the crashed attempt's pending/error snapshot besides: \(all)")
        }
    }
}
