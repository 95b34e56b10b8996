import Foundation
import Testing
import WaybackCore
@testable import WaybackArchive

/// The prefetcher's syncing thread has an owner that ends it.
@Suite struct SegmentSyncerTests {
    @Test func finishSyncsWhatIsQueuedThenEndsTheThread() async throws {
        let dir = NSTemporaryDirectory() + "wayback-syncer-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let syncer = SegmentSyncer()
        for i in 0..<4 {
            let path = dir + "/\(i)"
            try Data(repeating: UInt8(i), count: 1 << 20).write(to: URL(fileURLWithPath: path))
            syncer.enqueue(path)
        }
        syncer.enqueue(dir + "/gone")  // removed since (recycled by PostgreSQL): skipped
        #expect(!syncer.hasEnded)
        await syncer.finish()
        #expect(syncer.hasEnded, "the thread is still running after its owner finished it")
        await syncer.finish()  // idempotent
    }
}
