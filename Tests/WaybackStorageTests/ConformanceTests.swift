import Foundation
import Testing
import WaybackCore
import WaybackStorage
import WaybackTesting

@Suite struct StorageConformanceTests {
    @Test func localStoragePassesConformance() async throws {
        let dir = NSTemporaryDirectory() + "wayback-storage-\(UUID().uuidString)"
        defer { try? FileSystem.removeTree(dir) }
        try await StorageConformance.run(LocalStorage(root: dir))
        // No temporary files are left behind by failed writes.
        let leftovers = try FileManager.default.subpathsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
    }

    @Test func memoryStoragePassesConformance() async throws {
        try await StorageConformance.run(MemoryStorage())
    }

    @Test func localStorageRejectsEscapingKeys() async throws {
        let s = LocalStorage(root: NSTemporaryDirectory() + "wayback-escape")
        await #expect(throws: WaybackError.self) { _ = try await s.info("../etc/passwd") }
        await #expect(throws: WaybackError.self) { _ = try await s.info("/abs") }
    }
}
