import Foundation
import Testing
import WaybackPostgres
import WaybackStorage
@testable import WaybackBackup

@Suite struct BlockReadAheadTests {
    static let page = Int64(PageChecksum.pageSize)
    static let perSegment = PageChecksum.blocksPerSegment

    @Test("a fork's file path is the inverse of RelationFork.of(path:): default, global and other tablespaces, forks and segments")
    func pathsRoundTrip() {
        let cases: [(RelationFork, UInt32, String?, String)] = [
            (RelationFork(tablespace: 1663, database: 5, relation: 16384, fork: 0), 0, nil, "base/5/16384"),
            (RelationFork(tablespace: 1663, database: 5, relation: 16384, fork: 3), 2, nil, "base/5/16384_init.2"),
            (RelationFork(tablespace: 1664, database: 0, relation: 1262, fork: 1), 0, nil, "global/1262_fsm"),
            (RelationFork(tablespace: 24576, database: 5, relation: 16390, fork: 2), 1, "PG_15_202209061", "pg_tblspc/24576/PG_15_202209061/5/16390_vm.1"),
        ]
        for (fork, segment, version, path) in cases {
            #expect(fork.path(segment: segment, versionDirectory: version) == path)
            let back = RelationFork.of(path: path)
            #expect(back?.fork == fork && back?.segment == segment, "\(path)")
        }
        // Another tablespace without its version directory, or a fork PostgreSQL does not have: no path.
        #expect(RelationFork(tablespace: 24576, database: 5, relation: 1, fork: 0).path(segment: 0, versionDirectory: nil) == nil)
        #expect(RelationFork(tablespace: 1663, database: 5, relation: 1, fork: 4).path(segment: 0, versionDirectory: nil) == nil)
    }

    @Test("advising reads runs of blocks file by file within the budget, and skips files that are missing or symbolic links")
    func advisesWithinBudget() throws {
        let root = NSTemporaryDirectory() + "wayback-readahead-\(UUID().uuidString)"
        defer { try? FileSystem.removeTree(root) }
        try FileManager.default.createDirectory(atPath: root + "/base/5", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/pg_tblspc/24576/PG_15_202209061/5", withIntermediateDirectories: true)
        for (file, pages) in [("base/5/16384", 10), ("base/5/16384.1", 2), ("pg_tblspc/24576/PG_15_202209061/5/16390", 4)] {
            try Data(count: pages * Int(Self.page)).write(to: URL(fileURLWithPath: root + "/" + file))
        }
        try FileManager.default.createSymbolicLink(atPath: root + "/base/5/16385", withDestinationPath: root + "/base/5/16384")
        let main = RelationFork(tablespace: 1663, database: 5, relation: 16384, fork: 0)
        // Runs [0-2], [5], and [0-1] of the second segment file: 6 pages.
        let blocks: [UInt32] = [0, 1, 2, 5, Self.perSegment, Self.perSegment + 1]
        #expect(BlockReadAhead.advise(main, blocks: blocks, pgdata: root, versionDirectory: nil, budget: 1 << 30) == 6 * Self.page)
        // A budget of two pages stops after the first run (three pages).
        #expect(BlockReadAhead.advise(main, blocks: blocks, pgdata: root, versionDirectory: nil, budget: 2 * Self.page) == 3 * Self.page)
        let other = RelationFork(tablespace: 24576, database: 5, relation: 16390, fork: 0)
        #expect(BlockReadAhead.advise(other, blocks: [1, 2], pgdata: root, versionDirectory: "PG_15_202209061", budget: 1 << 30) == 2 * Self.page)
        // A link (not made by Wayback) is not followed; a dropped relation's file is simply not there.
        let linked = RelationFork(tablespace: 1663, database: 5, relation: 16385, fork: 0)
        #expect(BlockReadAhead.advise(linked, blocks: [0, 1], pgdata: root, versionDirectory: nil, budget: 1 << 30) == 0)
        let dropped = RelationFork(tablespace: 1663, database: 5, relation: 16399, fork: 0)
        #expect(BlockReadAhead.advise(dropped, blocks: [0], pgdata: root, versionDirectory: nil, budget: 1 << 30) == 0)
    }
}
