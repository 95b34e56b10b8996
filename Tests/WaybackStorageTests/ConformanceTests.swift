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

    @Test("local leftovers: old temporary files go, at any depth and under the prefix only; objects, new temporary files and what a link points to stay")
    func localLeftoversAreRemovedAndNothingElse() async throws {
        let dir = NSTemporaryDirectory() + "wayback-leftovers-\(UUID().uuidString)"
        let outside = dir + "-outside"
        defer { try? FileSystem.removeTree(dir); try? FileSystem.removeTree(outside) }
        let s = LocalStorage(root: dir)
        for key in ["c/wal/0000000100000000/000000010000000000000001", "c/backups/b1/pack/00-0000.pack", "d/backups/b2/manifest.json"] {
            try await s.writeAll(key, [1, 2, 3])
        }
        func make(_ path: String, age: TimeInterval) throws {
            #expect(FileManager.default.createFile(atPath: path, contents: Data([9])))
            let t = Date().addingTimeInterval(-age)
            try FileManager.default.setAttributes([.modificationDate: t], ofItemAtPath: path)
        }
        try make(dir + "/c/wal/0000000100000000/.000000010000000000000002.tmp-1-aa", age: 7200)
        try make(dir + "/c/backups/b1/pack/.00-0001.pack.tmp-1-bb", age: 7200)
        try make(dir + "/c/backups/b1/pack/.00-0002.pack.tmp-1-cc", age: 0)
        try make(dir + "/d/backups/b2/.manifest.json.tmp-1-dd", age: 7200)
        // A link inside the repository to a directory outside it is not followed.
        try FileSystem.makeDirectories(outside)
        try make(outside + "/.x.tmp-1-ee", age: 7200)
        try FileManager.default.createSymbolicLink(atPath: dir + "/c/linked", withDestinationPath: outside)

        #expect(try await s.removeLeftovers(olderThan: Date().addingTimeInterval(-3600), prefix: "c/") == 2)
        let left = Set(try FileManager.default.subpathsOfDirectory(atPath: dir))
        #expect(!left.contains("c/wal/0000000100000000/.000000010000000000000002.tmp-1-aa"))
        #expect(!left.contains("c/backups/b1/pack/.00-0001.pack.tmp-1-bb"))
        #expect(left.contains("c/backups/b1/pack/.00-0002.pack.tmp-1-cc"), "a write in progress is kept")
        #expect(left.contains("d/backups/b2/.manifest.json.tmp-1-dd"), "outside the prefix")
        #expect(FileManager.default.fileExists(atPath: outside + "/.x.tmp-1-ee"))
        #expect(try await s.list(prefix: "").map(\.key).count == 3)
        #expect(try await s.removeLeftovers(olderThan: Date().addingTimeInterval(-3600), prefix: "") == 1)
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
