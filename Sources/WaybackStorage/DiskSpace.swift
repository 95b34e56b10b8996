#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WaybackCore

/// The size and free space of the file system that holds a path (`statvfs(3)`).
public struct FileSystemUsage: Sendable, Equatable {
    /// The file system's device (two paths on one device are one file system).
    public var device: UInt64
    public var totalBytes: Int64
    /// What an unprivileged writer may still use (`f_bavail`).
    public var availableBytes: Int64
    /// Everything not free (`f_blocks - f_bfree`): includes what is reserved for root.
    public var usedBytes: Int64

    public init(device: UInt64, totalBytes: Int64, availableBytes: Int64, usedBytes: Int64) {
        self.device = device; self.totalBytes = totalBytes; self.availableBytes = availableBytes; self.usedBytes = usedBytes
    }

    /// Used share as `df` computes it: used / (used + available), in percent.
    public var usedPercent: Double {
        let denominator = Double(usedBytes + availableBytes)
        return denominator > 0 ? Double(usedBytes) / denominator * 100 : 0
    }

    /// Of the file system holding `path` (followed to the directory it names).
    public static func of(_ path: String) throws -> FileSystemUsage {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { throw PosixError.make(errno, "statvfs", path) }
        var st = stat()
        guard stat(path, &st) == 0 else { throw PosixError.make(errno, "stat", path) }
        let unit = Int64(s.f_frsize)
        return FileSystemUsage(device: UInt64(st.st_dev), totalBytes: Int64(s.f_blocks) * unit, availableBytes: Int64(s.f_bavail) * unit,
                               usedBytes: (Int64(s.f_blocks) - Int64(s.f_bfree)) * unit)
    }
}
