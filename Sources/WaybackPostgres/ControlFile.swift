import Foundation
import WaybackCore

/// The fields of `global/pg_control` that prove which cluster a data directory belongs to and how
/// recent its last checkpoint is. The layout of the start of `ControlFileData` has been the same
/// since PostgreSQL 9.x (native byte order, little endian on every platform Wayback runs on):
///
/// ```
/// offset size  field
///  0     8     system_identifier
///  8     4     pg_control_version
/// 12     4     catalog_version_no
/// 16     4     state (DBState)
/// 24     8     time
/// 32     8     checkPoint (LSN of the last checkpoint record)
/// 40     8     checkPointCopy.redo (where replay from that checkpoint starts)
/// 48     4     checkPointCopy.ThisTimeLineID
/// ```
public struct ControlFile: Sendable, Equatable {
    public static let relativePath = "global/pg_control"
    static let minimumLength = 52

    public var systemIdentifier: UInt64
    public var checkpointLSN: LSN
    public var redoLSN: LSN
    public var timeline: UInt32

    /// Decodes the fields above; nil when `bytes` is too short to be a control file.
    public static func parse(_ bytes: [UInt8]) -> ControlFile? {
        guard bytes.count >= minimumLength else { return nil }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) } }
        return ControlFile(systemIdentifier: u64(0), checkpointLSN: LSN(u64(32)), redoLSN: LSN(u64(40)), timeline: u32(48))
    }

    /// Reads the control file at `path` (not following a symlink); nil when it does not exist.
    /// Throws `.corrupt` when it is too short, `.io` when it cannot be read.
    public static func read(path: String) throws -> ControlFile? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            let text = String(cString: strerror(errno))
            throw WaybackError(.io, "cannot read \(path): \(text); check that the user running wayback may read the data directory")
        }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 512)
        let n = buf.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, 512) }
        guard n >= 0, let c = parse(Array(buf.prefix(max(0, n)))) else {
            throw WaybackError(.corrupt, "\(path) is not a PostgreSQL control file (\(max(0, n)) bytes)")
        }
        return c
    }

    /// The control file of the data directory `pgdata`; nil when it has none.
    public static func read(dataDirectory pgdata: String) throws -> ControlFile? {
        try read(path: pgdata + "/" + relativePath)
    }
}
