public import Foundation
public import SnapshotCore

/// The EC2 answer documents: `<{Action}Response xmlns="…"><requestId/>…</{Action}Response>` and the
/// Snapshot and Volume shapes inside them (docs/api.md, "Responses").
public enum EC2Document {
    /// The namespace real EC2 answers in (with the trailing slash).
    public static let namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"
    /// The one API version this server speaks.
    public static let version = "2016-11-15"

    /// The answer to `action`: the envelope, the request ID, then `body`.
    public static func response(
        _ action: String, requestID: String, _ body: (inout XMLWriter) throws -> Void
    ) rethrows -> String {
        var xml = XMLWriter()
        xml.start(action + "Response", namespace: namespace)
        xml.text("requestId", requestID)
        try body(&xml)
        xml.end()
        return xml.document
    }

    /// `<return>true</return>`, the answer of the actions without output (DeleteSnapshot, …).
    public static func returnTrue(_ action: String, requestID: String) -> String {
        response(action, requestID: requestID) { $0.bool("return", true) }
    }

    /// EC2's timestamps: `2026-11-30T16:24:47.000Z` (UTC, milliseconds). Formatted by hand: a listing
    /// page formats hundreds of them, and Foundation's ISO 8601 style costs far more per call.
    public static func timestamp(_ date: Date) -> String {
        let millis = Int64((date.timeIntervalSince1970 * 1000).rounded())  // the catalog keeps whole milliseconds
        var seconds = time_t(millis >= 0 ? millis / 1000 : (millis - 999) / 1000)
        let fraction = Int(millis - Int64(seconds) * 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return pad(parts.tm_year + 1900, 4) + "-" + pad(parts.tm_mon + 1, 2) + "-" + pad(parts.tm_mday, 2) + "T"
            + pad(parts.tm_hour, 2) + ":" + pad(parts.tm_min, 2) + ":" + pad(parts.tm_sec, 2) + "."
            + pad(Int32(fraction), 3) + "Z"
    }

    /// Bytes as EC2's whole GiB, rounded up (a 1-byte disk is a 1 GiB volume).
    public static func gibibytes(_ bytes: UInt64) -> UInt64 {
        bytes == 0 ? 0 : (bytes - 1) / (1 << 30) + 1
    }

    /// A snapshot's state in EC2's words: `pending`, `completed`, `error` (`deleting` never reaches a
    /// listing; it reads as `pending`, a transient state).
    public static func status(_ state: SnapshotState) -> String {
        switch state {
        case .pending, .deleting: "pending"
        case .available: "completed"
        case .error: "error"
        }
    }

    /// The volume a snapshot came from, or EC2's placeholder `vol-ffffffff` for imported ones (as EC2
    /// answers for snapshots made by ImportSnapshot).
    public static func volumeID(of snapshot: SnapshotRecord) -> String {
        if case .volume(let id) = snapshot.source { return id.rawValue }
        return "vol-ffffffff"
    }

    /// The members of EC2's Snapshot shape, as `snapshotSet/item` and the flat CreateSnapshot answer
    /// hold them.
    public static func writeSnapshot(_ s: SnapshotRecord, into xml: inout XMLWriter) {
        xml.text("snapshotId", s.id.rawValue)
        xml.text("volumeId", volumeID(of: s))
        xml.text("status", status(s.state))
        if let failure = s.failure, s.state == .error { xml.text("statusMessage", failure) }
        xml.text("startTime", timestamp(s.createdAt))
        xml.text("progress", s.state == .available ? "100%" : "0%")
        xml.text("ownerId", s.owner.description)
        xml.int("volumeSize", gibibytes(s.virtualSize))
        xml.text("description", s.description)
        xml.bool("encrypted", false)
        xml.text("storageTier", "standard")
        xml.int("fullSnapshotSizeInBytes", s.virtualSize)
        xml.list("tagSet", [String]()) { _, _ in }
    }

    /// The members of EC2's Volume shape.
    public static func writeVolume(_ v: VolumeRecord, availabilityZone: String, into xml: inout XMLWriter) {
        xml.text("volumeId", v.id.rawValue)
        xml.int("size", gibibytes(v.size))
        xml.text("snapshotId", v.snapshotID?.rawValue ?? "")
        xml.text("availabilityZone", availabilityZone)
        xml.text("status", v.attachedTo == nil ? "available" : "in-use")
        xml.text("createTime", timestamp(v.createdAt))
        xml.list("attachmentSet", v.attachedTo.map { [$0] } ?? []) { xml, instance in
            xml.text("volumeId", v.id.rawValue)
            xml.text("instanceId", instance.rawValue)
            xml.text("status", "attached")
            xml.bool("deleteOnTermination", false)
        }
        xml.text("volumeType", "standard")
        xml.bool("encrypted", false)
        xml.bool("multiAttachEnabled", false)
        xml.list("tagSet", [String]()) { _, _ in }
    }
}
