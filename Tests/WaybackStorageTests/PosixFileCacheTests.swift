import Foundation
import Testing
import WaybackStorage

@Suite struct PosixFileCacheTests {
    @Test("isCached: true for a file the kernel holds whole, false once its pages were dropped and when only its start was read back")
    func tellsCachedFromCold() throws {
        let dir = NSTemporaryDirectory() + "wayback-cached-\(UUID().uuidString)"
        try FileSystem.makeDirectories(dir)
        defer { try? FileSystem.removeTree(dir) }
        let size = 32 << 20
        let w = try PosixFile.create(dir + "/segment")
        try [UInt8](repeating: 7, count: size).withUnsafeBytes { try w.pwrite($0, offset: 0) }
        try w.fsync()
        try w.close()
        let f = try PosixFile.openForReading(dir + "/segment")
        defer { try? f.close() }
        #expect(f.isCached(length: size), "just written: in the page cache")
        // Clean pages (after the fsync) are dropped on request.
        #expect(posix_fadvise(f.fd, 0, off_t(size), POSIX_FADV_DONTNEED) == 0)
        #expect(!f.isCached(length: size), "dropped: not cached")
        // A small read brings back its page and the kernel's read-ahead window (128 KiB by
        // default, at most a few MiB), not the whole file.
        var page = [UInt8](repeating: 0, count: 4096)
        #expect(try page.withUnsafeMutableBytes { try f.pread(into: $0, offset: 0) } == 4096)
        #expect(!f.isCached(length: size), "only its first page was read back")
        #expect(f.isCached(length: 4096))
        #expect(!f.isCached(length: 0))
    }
}
