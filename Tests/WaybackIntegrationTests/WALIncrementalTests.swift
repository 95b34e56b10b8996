import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// Incrementals that read only the blocks the WAL names (`backup.incr_method`), against a real
/// cluster: a day of hourly incrementals in miniature with `both` (the WAL method must never miss
/// a page the scan finds), restored and compared with a full taken at the same point; and the
/// fallbacks when WAL in the range is missing or damaged.
@Suite("incrementals from the WAL's block map", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct WALIncrementalTests {
    static func backup(_ t: TestCluster, _ type: String, method: String, config: String? = nil, environment: [String: String] = [:]) throws -> [String: Any] {
        let r = try t.wayback(["backup", "--type", type, "--json"], environment: environment.merging(["WAYBACK_BACKUP_INCR_METHOD": method]) { a, _ in a },
                              config: config)
        guard r.status == 0 else { throw WaybackError(.internal, "backup --type \(type) (incr_method \(method)) exited \(r.status): \(r.stderr)") }
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
    }

    /// A cluster (autovacuum off) with pgbench at scale 2 and a full backup, and where to restore.
    static func pgbenchWithFull() throws -> (TestCluster, LocalCluster, String) {
        let t = try TestCluster(settings: ["autovacuum": "off"])
        let dir = t.root + "/restored"
        do {
            try t.waybackOK(["init"])
            try t.cluster.pgbench(["-i", "-q", "-s", "2"])
            _ = try backup(t, "full", method: "wal")
        } catch {
            t.cleanup()
            throw error
        }
        return (t, t.restoredCluster(at: dir), dir)
    }

    /// The compression byte of every stored frame of a backup's page-level files (those with
    /// block runs) and of its whole files, read from its packs where the manifest says they are.
    static func frameAlgorithms(_ t: TestCluster, _ id: String) throws -> (pages: Set<UInt8>, whole: Set<UInt8>) {
        let dir = t.repositoryPath + "/\(t.name)/backups/\(id)/"
        let text = try String(contentsOfFile: dir + "manifest.json", encoding: .utf8)
        let body = text[text.index(after: try #require(text.firstIndex(of: "\n")))...]
        let m = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        let objects = try #require(m["objects"] as? [[String: Any]]).map { $0["name"] as? String ?? "" }
        var packs = [String: [UInt8]](), pages = Set<UInt8>(), whole = Set<UInt8>()
        for f in try #require(m["files"] as? [[String: Any]]) {
            let paged = !((f["blocks"] as? [Any]) ?? []).isEmpty
            for c in (f["chunks"] as? [[String: Any]]) ?? [] {
                let name = objects[try #require(c["o"] as? Int)], offset = try #require(c["f"] as? Int)
                if packs[name] == nil { packs[name] = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + name))) }
                let pack = packs[name]!
                #expect(Array(pack[offset..<(offset + 4)]) == Array("WBF1".utf8))
                // A frame that did not compress is stored plain (0) whatever the setting.
                if pack[offset + 4] != 0 { if paged { pages.insert(pack[offset + 4]) } else { whole.insert(pack[offset + 4]) } }
            }
        }
        return (pages, whole)
    }

    static func reading(_ b: [String: Any]) -> [String: Any] { b["reading"] as? [String: Any] ?? [:] }
    static func fallbacks(_ b: [String: Any]) -> [String] { reading(b)["fallbacks"] as? [String] ?? [] }

    /// Digests of every table of the public schema, by name.
    static func digests(_ c: LocalCluster, database: String = "postgres") throws -> [String: String] {
        let names = try c.psql("SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'", database: database)
        var out = [String: String]()
        for n in names.split(separator: " ") { out[String(n)] = try TestCluster.tableDigest(c, String(n), database: database) }
        return out
    }

    @Test("a day of hourly incrementals in miniature with incr_method both (pgbench between CREATE/DROP, TRUNCATE, VACUUM FULL, CLUSTER, CREATE INDEX CONCURRENTLY, SET TABLESPACE, CREATE DATABASE both ways, DROP DATABASE, COPY, unlogged tables, a table grown over WAL segments, a timeline switch): no page missed, and the chain restores like a full at the same LSN")
    func aDayInMiniature() async throws {
        let t = try TestCluster(settings: ["wal_keep_size": "1GB"])
        let forkDir = t.root + "/fork", chainDir = t.root + "/from-chain", fullDir = t.root + "/from-full"
        let fork = t.restoredCluster(at: forkDir)
        let forkCluster = LocalCluster(binDirectory: fork.binDirectory, dataDirectory: forkDir, socketDirectory: forkDir, port: fork.port, osUser: fork.osUser)
        let fromChain = t.restoredCluster(at: chainDir), fromFull = t.restoredCluster(at: fullDir)
        defer { t.cleanup(extra: [forkCluster, fromChain, fromFull]) }
        let tsDir = t.root + "/ts"
        try FileManager.default.createDirectory(atPath: tsDir, withIntermediateDirectories: true)
        try TestEnvironment.giveToTestUser(tsDir, mode: 0o700)
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "3"])
        try t.psql("""
            CREATE TABLE to_truncate AS SELECT g AS id, repeat('t', 200) AS pad FROM generate_series(1, 20000) g;
            CREATE TABLE to_drop AS SELECT g AS id FROM generate_series(1, 10000) g;
            CREATE TABLE to_rewrite AS SELECT g AS id, repeat('r', 300) AS pad FROM generate_series(1, 20000) g;
            CREATE TABLE to_move AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 20000) g;
            CREATE TABLE copied_in (id int, note text);
            CREATE TABLE small (id int, note text);
            CREATE UNLOGGED TABLE scratch AS SELECT g AS id FROM generate_series(1, 5000) g;
            """)
        let full = try Self.backup(t, "full", method: "both")
        let fullRead = try #require(Self.reading(full)["bytesRead"] as? Int)
        #expect(Self.reading(full)["method"] == nil)

        var incrs = [[String: Any]]()
        func hour(_ sql: String, database: String = "postgres", method: String = "both", config: String? = nil) throws -> [String: Any] {
            try (config == nil ? t.cluster : forkCluster).pgbench(["-n", "-c", "2", "-t", "200"])
            if !sql.isEmpty { try (config == nil ? t.cluster : forkCluster).psql(sql, database: database) }
            let b = try Self.backup(t, "incr", method: method, config: config)
            #expect(b["type"] as? String == "incr", "\(b)")
            #expect(Self.reading(b)["method"] as? String == method)
            incrs.append(b)
            return b
        }
        let plain = try hour("CREATE TABLE made AS SELECT g AS id FROM generate_series(1, 5000) g; DROP TABLE to_drop; TRUNCATE to_truncate; INSERT INTO to_truncate VALUES (1, 'again')")
        #expect(Self.fallbacks(plain).isEmpty, "\(Self.fallbacks(plain))")
        _ = try hour("VACUUM FULL to_rewrite; CLUSTER pgbench_tellers USING pgbench_tellers_pkey; DELETE FROM to_rewrite WHERE id > 15000; VACUUM to_rewrite")
        _ = try hour("CREATE INDEX CONCURRENTLY accounts_bid ON pgbench_accounts (bid)")
        _ = try hour("CREATE TABLESPACE ts LOCATION '\(tsDir)'; ALTER TABLE to_move SET TABLESPACE ts; UPDATE to_move SET h = 'moved' WHERE id % 10 = 0")
        let copiedDB = try hour("CREATE DATABASE copied STRATEGY FILE_COPY; CREATE DATABASE logged STRATEGY WAL_LOG")
        #expect(Self.fallbacks(copiedDB).contains { $0.contains("copied file by file") }, "\(Self.fallbacks(copiedDB))")
        try t.psql("CREATE TABLE inside AS SELECT g AS id FROM generate_series(1, 3000) g", database: "copied")
        _ = try hour("DROP DATABASE logged; COPY copied_in FROM PROGRAM 'seq 1 300000 | sed s/$/,copy/' WITH (FORMAT csv); INSERT INTO scratch SELECT g FROM generate_series(1, 5000) g")
        // Row by row in one transaction: the table grows over several WAL segments (measured
        // around the inserts alone: the hour's other WAL depends on when autovacuum runs).
        let before = try t.psql("SELECT pg_current_wal_lsn()")
        try t.psql("DO $$ BEGIN FOR i IN 1..200000 LOOP INSERT INTO small VALUES (i, rpad('row ' || i, 200, '.')); END LOOP; END $$")
        let walBytes = try #require(Int(try t.psql("SELECT pg_current_wal_lsn() - '\(before)'::pg_lsn")))
        #expect(walBytes > 2 * 16 << 20, "the small inserts wrote \(walBytes) bytes of WAL, less than two segments")
        _ = try hour("")

        // A timeline switch: the cluster goes on as a fork promoted from the archive.
        try t.switchAndWaitForArchive()
        var beforeSwitch = try Self.digests(t.cluster)
        beforeSwitch["scratch"] = "0:"  // unlogged: empty after the restore
        let tsOID = try t.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
        try t.cluster.stop()
        try t.waybackOK(["restore", "--target-dir", forkDir, "--to-latest", "--tablespace-map", "\(tsOID)=\(t.root)/ts-fork",
                         "--archive-mode", "preserve", "--start", "--port", "\(fork.port)"])
        #expect(try forkCluster.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000002")
        #expect(try Self.digests(forkCluster) == beforeSwitch)
        let onFork = try t.configVariant("fork.yaml", replace: [("pgdata: \(t.cluster.dataDirectory)", "pgdata: \(forkDir)"),
                                                                ("host=\(t.root)&port=\(t.cluster.port)", "host=\(forkDir)&port=\(fork.port)")])
        let crossed = try hour("UPDATE small SET note = 'fork' WHERE id % 100 = 0", config: onFork)
        #expect(Self.fallbacks(crossed).contains { $0.contains("timeline") }, "\(Self.fallbacks(crossed))")
        let onTwo = try hour("DELETE FROM made WHERE id % 2 = 0", config: onFork)
        #expect(Self.fallbacks(onTwo).isEmpty, "\(Self.fallbacks(onTwo))")

        // The WAL method alone reads a small part of what the full read.
        let walOnly = try hour("UPDATE to_move SET h = 'last' WHERE id < 50", method: "wal", config: onFork)
        let walRead = try #require(Self.reading(walOnly)["bytesRead"] as? Int)
        #expect(Self.fallbacks(walOnly).isEmpty && walRead * 4 < fullRead, "the wal incr read \(walRead) bytes, the full \(fullRead)")
        let lastID = try #require(walOnly["id"] as? String)

        let fullAtEnd = try #require(try Self.backup(t, "full", method: "both", config: onFork)["id"] as? String)
        try forkCluster.psql("CREATE TABLE after_all AS SELECT 1 AS id")
        let target = try forkCluster.psql("SELECT pg_current_wal_lsn()")
        let seg = try forkCluster.psql("SELECT pg_walfile_name(pg_switch_wal())")
        try DaemonTests.waitFor("the fork's archive", timeout: 60) {
            try forkCluster.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= seg
        }
        let expected = try Self.digests(forkCluster), expectedCopied = try Self.digests(forkCluster, database: "copied")
        try forkCluster.stop()

        try t.waybackOK(["restore", "--backup", lastID, "--to-lsn", target, "--target-action", "promote", "--target-dir", chainDir,
                         "--tablespace-map", "\(tsOID)=\(t.root)/ts-chain"])
        let verify = try fromChain.run([fromChain.binDirectory + "/pg_verifybackup", "-n", chainDir], check: false)
        #expect(verify.status == 0, "pg_verifybackup: \(verify.stderr)")
        try t.waybackOK(["restore", "--backup", fullAtEnd, "--to-lsn", target, "--target-action", "promote", "--target-dir", fullDir,
                         "--tablespace-map", "\(tsOID)=\(t.root)/ts-full"])
        try t.startRestored(fromChain)
        try t.startRestored(fromFull)
        let chainDigests = try Self.digests(fromChain)
        #expect(chainDigests == (try Self.digests(fromFull)))
        var logged = expected
        logged["scratch"] = "0:"
        #expect(chainDigests == logged)
        #expect(try Self.digests(fromChain, database: "copied") == expectedCopied)
        #expect(try fromChain.psql("SELECT count(*) FROM pg_database WHERE datname = 'logged'") == "0")
        #expect(try fromChain.psql("SET enable_seqscan = off; SELECT count(*) FROM pgbench_accounts WHERE bid = 2") == "100000")
        #expect(try fromChain.psql("SELECT spcname FROM pg_tablespace t JOIN pg_class c ON c.reltablespace = t.oid WHERE relname = 'to_move'") == "ts")
        // amcheck over every B-tree index of the rebuilt cluster (an error fails the query).
        try fromChain.psql("CREATE EXTENSION amcheck")
        let checked = try fromChain.psql("SELECT count(*) FROM (SELECT bt_index_check(i.indexrelid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND i.indisvalid AND c.relpersistence = 'p') x")
        #expect((Int(checked) ?? 0) > 10, "\(checked) indexes checked")
    }

    @Test("pages the WAL's last record of them left as a full-page image are built from the image, not read: after pgbench an incr reads fewer pages than the WAL names; its changed pages are stored as LZ4 frames (zstd with compression.incremental same); the chain of two such incrs restores to the source's tables, passes pg_verifybackup, amcheck (heap and index) and pg_checksums")
    func pagesFromImages() async throws {
        let (t, restored, dir) = try Self.pgbenchWithFull()
        defer { t.cleanup(extra: [restored]) }
        var last = [String: Any]()
        for round in 1...2 {
            // pgbench's updates lock the old row (a record with the page's image) then update it
            // (a record without): those pages are read. A row deleted in each of many pages is one
            // record with the page's image: those pages come from their images, but for those
            // pgbench touched since the last checkpoint (no image then; about half of the 400).
            try t.cluster.pgbench(["-n", "-c", "2", "-t", "1000"])
            try t.psql("DELETE FROM pgbench_accounts WHERE aid % 500 = \(round)")
            // The second with `compression.incremental: same`: the chain restored mixes both.
            last = try Self.backup(t, "incr", method: "wal", environment: round == 2 ? ["WAYBACK_COMPRESSION_INCREMENTAL": "same"] : [:])
            let r = Self.reading(last)
            let built = r["blocksFromImages"] as? Int ?? 0, read = r["blocksRead"] as? Int ?? 0
            #expect(Self.fallbacks(last).isEmpty && built > 100 && read > 200, "\(r)")
            // The changed pages in LZ4 frames (`compression.incremental` by default) or, with
            // `same`, zstd as the rest.
            let algorithms = try Self.frameAlgorithms(t, try #require(last["id"] as? String))
            let pages: CompressionAlgorithm = round == 1 ? .lz4 : .zstd
            #expect(algorithms.pages == [pages.rawValue] && algorithms.whole.isSubset(of: [CompressionAlgorithm.zstd.rawValue]), "\(algorithms)")
        }
        let expected = try Self.digests(t.cluster)
        let id = try #require(last["id"] as? String)
        try t.waybackOK(["restore", "--backup", id, "--to-backup-end", "--target-dir", dir])
        let verify = try restored.run([restored.binDirectory + "/pg_verifybackup", "-n", dir], check: false)
        #expect(verify.status == 0, "pg_verifybackup: \(verify.stderr)")
        try t.startRestored(restored)
        #expect(try Self.digests(restored) == expected)
        // Every B-tree index against its table, and every heap page (an error fails the query).
        try restored.psql("CREATE EXTENSION amcheck")
        let checked = try restored.psql("SELECT count(*) FROM (SELECT bt_index_check(i.indexrelid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence = 'p') x")
        #expect((Int(checked) ?? 0) > 3, "\(checked) indexes checked")
        #expect(try restored.psql("SELECT count(*) FROM verify_heapam('pgbench_accounts')") == "0")
        try restored.stop()
        // The checksums of the pages built from images (replay rewrote none: nothing changed
        // during the backup).
        let sums = try restored.run([restored.binDirectory + "/pg_checksums", "--check", "-D", dir], check: false)
        #expect(sums.status == 0, "pg_checksums: \(sums.stdout) \(sums.stderr)")
    }

    @Test("a WAL segment of the range missing (archive and pg_wal), then one damaged in the archive: the incr scans every relation file, says which segment and why, and is complete")
    func missingOrDamagedSegment() async throws {
        let (t, restored, dir) = try Self.pgbenchWithFull()
        defer { t.cleanup(extra: [restored]) }
        let archive = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")

        /// Writes over three segments, then takes `spoil` (the middle one) away from pg_wal once
        /// it is archived and behind a checkpoint.
        func writeAndSpoil(_ spoil: (String) throws -> Void) throws -> String {
            var names = [String]()
            for _ in 0..<3 {
                try t.cluster.pgbench(["-n", "-c", "2", "-t", "100"])
                names.append(try t.psql("SELECT pg_walfile_name(pg_switch_wal())"))
            }
            try t.switchAndWaitForArchive()
            try t.psql("CHECKPOINT")
            let victim = names[1]
            try spoil(try archive.layout.walKey(#require(WALFileName(victim))))
            try FileSystem.remove(t.cluster.dataDirectory + "/pg_wal/" + victim)
            return victim
        }
        let lost = try writeAndSpoil { key in try FileSystem.remove(t.repositoryPath + "/" + key) }
        let first = try Self.backup(t, "incr", method: "wal")
        #expect(first["type"] as? String == "incr")
        #expect(Self.fallbacks(first).contains { $0.contains(lost) && $0.contains("neither in pg_wal nor in the archive") && $0.contains("scanned") },
                "\(Self.fallbacks(first))")
        let scanned = try #require(Self.reading(first)["blocksRead"] as? Int)
        let pages = try #require(Int(try t.psql("SELECT (sum(pg_relation_size(oid, 'main')) / 8192)::bigint FROM pg_class WHERE relkind IN ('r', 'i', 't')")))
        #expect(scanned >= pages, "a fallback scans every page: \(scanned) read, \(pages) in the tables and indexes")

        let damaged = try writeAndSpoil { key in
            let path = t.repositoryPath + "/" + key
            let f = try PosixFile.openForWriting(path)
            let size = try f.size()
            try [UInt8](repeating: 0xA5, count: 64).withUnsafeBytes { try f.pwrite($0, offset: size / 2) }
            try f.close()
        }
        let second = try Self.backup(t, "incr", method: "wal")
        #expect(Self.fallbacks(second).contains { $0.contains(damaged) && $0.contains("cannot be read from the archive") },
                "\(Self.fallbacks(second))")

        // With the WAL whole again, the next incr reads far less.
        try t.cluster.pgbench(["-n", "-c", "2", "-t", "100"])
        let third = try Self.backup(t, "incr", method: "wal")
        #expect(Self.fallbacks(third).isEmpty, "\(Self.fallbacks(third))")
        #expect((Self.reading(third)["blocksRead"] as? Int ?? .max) * 4 < scanned)
        try t.switchAndWaitForArchive()
        let expected = try TestCluster.tableDigest(t.cluster, "pgbench_accounts")
        try t.waybackOK(["restore", "--backup", try #require(third["id"] as? String), "--to-backup-end", "--target-dir", dir])
        try t.startRestored(restored)
        #expect(try TestCluster.tableDigest(restored, "pgbench_accounts") == expected)
    }

    @Test("a diff builds its block map from the maps the incrs since its full kept and decodes only the WAL after them; verify reads the kept maps; a damaged map is not used (the WAL is decoded instead); the diff restores")
    func diffReusesKeptMaps() async throws {
        let (t, restored, dir) = try Self.pgbenchWithFull()
        defer { t.cleanup(extra: [restored]) }
        var incrs = [[String: Any]]()
        for _ in 0..<3 {
            try t.cluster.pgbench(["-n", "-c", "2", "-t", "200"])
            incrs.append(try Self.backup(t, "incr", method: "wal"))
        }
        #expect(incrs.allSatisfy { Self.reading($0)["mapFrom"] is String }, "\(incrs.map(Self.reading))")
        try t.cluster.pgbench(["-n", "-c", "2", "-t", "200"])
        let diff = try Self.backup(t, "diff", method: "wal")
        #expect(diff["type"] as? String == "diff")
        #expect(Self.reading(diff)["mapsReused"] as? [String] == incrs.compactMap { $0["id"] as? String }, "\(Self.reading(diff))")
        let decoded = try #require(Self.reading(diff)["walRecords"] as? Int)
        let incrRecords = incrs.compactMap { Self.reading($0)["walRecords"] as? Int }.reduce(0, +)
        #expect(decoded < incrRecords, "the diff decoded \(decoded) records, the three incrs \(incrRecords)")
        #expect(Self.fallbacks(diff).isEmpty)
        try t.waybackOK(["verify"])

        // The diff's own map (the newest from the full's start) damaged: the next diff decodes the
        // WAL and says why.
        let firstDiff = try #require(diff["id"] as? String)
        let path = t.repositoryPath + "/main/backups/\(firstDiff)/blockmap"
        let f = try PosixFile.openForWriting(path)
        try [UInt8](repeating: 0x5A, count: 16).withUnsafeBytes { try f.pwrite($0, offset: 20) }
        try f.close()
        try t.cluster.pgbench(["-n", "-c", "2", "-t", "200"])
        let r = try t.wayback(["backup", "--type", "diff", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("the block map of backup \(firstDiff)") && r.stderr.contains("decoded instead"), "\(r.stderr)")
        let secondDiff = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(Self.reading(secondDiff)["mapsReused"] == nil)
        let expected = try TestCluster.tableDigest(t.cluster, "pgbench_accounts")
        try t.switchAndWaitForArchive()
        try t.waybackOK(["restore", "--backup", try #require(secondDiff["id"] as? String), "--to-backup-end", "--target-dir", dir])
        try t.startRestored(restored)
        #expect(try TestCluster.tableDigest(restored, "pgbench_accounts") == expected)
    }
}
