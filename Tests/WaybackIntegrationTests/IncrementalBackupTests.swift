import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// Page-level diff and incr backups against a real cluster: churn and DDL between backups, then a
/// restore through the chain compared with a restore of a full backup taken at the end.
@Suite("incremental and differential backups", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct IncrementalBackupTests {
    static func backup(_ t: TestCluster, _ type: String, environment: [String: String] = [:]) throws -> [String: Any] {
        let r = try t.wayback(["backup", "--type", type, "--json"], environment: environment)
        guard r.status == 0 else { throw WaybackError(.internal, "backup --type \(type) exited \(r.status): \(r.stderr)") }
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
    }

    /// Digests of every table of the public schema, by name.
    static func digests(_ c: LocalCluster) throws -> [String: String] {
        let names = try c.psql("SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'")
        var out = [String: String]()
        for n in names.split(separator: " ") { out[String(n)] = try TestCluster.tableDigest(c, String(n)) }
        return out
    }

    @Test("full + incr (lz4) + incr (gzip) + diff (none) + incr after churn and DDL: same content as a full taken at the end")
    func chainRestoresLikeAFull() async throws {
        let t = try TestCluster()
        let chainDir = t.root + "/from-chain", fullDir = t.root + "/from-full"
        let fromChain = t.restoredCluster(at: chainDir), fromFull = t.restoredCluster(at: fullDir)
        defer { t.cleanup(extra: [fromChain, fromFull]) }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "3"])
        try t.psql("""
            CREATE TABLE to_truncate AS SELECT g AS id, repeat('t', 200) AS pad FROM generate_series(1, 20000) g;
            CREATE TABLE to_drop AS SELECT g AS id FROM generate_series(1, 10000) g;
            CREATE TABLE to_rewrite AS SELECT g AS id, repeat('r', 300) AS pad FROM generate_series(1, 20000) g;
            CREATE TABLE grows (id serial PRIMARY KEY, pad text);
            INSERT INTO grows (pad) SELECT repeat('g', 400) FROM generate_series(1, 5000);
            CREATE UNLOGGED TABLE scratch AS SELECT g AS id FROM generate_series(1, 5000) g;
            """)

        // The first incr has nothing to build on: a full, and it says so.
        let first = try Self.backup(t, "incr")
        #expect(first["type"] as? String == "full")
        #expect((first["note"] as? String)?.contains("no usable full backup") == true)
        let fullID = try #require(first["id"] as? String)
        #expect(fullID.hasSuffix("F"))

        // Churn, truncate, drop, create, extend.
        try t.cluster.pgbench(["-n", "-c", "2", "-t", "300"])
        try t.psql("""
            TRUNCATE to_truncate;
            DROP TABLE to_drop;
            CREATE TABLE created AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 30000) g;
            INSERT INTO grows (pad) SELECT repeat('h', 400) FROM generate_series(1, 20000);
            INSERT INTO scratch SELECT g FROM generate_series(1, 5000) g;
            """)
        // Each backup of the chain with another compression: a mixed chain restores.
        let incr1 = try Self.backup(t, "incr", environment: ["WAYBACK_COMPRESSION_ALGORITHM": "lz4"])
        #expect(incr1["type"] as? String == "incr")
        #expect(incr1["reference"] as? String == fullID)
        let incr1ID = try #require(incr1["id"] as? String)
        #expect(incr1ID.hasSuffix("I"))
        let database = try #require(incr1["databaseBytes"] as? Int), copied = try #require(incr1["copiedBytes"] as? Int)
        #expect(copied < database / 2, "an incr after a little churn stores far less than the database: \(copied) of \(database)")

        // A file replaced (VACUUM FULL), a file that shrinks (DELETE + VACUUM truncates), an index built.
        try t.cluster.pgbench(["-n", "-c", "2", "-t", "300"])
        try t.psql("""
            VACUUM FULL to_rewrite;
            DELETE FROM grows WHERE id > 8000;
            VACUUM grows;
            CREATE INDEX created_h ON created (h);
            INSERT INTO to_truncate SELECT g, 'again' FROM generate_series(1, 500) g;
            """)
        let incr2 = try Self.backup(t, "incr", environment: ["WAYBACK_COMPRESSION_ALGORITHM": "gzip", "WAYBACK_COMPRESSION_LEVEL": "6"])
        #expect(incr2["reference"] as? String == incr1ID)
        let incr2ID = try #require(incr2["id"] as? String)

        // A chain limit of 3 turns the next incr (a chain of 4) into a diff on the full.
        try t.cluster.pgbench(["-n", "-c", "2", "-t", "300"])
        try t.psql("UPDATE to_rewrite SET pad = 'changed' WHERE id % 50 = 0; INSERT INTO grows (pad) SELECT 'late' FROM generate_series(1, 3000);")
        let diff = try Self.backup(t, "incr", environment: ["WAYBACK_BACKUP_MAX_CHAIN_LENGTH": "3", "WAYBACK_COMPRESSION_ALGORITHM": "none"])
        #expect(diff["type"] as? String == "diff")
        #expect(diff["reference"] as? String == fullID)
        #expect((diff["note"] as? String)?.contains("max_chain_length") == true)
        let diffID = try #require(diff["id"] as? String)

        try t.cluster.pgbench(["-n", "-c", "2", "-t", "300"])
        try t.psql("DELETE FROM created WHERE id % 3 = 0; UPDATE grows SET pad = 'x' WHERE id < 100;")
        let incr3 = try Self.backup(t, "incr")
        #expect(incr3["reference"] as? String == diffID)
        let incr3ID = try #require(incr3["id"] as? String)
        let full2ID = try #require(try Self.backup(t, "full")["id"] as? String)

        try t.psql("CREATE TABLE after_all AS SELECT 1 AS id")
        let target = try t.psql("SELECT pg_current_wal_lsn()")
        try t.switchAndWaitForArchive()
        let expected = try Self.digests(t.cluster)

        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        #expect(try await catalog.manifest(BackupID(incr1ID)!).compression.algorithm == .lz4)
        #expect(try await catalog.manifest(BackupID(incr2ID)!).compression.algorithm == .gzip)
        #expect(try await catalog.manifest(BackupID(diffID)!).compression.algorithm == CompressionAlgorithm.none)

        // The plan names the chain.
        let plan = try t.waybackOK(["restore", "--dry-run", "--backup", incr3ID, "--to-lsn", target, "--target-dir", chainDir])
        #expect(plan.contains("\(fullID) <- \(diffID) <- \(incr3ID)"))

        try t.waybackOK(["restore", "--backup", incr3ID, "--to-lsn", target, "--target-action", "promote", "--target-dir", chainDir])
        let verify = try fromChain.run([fromChain.binDirectory + "/pg_verifybackup", "-n", chainDir], check: false)
        #expect(verify.status == 0, "pg_verifybackup: \(verify.stderr)")
        try t.waybackOK(["restore", "--backup", full2ID, "--to-lsn", target, "--target-action", "promote", "--target-dir", fullDir])
        try t.startRestored(fromChain)
        try t.startRestored(fromFull)
        let chainDigests = try Self.digests(fromChain), fullDigests = try Self.digests(fromFull)
        #expect(chainDigests == fullDigests)
        // The unlogged table comes back empty; everything else as it was at the target.
        var logged = expected
        logged["scratch"] = "0:"
        #expect(chainDigests == logged)
        #expect(chainDigests["to_drop"] == nil && chainDigests["created"] != nil)
        // Indexes work on the rebuilt files.
        #expect(try fromChain.psql("SET enable_seqscan = off; SELECT count(*) FROM created WHERE h = md5('2')") == "1")
        #expect(try fromChain.psql("SELECT count(*) FROM pgbench_accounts") == "300000")

        // incr2 (chain full <- incr1 <- incr2) also restores, to its own end.
        try fromChain.stop(mode: "fast")
        try FileSystem.removeTree(chainDir)
        try t.waybackOK(["restore", "--backup", incr2ID, "--to-backup-end", "--target-dir", chainDir])
        let verify2 = try fromChain.run([fromChain.binDirectory + "/pg_verifybackup", "-n", chainDir], check: false)
        #expect(verify2.status == 0, "pg_verifybackup: \(verify2.stderr)")
        try t.startRestored(fromChain)
        #expect(try fromChain.psql("SELECT count(*) FROM grows") == "8000")
        #expect(try fromChain.psql("SELECT count(*) FROM to_truncate") == "500")
    }
}
