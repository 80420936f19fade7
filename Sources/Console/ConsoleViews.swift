import Foundation
import SnapshotCore

/// What the templates show, as Mustache contexts (dictionaries; an absent key is false or empty).
enum ConsoleViews {
    /// `1.5 GiB` (binary units, one decimal below 10).
    static func humanSize(_ bytes: UInt64) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        if bytes < 1024 { return bytes == 1 ? "1 byte" : "\(bytes) bytes" }
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        let text = value < 10 ? String(format: "%.1f", value) : String(format: "%.0f", value)
        return "\(text) \(units[unit])"
    }

    /// `1,073,741,824 bytes`.
    static func exactSize(_ bytes: UInt64) -> String {
        var digits = Array(String(bytes))
        var index = digits.count - 3
        while index > 0 {
            digits.insert(",", at: index)
            index -= 3
        }
        return String(digits) + (bytes == 1 ? " byte" : " bytes")
    }

    /// `2026-12-01 03:52 UTC`.
    static func date(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: date)
        func two(_ n: Int?) -> String { String(format: "%02d", n ?? 0) }
        return "\(c.year ?? 0)-\(two(c.month))-\(two(c.day)) \(two(c.hour)):\(two(c.minute)) UTC"
    }

    /// A row of the Snapshots page.
    static func row(_ s: SnapshotRecord, caller: Caller) -> [String: Any] {
        var row: [String: Any] = [
            "id": s.id.rawValue, "state": s.state.rawValue, "humanSize": humanSize(s.virtualSize),
            "exactSize": exactSize(s.virtualSize), "format": s.format, "bootable": s.bootable,
            "created": date(s.createdAt), "createdISO": RFC3339.string(s.createdAt),
        ]
        if !s.description.isEmpty { row["description"] = s.description }
        if s.isOwned(by: caller) {
            if s.visibility == .public {
                row["isPublic"] = true
            } else if s.sharedWith.isEmpty {
                row["isPrivate"] = true
            }
            if !s.sharedWith.isEmpty { row["sharedCount"] = "\(s.sharedWith.count)" }
        } else if case .project(let project) = caller, s.sharedWith.contains(project) {
            row["viaGrant"] = true
        } else if s.visibility == .public {
            row["isPublic"] = true
        }
        return row
    }

    /// The Properties page's snapshot: what `snapshot show` gives `caller` (``SnapshotView``).
    static func properties(_ s: SnapshotRecord, caller: Caller) -> [String: Any] {
        let view = SnapshotView(s, caller: caller)
        var snap: [String: Any] = [
            "id": view.id, "project": view.project, "state": view.state, "format": view.format,
            "bootable": view.bootable, "humanSize": humanSize(view.virtualSize),
            "exactSize": exactSize(view.virtualSize),
            "humanStored": humanSize(view.storedBytes), "exactStored": exactSize(view.storedBytes),
            "created": date(s.createdAt), "createdISO": view.createdAt,
        ]
        if !view.description.isEmpty { snap["description"] = view.description }
        if view.visibility == "public" { snap["isPublic"] = true }
        if !s.isOwned(by: caller), case .project(let project) = caller, s.sharedWith.contains(project) {
            snap["viaGrant"] = true
        }
        if let checksum = view.checksum { snap["checksum"] = checksum }
        if let failure = view.failure { snap["failure"] = failure }
        switch view.source {
        case .object(let bucket, let key, let etag)?: snap["source"] = "object s3://\(bucket)/\(key) (ETag \(etag))"
        case .file(let path)?: snap["source"] = "file \(path)"
        case .volume(let volume)?: snap["source"] = "volume \(volume)"
        case .template(let template)?: snap["source"] = "template \(template)"
        case nil: break
        }
        return snap
    }

    /// An import task for its page and its status JSON.
    static func task(_ t: ImportTaskRecord) -> [String: Any] {
        var task: [String: Any] = [
            "id": t.id.rawValue, "bucket": t.bucket, "key": t.key, "owner": t.owner.description,
            "state": t.state.rawValue, "message": message(t), "percentText": percentText(t),
        ]
        if let percent = t.progressPercent {
            task["percent"] = percent
            task["hasPercent"] = true
        }
        if let snapshot = t.snapshotID { task["snapshot"] = snapshot.rawValue }
        if t.state == .active { task["active"] = true }
        if t.state == .deleted {
            task["failed"] = true
            task["code"] = code(t)
            task["reason"] = reason(t)
        }
        return task
    }

    static func message(_ t: ImportTaskRecord) -> String {
        switch t.state {
        case .completed: "Completed: the snapshot is available."
        case .active: t.statusMessage ?? "pending"
        case .deleted: t.statusMessage ?? "The import ended without a snapshot."
        }
    }

    /// The failure without its `ClientError: <Code>: ` prefix (the code is shown beside it).
    static func reason(_ t: ImportTaskRecord) -> String {
        let text = message(t)
        let prefix = "ClientError: \(code(t)): "
        if text.hasPrefix(prefix) { return String(text.dropFirst(prefix.count)) }
        if text.hasPrefix("ServerError: ") { return String(text.dropFirst("ServerError: ".count)) }
        return text
    }

    static func percentText(_ t: ImportTaskRecord) -> String {
        guard let percent = t.progressPercent else { return t.state == .active ? "waiting for the size" : "" }
        var text = "\(percent)%"
        if let total = t.bytesTotal, t.state == .active {
            text += " of \(humanSize(UInt64(max(0, total))))"
        }
        return text
    }

    /// The stable code of a failed task: `ClientError: <Code>: …` gives `<Code>`; `ServerError: …` and a
    /// cancellation give `ServerError` and `Cancelled`.
    static func code(_ t: ImportTaskRecord) -> String {
        let message = t.statusMessage ?? ""
        if message.hasPrefix("ClientError: ") {
            let rest = message.dropFirst("ClientError: ".count)
            if let colon = rest.firstIndex(of: ":") { return String(rest[..<colon]) }
            return "ClientError"
        }
        if message.hasPrefix("ServerError") { return "ServerError" }
        if message.lowercased().contains("cancel") { return "Cancelled" }
        return "ImportFailed"
    }
}
