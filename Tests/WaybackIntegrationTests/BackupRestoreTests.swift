import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// End-to-end: real clusters, real WAL, the real wayback binary as archive_command.
@Suite("backup, WAL archive and restore against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct BackupRestoreTests {
    static let tables = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "markers"]

    @Test("full backup under pgbench load, restore to latest: same data, pg_verifybackup passes")
    func backupUnderLoadRestoreLatest() async throws {
        let t = try TestCluster()
        let restoredDir = t.root + "/restored"
        let restored = t.restoredCluster(at: restoredDir)
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "2"])
        try t.psql("CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp()); INSERT INTO markers SELECT g FROM generate_series(1, 100) g;")

        // pgbench writes while the backup runs (for longer than the backup takes here).
        let load = try t.startPgbench(["-n", "-c", "2", "-T", "6"])
        let out = try t.waybackOK(["backup", "--type", "full", "--json"])
        try load.wait()
        let summary = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
        let id = try #require(summary["id"] as? String)
        let during = try t.pgbenchCommits(from: try #require(summary["startTime"] as? String), to: try #require(summary["stopTime"] as? String))
        #expect(during > 0, "no transaction of the load committed while the backup ran: the test did not test a backup under load")
        #expect(BackupID(id) != nil)
        #expect((summary["databaseBytes"] as? Int ?? 0) > 30_000_000)
        #expect((summary["sha256"] as? String)?.count == 64)
        #expect((summary["md5"] as? String)?.count == 32)

        try t.psql("INSERT INTO markers SELECT g FROM generate_series(101, 200) g;")
        let expected = try Self.tables.map { try TestCluster.tableDigest(t.cluster, $0) }
        try t.switchAndWaitForArchive()

        try t.waybackOK(["restore", "--target-dir", restoredDir])
        let verify = try restored.run([restored.binDirectory + "/pg_verifybackup", "-n", restoredDir], check: false)
        #expect(verify.status == 0, "pg_verifybackup: \(verify.stderr)")
        try t.startRestored(restored)
        let actual = try Self.tables.map { try TestCluster.tableDigest(restored, $0) }
        #expect(actual == expected)
        #expect(try restored.psql("SELECT count(*) FROM markers") == "200")

        let status = try t.waybackOK(["status", "--json"])
        let json = try JSONSerialization.jsonObject(with: Data(status.utf8)) as! [String: Any]
        #expect((json["backups"] as? [[String: Any]])?.first?["id"] as? String == id)
        #expect(((json["archive"] as? [[String: Any]])?.first?["segments"] as? Int ?? 0) >= 2)
    }

    @Test("restore to the end of the backup excludes later writes; unlogged tables come back empty")
    func restoreToBackupEndAndUnlogged() async throws {
        let t = try TestCluster()
        let restoredDir = t.root + "/restored"
        let restored = t.restoredCluster(at: restoredDir)
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        try t.psql("""
            CREATE TABLE markers (id int PRIMARY KEY);
            INSERT INTO markers SELECT g FROM generate_series(1, 10) g;
            CREATE UNLOGGED TABLE scratch (id int, pad text);
            INSERT INTO scratch SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g;
            CHECKPOINT;
            """)
        let scratchFile = try t.psql("SELECT pg_relation_filepath('scratch')")
        try t.waybackOK(["backup"])
        try t.psql("INSERT INTO markers SELECT g FROM generate_series(11, 20) g;")
        try t.switchAndWaitForArchive()

        // The unlogged table's main fork is not in the backup, its init fork is.
        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        let manifest = try await catalog.manifest(try #require(try await catalog.backupIDs().last))
        #expect(!manifest.files.contains { $0.path == scratchFile })
        #expect(manifest.files.contains { $0.path == scratchFile + "_init" })
        #expect(!manifest.files.contains { $0.path.hasPrefix("pg_wal/") })
        #expect(!manifest.files.contains { $0.path == "postmaster.pid" })

        try t.waybackOK(["restore", "--target-dir", restoredDir, "--to-backup-end"])
        try t.startRestored(restored)
        #expect(try restored.psql("SELECT count(*) FROM markers") == "10")
        #expect(try restored.psql("SELECT count(*) FROM scratch") == "0")
    }

    @Test("tablespaces are backed up and restored to a mapped location")
    func tablespaces() async throws {
        let t = try TestCluster()
        let restoredDir = t.root + "/restored"
        let restored = t.restoredCluster(at: restoredDir)
        defer { t.cleanup(extra: [restored]) }
        let tsDir = t.root + "/ts1"
        try FileManager.default.createDirectory(atPath: tsDir, withIntermediateDirectories: true)
        if getuid() == 0, let pw = getpwnam("postgres") { chown(tsDir, pw.pointee.pw_uid, pw.pointee.pw_gid) }
        try t.waybackOK(["init"])
        try t.psql("CREATE TABLESPACE ts1 LOCATION '\(tsDir)'; CREATE TABLE in_ts (id int, v text) TABLESPACE ts1; INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 5000) g;")
        let oid = try t.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
        try t.waybackOK(["backup"])
        let expected = try TestCluster.tableDigest(t.cluster, "in_ts")
        try t.switchAndWaitForArchive()

        // The original location is in use: restoring there is refused before anything is written.
        let refused = try t.wayback(["restore", "--target-dir", restoredDir])
        #expect(refused.status == WaybackError.Code.conflict.rawValue)
        #expect(refused.stderr.contains("tablespace"))
        #expect(!FileManager.default.fileExists(atPath: restoredDir))

        let mapped = t.root + "/ts1-restored"
        try t.waybackOK(["restore", "--target-dir", restoredDir, "--tablespace-map", "\(oid)=\(mapped)"])
        #expect(try FileSystem.readLink(restoredDir + "/pg_tblspc/" + oid) == mapped)
        let verify = try restored.run([restored.binDirectory + "/pg_verifybackup", "-n", restoredDir], check: false)
        #expect(verify.status == 0, "pg_verifybackup: \(verify.stderr)")
        try t.startRestored(restored)
        #expect(try TestCluster.tableDigest(restored, "in_ts") == expected)
        #expect(try restored.psql("SELECT pg_tablespace_location(\(oid))") == mapped)
    }

    @Test("an empty cluster and a cluster with thousands of small relations (bundled into few objects)")
    func emptyAndManySmallRelations() async throws {
        let t = try TestCluster(checksums: false)
        let r1 = t.restoredCluster(at: t.root + "/r1")
        let r2 = t.restoredCluster(at: t.root + "/r2")
        defer { t.cleanup(extra: [r1, r2]) }
        try t.waybackOK(["init"])
        try t.waybackOK(["backup"])
        try t.waybackOK(["restore", "--target-dir", r1.dataDirectory, "--to-backup-end"])
        try t.startRestored(r1)
        #expect(try r1.psql("SELECT count(*) FROM pg_database") == "3")
        try r1.stop()

        try t.psql("DO $$ BEGIN FOR i IN 1..2000 LOOP EXECUTE format('CREATE TABLE small_%s (id int primary key, v text)', i); EXECUTE format('INSERT INTO small_%s VALUES (%s, ''v'')', i, i); END LOOP; END $$;")
        let id = try t.waybackOK(["backup"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try t.switchAndWaitForArchive()
        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        let manifest = try await catalog.manifest(try #require(BackupID(id)))
        #expect(manifest.files.count > 6000)
        #expect(manifest.objects.filter { $0.name.hasPrefix("pack/") }.count <= 4, "small files must be bundled into few objects")

        try t.waybackOK(["restore", "--target-dir", r2.dataDirectory])
        try t.startRestored(r2)
        #expect(try r2.psql("SELECT count(*) FROM pg_class WHERE relname LIKE 'small\\_%' AND relkind = 'r'") == "2000")
        #expect(try r2.psql("SELECT sum(id) FROM small_1999") == "1999")
    }
}
