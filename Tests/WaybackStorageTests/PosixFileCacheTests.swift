import Foundation
import Testing
import WaybackStorage

@Suite struct PosixFileCacheTests {
    @Test("isCached: true for a file the kernel holds whole, false once its pages were dropped and when part of it is cold")
    func tellsCachedFromCold() throws {
        let dir = NSTemporaryDirectory() + "wayback-cached-\(UUID().uuidString)"
        try FileSystem.makeDirectories(dir)
        defer { try? FileSystem.removeTree(dir) }
        let size = 4 << 20
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
        var half = [UInt8](repeating: 0, count: size / 2)
        #expect(try half.withUnsafeMutableBytes { try f.pread(into: $0, offset: 0) } == size / 2)
        #expect(!f.isCached(length: size), "only its first half was read back")
        #expect(f.isCached(length: size / 2))
        #expect(!f.isCached(length: 0))
    }
}
