import Foundation
import Synchronization
import Testing

@testable import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// The WAL block map against a real cluster's WAL: after a workload of every kind of change,
/// every page on disk whose LSN is at or after the start is named by the WAL (a block reference,
/// a created fork, or a database copied file by file), and the map is far smaller than the data.
@Suite("the WAL block map against real PostgreSQL 15 WAL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct WALBlockMapTests {
    static let workload = """
        CREATE TABLE grown (id int, pad text); INSERT INTO grown SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g;
        CREATE TABLE cut AS SELECT g FROM generate_series(1, 50000) g; TRUNCATE cut; INSERT INTO cut VALUES (1);
        CREATE TABLE gone AS SELECT g FROM generate_series(1, 1000) g; DROP TABLE gone;
        VACUUM FULL pgbench_branches; CLUSTER pgbench_tellers USING pgbench_tellers_pkey;
        CREATE INDEX CONCURRENTLY accounts_bid ON pgbench_accounts (bid);
        CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 5000) g;
        """

    @Test("every page written after the start LSN is named by the WAL from it (pgbench, CREATE/DROP/TRUNCATE, VACUUM FULL, CLUSTER, CREATE INDEX CONCURRENTLY, both CREATE DATABASE strategies, unlogged tables); the map names a small part of the data")
    func everyChangedPageIsNamed() throws {
        // Autovacuum off: the table left alone must stay untouched.
        let t = try TestCluster(settings: ["archive_mode": "off", "wal_keep_size": "4GB", "max_wal_size": "4GB", "autovacuum": "off"])
        defer { t.cleanup() }
        try t.cluster.pgbench(["-i", "-s", "5"])
        _ = try t.psql("CREATE TABLE untouched AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g; VACUUM (FREEZE) untouched; CHECKPOINT")
        let start = try #require(LSN(try t.psql("SELECT redo_lsn FROM pg_control_checkpoint()")))

        try t.cluster.pgbench(["-t", "300", "-c", "2"])
        _ = try t.psql("SELECT pg_switch_wal()")  // the range spans three segments at least
        for statement in Self.workload.split(separator: "\n").map(String.init) {
            _ = try t.psql(statement)
        }
        _ = try t.psql("CREATE DATABASE copied STRATEGY FILE_COPY")
        _ = try t.psql("CREATE DATABASE logged STRATEGY WAL_LOG")
        _ = try t.psql("CREATE TABLE inside AS SELECT g FROM generate_series(1, 3000) g", database: "logged")
        _ = try t.psql("CHECKPOINT")
        let end = try #require(LSN(try t.psql("SELECT pg_current_wal_insert_lsn()")))
        _ = try t.psql("SELECT pg_switch_wal()")

        // The WAL from the start's segment to the end's, from pg_wal.
        let segmentSize = WALFileName.defaultSegmentSize
        var scanner = WALRecordScanner(segmentSize: segmentSize)
        scanner.blockMap = WALBlockMap(from: start, imageBudget: 1 << 30)
        for n in start.segmentNumber(segmentSize: segmentSize)...end.segmentNumber(segmentSize: segmentSize) {
            let path = t.cluster.dataDirectory + "/pg_wal/" + WALFileName(timeline: 1, segmentNumber: n, segmentSize: segmentSize).description
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            _ = try bytes.withUnsafeBytes { try scanner.scan($0, segmentNumber: n) }
        }
        let map = try #require(scanner.blockMap)
        #expect(map.complete, "\(map.fallbacks)")

        func oid(_ sql: String, _ db: String = "postgres") throws -> UInt32 { try #require(UInt32(try t.psql(sql, database: db))) }
        let postgres = try oid("SELECT oid FROM pg_database WHERE datname = 'postgres'")
        let copied = try oid("SELECT oid FROM pg_database WHERE datname = 'copied'")
        #expect(map.copiedDatabases.contains([1663, copied]), "\(map.copiedDatabases)")
        let cut = try oid("SELECT relfilenode FROM pg_class WHERE relname = 'cut'")
        #expect(map.created.contains(RelationFork(tablespace: 1663, database: postgres, relation: cut, fork: 0)) || map.truncated.keys.contains { $0.relation == cut })
        let untouched = try oid("SELECT relfilenode FROM pg_class WHERE relname = 'untouched'")
        let untouchedPath = try t.psql("SELECT pg_relation_filepath('untouched')")
        let untouchedLSNs = try Data(contentsOf: URL(fileURLWithPath: t.cluster.dataDirectory + "/" + untouchedPath)).withUnsafeBytes { all in
            (0..<(all.count / 8192)).map { PageChecksum.lsn(UnsafeRawBufferPointer(rebasing: all[($0 * 8192)..<(($0 + 1) * 8192)])) }
        }
        #expect(map.blocks[RelationFork(tablespace: 1663, database: postgres, relation: untouched, fork: 0)] == nil,
                "start \(start), untouched's page LSNs \(untouchedLSNs.prefix(5)), first record \(map.first.map { "\($0)" } ?? "-")")

        // Every page on disk with an LSN at or after the start: named by the map.
        var missed = [String](), changed = 0, total = 0
        // Pages kept as the image of their last record: on disk (after the CHECKPOINT, nothing
        // written since) each carries that record's end as its LSN, and rebuilt from the image it
        // is the page on disk but for what replay does not restore (hint bits set since, bytes
        // left in the hole). The exception is PostgreSQL's own: two sessions that set hint bits on
        // one page at once each log its image (`FPI_FOR_HINT`) and set its LSN under the buffer
        // header lock in either order, so the page may keep the earlier record's LSN; replay
        // leaves the later image, with the later LSN, which is what Wayback gives it. Never may
        // the disk's LSN be the later one.
        var imageLSNs = [String](), images = 0, identical = 0, sameLSN = 0
        let decompressor = Decompressor()
        for dir in ["base", "global"] {
            for path in FileManager.default.subpaths(atPath: t.cluster.dataDirectory + "/" + dir) ?? [] {
                let relative = dir + "/" + path
                guard let file = PageChecksum.relationFile(relative), file.fork == "main" || file.fork == "init" else { continue }
                let parts = relative.split(separator: "/")
                let (spc, db): (UInt32, UInt32) = dir == "global" ? (1664, 0) : (1663, UInt32(parts[1]) ?? 0)
                // Unlogged relations (those with an init fork) are not WAL-logged and not backed up.
                let base = t.cluster.dataDirectory + "/" + parts.dropLast().joined(separator: "/") + "/" + String(file.fileNode)
                if file.fork == "main" && FileManager.default.fileExists(atPath: base + "_init") { continue }
                let key = RelationFork(tablespace: spc, database: db, relation: file.fileNode, fork: file.fork == "init" ? 3 : 0)
                let data = try Data(contentsOf: URL(fileURLWithPath: t.cluster.dataDirectory + "/" + relative))
                data.withUnsafeBytes { all in
                    for page in 0..<(all.count / PageChecksum.pageSize) {
                        total += 1
                        let onDisk = UnsafeRawBufferPointer(rebasing: all[(page * PageChecksum.pageSize)..<((page + 1) * PageChecksum.pageSize)])
                        let lsn = PageChecksum.lsn(onDisk)
                        let block = file.firstBlock + UInt32(page)
                        if let image = map.images[key]?[block] {
                            images += 1
                            if image.lsn == lsn { sameLSN += 1 }
                            if image.lsn < lsn { imageLSNs.append("\(relative) block \(block): image \(image.lsn), disk \(lsn)") }
                            var rebuilt = [UInt8](repeating: 0, count: PageChecksum.pageSize)
                            try? rebuilt.withUnsafeMutableBytes { try image.write(into: $0, block: block, checksums: true, decompressor: decompressor) }
                            if rebuilt.elementsEqual(onDisk) { identical += 1 }
                        }
                        guard lsn.value != 0, lsn >= start else { continue }
                        changed += 1
                        if map.blocks[key]?.contains(block) == true || map.created.contains(key) || map.copiedDatabases.contains([spc, db]) { continue }
                        missed.append("\(relative) block \(block) (LSN \(lsn))")
                    }
                }
            }
        }
        // A segment missing in the range: the map says it cannot stand for it.
        var gapped = WALRecordScanner(segmentSize: segmentSize)
        gapped.blockMap = WALBlockMap(from: start)
        let segments = Array(start.segmentNumber(segmentSize: segmentSize)...end.segmentNumber(segmentSize: segmentSize))
        try #require(segments.count >= 3)
        for n in segments where n != segments[1] {
            let path = t.cluster.dataDirectory + "/pg_wal/" + WALFileName(timeline: 1, segmentNumber: n, segmentSize: segmentSize).description
            _ = try Data(contentsOf: URL(fileURLWithPath: path)).withUnsafeBytes { try gapped.scan($0, segmentNumber: n) }
        }
        #expect(gapped.blockMap?.complete == false && gapped.blockMap?.fallbacks.first?.contains("a gap") == true, "\(gapped.blockMap?.fallbacks ?? [])")
        #expect(missed.isEmpty, "\(missed.count) changed pages the WAL does not name, e.g. \(missed.prefix(10))")
        #expect(changed > 100 && map.blockCount < total / 2, "\(changed) changed pages, \(map.blockCount) named, \(total) in all")
        #expect(images > 100 && imageLSNs.isEmpty, "\(images) pages kept as images; disk LSNs after the image's: \(imageLSNs.prefix(10))")
        #expect(sameLSN * 100 >= images * 95, "\(sameLSN) of \(images) pages kept as images carry on disk the LSN Wayback gives them")
        #expect(identical * 2 > images, "\(identical) of \(images) pages rebuilt from images are the pages on disk")
    }

    @Test("the map of the WAL since a full backup's start, read from the archive (pg_wal for what is not archived yet): the changed table's blocks are named, the untouched one's are not; a segment is read from pg_wal when cached there, else from the archive, else from pg_wal; an archived segment lost in the range is a fallback that names it")
    func fromTheArchive() async throws {
        let t = try TestCluster(settings: ["autovacuum": "off"])
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        _ = try t.psql("CREATE TABLE changed AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g; CREATE TABLE untouched AS SELECT g FROM generate_series(1, 20000) g; VACUUM (FREEZE)")
        let full = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["backup", "--json"]).utf8)) as? [String: Any] ?? [:]
        let start = try #require((full["startLSN"] as? String).flatMap(LSN.init), "\(full.keys.sorted())")
        for _ in 0..<3 {
            _ = try t.psql("UPDATE changed SET pad = repeat('y', 200) WHERE g % 7 = 0; SELECT pg_switch_wal()")
        }
        // Records running on over two segment boundaries (for the map taken in two parts below).
        _ = try t.psql("INSERT INTO changed SELECT g, repeat('v', 200) FROM generate_series(20001, 120000) g")
        _ = try t.psql("UPDATE changed SET pad = 'z' WHERE g = 1")  // in the segment not archived yet
        let end = try #require(LSN(try t.psql("SELECT pg_current_wal_insert_lsn()")))
        let archive = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        let lastArchived = try #require(WALFileName(try t.psql("SELECT pg_walfile_name(pg_current_wal_insert_lsn() - 1)")))
        try DaemonTests.waitFor("the archive", timeout: 30) {
            try t.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= WALFileName(timeline: 1, segmentNumber: lastArchived.segmentNumber(segmentSize: WALFileName.defaultSegmentSize) - 1).description
        }
        // What `found` is told segment by segment (for the read-ahead) adds up to the map's blocks.
        let told = Mutex([RelationFork: Set<UInt32>]())
        let map = await WALChanges.collect(from: start, to: end, timeline: 1, segmentSize: WALFileName.defaultSegmentSize, catalog: archive,
                                           pgWal: t.cluster.dataDirectory + "/pg_wal",
                                           found: { part in told.withLock { for (f, b) in part { $0[f, default: []].formUnion(b) } } })
        #expect(map.complete, "\(map.fallbacks)")
        #expect(told.withLock { $0 } == map.blocks)
        func fork(_ table: String) throws -> RelationFork {
            RelationFork(tablespace: 1663, database: try #require(UInt32(try t.psql("SELECT oid FROM pg_database WHERE datname = 'postgres'"))),
                         relation: try #require(UInt32(try t.psql("SELECT relfilenode FROM pg_class WHERE relname = '\(table)'"))), fork: 0)
        }
        let changedBlocks = try #require(UInt32(try t.psql("SELECT pg_relation_size('changed') / 8192")))
        let changedNamed = map.blocks[try fork("changed")]?.count ?? 0
        let untouchedNamed = map.blocks[try fork("untouched")]
        #expect(changedNamed >= Int(changedBlocks) / 2, "\(changedNamed) of \(changedBlocks)")
        #expect(untouchedNamed == nil)

        // In two parts split at a segment boundary inside the insert (as an incr does while its
        // start checkpoint runs): the first part ends before the record it cut, and the two
        // together are the map of the whole range.
        let segmentSize = WALFileName.defaultSegmentSize
        let boundary = LSN(LSN(end.value - 1).segmentNumber(segmentSize: segmentSize) * segmentSize)
        var parts = await WALChanges.collect(from: start, to: boundary, timeline: 1, segmentSize: segmentSize, catalog: archive,
                                             pgWal: t.cluster.dataDirectory + "/pg_wal")
        let cut = try #require(parts.until)
        #expect(cut <= boundary && cut.value > boundary.value - 8192, "the first part ends at \(cut), the boundary is \(boundary)")
        parts.append(await WALChanges.collect(from: cut, to: end, timeline: 1, segmentSize: segmentSize, catalog: archive,
                                              pgWal: t.cluster.dataDirectory + "/pg_wal"))
        #expect(parts.complete && parts.records == map.records && parts.blocks == map.blocks && parts.created == map.created
                && parts.truncated == map.truncated, "\(parts.records) records in two parts, \(map.records) in one")

        // Where a segment is read from: pg_wal when it is cached there, else the archive (fewer
        // bytes from the disk), else pg_wal. A stand-in pg_wal holds a segment of zeros under the
        // name of an archived one, and one of ones under a name not archived.
        let standIn = t.cluster.dataDirectory + "/../stand-in-pg_wal"
        try FileSystem.makeDirectories(standIn)
        let archived = WALFileName(timeline: 1, segmentNumber: start.segmentNumber(segmentSize: segmentSize) + 1)
        let notArchived = WALFileName(timeline: 1, segmentNumber: 0xFFFF)
        for (name, byte) in [(archived, UInt8(0)), (notArchived, UInt8(1))] {
            let f = try PosixFile.create(standIn + "/" + name.description)
            try [UInt8](repeating: byte, count: Int(segmentSize)).withUnsafeBytes { try f.pwrite($0, offset: 0) }
            try f.fsync()
            #expect(posix_fadvise(f.fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
            try f.close()
        }
        let real = try [UInt8](Data(contentsOf: URL(fileURLWithPath: t.cluster.dataDirectory + "/pg_wal/" + archived.description)))
        func read(_ name: WALFileName) async throws -> [UInt8] {
            try await WALChanges.segment(name, segmentSize: segmentSize, catalog: archive, pgWal: standIn, buffers: SegmentBuffers(size: Int(segmentSize))).get()
        }
        #expect(try await read(archived) == real, "a cold segment in pg_wal is read from the archive")
        _ = try Data(contentsOf: URL(fileURLWithPath: standIn + "/" + archived.description))  // now cached
        #expect(try await read(archived).allSatisfy { $0 == 0 }, "a cached segment in pg_wal is read from there")
        #expect(try await read(notArchived).allSatisfy { $0 == 1 }, "a segment not archived is read from pg_wal, cold or not")

        // A segment of the range lost from the archive (and not in pg_wal): named as a fallback.
        let lost = WALFileName(timeline: 1, segmentNumber: start.segmentNumber(segmentSize: WALFileName.defaultSegmentSize) + 1)
        _ = try Command.run(["/bin/sh", "-c", "rm -f '\(t.repositoryPath)/main/wal/'*/\(lost.description)*"])
        let gapped = await WALChanges.collect(from: start, to: end, timeline: 1, segmentSize: WALFileName.defaultSegmentSize, catalog: archive, pgWal: nil)
        #expect(gapped.fallbacks.contains { $0.contains(lost.description) }, "\(gapped.fallbacks)")
    }
}
