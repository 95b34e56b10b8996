import Foundation
import Testing
import WaybackCore
import WaybackStorage

@Suite struct FileSystemFlusherTests {
    @Test("flushes while files are written, then once more; stops cleanly, and a missing path is refused")
    func flushesAndStops() throws {
        let dir = NSTemporaryDirectory() + "wayback-flusher-\(UUID().uuidString)"
        try FileSystem.makeDirectories(dir + "/sub")
        defer { try? FileSystem.removeTree(dir) }
        // Two paths on one file system share one descriptor; the thread flushes every 10 ms.
        let flusher = try FileSystemFlusher([dir, dir + "/sub"])
        #expect(flusher.fileSystemCount == 1)
        flusher.start(interval: 0.01)
        let f = try PosixFile.create(dir + "/sub/data")
        let block = [UInt8](repeating: 7, count: 1 << 20)
        for i in 0..<8 {
            try block.withUnsafeBytes { try f.pwrite($0, offset: Int64(i) << 20) }
            Thread.sleep(forTimeInterval: 0.01)
        }
        try f.close()
        // Flushed while the writes went on: by its thread, not only at the end.
        let until = Date().addingTimeInterval(5)
        while flusher.flushCount < 3 && Date() < until { Thread.sleep(forTimeInterval: 0.01) }
        let during = flusher.flushCount
        #expect(during >= 3, "the file system was flushed \(during) times while 8 MiB were written over 80 ms")
        try flusher.finish()
        #expect(flusher.flushCount > during, "finish flushes once more")
        let after = flusher.flushCount
        flusher.stop()  // after finish: nothing left to stop
        Thread.sleep(forTimeInterval: 0.05)
        #expect(flusher.flushCount == after, "the thread went on flushing after finish")
        #expect(try FileSystem.status(dir + "/sub/data")?.size == 8 << 20)
        #expect(throws: WaybackError.self) { _ = try FileSystemFlusher([dir + "/missing"]) }
    }
}
