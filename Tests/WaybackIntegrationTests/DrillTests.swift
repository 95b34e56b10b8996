import Foundation
import Testing
import WaybackCore
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
}
