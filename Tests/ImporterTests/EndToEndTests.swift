import Foundation
import ProcessTestSupport
import Importer
import Logging
import S3
import SnapshotCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The importer against the real SeaweedFS (SigV4 enforced), the built `snapimport` binary and
/// qemu-img as the conversion oracle. Skipped, with a printed reason, when scripts/test's
/// environment variables are unset.
@Suite("Importer end to end", .serialized, .enabled(if: E2E.isConfigured, E2E.skipReason))
struct EndToEndTests {
    /// Uploads every format for two projects (keys with spaces and `+`), a hostile image and a sidecar.
    /// - Returns: key → reference bytes of the valid images.
    func populate(_ e2e: E2E, _ client: S3Client, bucket: String) async throws -> [String: [UInt8]] {
        var expected: [String: [UInt8]] = [:]
        for (project, seed) in [("web@acme", UInt8(1)), ("db-2@globex", UInt8(2))] {
            let fixtures = try Fixtures.everyFormat(e2e, directory: "\(e2e.work)/\(project)", seed: seed)
            for fixture in fixtures {
                let key = "\(e2e.prefix)incoming/\(project)/dir one/\(fixture.name.replacingOccurrences(of: ".", with: " +."))"
                try await client.putObject(
                    bucket: bucket, key: key, body: Array(try Data(contentsOf: URL(fileURLWithPath: fixture.path))))
                expected[key] = try Fixtures.reference(e2e, fixture)
            }
        }
        let hostile = try Fixtures.hostile(e2e, directory: "\(e2e.work)/web@acme")
        try await client.putObject(
            bucket: bucket, key: "\(e2e.prefix)incoming/web@acme/hostile.qcow2",
            body: Array(try Data(contentsOf: URL(fileURLWithPath: hostile.path))))
        let sidecar = #"{"description":"from the sidecar","format":"qcow2","shareWith":["qa@acme"]}"#
        try await client.putObject(
            bucket: bucket, key: "\(e2e.prefix)incoming/web@acme/dir one/disk +.qcow2.json", body: Array(sidecar.utf8))
        return expected
    }

    /// Checks exactly-once and byte equality: one available snapshot per expected key, equal to
    /// qemu-img's reading; nothing pending; incoming/ empty.
    func verify(
        _ e2e: E2E, _ client: S3Client, bucket: String, data: String, catalog: String?, expected: [String: [UInt8]],
        blocks: String? = nil
    ) async throws {
        let found = try await readBack(data: data, catalog: catalog, bucket: bucket, blocks: blocks.map { (e2e, $0) })
        #expect(found.pending == 0, "no snapshot left pending")
        for (key, reference) in expected {
            let copies = found.byKey[key] ?? []
            #expect(copies.count == 1, "\(key): \(copies.count) snapshots")
            guard let bytes = copies.first else { continue }
            #expect(bytes.count == reference.count, "\(key): size")
            #expect(bytes == reference, "\(key): bytes differ from qemu-img convert -O raw")
        }
        #expect(try await keys(client, bucket, "\(e2e.prefix)incoming/").isEmpty)
        for key in expected.keys {
            let processed = "\(e2e.prefix)processed/" + key.dropFirst("\(e2e.prefix)incoming/".count)
            let receipt = try await client.getObject(bucket: bucket, key: processed + ".snapshot.json")
            let document = try jsonObject(String(decoding: receipt, as: UTF8.self))
            #expect(document["state"] as? String == "available")
            #expect((document["source"] as? [String: Any])?["key"] as? String == key)
        }
    }

    struct ReadBack: Sendable {
        var pending = 0
        /// Incoming key → the bytes of every available snapshot made from it.
        var byKey: [String: [[UInt8]]] = [:]
    }

    func readBack(data: String, catalog: String?, bucket: String, blocks: (E2E, String)? = nil) async throws -> ReadBack {
        try await withStore(data: data, catalogURL: catalog, blocks: blocks) { service in
            var result = ReadBack()
            for snapshot in try await service.listSnapshots(caller: .operator) {
                if snapshot.state == .pending { result.pending += 1 }
                guard snapshot.state == .available, case .object(let b, let key, _) = snapshot.source, b == bucket
                else { continue }
                result.byKey[key, default: []].append(try await snapshotBytes(service, snapshot))
            }
            return result
        }
    }

    @Test("one run imports every format once, rejects the hostile image, and a second run does nothing")
    func runImportsEveryFormatOnce() async throws {
        let e2e = try #require(E2E.load("run-once"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let expected = try await populate(e2e, client, bucket: bucket)
        let data = "\(e2e.work)/data"
        let config = try e2e.writeConfig(bucket: bucket, data: data)
        let binary = try Tools.snapimportBinary()

        let first = try Tools.run(binary, ["run", "--json", "--config", config])
        #expect(first.status == 1, "a rejected image makes the pass exit 1: \(first.stderr)")
        let summary = try jsonObject(first.stdout)
        #expect((summary["imported"] as? [Any])?.count == expected.count)
        let rejected = try #require(summary["rejected"] as? [[String: Any]])
        #expect(rejected.count == 1)
        #expect(rejected.first?["code"] as? String == "BackingFileNotAllowed")
        #expect(rejected.first?["key"] as? String == "\(e2e.prefix)incoming/web@acme/hostile.qcow2")

        try await verify(e2e, client, bucket: bucket, data: data, catalog: nil, expected: expected)
        // The hostile image and its report in failed/.
        let report = try jsonObject(
            String(decoding: try await client.getObject(bucket: bucket, key: "\(e2e.prefix)failed/web@acme/hostile.qcow2.error.json"),
                   as: UTF8.self))
        #expect(report["code"] as? String == "BackingFileNotAllowed")
        #expect(report["key"] as? String == "\(e2e.prefix)incoming/web@acme/hostile.qcow2")
        #expect(Set(report.keys) == ["code", "message", "key", "etag", "at"])
        #expect((report["etag"] as? String)?.isEmpty == false)
        // The sidecar: description, sharing, and it moved along with its image.
        let withSidecar = try await withStore(data: data, catalogURL: nil) { service in
            try await service.listSnapshots(caller: .operator).first { $0.description == "from the sidecar" }
        }
        let sidecarSnapshot = try #require(withSidecar)
        #expect(sidecarSnapshot.sharedWith.map(\.description) == ["qa@acme"])
        #expect(try await keys(client, bucket, "\(e2e.prefix)processed/web@acme/dir one/disk +.qcow2.json") == [
            "\(e2e.prefix)processed/web@acme/dir one/disk +.qcow2.json"
        ])

        // A second run: nothing to do, exit 0, no new snapshot.
        let second = try Tools.run(binary, ["run", "--json", "--config", config])
        #expect(second.status == 0, "\(second.stderr)")
        let again = try jsonObject(second.stdout)
        #expect((again["imported"] as? [Any])?.isEmpty == true)
        let count = try await withStore(data: data, catalogURL: nil) { try await $0.listSnapshots(caller: .operator).count }
        #expect(count == expected.count)
        // Quiet on success without --json.
        let quiet = try Tools.run(binary, ["run", "--config", config])
        #expect(quiet.status == 0 && quiet.stdout.isEmpty)
    }

    /// Small images for the concurrency tests: `count` raw disks with distinct content.
    func uploadSmall(_ e2e: E2E, _ client: S3Client, bucket: String, count: Int, projects: [String]) async throws -> [String: [UInt8]] {
        var expected: [String: [UInt8]] = [:]
        for i in 0..<count {
            let project = projects[i % projects.count]
            let key = "\(e2e.prefix)incoming/\(project)/img \(i)+x.raw"
            let bytes = Fixtures.baseDisk(size: 1 << 20, seed: UInt8(i + 10))
            try await client.putObject(bucket: bucket, key: key, body: bytes)
            expected[key] = bytes
        }
        return expected
    }

    func twoWorkers(catalog: String?, test: String) async throws {
        let e2e = try #require(E2E.load(test))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let expected = try await uploadSmall(e2e, client, bucket: bucket, count: 12, projects: ["a@acme", "b@globex"])
        let data = "\(e2e.work)/data"
        let config = try e2e.writeConfig(bucket: bucket, data: data, catalog: catalog)
        let binary = try Tools.snapimportBinary()
        let one = try Tools.start(binary, ["run", "--json", "--config", config])
        let two = try Tools.start(binary, ["run", "--json", "--config", config])
        let results = [Tools.finish(one), Tools.finish(two)]
        var importedKeys: [String] = []
        for result in results {
            #expect(result.status == 0, "\(result.stderr)")
            let summary = try jsonObject(result.stdout)
            importedKeys += (summary["imported"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String }
        }
        #expect(importedKeys.sorted() == expected.keys.sorted(), "every image imported by exactly one worker")
        try await verify(e2e, client, bucket: bucket, data: data, catalog: catalog, expected: expected)
    }

    @Test("an OVA and a gzip-compressed qcow2 from the bucket: the snapshots equal qemu-img's reading of the disk inside")
    func containersFromTheBucket() async throws {
        let e2e = try #require(E2E.load("containers"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let directory = "\(e2e.work)/fx"
        let fixtures = try Fixtures.everyFormat(e2e, directory: directory, seed: 6)
        let vmdk = try #require(fixtures.first { $0.name == "stream.vmdk" })
        let qcow2 = try #require(fixtures.first { $0.name == "disk.qcow2" })
        // An OVA as hypervisors export it: the OVF descriptor first, then the disk it names.
        let ovf = """
            <?xml version="1.0" encoding="UTF-8"?>
            <Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
              <References><File ovf:href="stream.vmdk" ovf:id="file1"/></References>
              <DiskSection><Info>disks</Info>
                <Disk ovf:capacity="3" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1"
                  ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
              </DiskSection>
              <VirtualSystem ovf:id="vm"><Info>a machine</Info></VirtualSystem>
            </Envelope>
            """
        try ovf.write(toFile: "\(directory)/appliance.ovf", atomically: false, encoding: .utf8)
        let ova = "\(e2e.work)/appliance.ova"
        let tar = try Tools.run("/usr/bin/tar", ["-C", directory, "--format=ustar", "-cf", ova, "appliance.ovf", "stream.vmdk"])
        try #require(tar.status == 0, "\(tar.stderr)")
        let gzip = try Tools.run("/bin/sh", ["-c", "gzip -c '\(qcow2.path)' > '\(e2e.work)/disk.qcow2.gz'"])
        try #require(gzip.status == 0, "\(gzip.stderr)")
        var expected: [String: [UInt8]] = [:]
        for (file, name, inner) in [(ova, "appliance.ova", vmdk), ("\(e2e.work)/disk.qcow2.gz", "disk.qcow2.gz", qcow2)] {
            let key = "\(e2e.prefix)incoming/web@acme/\(name)"
            try await client.putObject(bucket: bucket, key: key, body: Array(try Data(contentsOf: URL(fileURLWithPath: file))))
            expected[key] = try Fixtures.reference(e2e, inner)
        }
        let data = "\(e2e.work)/data"
        let config = try e2e.writeConfig(bucket: bucket, data: data)
        let pass = try Tools.run(Tools.snapimportBinary(), ["run", "--json", "--config", config])
        #expect(pass.status == 0, "\(pass.stderr)")
        #expect((try jsonObject(pass.stdout)["imported"] as? [Any])?.count == 2)
        try await verify(e2e, client, bucket: bucket, data: data, catalog: nil, expected: expected)
        let formats = try await withStore(data: data, catalogURL: nil) { service in
            try await service.listSnapshots(caller: .operator).map(\.format).sorted()
        }
        #expect(formats == ["qcow2", "vmdk"], "the format is the disk's inside the container")
    }

    @Test("raw and streamOptimized VMDK in compressed streams, a GCE tar.gz and an ova.gz import from the bucket with no scratch file")
    func compressedStreamsImportWithoutAScratchFile() async throws {
        let e2e = try #require(E2E.load("streamed"))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let directory = "\(e2e.work)/fx"
        let fixtures = try Fixtures.everyFormat(e2e, directory: directory, seed: 7)
        let raw = try #require(fixtures.first { $0.name == "disk.raw" })
        let vmdk = try #require(fixtures.first { $0.name == "stream.vmdk" })
        let qcow2 = try #require(fixtures.first { $0.name == "disk.qcow2" })
        let ovf = """
            <?xml version="1.0" encoding="UTF-8"?>
            <Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
              <References><File ovf:href="disk.raw" ovf:id="file1"/></References>
              <VirtualSystem ovf:id="vm"><Info>a machine</Info></VirtualSystem>
            </Envelope>
            """
        try ovf.write(toFile: "\(directory)/appliance.ovf", atomically: false, encoding: .utf8)
        let script = """
            set -e; cd '\(directory)'
            cp '\(raw.path)' disk.raw
            xz -T1 -c disk.raw > disk.raw.xz; gzip -c disk.raw > disk.raw.gz; zstd -q -c disk.raw > disk.raw.zst
            bzip2 -c disk.raw > disk.raw.bz2; gzip -c stream.vmdk > stream.vmdk.gz; xz -T1 -c stream.vmdk > stream.vmdk.xz
            tar --format=oldgnu -Sczf gce.tar.gz disk.raw
            tar --format=ustar -cf - appliance.ovf disk.raw | gzip -c > appliance.ova.gz
            xz -T1 -c disk.qcow2 > disk.qcow2.xz
            """
        let made = try Tools.run("/bin/sh", ["-c", script])
        try #require(made.status == 0, "\(made.stderr)")
        var expected: [String: [UInt8]] = [:]
        let rawReference = try Fixtures.reference(e2e, raw)
        let vmdkReference = try Fixtures.reference(e2e, vmdk)
        for name in ["disk.raw.xz", "disk.raw.gz", "disk.raw.zst", "disk.raw.bz2", "stream.vmdk.gz", "stream.vmdk.xz",
            "gce.tar.gz", "appliance.ova.gz"]
        {
            let key = "\(e2e.prefix)incoming/web@acme/\(name)"
            let body = Array(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)")))
            try await client.putObject(bucket: bucket, key: key, body: body)
            expected[key] = name.hasPrefix("stream.vmdk") ? vmdkReference : rawReference
        }
        // Sidecars with container forms: a true claim is imported, a false one refused with FormatMismatch.
        try await client.putObject(
            bucket: bucket, key: "\(e2e.prefix)incoming/web@acme/disk.raw.xz.json", body: Array(#"{"format":"raw.xz"}"#.utf8))
        try await client.putObject(
            bucket: bucket, key: "\(e2e.prefix)incoming/web@acme/gce.tar.gz.json", body: Array(#"{"format":"tar.gz"}"#.utf8))
        let lying = "\(e2e.prefix)incoming/web@acme/lying.raw.gz"
        try await client.putObject(
            bucket: bucket, key: lying, body: Array(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/disk.raw.gz"))))
        try await client.putObject(bucket: bucket, key: lying + ".json", body: Array(#"{"format":"ova.gz"}"#.utf8))
        // No temporary file can be made: the store's scratch folder is a regular file (so it cannot be
        // created) and TMPDIR, the fallback, does not exist. A spill would fail with IOError.
        let data = "\(e2e.work)/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        try Data("not a folder".utf8).write(to: URL(fileURLWithPath: "\(data)/scratch"))
        var environment = ProcessInfo.processInfo.environment
        environment["TMPDIR"] = "\(e2e.work)/no-such-tmp"
        let config = try e2e.writeConfig(bucket: bucket, data: data)
        let pass = try Tools.run(Tools.snapimportBinary(), ["run", "--json", "--config", config], environment: environment)
        #expect(pass.status == 1, "one image was rejected: \(pass.stderr)")
        #expect((try jsonObject(pass.stdout)["imported"] as? [Any])?.count == expected.count, "\(pass.stdout)")
        try await verify(e2e, client, bucket: bucket, data: data, catalog: nil, expected: expected)
        let refusal = try await client.getObject(
            bucket: bucket, key: "\(e2e.prefix)failed/web@acme/lying.raw.gz.error.json")
        #expect(try jsonObject(String(decoding: refusal, as: UTF8.self))["code"] as? String == "FormatMismatch")
        // The control: a qcow2 in an xz stream must spill, and cannot here.
        let control = "\(e2e.prefix)incoming/web@acme/disk.qcow2.xz"
        try await client.putObject(
            bucket: bucket, key: control,
            body: Array(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/disk.qcow2.xz"))))
        _ = qcow2
        let second = try Tools.run(Tools.snapimportBinary(), ["run", "--json", "--config", config], environment: environment)
        #expect((try? jsonObject(second.stdout)["imported"] as? [Any])??.isEmpty ?? true, "\(second.stdout)")
        #expect((second.stdout + second.stderr).contains("no-such-tmp"), "\(second.stdout) \(second.stderr)")
    }

    @Test("two run processes started together import every image exactly once (SQLite)")
    func twoRunsTogether() async throws {
        try await twoWorkers(catalog: nil, test: "two-runs")
    }

    @Test(
        "two worker processes sharing a PostgreSQL catalog import every image exactly once",
        .enabled(if: E2E.hasPostgres, E2E.postgresSkipReason))
    func twoWorkersPostgres() async throws {
        let probe = try #require(E2E.load("two-workers-pg-probe"))
        let url = try #require(probe.postgresSchemaURL())
        try await twoWorkers(catalog: url, test: "two-workers-pg")
    }

    @Test(
        "three worker processes over 60 images (PostgreSQL + S3 block store) divide them: each imported once, every worker a share",
        .enabled(if: E2E.hasPostgres, E2E.postgresSkipReason))
    func threeWorkersDivide() async throws {
        let e2e = try #require(E2E.load("three-workers-pg"))
        let url = try #require(e2e.postgresSchemaURL())
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let expected = try await uploadSmall(e2e, client, bucket: bucket, count: 60, projects: ["a@acme", "b@globex"])
        let data = "\(e2e.work)/data"
        let config = try e2e.writeConfig(
            bucket: bucket, data: data, catalog: url, blocks: "s3://\(bucket)/\(e2e.prefix)blocks/")
        let binary = try Tools.snapimportBinary()
        // The schema exists before the race, so the three start their passes together.
        #expect(try Tools.run(binary, ["snapshot", "list", "--config", config]).status == 0)
        let started = try (0..<3).map { _ in try Tools.start(binary, ["run", "--json", "--config", config]) }
        let results = started.map(Tools.finish)
        var importedKeys: [String] = []
        var shares: [Int] = []
        var lost = 0
        for result in results {
            #expect(result.status == 0, "\(result.stderr)")
            let summary = try jsonObject(result.stdout)
            let mine = (summary["imported"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String }
            importedKeys += mine
            shares.append(mine.count)
            let statistics = try #require(summary["statistics"] as? [String: Any])
            lost += statistics["lostClaims"] as? Int ?? 0
            #expect(statistics["conflictsRetried"] as? Int == 0, "workers on different objects never conflict")
        }
        print("three workers over 60 images: shares \(shares), \(lost) claims lost to another worker")
        #expect(importedKeys.sorted() == expected.keys.sorted(), "every image imported by exactly one worker")
        #expect(shares.allSatisfy { $0 > 0 }, "every worker imported a share: \(shares)")
        // Walking the listing in one order, the two later workers would lose nearly every claim (~120).
        #expect(lost < 120, "\(lost) claims lost")
        try await verify(
            e2e, client, bucket: bucket, data: data, catalog: url, expected: expected,
            blocks: "s3://\(bucket)/\(e2e.prefix)blocks/")
    }

    @Test(
        "every format once with the PostgreSQL catalog; rerun does nothing",
        .enabled(if: E2E.hasPostgres, E2E.postgresSkipReason))
    func runOncePostgres() async throws {
        let e2e = try #require(E2E.load("run-once-pg"))
        let url = try #require(e2e.postgresSchemaURL())
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        let expected = try await populate(e2e, client, bucket: bucket)
        let data = "\(e2e.work)/data"
        let config = try e2e.writeConfig(bucket: bucket, data: data, catalog: url)
        let binary = try Tools.snapimportBinary()
        let first = try Tools.run(binary, ["run", "--json", "--config", config])
        #expect(first.status == 1, "\(first.stderr)")
        try await verify(e2e, client, bucket: bucket, data: data, catalog: url, expected: expected)
        let second = try Tools.run(binary, ["run", "--json", "--config", config])
        #expect(second.status == 0, "\(second.stderr)")
        #expect((try jsonObject(second.stdout)["imported"] as? [Any])?.isEmpty == true)
    }

    /// `kill -9` of a `run` caught mid-import, then the next `run` at once: no sleep, and the 600 s lease of
    /// the dead worker's claim still running. Its proof of life is free, so the next run takes its claim and
    /// pending snapshot over at once. With `twoHosts`, the victim and the next run are different workers
    /// ("host-a", "host-b") with different store folders (no shared lock folder) that share only the
    /// PostgreSQL catalog and an S3 block store: the advisory lock must prove the death.
    func killMidImport(catalog: String?, twoHosts: Bool = false, test: String) async throws {
        let e2e = try #require(E2E.load(test))
        let client = try e2e.client()
        let bucket = try await e2e.makeBucket(client)
        // A larger image so the worker is caught in the middle: random data, 48 MiB.
        var big = [UInt8](repeating: 0, count: 48 << 20)
        var generator = SystemRandomNumberGenerator()
        big.withUnsafeMutableBytes { buffer in
            let words = buffer.bindMemory(to: UInt64.self)
            for i in words.indices { words[i] = generator.next() }
        }
        var expected = try await uploadSmall(e2e, client, bucket: bucket, count: 3, projects: ["a@acme"])
        let bigKey = "\(e2e.prefix)incoming/a@acme/big.raw"
        try await client.putObject(bucket: bucket, key: bigKey, body: big)
        expected[bigKey] = big
        let blocks = twoHosts ? "s3://\(bucket)/\(e2e.prefix)blocks/" : nil
        let shared = blocks.map { (e2e, $0) }
        let dataA = "\(e2e.work)/host-a"
        let dataB = twoHosts ? "\(e2e.work)/host-b" : dataA
        let configA = try e2e.writeConfig(bucket: bucket, data: dataA, catalog: catalog, blocks: blocks, name: "a.toml")
        let configB =
            twoHosts
            ? try e2e.writeConfig(bucket: bucket, data: dataB, catalog: catalog, blocks: blocks, name: "b.toml") : configA
        let binary = try Tools.snapimportBinary()
        var environmentA = e2e.environment
        environmentA["SNAPIMPORT_LEASE_SECONDS"] = "600"
        environmentA["SNAPIMPORT_WORKER_NAME"] = "host-a"
        var environmentB = environmentA
        if twoHosts { environmentB["SNAPIMPORT_WORKER_NAME"] = "host-b" }

        let victim = try Tools.start(binary, ["run", "--config", configA], environment: environmentA)
        // Wait until a snapshot is being written, then SIGKILL the worker.
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(60)
        var sawPending = false
        while clock.now < deadline {
            sawPending = try await withStore(data: dataA, catalogURL: catalog, blocks: shared) { service in
                try await service.listSnapshots(caller: .operator).contains {
                    $0.state == .pending && $0.virtualSize == UInt64(48 << 20)
                }
            }
            if sawPending || !victim.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(victim.processIdentifier, SIGKILL)
        _ = Tools.finish(victim)
        try #require(sawPending, "the worker was killed while writing the big snapshot")
        let held = try await withStore(data: dataA, catalogURL: catalog, blocks: shared) { service in
            try await service.listImports().filter { $0.state == .claimed }
        }
        #expect(held.contains { $0.key.key == bigKey && ($0.leaseExpiresAt ?? .distantPast) > Date().addingTimeInterval(500) },
            "the dead worker's claim is held under a lease that runs for ten more minutes")
        #expect(held.allSatisfy { $0.worker?.hasPrefix("host-a:") == true })

        // At once: no sleep.
        let started = clock.now
        let rerun = try Tools.run(binary, ["run", "--json", "--config", configB], environment: environmentB)
        let took = clock.now - started
        #expect(rerun.status == 0, "\(rerun.stderr)")
        let summary = try jsonObject(rerun.stdout)
        let importedKeys = (summary["imported"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String }
        #expect(importedKeys.contains(bigKey), "the next run imported what the dead one held: \(rerun.stdout)")
        print("kill -9 then run at once (\(test)): the second run took \(took) and imported \(importedKeys.count) object(s)")
        try await verify(e2e, client, bucket: bucket, data: dataB, catalog: catalog, expected: expected, blocks: blocks)

        // No orphan blocks after GC: every stored block is named by a manifest.
        var options = SnapshotServiceOptions()
        options.gcSafetyMargin = 0
        try await withStore(data: dataB, catalogURL: catalog, options: options, blocks: shared) { service in
            _ = try await service.collectGarbage(now: Date().addingTimeInterval(1))
            let referenced = Set(try await service.catalog.manifests().values.flatMap { $0.entries.map(\.hash) })
            let stored = Set(try await service.blocks.list().map(\.hash))
            #expect(stored == referenced, "\(stored.subtracting(referenced).count) orphan blocks")
            let imports = try await service.listImports()
            #expect(imports.filter { $0.state == .imported }.count == expected.count)
            #expect(!imports.contains { $0.state == .claimed })
            let bigImport = imports.first { $0.key.key == bigKey }
            #expect(bigImport?.attempts == 2, "the killed attempt and the one that finished")
        }
        // The worker that exited cleanly removed its lock file; the dead one's stays (free) as the proof.
        let locks = (try? FileManager.default.contentsOfDirectory(atPath: "\(dataB)/workers")) ?? []
        #expect(locks.allSatisfy { $0.hasPrefix("host-a") }, "left in \(dataB)/workers: \(locks)")
    }

    @Test("SIGKILL mid-import, then run at once (600 s lease): imported once, nothing pending, no orphan blocks after GC")
    func killedWorkerRecovers() async throws {
        try await killMidImport(catalog: nil, test: "kill")
    }

    @Test(
        "SIGKILL mid-import with the PostgreSQL catalog, then run at once",
        .enabled(if: E2E.hasPostgres, E2E.postgresSkipReason))
    func killedWorkerRecoversPostgres() async throws {
        let probe = try #require(E2E.load("kill-pg-probe"))
        let url = try #require(probe.postgresSchemaURL())
        try await killMidImport(catalog: url, test: "kill-pg")
    }

    @Test(
        "SIGKILL of a worker on one host, then a run on another host at once: the PostgreSQL advisory lock proves it",
        .enabled(if: E2E.hasPostgres, E2E.postgresSkipReason))
    func killedWorkerTakenOverByAnotherHost() async throws {
        let probe = try #require(E2E.load("kill-hosts-probe"))
        let url = try #require(probe.postgresSchemaURL())
        try await killMidImport(catalog: url, twoHosts: true, test: "kill-hosts")
    }
}
