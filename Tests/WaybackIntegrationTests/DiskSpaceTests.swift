import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// Disk space on a small real file system (tmpfs) filled past the thresholds.
@Suite("disk space against a real file system", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct DiskSpaceTests {
    static func fill(_ dir: String, toPercent percent: Double) throws {
        let u = try FileSystemUsage.of(dir)
        let target = Int64(Double(u.usedBytes + u.availableBytes) * percent / 100) - u.usedBytes
        guard target > 0 else { return }
        let f = try PosixFile.create(dir + "/filler-\(UUID().uuidString)", mode: 0o600)
        let chunk = [UInt8](repeating: 0x55, count: 1 << 20)
        var written: Int64 = 0
        while written < target {
            let n = Int(min(Int64(chunk.count), target - written))
            try Array(chunk.prefix(n)).withUnsafeBytes { try f.write($0) }
            written += Int64(n)
        }
        try f.close()
    }

    static func disk(_ t: TestCluster, label: String) throws -> [String: Any]? {
        let s = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["status", "--json"]).utf8)) as? [String: Any]
        return ((s?["disks"] as? [[String: Any]]) ?? []).first { ($0["labels"] as? [String])?.contains(label) == true }
    }

    @Test("a repository on a tmpfs filled past 80% and 90%: status says warning, then critical; a backup that does not fit is refused with nothing written (its start stopped on the server), --force tries; the daemon reports it at once")
    func tmpfsRepository() throws {
        guard getuid() == 0 else {
            #expect(ProcessInfo.processInfo.environment["CI"] != "true", "the disk-space test mounts a tmpfs and needs root")
            return
        }
        let mount = try TestEnvironment.makeTemporaryDirectory("disk")
        let m = try Command.run(["/bin/mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", mount], check: false)
        try #require(m.status == 0, "mount: \(m.stderr)")
        defer { _ = try? Command.run(["/bin/umount", "-l", mount], check: false); try? FileSystem.removeTree(mount) }
        let repo = mount + "/repository"
        try TestEnvironment.giveToTestUser(mount, mode: 0o700)
        let t = try TestCluster(repositoryPath: repo, extraConfig: "schedule:\n  full: null\n  incr: null\n  expire: null\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "1"])
        try t.waybackOK(["backup"])
        #expect(try Self.disk(t, label: "repository 'local'")?["level"] as? String == "ok")
        #expect(try Self.disk(t, label: "PGDATA") != nil && (try Self.disk(t, label: "pg_wal")) != nil)

        try Self.fill(mount, toPercent: 84)
        let warn = try #require(try Self.disk(t, label: "repository 'local'"))
        #expect(warn["level"] as? String == "warning", "\(warn)")
        #expect(try t.waybackOK(["status"]).contains("WARNING: repository 'local'"))
        try Self.fill(mount, toPercent: 93)
        #expect(try Self.disk(t, label: "repository 'local'")?["level"] as? String == "critical")

        // Fill until the next full (about the size of the last) cannot fit: refused, nothing written.
        let lastFull = try #require(((try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["status", "--json"]).utf8)) as? [String: Any])?["backups"] as? [[String: Any]])?.last?["repositoryBytes"] as? Int64)
        let u = try FileSystemUsage.of(mount)
        if u.availableBytes >= lastFull / 2 {
            let f = try PosixFile.create(mount + "/filler-last", mode: 0o600)
            let chunk = [UInt8](repeating: 1, count: Int(u.availableBytes - lastFull / 2))
            try chunk.withUnsafeBytes { try f.write($0) }
            try f.close()
        }
        let before = try FileSystem.list(repo + "/main/backups")
        let refused = try t.wayback(["backup"])
        #expect(refused.status == WaybackError.Code.noSpace.rawValue && refused.stderr.contains("repository 'local'") && refused.stderr.contains("--force"),
                "\(refused.status) \(refused.stderr)")
        #expect(try FileSystem.list(repo + "/main/backups") == before, "a refused backup wrote something")
        // PostgreSQL's start (requested before the repository is read) is stopped by Wayback, not
        // left to end with the session.
        let serverLog = try String(contentsOfFile: t.cluster.dataDirectory + ".log", encoding: .utf8)
        #expect(serverLog.contains("checkpoint starting: immediate force wait"), "the server log holds no backup checkpoint: not the log of this cluster?")
        #expect(!serverLog.contains("before pg_backup_stop was called"), "the refused backup was not stopped: \(serverLog.suffix(800))")
        let forced = try t.wayback(["backup", "--force"])
        #expect(forced.status != WaybackError.Code.noSpace.rawValue, "--force did not pass the check: \(forced.stderr)")

        // The daemon looks at once when it starts, and says it.
        let daemon = try DaemonTests.Daemon(t, log: t.root + "/daemon.log")
        let deadline = monotonicSeconds() + 30
        while !daemon.output.contains("disk space: CRITICAL") && monotonicSeconds() < deadline { usleep(200_000) }
        #expect(daemon.output.contains("disk space: CRITICAL: repository 'local'"), "\(daemon.output)")
        #expect(daemon.stop() == 0)
    }
}
