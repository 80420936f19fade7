import Foundation
import ProcessTestSupport
import Testing

/// `[api] watch = true`: one `serve` process also runs `watch`'s passes over incoming/.
extension EndToEndTests {
    static let s3Endpoint = ProcessInfo.processInfo.environment["SNAPIMPORT_TEST_S3_ENDPOINT"]

    /// The S3 credentials of the test server (scripts/lib.sh's), for the aws CLI's `s3` commands.
    static let s3Environment: [String: String] = [
        "AWS_ACCESS_KEY_ID": ProcessInfo.processInfo.environment["AWS_ACCESS_KEY_ID"] ?? "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": ProcessInfo.processInfo.environment["AWS_SECRET_ACCESS_KEY"]
            ?? "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    ]

    /// `aws s3…`/`aws s3api…` against the test S3 server.
    static func s3(_ args: [String]) throws -> Tools.Result {
        try Tools.run(
            Tools.aws!, args + ["--endpoint-url", s3Endpoint!, "--region", "us-east-1"], environment: s3Environment)
    }

    /// A fresh bucket and the `[s3]` section naming it.
    static func freshBucket() throws -> (bucket: String, config: String) {
        let bucket = "api-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let made = try s3(["s3api", "create-bucket", "--bucket", bucket])
        try #require(made.status == 0, "\(made)")
        return (bucket, "[s3]\nendpoint = \"\(s3Endpoint!)\"\nregion = \"us-east-1\"\nbucket = \"\(bucket)\"\n")
    }

    @Test(
        "[api] watch = true: serve also imports what lands in incoming/, and the API lists it",
        .enabled(if: Tools.missing == nil, "\(Tools.missing ?? "")"),
        .enabled(if: s3Endpoint != nil, "SNAPIMPORT_TEST_S3_ENDPOINT is unset (scripts/test sets it)"))
    func watchInServe() async throws {
        let (bucket, s3Config) = try Self.freshBucket()
        let disk = FileManager.default.temporaryDirectory.appendingPathComponent("watch-\(UUID().uuidString).raw").path
        defer { try? FileManager.default.removeItem(atPath: disk) }
        try Data((0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 11) }).write(
            to: URL(fileURLWithPath: disk))
        let put = try Self.s3(["s3", "cp", disk, "s3://\(bucket)/incoming/alice@acme/watched.raw"])
        try #require(put.status == 0, "\(put)")
        try await Session.with(catalog: nil, extraConfig: s3Config + "[api]\nwatch = true\n") { session in
            var found: [String] = []
            for _ in 0..<120 where found.isEmpty {
                found = Session.ids(try session.awsOK("alice@acme", ["describe-snapshots", "--owner-ids", "self"]))
                if found.isEmpty { try await Task.sleep(for: .milliseconds(500)) }
            }
            #expect(found.count == 1, "the watched image became alice's snapshot")
            let moved = try Self.s3(["s3", "ls", "s3://\(bucket)/processed/alice@acme/"])
            #expect(moved.stdout.contains("watched.raw"), "\(moved)")
        }
    }
}
