import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackTesting

/// The `backup_logs` catalog against a real cluster: `init` applies the migrations, `backup`
/// writes its row, a catalog that cannot be written never fails a backup, `catalog sync` rebuilds.
@Suite("backup_logs catalog against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct CatalogTests {
    static let columns = "backup_id, backup_type, extract(epoch FROM backup_timestamp)::bigint, backup_size_bytes, checksum_md5, checksum_sha256, coalesce(location_local, '<null>'), coalesce(location_s3, '<null>'), status, recovery_tested, created_at IS NOT NULL, coalesce(error_message, '<null>'), purged_at IS NOT NULL"

    static func rows(_ t: TestCluster, where clause: String = "true") throws -> [[String]] {
        try t.psql("SELECT \(columns) FROM wayback.backup_logs WHERE \(clause) ORDER BY backup_timestamp, backup_id")
            .split(separator: "\n").map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
    }

    @Test("the shipped migrations/*.sql, applied twice as plain files by psql, are idempotent: the second run succeeds and changes no object of the schema")
    func migrationFilesApplyTwice() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("migrations").path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files.count >= 2)
        try t.psql("CREATE SCHEMA review")
        func apply() throws {
            for f in files {
                let r = try Command.run([TestEnvironment.pgBin + "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", t.root, "-p", String(t.cluster.port),
                                         "-U", "postgres", "-f", dir + "/" + f, "postgres"],
                                        asUser: TestEnvironment.osUser, environment: ["PGOPTIONS": "-c search_path=review"], check: false)
                #expect(r.status == 0, "\(f): \(r.stderr)")
            }
        }
        // The schema as pg_dump prints it, without the random key of its \\restrict lines.
        func schema() throws -> String {
            try Command.run([TestEnvironment.pgBin + "/pg_dump", "--schema-only", "-n", "review", "-h", t.root, "-p", String(t.cluster.port), "-U", "postgres", "postgres"],
                            asUser: TestEnvironment.osUser).stdout
                .split(separator: "\n").filter { !$0.hasPrefix("\\restrict") && !$0.hasPrefix("\\unrestrict") }.joined(separator: "\n")
        }
        try apply()
        let once = try schema()
        #expect(once.contains("CREATE TABLE review.backup_logs") && once.contains("idx_backup_logs_type"), "\(once)")
        try apply()
        #expect(try schema() == once)
    }

    @Test("init creates the table, its indexes and the migrations record (twice harmless); backup writes a row with every column as defined")
    func initAndBackupRow() async throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        let first = try t.waybackOK(["init"])
        #expect(first.contains("catalog: table wayback.backup_logs") && first.contains("migrations 1, 2 applied"), "\(first)")
        let again = try t.waybackOK(["init"])
        #expect(again.contains("backup_logs") && again.contains("up to date"), "\(again)")
        let objects = try t.psql("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'wayback' AND c.relkind IN ('r','i') ORDER BY 1")
            .split(separator: "\n").map(String.init)
        for o in ["backup_logs", "backup_logs_backup_id_key", "backup_logs_pkey", "idx_backup_logs_status", "idx_backup_logs_timestamp",
                  "idx_backup_logs_type", "schema_migrations"] {
            #expect(objects.contains(o), "missing \(o) in \(objects)")
        }
        #expect(try t.psql("SELECT string_agg(version::text || ':' || name, ',' ORDER BY version) FROM wayback.schema_migrations")
                == "1:001_create_schema_migrations.sql,2:002_create_backup_logs.sql")
        // The table is exactly the migration's (column names and types).
        #expect(try t.psql("SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'wayback' AND table_name = 'backup_logs'")
                == "id uuid, backup_id character varying, backup_type character varying, backup_timestamp timestamp without time zone, backup_size_bytes bigint, checksum_md5 character varying, checksum_sha256 character varying, location_local character varying, location_s3 character varying, status character varying, recovery_tested boolean, test_timestamp timestamp without time zone, recovery_time_seconds integer, created_at timestamp without time zone, verified_at timestamp without time zone, purged_at timestamp without time zone, error_message text")

        try t.psql("CREATE TABLE filler AS SELECT g FROM generate_series(1, 10000) g")
        let summary = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["backup", "--json"]).utf8)) as! [String: Any]
        let id = try #require(summary["id"] as? String)
        let rows = try Self.rows(t)
        try #require(rows.count == 1, "\(rows)")
        let r = rows[0]
        let startText = try #require(summary["startTime"] as? String)
        let start = try #require(Format.parseTimestamp(startText))
        #expect(r[0] == id)
        #expect(r[1] == "full")
        // UTC: the epoch of the stored timestamp read as UTC is the backup's start (to the second).
        #expect(abs((Int64(r[2]) ?? 0) - Int64(start.timeIntervalSince1970)) <= 1, "backup_timestamp \(r[2]) vs start \(start)")
        #expect(r[3] == "\(summary["repositoryBytes"] as? Int64 ?? -1)")
        #expect(r[4] == summary["md5"] as? String && r[4].count == 32)
        #expect(r[5] == summary["sha256"] as? String && r[5].count == 64)
        #expect(r[6] == t.repositoryPath + "/" + t.name + "/backups/" + id + "/")
        #expect(r[7] == "<null>")
        #expect(r[8] == "complete")
        #expect(r[9] == "f")
        #expect(r[10] == "t")
        #expect(r[11] == "<null>")
        #expect(r[12] == "f")
        #expect(try t.psql("SELECT count(*) FROM wayback.backup_logs WHERE backup_timestamp IS NULL OR test_timestamp IS NOT NULL OR verified_at IS NOT NULL") == "0")

        // A failed backup: its row says failed, with the error the command printed.
        try t.psql("ALTER SYSTEM SET archive_command = '/bin/false'; SELECT pg_reload_conf();")
        let failed = try t.wayback(["backup"], environment: ["WAYBACK_BACKUP_ARCHIVE_WAIT_SECONDS": "3"])
        #expect(failed.status != 0)
        let failedRows = try Self.rows(t, where: "status = 'failed'")
        let all = try Self.rows(t)
        try #require(failedRows.count == 1, "\(all)")
        #expect(failedRows[0][11] != "<null>" && failed.stderr.contains(failedRows[0][11].prefix(40)), "error_message '\(failedRows[0][11])' vs stderr \(failed.stderr)")
        try t.psql("ALTER SYSTEM RESET archive_command; SELECT pg_reload_conf();")
    }

    @Test("a catalog that cannot be reached or written never fails a backup: a warning names it, no password is shown; catalog sync rebuilds the table")
    func unreachableCatalogAndSync() async throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        let b1 = try t.waybackOK(["backup"]).trimmingCharacters(in: .whitespacesAndNewlines)

        // Nothing listens on port 1; the password in the URL must never be printed.
        let unreachable = try t.wayback(["backup"], environment: ["WAYBACK_CATALOG_CONNECTION": "postgresql://postgres:catalog-pw-987@127.0.0.1:1/postgres"])
        #expect(unreachable.status == 0, "backup failed because of the catalog: \(unreachable.stderr)")
        let b2 = unreachable.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(unreachable.stderr.contains("backup_logs") && unreachable.stderr.contains("catalog sync"), "\(unreachable.stderr)")
        #expect(!unreachable.stderr.contains("catalog-pw-987"))
        #expect(try Self.rows(t).map { $0[0] } == [b1], "a row was written for the backup whose catalog was unreachable")

        // A table that exists but is not Wayback's kind of table: the same warning, backup fine.
        try t.psql("ALTER TABLE wayback.backup_logs RENAME TO backup_logs_moved")
        let noTable = try t.wayback(["backup"])
        #expect(noTable.status == 0 && noTable.stderr.contains("backup_logs"), "\(noTable.stderr)")
        let b3 = noTable.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try t.psql("ALTER TABLE wayback.backup_logs_moved RENAME TO backup_logs")

        // catalog sync: rows for the backups the table missed, a killed backup's running row
        // becomes failed, a removed backup's complete row becomes expired; drill columns kept.
        try t.psql("""
            INSERT INTO wayback.backup_logs (backup_id, backup_type, backup_timestamp, status) VALUES
              ('20200101-000000F', 'full', '2020-01-01', 'complete'), ('20200102-000000F', 'full', '2020-01-02', 'running');
            UPDATE wayback.backup_logs SET recovery_tested = true, recovery_time_seconds = 42 WHERE backup_id = '\(b1)';
            """)
        let out = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["catalog", "sync", "--json"]).utf8)) as! [String: Any]
        #expect(Set(out["recorded"] as? [String] ?? []) == [b2, b3], "\(out)")
        #expect(out["expired"] as? [String] == ["20200101-000000F"])
        #expect(out["interrupted"] as? [String] == ["20200102-000000F"])
        let byID = Dictionary(try Self.rows(t).map { ($0[0], $0) }, uniquingKeysWith: { a, _ in a })
        #expect(byID[b2]?[8] == "complete" && byID[b3]?[8] == "complete")
        #expect(byID["20200101-000000F"]?[8] == "expired" && byID["20200101-000000F"]?[12] == "t")
        #expect(byID["20200102-000000F"]?[8] == "failed" && byID["20200102-000000F"]?[11].contains("interrupted") == true)
        #expect(try t.psql("SELECT recovery_tested, recovery_time_seconds FROM wayback.backup_logs WHERE backup_id = '\(b1)'") == "t|42")
        // A second sync has nothing to do.
        let second = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["catalog", "sync", "--json"]).utf8)) as! [String: Any]
        #expect((second["recorded"] as? [String])?.isEmpty == true && (second["expired"] as? [String])?.isEmpty == true, "\(second)")

        // The table dropped altogether: sync makes it again with every backup.
        try t.psql("DROP SCHEMA wayback CASCADE")
        try t.waybackOK(["catalog", "sync"])
        #expect(try Self.rows(t).map { $0[0] } == [b1, b2, b3])

        // Switched off: init and backup write nothing; sync says it is off. A bad schema name is a
        // configuration error naming the key.
        try t.psql("DROP SCHEMA wayback CASCADE")
        let off = ["WAYBACK_CATALOG_ENABLED": "false"]
        #expect(try t.wayback(["init"], environment: off).status == 0)
        #expect(try t.wayback(["backup"], environment: off).status == 0)
        #expect(try t.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'wayback'") == "0")
        let syncOff = try t.wayback(["catalog", "sync"], environment: off)
        #expect(syncOff.status == WaybackError.Code.config.rawValue && syncOff.stderr.contains("catalog.enabled"), "\(syncOff.stderr)")
        let badSchema = try t.wayback(["status"], environment: ["WAYBACK_CATALOG_SCHEMA": "Robert'); DROP TABLE x;--"])
        #expect(badSchema.status == WaybackError.Code.config.rawValue && badSchema.stderr.contains("catalog.schema"), "\(badSchema.stderr)")
    }
}
