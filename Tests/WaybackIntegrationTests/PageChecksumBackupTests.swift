import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

@Suite("data checksums are verified during backups", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct PageChecksumBackupTests {
    @Test("the checksum matches PostgreSQL's; a page damaged on disk is reported with its relation and block, exit 16; 'fail' keeps no backup")
    func damagedPageIsReported() async throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.psql("CREATE TABLE victim (id int, pad text); INSERT INTO victim SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g; CHECKPOINT;")
        let rel = try t.psql("SELECT pg_relation_filepath('victim')")
        let node = try t.psql("SELECT pg_relation_filenode('victim')")
        let path = t.cluster.dataDirectory + "/" + rel
        // Every page PostgreSQL wrote verifies with our implementation of its checksum.
        let bytes = try #require(FileManager.default.contents(atPath: path))
        let pages = bytes.count / PageChecksum.pageSize
        #expect(pages > 10)
        [UInt8](bytes).withUnsafeBytes { all in
            for b in 0..<pages {
                let page = UnsafeRawBufferPointer(rebasing: all[(b * PageChecksum.pageSize)..<((b + 1) * PageChecksum.pageSize)])
                #expect(PageChecksum.verifies(page, block: UInt32(b)), "block \(b) of \(rel)")
            }
        }
        let clean = try t.wayback(["backup"])
        #expect(clean.status == 0, "\(clean.stderr)")

        // Damage block 3 on disk while the server is stopped (its page LSN stays old).
        try t.cluster.stop()
        let f = try PosixFile.openForWriting(path)
        try [UInt8](repeating: 0xEE, count: 32).withUnsafeBytes { try f.pwrite($0, offset: Int64(3 * PageChecksum.pageSize + 5000)) }
        try f.close()
        try t.cluster.start()

        let r = try t.wayback(["backup", "--json"])
        #expect(r.status == WaybackError.Code.pageChecksum.rawValue, "\(r.stderr)")
        #expect(r.stderr.contains(rel) && r.stderr.contains("block 3") && r.stderr.contains("file node \(node)"), "\(r.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let failures = try #require(summary["pageChecksumFailures"] as? [[String: Any]])
        #expect(failures.count == 1 && failures[0]["path"] as? String == rel && failures[0]["blocks"] as? [Int] == [3] && failures[0]["fork"] as? String == "main")
        // The backup is complete and lists the page in its manifest.
        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        let ids = try await catalog.backupIDs()
        #expect(ids.count == 2)
        #expect(try await catalog.manifest(ids.last!).pageChecksumFailures?.first?.blocks == [3])

        // backup.page_checksum_failures: fail keeps no backup.
        let failed = try t.wayback(["backup"], environment: ["WAYBACK_BACKUP_PAGE_CHECKSUM_FAILURES": "fail"])
        #expect(failed.status == WaybackError.Code.pageChecksum.rawValue, "\(failed.stderr)")
        #expect(failed.stderr.contains("the backup was not kept"))
        #expect(try await catalog.backupIDs().count == 2)
    }
}
