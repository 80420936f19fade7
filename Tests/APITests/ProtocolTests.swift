import API
import Foundation
#if canImport(FoundationXML)
    import FoundationXML
#endif
import SnapshotCore
import Testing

/// The pieces of the query protocol in isolation: the form parser, the XML writer, the error
/// document and the one table from the core's codes to EC2's.
@Suite("EC2 query protocol pieces")
struct ProtocolTests {
    @Test("form bodies decode +, %XX and UTF-8; lists come back in index order")
    func parser() throws {
        let p = try QueryParameters(
            formEncoded: "Action=DescribeSnapshots&Owner.2=b%40c&Owner.1=self&Filter.1.Name=description"
                + "&Filter.1.Value.2=x+y&Filter.1.Value.1=%E2%9C%93&Filter.2.Name=status&Filter.2.Value.1=completed"
                + "&Empty=&Key%2FSlash=1")
        #expect(p["Action"] == "DescribeSnapshots")
        #expect(try p.list("Owner") == ["self", "b@c"])
        let filters = try p.structures("Filter")
        #expect(filters.count == 2)
        #expect(filters[0]["Name"] == "description")
        #expect(try filters[0].list("Value") == ["✓", "x y"])
        #expect(try filters[1].list("Value") == ["completed"])
        #expect(p["Empty"] == "")
        #expect(p["Key/Slash"] == "1")
        #expect(throws: EC2Error.self) { try p.required("Empty") }
        #expect(try p.list("Missing") == [])
    }

    @Test("malformed input has stable codes")
    func parserErrors() throws {
        #expect(code { _ = try QueryParameters(formEncoded: "A=%zz") } == "MalformedQueryString")
        #expect(code { _ = try QueryParameters(formEncoded: "A=%C3%28") } == "MalformedQueryString")
        #expect(code { _ = try QueryParameters(formEncoded: "Owner.x=1").list("Owner") } == "InvalidParameterValue")
        #expect(code { _ = try QueryParameters(formEncoded: "Owner.0=1").list("Owner") } == "InvalidParameterValue")
        let p = try QueryParameters(formEncoded: "MaxResults=4&DryRun=maybe")
        #expect(code { _ = try p.int("MaxResults", in: 5...1000) } == "InvalidParameterValue")
        #expect(code { _ = try p.bool("DryRun") } == "InvalidParameterValue")
        #expect(code { _ = try p.required("SnapshotId") } == "MissingParameter")
    }

    @Test("the XML writer escapes every piece of text and nests correctly")
    func xml() {
        var xml = XMLWriter()
        xml.start("R", namespace: "urn:x")
        xml.text("description", "</description><evil a=\"1\">&'")
        xml.text("empty", "")
        xml.text("control", "a\u{01}b\rc")
        xml.list("set", ["x", "y"]) { xml, v in xml.text("v", v) }
        xml.list("none", [String]()) { _, _ in }
        xml.end()
        let doc = xml.document
        #expect(doc.hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<R xmlns=\"urn:x\">"))
        #expect(doc.contains("<description>&lt;/description&gt;&lt;evil a=&quot;1&quot;&gt;&amp;&apos;</description>"))
        #expect(doc.contains("<empty/>"))
        #expect(doc.contains("<control>a\u{FFFD}b&#13;c</control>"))
        #expect(doc.contains("<set><item><v>x</v></item><item><v>y</v></item></set>"))
        #expect(doc.contains("<none/>"))
        // Foundation's parser reads it back.
        let parsed = XMLTextCollector.parse(doc)
        #expect(parsed["description"] == "</description><evil a=\"1\">&'")
    }

    @Test("the error document is EC2's shape, message escaped")
    func errorDocument() {
        let error = EC2Error(.snapshotNotFound, "The snapshot '<x>' does not exist.")
        let doc = error.xml(requestID: "req-1")
        #expect(
            doc.hasSuffix(
                "<Response><Errors><Error><Code>InvalidSnapshot.NotFound</Code><Message>The snapshot &apos;&lt;x&gt;"
                    + "&apos; does not exist.</Message></Error></Errors><RequestID>req-1</RequestID></Response>"))
        #expect(error.status == 400)
    }

    @Test(
        "every SnapshotError code maps to one EC2 code and status",
        arguments: [
            (SnapshotError.Code.notFound, EC2Resource.snapshot, "InvalidSnapshot.NotFound", 400),
            (.notFound, .volume, "InvalidVolume.NotFound", 400),
            (.invalidArgument, .snapshot, "InvalidParameterValue", 400),
            (.invalidProject, .snapshot, "InvalidParameterValue", 400),
            (.accessDenied, .snapshot, "UnauthorizedOperation", 403),
            (.inUse, .snapshot, "InvalidSnapshot.InUse", 400),
            (.inUse, .volume, "VolumeInUse", 400),
            (.invalidState, .snapshot, "IncorrectState", 400),
            (.confirmationRequired, .snapshot, "OperationNotPermitted", 400),
            (.conflict, .snapshot, "Unavailable", 503),
            (.leaseLost, .snapshot, "InternalError", 500),
            (.corruptBlock, .snapshot, "InternalError", 500),
            (.missingBlock, .snapshot, "InternalError", 500),
            (.storage, .snapshot, "InternalError", 500),
            (.catalog, .volume, "InternalError", 500),
        ])
    func mapping(code: SnapshotError.Code, resource: EC2Resource, expected: String, status: Int) {
        let mapped = EC2Error(SnapshotError(code, "secret path /var/lib/x"), resource: resource)
        #expect(mapped.code.rawValue == expected)
        #expect(mapped.status == status)
        if status == 500 { #expect(!mapped.message.contains("/var/lib"), "internal details stay in the log") }
    }

    @Test("page tokens round-trip and refuse tampering or another listing's token")
    func tokens() throws {
        let token = PageToken(kind: "snapshots", millis: 1_700_000_000_123, id: "snap-0000abcd")
        let parsed = try PageToken(parsing: token.token, kind: "snapshots")
        #expect(parsed == token)
        #expect(try parsed.snapshotCursor().id.rawValue == "snap-0000abcd")
        #expect(code { _ = try PageToken(parsing: token.token, kind: "volumes") } == "InvalidPaginationToken")
        #expect(code { _ = try PageToken(parsing: "garbage!", kind: "snapshots") } == "InvalidPaginationToken")
        #expect(code { _ = try PageToken(parsing: "", kind: "snapshots") } == "InvalidPaginationToken")
    }

    @Test("timestamps are EC2's UTC form with milliseconds, equal to the core's RFC 3339 text")
    func timestamps() {
        for seconds in [0.0, 951_782_400.5, 4_102_444_799.0, 1_796_056_092.25, -1.25] {
            let date = Date(timeIntervalSince1970: seconds)
            #expect(EC2Document.timestamp(date) == RFC3339.string(date), "\(seconds)")
        }
        // A catalog date is whole milliseconds: written back exactly (Foundation's style truncates 0.123 to .122).
        #expect(
            EC2Document.timestamp(Date(timeIntervalSince1970: Double(1_796_056_092_123) / 1000))
                == "2026-11-30T16:28:12.123Z")
    }

    @Test("listen addresses")
    func listen() throws {
        #expect(try APIServer.Settings.parseListen("127.0.0.1:8773") == ("127.0.0.1", 8773))
        #expect(try APIServer.Settings.parseListen("[::1]:0") == ("::1", 0))
        #expect(throws: APIServerError.self) { try APIServer.Settings.parseListen("localhost") }
        #expect(throws: APIServerError.self) { try APIServer.Settings.parseListen("h:70000") }
    }

    func code(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch let error as EC2Error {
            return error.code.rawValue
        } catch {
            return "\(error)"
        }
    }
}

/// Collects the text of leaf elements (last one wins) with Foundation's XMLParser: tests read answers
/// with a real XML parser, not string matching.
final class XMLTextCollector: NSObject, XMLParserDelegate {
    var values: [String: String] = [:]
    var all: [(String, String)] = []
    private var text = ""
    private(set) var failed = false

    static func parse(_ document: String) -> [String: String] {
        collect(document).values
    }

    static func collect(_ document: String) -> XMLTextCollector {
        let collector = XMLTextCollector()
        let parser = XMLParser(data: Data(document.utf8))
        parser.delegate = collector
        collector.failed = !parser.parse()
        return collector
    }

    func parser(
        _ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        text = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        values[name] = text
        all.append((name, text))
        text = ""
    }

    /// Every text of elements named `name`, in document order.
    func texts(_ name: String) -> [String] { all.filter { $0.0 == name }.map(\.1) }
}
