public import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Errors in words a person reads: Foundation's file errors (`Error Domain=NSCocoaErrorDomain Code=4 …
/// UserInfo={…}`) become the system's reason (`No such file or directory`); any other error keeps its
/// own description. Messages add the path themselves.
public enum ErrorText {
    public static func plain(_ error: any Error) -> String {
        let ns: NSError
        if let cocoa = error as? CocoaError {
            ns = cocoa as NSError
        } else {
            ns = error as NSError
            guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else { return "\(error)" }
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? any Error {
            let posix = underlying as NSError
            if posix.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(posix.code))) }
        }
        if ns.domain == NSCocoaErrorDomain {
            switch CocoaError.Code(rawValue: ns.code) {
            case .fileNoSuchFile, .fileReadNoSuchFile: return "No such file or directory"
            case .fileWriteFileExists: return "File exists"
            case .fileReadNoPermission, .fileWriteNoPermission: return "Permission denied"
            case .fileReadInapplicableStringEncoding: return "not valid UTF-8 text"
            case .fileWriteOutOfSpace: return "No space left on device"
            case .fileWriteVolumeReadOnly: return "Read-only file system"
            default: return "file operation failed (code \(ns.code))"
            }
        }
        return ns.localizedDescription
    }
}
