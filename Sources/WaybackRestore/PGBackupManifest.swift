import Foundation
import WaybackCore

/// Writes PostgreSQL's own `backup_manifest` format (version 1, PostgreSQL 13-16), so that
/// `pg_verifybackup` can check a restored data directory.
public enum PGBackupManifest {
    public struct Entry: Sendable {
        public var path: String
        public var size: Int64
        public var mtime: Int64
        public var sha256: String
        public init(path: String, size: Int64, mtime: Int64, sha256: String) {
            self.path = path; self.size = size; self.mtime = mtime; self.sha256 = sha256
        }
    }

    public static func render(files: [Entry], timeline: UInt32, startLSN: LSN, endLSN: LSN) -> [UInt8] {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        var s = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": ["
        var first = true
        for e in files.sorted(by: { $0.path < $1.path }) {
            s += first ? "\n" : ",\n"
            first = false
            let modified = f.string(from: Date(timeIntervalSince1970: TimeInterval(e.mtime))) + " GMT"
            s += "{ \"Path\": \(jsonString(e.path)), \"Size\": \(e.size), \"Last-Modified\": \"\(modified)\", \"Checksum-Algorithm\": \"SHA256\", \"Checksum\": \"\(e.sha256)\" }"
        }
        s += "\n],\n\"WAL-Ranges\": [\n"
        s += "{ \"Timeline\": \(timeline), \"Start-LSN\": \"\(startLSN)\", \"End-LSN\": \"\(endLSN)\" }"
        s += "\n],\n"
        let body = Array(s.utf8)
        return body + Array("\"Manifest-Checksum\": \"\(SHA256Hasher.hex(body))\"}\n".utf8)
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
