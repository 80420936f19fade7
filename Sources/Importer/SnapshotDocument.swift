public import SnapshotCore

/// The snapshot document of architecture.md (`snapshot show --json`), used for receipts and
/// `snapimport import --json`: SnapshotCore's `SnapshotView`, encoded the way the snapshot
/// commands encode it, so a receipt is byte-for-byte what `snapshot show --json` prints.
public enum SnapshotDocument {
    /// The document as pretty-printed JSON with sorted keys and a trailing newline.
    public static func encoded(_ s: SnapshotRecord) -> [UInt8] {
        // Encoding plain strings, numbers and booleans cannot fail.
        let data = (try? SnapshotJSON.encode(SnapshotView(s))) ?? Data()
        return Array(data) + [0x0A]
    }
}

import Foundation
