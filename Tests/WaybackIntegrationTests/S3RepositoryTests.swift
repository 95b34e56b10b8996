import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// End-to-end with S3 repositories: a real moto server process (SigV4 checked), real clusters,
/// the real wayback binary as archive_command.
@Suite("S3 repositories and 3-2-1 copies against real PostgreSQL and a real S3 server", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct S3RepositoryTests {
    static func localYAML(_ path: String, name: String = "local") -> String {
        "  - name: \(name)\n    type: local\n    path: \(path)\n"
    }

    /// pgbench data and a marker table, written while a backup runs; returns the digests to expect.
    static func loadAndBackup(_ t: TestCluster, extraMarkers: Int = 100) async throws -> (backup: String, digests: [String]) {
        try t.cluster.pgbench(["-i", "-q", "-s", "1"])
        try t.psql("CREATE TABLE markers (id int PRIMARY KEY); INSERT INTO markers SELECT g FROM generate_series(1, 100) g;")
        // pgbench writes while the backup runs (for longer than the backup takes here).
        let load = try t.startPgbench(["-n", "-c", "2", "-T", "5"])
        let summary = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["backup", "--json"]).utf8)) as! [String: Any]
        let id = try #require(summary["id"] as? String)
        try load.wait()
        let during = try t.pgbenchCommits(from: try #require(summary["startTime"] as? String), to: try #require(summary["stopTime"] as? String))
        #expect(during > 0, "no transaction of the load committed while the backup ran")
        try t.psql("INSERT INTO markers SELECT g FROM generate_series(101, \(100 + extraMarkers)) g;")
        try t.switchAndWaitForArchive()
        let digests = try ["pgbench_accounts", "pgbench_history", "markers"].map { try TestCluster.tableDigest(t.cluster, $0) }
        return (id, digests)
    }

    static func verifyRestored(_ t: TestCluster, _ restored: LocalCluster, digests: [String]) throws {
        let verify = try restored.run([restored.binDirectory + "/pg_verifybackup", "-n", restored.dataDirectory], check: false)
        #expect(verify.status == 0, "pg_verifybackup: \(verify.stderr)")
        try t.startRestored(restored)
        #expect(try ["pgbench_accounts", "pgbench_history", "markers"].map { try TestCluster.tableDigest(restored, $0) } == digests)
    }

    /// The configuration without its local repository (lost for good), as docs/recovery-procedures.md says.
    static func offsiteOnly(_ t: TestCluster, local: String) throws -> String {
        try t.configVariant("offsite-only.yaml", replace: [(local, "")])
    }

    static func statusJSON(_ t: TestCluster) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["status", "--json"]).utf8)) as! [String: Any]
    }

    /// Waits until the asynchronous repositories have every queued WAL file.
    static func waitForDrain(_ t: TestCluster, timeout: Double = 90) throws {
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            let repos = try statusJSON(t)["repositories"] as? [[String: Any]] ?? []
            let lastOf = { (r: [String: Any]) in ((r["archive"] as? [[String: Any]])?.last?["last"] as? String) ?? "" }
            if repos.count > 1, repos.dropFirst().allSatisfy({ ($0["queuedWAL"] as? Int ?? 1) == 0 && lastOf($0) == lastOf(repos[0]) }) { return }
            usleep(300_000)
        }
        throw WaybackError(.archiveTimeout, "the asynchronous repositories did not catch up within \(timeout) s")
    }

    @Test("S3-only repository: backup under load, WAL archive, restore and verify")
    func s3Only() async throws {
        let s3 = try S3TestServer()
        defer { s3.stop() }
        let t = try TestCluster(repositories: s3.repositoryYAML(name: "s3", prefix: "team/prod"))
        let restored = t.restoredCluster(at: t.root + "/restored")
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        let (id, digests) = try await Self.loadAndBackup(t)
        try t.waybackOK(["restore", "--target-dir", restored.dataDirectory])
        try Self.verifyRestored(t, restored, digests: digests)
        let status = try Self.statusJSON(t)
        #expect((status["backups"] as? [[String: Any]])?.first?["id"] as? String == id)
        #expect(((status["archive"] as? [[String: Any]])?.first?["segments"] as? Int ?? 0) >= 2)
        // A wrong secret key: exit 14, the problem named, no secret printed.
        let wrong = try t.wayback(["status"], environment: ["WAYBACK_REPOSITORIES_0_SECRET_ACCESS_KEY": "wrong-secret-123"])
        #expect(wrong.status == WaybackError.Code.access.rawValue, "status: \(wrong.stderr)")
        #expect(wrong.stderr.contains("SignatureDoesNotMatch") && wrong.stderr.contains("secret key"))
        #expect(!wrong.stderr.contains("wrong-secret-123") && !wrong.stderr.contains(s3.secretAccessKey))
        #expect(wrong.stderr.split(separator: "\n").filter { $0.contains("error:") }.count == 1)
    }

    @Test("local + S3 (asynchronous WAL): both get every backup and segment; recovery from the offsite copy after the local repository is deleted")
    func localPlusS3RecoveryFromOffsite() async throws {
        let s3 = try S3TestServer()
        defer { s3.stop() }
        let repoDir = try TestEnvironment.makeTemporaryDirectory("repo")
        defer { try? FileSystem.removeTree(repoDir) }
        let t = try TestCluster(repositoryPath: repoDir, repositories: Self.localYAML(repoDir) + s3.repositoryYAML(prefix: "prod/"))
        let restored = t.restoredCluster(at: t.root + "/restored")
        defer { t.cleanup(extra: [restored]) }
        let initOut = try t.waybackOK(["init"])
        #expect(initOut.contains("repository 'offsite'"))
        let (id, digests) = try await Self.loadAndBackup(t)
        try Self.waitForDrain(t)
        let repos = try Self.statusJSON(t)["repositories"] as! [[String: Any]]
        #expect(repos.map { $0["name"] as? String } == ["local", "offsite"])
        #expect(repos.allSatisfy { ($0["backups"] as? [String]) == [id] && ($0["reachable"] as? Bool) == true })
        // The backup left each repository its own status index (the local one read here; the
        // unit tests prove readers never trust one that does not match).
        let local = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: repoDir)), cluster: t.name)
        let index = try #require(await StatusIndex.read(local), "the backup wrote no status index")
        #expect(index.entries.map(\.summary.id.rawValue) == [id])
        #expect(try FileSystem.status(repoDir + "/" + local.layout.indexKey).map { $0.mode & 0o777 } == 0o600)

        // The local repository is lost. With the same configuration the restore refuses before it
        // writes anything: recovery could not tell the end of the archive (the local repository may
        // have held WAL the offsite one has not yet received).
        try FileSystem.removeTree(repoDir)
        // And the offsite key is wrong: that is the error (exit 14), not "run wayback init".
        let wrongKey = try t.wayback(["status"], environment: ["WAYBACK_REPOSITORIES_1_SECRET_ACCESS_KEY": "wrong-secret-456"])
        #expect(wrongKey.status == WaybackError.Code.access.rawValue, "status: \(wrongKey.status) \(wrongKey.stderr)")
        #expect(wrongKey.stderr.contains("secret key") && !wrongKey.stderr.contains("wayback init") && !wrongKey.stderr.contains("wrong-secret-456"),
                "\(wrongKey.stderr)")
        let refused = try t.wayback(["restore", "--target-dir", restored.dataDirectory])
        #expect(refused.status == WaybackError.Code.repository.rawValue, "restore: \(refused.stderr)")
        #expect(refused.stderr.contains("repository 'local'") && refused.stderr.contains("remove it from the configuration"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: restored.dataDirectory))
        // The runbook: the lost repository out of the configuration, restore from S3 alone.
        let offsite = try Self.offsiteOnly(t, local: Self.localYAML(repoDir))
        let r = try t.wayback(["restore", "--target-dir", restored.dataDirectory], config: offsite)
        #expect(r.status == 0, "restore: \(r.stderr)")
        try Self.verifyRestored(t, restored, digests: digests)
    }

    @Test("fallback: objects deleted or corrupted in the local repository are read from S3 with a warning")
    func fallbackToOffsite() async throws {
        let s3 = try S3TestServer()
        defer { s3.stop() }
        let repoDir = try TestEnvironment.makeTemporaryDirectory("repo")
        defer { try? FileSystem.removeTree(repoDir) }
        let t = try TestCluster(repositoryPath: repoDir,
                                repositories: Self.localYAML(repoDir) + s3.repositoryYAML(prefix: "p", extra: "    wal_push: sync"))
        let restored = t.restoredCluster(at: t.root + "/restored")
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        let (id, digests) = try await Self.loadAndBackup(t)
        // Damage the local copy: flip bytes in the middle of every pack, delete an archived segment.
        let packs = try FileManager.default.subpathsOfDirectory(atPath: repoDir).filter { $0.contains("/backups/\(id)/pack/") }
        #expect(!packs.isEmpty)
        for p in packs {
            let f = try PosixFile.openForWriting(repoDir + "/" + p)
            let size = try #require(try FileSystem.status(repoDir + "/" + p)?.size)
            try [UInt8](repeating: 0x5A, count: 64).withUnsafeBytes { try f.pwrite($0, offset: size / 2) }
            try f.close()
        }
        let segments = try FileManager.default.subpathsOfDirectory(atPath: repoDir + "/main/wal").filter { $0.count == 41 && !$0.contains(".") }.sorted()
        try FileSystem.remove(repoDir + "/main/wal/" + segments.last!)
        let r = try t.wayback(["restore", "--target-dir", restored.dataDirectory])
        #expect(r.status == 0, "restore: \(r.stderr)")
        #expect(r.stderr.contains("reading it from repository 'offsite'"), "no fallback warning: \(r.stderr)")
        try Self.verifyRestored(t, restored, digests: digests)
    }

    @Test("one repository failing: the backup completes in the other, exits 15; the WAL queue overflows with a warning; the drainer and repo sync catch the repository up")
    func failedRepositoryAndRepoSync() async throws {
        let s3 = try S3TestServer()
        defer { s3.stop() }
        let repoDir = try TestEnvironment.makeTemporaryDirectory("repo")
        defer { try? FileSystem.removeTree(repoDir) }
        let deadPort = 1  // nothing listens there
        let good = s3.repositoryYAML(prefix: "late/", extra: "    request_timeout_seconds: 1\n    deadline_seconds: 1")
        let t = try TestCluster(repositoryPath: repoDir, extraConfig: "archive:\n  spool_limit_mb: 32",
                                repositories: Self.localYAML(repoDir) + good)
        let restored = t.restoredCluster(at: t.root + "/restored")
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        // The offsite repository becomes unreachable.
        let config = try String(contentsOfFile: t.configPath, encoding: .utf8)
        try config.replacingOccurrences(of: s3.endpoint, with: "http://127.0.0.1:\(deadPort)").write(toFile: t.configPath, atomically: true, encoding: .utf8)
        try t.cluster.pgbench(["-i", "-q", "-s", "1"])
        let b = try t.wayback(["backup"])
        #expect(b.status == WaybackError.Code.replica.rawValue, "backup: \(b.stderr)")
        #expect(b.stderr.contains("complete in 'local' but failed in 'offsite'"))
        let id = b.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(BackupID(id) != nil)
        // backup_logs: partial, stored locally only.
        #expect(try t.psql("SELECT status || '|' || coalesce(location_local, '-') || '|' || coalesce(location_s3, '-') FROM wayback.backup_logs WHERE backup_id = '\(id)'")
                == "partial|\(repoDir)/main/backups/\(id)/|-")
        // wal-push still succeeds: the offsite copy is queued, up to the limit (32 MiB: two
        // segments), then no more names are queued, with a warning.
        for _ in 0..<4 { try t.switchAndWaitForArchive() }
        let status = try Self.statusJSON(t)
        let offsite = (status["repositories"] as! [[String: Any]])[1]
        #expect(offsite["reachable"] as? Bool == false && offsite["queuedWAL"] as? Int == 2 && offsite["queueOverflowed"] as? Bool == true,
                "\(offsite)")
        let pgLog = (try? String(contentsOfFile: t.cluster.dataDirectory + ".log", encoding: .utf8)) ?? ""
        #expect(pgLog.contains("over archive.spool_limit_mb"), "no overflow warning in the server log")
        let digests = try ["pgbench_accounts"].map { try TestCluster.tableDigest(t.cluster, $0) }

        // It is back: the next push starts the drainer, which copies the queue and, for the
        // overflow, every segment the offsite repository lacks; then repo sync copies the backup.
        try config.write(toFile: t.configPath, atomically: true, encoding: .utf8)
        try t.switchAndWaitForArchive()
        try Self.waitForDrain(t)
        let offsiteNow = (try Self.statusJSON(t)["repositories"] as! [[String: Any]])[1]
        #expect(offsiteNow["queueOverflowed"] as? Bool == false && ((offsiteNow["archive"] as? [[String: Any]])?.first?["gaps"] as? [String])?.isEmpty == true)
        let sync = try t.waybackOK(["repo", "sync"])
        #expect(sync.contains("local -> offsite: copied") && sync.contains(id), "\(sync)")
        #expect(try t.waybackOK(["repo", "sync"]).contains("local -> offsite: copied 0 object(s)"))
        // catalog sync: complete now, with its S3 location.
        try t.waybackOK(["catalog", "sync"])
        #expect(try t.psql("SELECT status || '|' || coalesce(location_s3, '-') FROM wayback.backup_logs WHERE backup_id = '\(id)'")
                == "complete|s3://\(s3.buckets[0])/late/main/backups/\(id)/")
        // Restore from the offsite copy alone.
        try FileSystem.removeTree(repoDir)
        let offsiteOnly = try Self.offsiteOnly(t, local: Self.localYAML(repoDir))
        let r = try t.wayback(["restore", "--target-dir", restored.dataDirectory], config: offsiteOnly)
        #expect(r.status == 0, "restore: \(r.stderr)")
        try t.startRestored(restored)
        #expect(try TestCluster.tableDigest(restored, "pgbench_accounts") == digests[0])
    }

    @Test("fault injection: 500/503/SlowDown, delays and connection resets; backup, WAL and restore still complete and verify")
    func faultInjection() async throws {
        let s3 = try S3TestServer()
        defer { s3.stop() }
        let proxy = try s3.faultProxy(faults: 0.2, seed: 7)
        defer { proxy.stop() }
        let yaml = s3.repositoryYAML(name: "s3", prefix: "faulty/", extra: "    request_timeout_seconds: 2\n    deadline_seconds: 120\n    part_size_mb: 5")
            .replacingOccurrences(of: s3.endpoint, with: proxy.endpoint)
        let t = try TestCluster(repositories: yaml)
        let restored = t.restoredCluster(at: t.root + "/restored")
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        let (_, digests) = try await Self.loadAndBackup(t)
        try t.waybackOK(["restore", "--target-dir", restored.dataDirectory])
        try Self.verifyRestored(t, restored, digests: digests)
        let stats = proxy.stats
        for kind in ["error", "delay", "reset_before", "reset_during"] {
            #expect((stats[kind] ?? 0) > 0, "the proxy injected no \(kind): \(stats)")
        }
    }
}
