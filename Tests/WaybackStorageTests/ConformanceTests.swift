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
        #expect(try await s.list(prefix: "d/").map(\.key) == ["d/backups/b2/manifest.json"])
        #expect(try await s.removeLeftovers(olderThan: Date().addingTimeInterval(-3600), prefix: "") == 1)
    }

    @Test("a symbolic link inside a local repository is never followed: listing, reading, writing and removing through it are clear errors, and nothing outside is touched")
    func linksInsideTheRepositoryAreRefused() async throws {
        let dir = NSTemporaryDirectory() + "wayback-links-\(UUID().uuidString)"
        let outside = dir + "-outside"
        defer { try? FileSystem.removeTree(dir); try? FileSystem.removeTree(outside) }
        let s = LocalStorage(root: dir)
        try await s.writeAll("c/backups/b1/manifest.json", [1, 2, 3])
        try FileSystem.makeDirectories(outside + "/pack")
        #expect(FileManager.default.createFile(atPath: outside + "/pack/00-0000.pack", contents: Data([7, 7])))
        #expect(FileManager.default.createFile(atPath: outside + "/secret", contents: Data([9])))
        try FileSystem.symlink(target: outside, at: dir + "/c/backups/b2")
        try FileSystem.symlink(target: outside + "/secret", at: dir + "/c/backups/b1/pack.json")

        func refused(_ what: String, _ body: () async throws -> Void) async {
            do {
                try await body()
                Issue.record("\(what): no error")
            } catch let e as WaybackError {
                #expect(e.code == .repository && e.message.contains("is a symbolic link") && e.message.contains(outside), "\(what): \(e.message)")
            } catch { Issue.record("\(what): \(error)") }
        }
        await refused("list") { _ = try await s.list(prefix: "c/") }
        await refused("list under the link") { _ = try await s.list(prefix: "c/backups/b2/") }
        await refused("info") { _ = try await s.info("c/backups/b2/pack/00-0000.pack") }
        await refused("read") { _ = try await s.readAll("c/backups/b2/pack/00-0000.pack") }
        await refused("read a linked file") { _ = try await s.readAll("c/backups/b1/pack.json") }
        await refused("write") { try await s.writeAll("c/backups/b2/pack/00-0001.pack", [1]) }
        await refused("remove") { try await s.remove("c/backups/b2/pack/00-0000.pack") }
        await refused("remove a linked file") { try await s.remove("c/backups/b1/pack.json") }
        // Nothing outside was touched; what is not under a link still works.
        #expect(try FileSystem.list(outside + "/pack") == ["00-0000.pack"])
        #expect(FileManager.default.fileExists(atPath: outside + "/secret"))
        #expect(try await s.readAll("c/backups/b1/manifest.json") == [1, 2, 3])
        #expect(try await s.list(prefix: "c/backups/b1/manifest").map(\.key) == ["c/backups/b1/manifest.json"])
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
