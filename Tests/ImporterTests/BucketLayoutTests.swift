import Foundation
import Importer
import Testing

@Suite("Bucket layout policy")
struct BucketLayoutTests {
    let layout = BucketLayout()

    @Test("the owner is the first segment after incoming/")
    func owner() throws {
        #expect(try layout.ownerText(of: "incoming/web@acme/disk.qcow2") == "web@acme")
        #expect(try layout.ownerText(of: "incoming/web@acme/deep/a b+c.qcow2") == "web@acme")
    }

    @Test(
        "a key outside a project folder or with a malformed folder is InvalidProject",
        arguments: [
            "incoming/disk.qcow2", "incoming/webacme/disk.qcow2", "incoming/@acme/disk", "incoming/web@/disk",
            "incoming/a@b@c/disk", "incoming/web@acme/",
        ])
    func invalidOwner(key: String) {
        #expect(throws: ImporterError(.invalidProject, "")) { try layout.ownerText(of: key) }
    }

    @Test("processed and failed keys keep the relative path")
    func destinations() {
        let key = "incoming/web@acme/dir/a b+c.qcow2"
        #expect(layout.processedKey(for: key) == "processed/web@acme/dir/a b+c.qcow2")
        #expect(layout.failedKey(for: key) == "failed/web@acme/dir/a b+c.qcow2")
        #expect(layout.failedKey(for: "incoming/loose.img") == "failed/loose.img")
        #expect(BucketLayout.receiptKey(for: "processed/p@c/x") == "processed/p@c/x.snapshot.json")
        #expect(BucketLayout.errorReportKey(for: "failed/p@c/x") == "failed/p@c/x.error.json")
    }

    @Test("custom prefixes get a trailing slash")
    func customPrefixes() throws {
        let custom = BucketLayout(incoming: "in", processed: "done", failed: "bad/")
        #expect(try custom.ownerText(of: "in/p@c/x") == "p@c")
        #expect(custom.processedKey(for: "in/p@c/x") == "done/p@c/x")
        #expect(custom.failedKey(for: "in/p@c/x") == "bad/p@c/x")
    }

    @Test("sidecars are attached to their image and are never candidates themselves")
    func candidates() {
        let listing: [(key: String, etag: String, size: UInt64)] = [
            ("incoming/", "d", 0),
            ("incoming/p@c/a.qcow2", "1", 10),
            ("incoming/p@c/a.qcow2.json", "2", 5),
            ("incoming/p@c/dir/", "d", 0),
            ("incoming/p@c/orphan.vmdk.json", "3", 5),
            ("incoming/p@c/b.img", "4", 20),
        ]
        let candidates = layout.candidates(from: listing)
        #expect(
            candidates == [
                .init(key: "incoming/p@c/a.qcow2", etag: "1", size: 10, sidecarKey: "incoming/p@c/a.qcow2.json"),
                .init(key: "incoming/p@c/b.img", etag: "4", size: 20, sidecarKey: nil),
            ])
    }

    @Test("a .json whose image is not listed is unimportable, with a reason; a sidecar beside its image is not")
    func unimportable() {
        let layout = BucketLayout()
        let listing: [(key: String, etag: String, size: UInt64)] = [
            ("incoming/p@c/a.qcow2", "1", 10),
            ("incoming/p@c/a.qcow2.json", "2", 5),
            ("incoming/p@c/orphan.vmdk.json", "3", 5),
            ("incoming/p@c/notes.json", "5", 7),
            ("incoming/p@c/dir/", "d", 0),
        ]
        let skipped = layout.unimportable(from: listing)
        #expect(skipped.map(\.key) == ["incoming/p@c/orphan.vmdk.json", "incoming/p@c/notes.json"])
        #expect(skipped.allSatisfy { $0.skipReason?.contains("without an image") == true })
        #expect(skipped.first?.skipReason?.contains("incoming/p@c/orphan.vmdk is not in the bucket") == true)
        #expect(layout.candidates(from: listing).allSatisfy { $0.skipReason == nil })
    }

    @Test("the customer of an owner")
    func customer() {
        #expect(BucketLayout.customer(ofOwner: "web@acme") == "acme")
    }
}

@Suite("Sidecar and error report documents")
struct DocumentTests {
    @Test("a sidecar with every field parses")
    func sidecar() throws {
        let text = #"{"description":"d","format":"qcow2","shareWith":["qa@acme"],"public":true}"#
        let sidecar = try Sidecar.parse(Array(text.utf8), key: "k.json")
        #expect(sidecar == Sidecar(description: "d", format: "qcow2", shareWith: ["qa@acme"], public: true))
        #expect(try Sidecar.parse(Array("{}".utf8), key: "k") == Sidecar())
    }

    @Test(
        "a bad sidecar is InvalidSidecar",
        arguments: [#"{"sharewith":["a@b"]}"#, "not json", "[1]", #"{"public":"yes"}"#, #"{"shareWith":"a@b"}"#])
    func badSidecar(text: String) {
        #expect(throws: ImporterError(.invalidSidecar, "")) { try Sidecar.parse(Array(text.utf8), key: "k.json") }
    }

    @Test("the error report has exactly code, message, key, etag and at")
    func errorReport() throws {
        let report = ErrorReport(
            code: "BackingFileNotAllowed", message: "backing file /etc/passwd", key: "incoming/p@c/x",
            etag: "abc", at: Date(timeIntervalSince1970: 1_700_000_000))
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(report.encoded())) as? [String: String])
        #expect(
            object == [
                "code": "BackingFileNotAllowed", "message": "backing file /etc/passwd", "key": "incoming/p@c/x",
                "etag": "abc", "at": "2023-11-14T22:13:20.000Z",
            ])
    }
}
