import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// `wayback drill` against real clusters: a real restore, a private server, the checks, the
/// recovery time in `backup_logs`, and never a byte written to the production cluster's archive.
@Suite("drill against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct DrillTests {
    static func drill(_ t: TestCluster, _ args: [String] = [], config: String? = nil) throws -> (status: Int32, json: [String: Any], stderr: String) {
        let r = try t.wayback(["drill", "--json"] + args, config: config)
        let json = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any] ?? [:]
        return (r.status, json, r.stderr)
    }

    static func archiveListing(_ root: String) throws -> [String] {
        var out = [String]()
        for dir in try FileSystem.list(root).sorted() {
            for f in try FileSystem.list(root + "/" + dir).sorted() { out.append("\(dir)/\(f) \(try FileSystem.status(root + "/" + dir + "/" + f)?.size ?? -1)") }
        }
        return out
    }

    @Test("a drill of a backup taken under pgbench load passes every check, records its recovery time in backup_logs and the repository, and leaves the archive as it was; a false assertion fails it and names it; --age picks the older backup; a tiny drill.rto_seconds fails it with its own status")
    func drillPassesFailsAndPicks() throws {
        let scratch = try TestEnvironment.makeTemporaryDirectory("scratch")
        defer { try? FileSystem.removeTree(scratch) }
        let t = try TestCluster(extraConfig: """
            drill:
              scratch_dir: \(scratch)
              assertions:
                - name: accounts exist
                  sql: select count(*) = 100000 from pgbench_accounts
            """)
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "1"])
        let older = try t.waybackOK(["backup"]).trimmingCharacters(in: .whitespacesAndNewlines)
        usleep(5_000_000)
        let load = try t.startPgbench(["-T", "8", "-c", "2"])
        let newestStarted = monotonicSeconds()
        let newest = try t.waybackOK(["backup", "--type", "incr"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try load.wait()
        try t.switchAndWaitForArchive()
        let archiveBefore = try Self.archiveListing(t.repositoryPath + "/main/wal")

        let passed = try Self.drill(t)
        #expect(passed.status == 0, "\(passed.stderr)")
        #expect(passed.json["backup"] as? String == newest)
        let checks = passed.json["checks"] as? [[String: Any]] ?? []
        let names = checks.compactMap { $0["name"] as? String }
        for expected in ["pg_verifybackup", "pg_amcheck", "pg_dump postgres", "assertion 'accounts exist'", "pg_checksums"] {
            #expect(names.contains(expected), "\(names)")
        }
        #expect(checks.allSatisfy { $0["passed"] as? Bool == true }, "\(checks)")
        #expect((passed.json["recoverySeconds"] as? Double ?? 0) > 0)
        #expect(passed.json["keptAt"] == nil, "a passed drill's copy is removed")
        let left = try FileSystem.list(scratch)
        #expect(left.isEmpty, "\(left)")
        #expect(try t.psql("SELECT count(*) FROM wayback.backup_logs WHERE backup_id = '\(newest)' AND recovery_tested AND test_timestamp IS NOT NULL AND recovery_time_seconds >= 1 AND status = 'complete'") == "1")
        #expect(try FileSystem.list(t.repositoryPath + "/main/drills").count == 1)
        // The production cluster's archive: not a file added, removed or changed by the copy.
        #expect(try Self.archiveListing(t.repositoryPath + "/main/wal") == archiveBefore)

        // --age: older than the newest backup can be (it started after the older one ended and
        // 5 s of sleep), younger than the older: the older backup, restored to its end.
        let age = Int((monotonicSeconds() - newestStarted).rounded(.up)) + 2
        let aged = try Self.drill(t, ["--age", "\(age)s"])
        #expect(aged.status == 0, "\(aged.stderr)")
        #expect(aged.json["backup"] as? String == older, "\(aged.json["backup"] ?? "")")

        // A false assertion: exit 19, the check named, the copy kept for inspection.
        let falseConfig = try t.configVariant("false.yaml", replace: [("count(*) = 100000", "count(*) = 7")])
        let failed = try Self.drill(t, [], config: falseConfig)
        #expect(failed.status == WaybackError.Code.drillFailed.rawValue, "\(failed.status) \(failed.stderr)")
        #expect(failed.stderr.contains("assertion 'accounts exist'") && failed.stderr.contains("not true"), "\(failed.stderr)")
        let kept = try #require(failed.json["keptAt"] as? String)
        #expect(FileManager.default.fileExists(atPath: kept + "/PG_VERSION"))
        try FileSystem.removeTree(kept)

        // An objective of a millisecond: the drill passes its checks and misses the objective: exit 20.
        let tight = try t.configVariant("tight.yaml", replace: [("scratch_dir:", "rto_seconds: 0.001\n  scratch_dir:")])
        let slow = try Self.drill(t, [], config: tight)
        #expect(slow.status == WaybackError.Code.objectiveMissed.rawValue, "\(slow.status) \(slow.stderr)")
        #expect(slow.stderr.contains("drill.rto_seconds"), "\(slow.stderr)")
        #expect(try Self.archiveListing(t.repositoryPath + "/main/wal") == archiveBefore)
    }

    @Test("a cluster that keeps its configuration outside its data directory (as Debian's do): the restore writes minimal postgresql.conf, pg_hba.conf and pg_ident.conf and says so; restore --start and a drill start the copy")
    func configurationOutsideTheDataDirectory() throws {
        let scratch = try TestEnvironment.makeTemporaryDirectory("scratch")
        defer { try? FileSystem.removeTree(scratch) }
        let t = try TestCluster(extraConfig: "drill:\n  scratch_dir: \(scratch)\n")
        defer { t.cleanup() }
        // As pg_createcluster lays it out: the configuration in its own directory, naming the data directory.
        let etc = t.root + "/etc"
        try FileSystem.makeDirectories(etc, mode: 0o700)
        try t.cluster.stop()
        for name in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] { try FileSystem.rename(t.cluster.dataDirectory + "/" + name, etc + "/" + name) }
        let conf = try String(contentsOfFile: etc + "/postgresql.conf", encoding: .utf8)
            + "\ndata_directory = '\(t.cluster.dataDirectory)'\nhba_file = '\(etc)/pg_hba.conf'\nident_file = '\(etc)/pg_ident.conf'\n"
        try conf.write(toFile: etc + "/postgresql.conf", atomically: true, encoding: .utf8)
        try TestEnvironment.giveToTestUser(etc, mode: 0o700)
        for name in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] { try TestEnvironment.giveToTestUser(etc + "/" + name, mode: 0o600) }
        try t.cluster.start(extraOptions: "-c config_file=\(etc)/postgresql.conf")
        #expect(try t.psql("SHOW config_file") == etc + "/postgresql.conf")

        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "1"])
        try t.waybackOK(["backup"])
        try t.switchAndWaitForArchive()
        let restored = try t.wayback(["restore", "--target-dir", t.root + "/copy", "--start", "--port", "5599"])
        #expect(restored.status == 0, "\(restored.stdout) \(restored.stderr)")
        #expect(restored.stdout.contains("note: the backup holds no postgresql.conf, pg_hba.conf, pg_ident.conf"), "\(restored.stdout)")
        let written = try String(contentsOfFile: t.root + "/copy/postgresql.conf", encoding: .utf8)
        #expect(written.contains("Written by wayback restore") && !written.contains("data_directory"))
        let copy = LocalCluster(binDirectory: TestEnvironment.pgBin, dataDirectory: t.root + "/copy", socketDirectory: t.root + "/copy", port: 5599, osUser: TestEnvironment.osUser)
        #expect(try copy.psql("SELECT count(*) FROM pgbench_accounts") == "100000")
        try? copy.stop(mode: "immediate")
        let delta = try t.wayback(["restore", "--target-dir", t.root + "/copy", "--delta", "--to-backup-end"])
        #expect(delta.status == 0 && delta.stdout.contains("note: the backup holds no postgresql.conf"), "\(delta.stdout) \(delta.stderr)")
        let drill = try t.wayback(["drill"])
        #expect(drill.status == 0, "\(drill.stdout) \(drill.stderr)")
    }

    @Test("--repository restores from the S3 copy alone: the drill passes with the local repository unreadable")
    func drillFromTheOffsiteCopyAlone() throws {
        let s3 = try S3TestServer()
        defer { s3.stop() }
        let scratch = try TestEnvironment.makeTemporaryDirectory("scratch")
        defer { try? FileSystem.removeTree(scratch) }
        let repoDir = try TestEnvironment.makeTemporaryDirectory("repo")
        defer { try? FileSystem.removeTree(repoDir) }
        let t = try TestCluster(repositoryPath: repoDir, extraConfig: "drill:\n  scratch_dir: \(scratch)\n",
                                repositories: S3RepositoryTests.localYAML(repoDir) + s3.repositoryYAML(prefix: "drill/"))
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "1"])
        try t.waybackOK(["backup"])
        try t.cluster.pgbench(["-t", "200"])
        try t.switchAndWaitForArchive()
        try S3RepositoryTests.waitForDrain(t)
        try FileSystem.chmod(repoDir, 0)
        defer { try? FileSystem.chmod(repoDir, 0o700) }
        let r = try Self.drill(t, ["--repository", "offsite"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.json["repository"] as? String == "offsite")
        // Without --repository the unreadable local copy is an error, never a silent skip.
        let plain = try t.wayback(["drill"])
        #expect(plain.status != 0)
    }

    @Test("backup.record_row_counts: a backup under pgbench load records every table's rows in one snapshot; a drill of it restores to where they were taken and every table matches; counts that differ fail the drill and name the table; a drill to the latest point says it did not compare them")
    func rowCountsMatchTheBackup() async throws {
        let scratch = try TestEnvironment.makeTemporaryDirectory("scratch")
        defer { try? FileSystem.removeTree(scratch) }
        let t = try TestCluster(extraConfig: "drill:\n  scratch_dir: \(scratch)\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "1"])
        _ = try t.psql("CREATE DATABASE shop")
        _ = try t.psql("CREATE SCHEMA \"Sales\"; CREATE TABLE \"Sales\".\"Order Items\" AS SELECT g AS id FROM generate_series(1, 1234) g",
                       database: "shop")
        let counting = try t.configVariant("counts.yaml", replace: [("archive_wait_seconds: 60", "archive_wait_seconds: 60\n  record_row_counts: true")])
        let load = try t.startPgbench(["-T", "6", "-c", "2"])
        usleep(1_500_000)
        let r = try t.wayback(["backup"], config: counting)
        #expect(r.status == 0, "\(r.stderr)")
        let id = try #require(BackupID(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        try load.wait()
        try t.switchAndWaitForArchive()

        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        var manifest = try await catalog.manifest(id)
        let counts = try #require(manifest.rowCounts)
        let postgres = try #require(counts.databases.first { $0.name == "postgres" })
        let shop = try #require(counts.databases.first { $0.name == "shop" })
        #expect(postgres.tables["public.pgbench_accounts"] == 100_000)
        #expect(postgres.tables["public.pgbench_history"] != nil)
        #expect(shop.tables == ["\"Sales\".\"Order Items\"": 1234], "\(shop.tables)")
        #expect(counts.lsn > manifest.stopLSN)

        let drilled = try Self.drill(t, ["--backup", id.rawValue])
        #expect(drilled.status == 0, "\(drilled.stderr)")
        let checks = drilled.json["checks"] as? [[String: Any]] ?? []
        let rows = try #require(checks.first { $0["name"] as? String == "row counts" }, "\(checks)")
        #expect(rows["passed"] as? Bool == true && rows["skipped"] == nil, "\(rows)")
        #expect((rows["detail"] as? String ?? "").contains("tables in 2 database(s) match"), "\(rows)")

        // The default drill goes to the latest point, where the counts do not apply: said, not failed.
        let latest = try Self.drill(t)
        #expect(latest.status == 0, "\(latest.stderr)")
        let skipped = (latest.json["checks"] as? [[String: Any]] ?? []).first { $0["name"] as? String == "row counts" }
        #expect(skipped?["skipped"] as? Bool == true, "\(String(describing: skipped))")

        // Counts that the copy does not have: the drill fails and names the table and both numbers.
        manifest.rowCounts?.databases = counts.databases.map { d in
            var d = d
            if d.name == "shop" { d.tables["\"Sales\".\"Order Items\""] = 1235 }
            return d
        }
        try await catalog.writeManifest(manifest)
        let wrong = try Self.drill(t, ["--backup", id.rawValue])
        #expect(wrong.status == WaybackError.Code.drillFailed.rawValue, "\(wrong.status) \(wrong.stderr)")
        #expect(wrong.stderr.contains("shop.\"Sales\".\"Order Items\": 1235 recorded, 1234 in the copy"), "\(wrong.stderr)")
        if let kept = wrong.json["keptAt"] as? String { try FileSystem.removeTree(kept) }
    }
}
