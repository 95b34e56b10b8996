import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// `wayback expire` on a repository with real full and incr backups and archived WAL.
@Suite("retention and expire against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct RetentionTests {
    static func backup(_ t: TestCluster, _ type: String) throws -> (id: String, stop: Date) {
        let s = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["backup", "--type", type, "--json"]).utf8)) as! [String: Any]
        let stopText = try #require(s["stopTime"] as? String)
        return (try #require(s["id"] as? String), try #require(Format.parseTimestamp(stopText)))
    }

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    static func markers(_ c: LocalCluster) throws -> Int { Int(try c.psql("SELECT count(*) FROM markers")) ?? -1 }

    @Test("expire: the plan follows the policy, needs --force past half, removes manifests before data and old WAL; kept backups and the window still restore, a point before it is refused; backup_logs says expired; an interrupted expiry is finished by the next")
    func expireRealBackups() async throws {
        let t = try TestCluster()
        let restored = t.restoredCluster(at: t.root + "/restored")
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "1"])
        try t.psql("CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT now())")
        var n = 0
        func mark(_ count: Int) throws {
            try t.psql("INSERT INTO markers (id) SELECT g FROM generate_series(\(n + 1), \(n + count)) g")
            n += count
            try t.switchAndWaitForArchive()
        }
        let f0 = try Self.backup(t, "full")
        try mark(10)
        let f1 = try Self.backup(t, "full")
        try mark(10)
        let beforeWindow = try t.psql("SELECT now()")  // 20 markers; only f0/f1 and their WAL lead here
        let i1 = try Self.backup(t, "incr")
        try mark(10)
        let f2 = try Self.backup(t, "full")
        try mark(10)
        let insideWindow = try t.psql("SELECT now()")  // 40 markers
        try mark(10)
        sleep(6)
        let i2 = try Self.backup(t, "incr")
        try mark(10)  // 60 markers in all

        // The window starts between f2's end and i2's end: f2 is the PITR anchor; min_full 1
        // keeps f2 (the newest full); i2 is the newest. f0, f1 and i1 go: 3 of 5, more than half.
        let window = Int(Date().timeIntervalSince(f2.stop)) - 2
        let policy = ["WAYBACK_RETENTION_HOURLY": "0", "WAYBACK_RETENTION_DAILY": "0", "WAYBACK_RETENTION_WEEKLY": "0",
                      "WAYBACK_RETENTION_MONTHLY": "0", "WAYBACK_RETENTION_QUARTERLY": "0", "WAYBACK_RETENTION_MIN_FULL": "1",
                      "WAYBACK_RETENTION_PITR_WINDOW": "\(window)s"]
        let dry = try t.wayback(["expire", "--dry-run", "--json"], environment: policy)
        #expect(dry.status == 0, "\(dry.status) \(dry.stderr)")
        let plan = try Self.json(dry.stdout)
        #expect(((plan["repositories"] as? [[String: Any]])?.first?["plan"] as? [String: Any])?["needsForce"] as? Bool == true, "\(plan)")
        let actions = Dictionary(((plan["backups"] as? [[String: Any]]) ?? []).map { ($0["id"] as? String ?? "", $0["action"] as? String ?? "") },
                                 uniquingKeysWith: { a, _ in a })
        #expect(actions == [f0.id: "expire", f1.id: "expire", i1.id: "expire", f2.id: "keep", i2.id: "keep"], "\(actions)")
        let reasons = ((plan["backups"] as? [[String: Any]]) ?? []).first { $0["id"] as? String == f2.id }?["reasons"] as? [String] ?? []
        #expect(reasons.contains("min_full") && reasons.contains { $0.hasPrefix("pitr_window") } && reasons.contains("needed by \(i2.id)"), "\(reasons)")
        #expect(!(plan["wal"] as? [Any] ?? []).isEmpty && ((plan["freedBytes"] as? [String: Any])?["local"] as? Int ?? 0) > 0, "\(plan)")
        // Refused without --force (exit 17), nothing removed.
        let refused = try t.wayback(["expire"], environment: policy)
        #expect(refused.status == WaybackError.Code.expiryRefused.rawValue && refused.stderr.contains("--force"), "\(refused.stderr)")
        #expect(FileManager.default.fileExists(atPath: t.repositoryPath + "/main/backups/\(f0.id)/manifest.json"))

        // A pinned backup stays; a pin of an unknown backup is an error.
        #expect(try t.wayback(["pin", "20200101-000000F"]).status == WaybackError.Code.notFound.rawValue)
        try t.waybackOK(["pin", f0.id])

        let applied = try t.wayback(["expire", "--force", "--json"], environment: policy)
        #expect(applied.status == 0, "\(applied.stderr)")
        let walGone = try Self.json(applied.stdout)["wal"] as? [[String: Any]] ?? []
        for id in [f1.id, i1.id] { #expect(!FileManager.default.fileExists(atPath: t.repositoryPath + "/main/backups/\(id)"), "\(id) still there") }
        for id in [f0.id, f2.id, i2.id] { #expect(FileManager.default.fileExists(atPath: t.repositoryPath + "/main/backups/\(id)/manifest.json")) }
        let firstKept = try #require(walGone.first?["last"] as? String)
        #expect(!FileManager.default.fileExists(atPath: t.repositoryPath + "/main/wal/\(firstKept.prefix(16))/\(firstKept)"))
        // backup_logs: expired, with purged_at.
        #expect(try t.psql("SELECT backup_id || ':' || status || ':' || (purged_at IS NOT NULL) FROM wayback.backup_logs WHERE backup_id IN ('\(f1.id)', '\(i1.id)') ORDER BY 1")
                == "\(f1.id):expired:true\n\(i1.id):expired:true")
        #expect(try t.psql("SELECT status FROM wayback.backup_logs WHERE backup_id = '\(f2.id)'") == "complete")

        // status shows why each is kept and the window after retention.
        let status = try t.waybackOK(["status"])
        #expect(status.contains("kept: min_full; pinned") && status.contains("after retention"), "\(status)")

        // The kept backups restore to latest; a point inside the window restores; one before it
        // (only the expired backups led there) is refused, showing the window.
        try t.waybackOK(["restore", "--target-dir", restored.dataDirectory])
        try t.startRestored(restored)
        #expect(try Self.markers(restored) == 60)
        try restored.stop()
        try FileSystem.removeTree(restored.dataDirectory)
        try t.waybackOK(["restore", "--target-dir", restored.dataDirectory, "--to-time", insideWindow, "--target-action", "promote"])
        try t.startRestored(restored)
        #expect(try Self.markers(restored) == 40)
        try restored.stop()
        try FileSystem.removeTree(restored.dataDirectory)
        let before = try t.wayback(["restore", "--target-dir", restored.dataDirectory, "--to-time", beforeWindow])
        #expect(before.status == WaybackError.Code.restoreTarget.rawValue && before.stderr.contains("Recoverable"), "\(before.status) \(before.stderr)")
        #expect(!FileManager.default.fileExists(atPath: restored.dataDirectory))

        // An expiry interrupted after a manifest went (the state kill -9 leaves): the backup no
        // longer counts; status and the next expire finish the job.
        try t.waybackOK(["unpin", f0.id])
        let folder = t.repositoryPath + "/main/backups/\(f0.id)"
        try FileSystem.remove(folder + "/manifest.json")
        try FileSystem.remove(folder + "/manifest.copy.json")
        let half = try Self.json(try t.waybackOK(["status", "--json"]))
        #expect(!((half["backups"] as? [[String: Any]]) ?? []).contains { $0["id"] as? String == f0.id })
        let again = try Self.json(try t.waybackOK(["expire", "--json"]))
        #expect((again["repositories"] as? [[String: Any]])?.first?["leftovers"] as? Int ?? 0 > 0, "\(again)")
        #expect(!FileManager.default.fileExists(atPath: folder))

        // A real kill -9 in the middle of an expiry of f2, i2 and f3 (f4 is the anchor): whatever
        // it reached, status and expire work afterwards and every backup status lists restores.
        _ = try Self.backup(t, "full")
        let f4 = try Self.backup(t, "full")
        let killPolicy = policy.merging(["WAYBACK_RETENTION_PITR_WINDOW": "0s"]) { _, b in b }
        let p = Process()
        // setpriv execs (runuser would fork, and the kill would miss wayback).
        p.executableURL = URL(fileURLWithPath: getuid() == 0 ? "/usr/bin/setpriv" : TestEnvironment.waybackBinary)
        let command = [TestEnvironment.waybackBinary, "--config", t.configPath, "expire", "--force"]
        p.arguments = getuid() == 0 ? ["--reuid=\(t.cluster.osUser)", "--regid=\(t.cluster.osUser)", "--init-groups", "--"] + command : Array(command.dropFirst())
        p.environment = ProcessInfo.processInfo.environment.merging(killPolicy) { _, b in b }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        usleep(40_000)
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let after = try Self.json(try t.waybackOK(["status", "--json"]))
        let listed = ((after["backups"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
        #expect(listed.contains(f4.id) && ((after["backups"] as? [[String: Any]]) ?? []).allSatisfy { $0["problems"] == nil }, "\(after)")
        #expect(try t.wayback(["expire", "--force"], environment: killPolicy).status == 0)
        try t.waybackOK(["restore", "--target-dir", restored.dataDirectory])
        try t.startRestored(restored)
        #expect(try Self.markers(restored) == 60)
    }

    @Test("bad input: a policy that keeps nothing, a malformed duration, an unknown time zone, --at without --dry-run; each a one-line error, nothing changed")
    func badPolicies() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        let id = try Self.backup(t, "full").id
        let nothing = ["WAYBACK_RETENTION_HOURLY": "0", "WAYBACK_RETENTION_DAILY": "0", "WAYBACK_RETENTION_WEEKLY": "0",
                       "WAYBACK_RETENTION_MONTHLY": "0", "WAYBACK_RETENTION_QUARTERLY": "0", "WAYBACK_RETENTION_MIN_FULL": "0"]
        for (env, text) in [(nothing, "keeps nothing"), (["WAYBACK_RETENTION_PITR_WINDOW": "7 days"], "not a duration"),
                            (["WAYBACK_RETENTION_TIMEZONE": "Mars/Olympus"], "IANA time zone")] {
            let r = try t.wayback(["expire"], environment: env)
            #expect(r.status == WaybackError.Code.config.rawValue && r.stderr.contains(text), "\(env): \(r.status) \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        }
        let at = try t.wayback(["expire", "--at", "2030-01-01 00:00:00+00"])
        #expect(at.status == WaybackError.Code.usage.rawValue && at.stderr.contains("--dry-run"), "\(at.stderr)")
        // A preview years ahead: backups are stale then, so nothing would go.
        let preview = try Self.json(try t.waybackOK(["expire", "--dry-run", "--json", "--at", "2030-01-01 00:00:00+00"]))
        #expect((preview["backups"] as? [[String: Any]])?.first?["action"] as? String == "keep")
        #expect(FileManager.default.fileExists(atPath: t.repositoryPath + "/main/backups/\(id)/manifest.json"))
    }
}
