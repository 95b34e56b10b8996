import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// `wayback daemon` as it runs in production: a real process with a real cluster, stopped by
/// SIGTERM. These are the few tests that wait for a real minute.
@Suite("daemon against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct DaemonTests {
    /// A daemon process as the cluster's OS user (setpriv execs, so signals reach wayback itself).
    final class Daemon {
        let process = Process()
        let log: String

        init(_ t: TestCluster, config: String? = nil, log: String) throws {
            self.log = log
            let command = [TestEnvironment.waybackBinary, "--config", config ?? t.configPath, "daemon"]
            process.executableURL = URL(fileURLWithPath: getuid() == 0 ? "/usr/bin/setpriv" : command[0])
            process.arguments = getuid() == 0 ? ["--reuid=\(t.cluster.osUser)", "--regid=\(t.cluster.osUser)", "--init-groups", "--"] + command
                                              : Array(command.dropFirst())
            FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardError = handle
            process.standardOutput = handle
            try process.run()
        }

        var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

        /// Sends `signal` and waits up to `timeout` seconds; returns the exit status (nil: still running).
        func stop(_ signal: Int32 = SIGTERM, timeout: Double = 30) -> Int32? {
            kill(process.processIdentifier, signal)
            let deadline = monotonicSeconds() + timeout
            while process.isRunning && monotonicSeconds() < deadline { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit(); return nil }
            return process.terminationStatus
        }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    }

    /// A schedule with one job, the full at 02:00 (tests make it overdue), and every other job off;
    /// more `schedule:` keys may follow.
    static let nightlyFullOnly = """
        schedule:
          full: "0 2 * * *"
          incr: null
          expire: null
          verify: null
          drill: null
          drill_offsite: null
          report: null

        """

    static func backups(_ t: TestCluster) throws -> [String] {
        let s = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["status", "--json"]).utf8)) as? [String: Any]
        return ((s?["backups"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
    }

    static func waitFor(_ what: String, timeout: Double, _ check: () throws -> Bool) throws {
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            if try check() { return }
            usleep(500_000)
        }
        throw WaybackError(.internal, "timed out after \(Int(timeout)) s waiting for \(what)")
    }

    @Test("a daemon with full: \"* * * * *\" backs up within two minutes with a complete backup_logs row; a second daemon is refused; SIGTERM ends it with 0; a missed run is caught up at start; SIGHUP with a bad file keeps the old configuration; the report job writes today's report and removes one older than report.keep")
    func daemonRunsStopsAndCatchesUp() async throws {
        let t = try TestCluster(extraConfig: "schedule:\n  full: \"* * * * *\"\n  incr: null\n  expire: after-backup\n  report: \"* * * * *\"\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        // A report older than report.keep (30 days): the daily report job removes it.
        let reports = t.root + "/locks/reports"
        try FileSystem.makeDirectories(reports, mode: 0o700)
        try Data("old".utf8).write(to: URL(fileURLWithPath: reports + "/report-20200101.html"))
        var old = [timespec(tv_sec: 1_577_836_800, tv_nsec: 0), timespec(tv_sec: 1_577_836_800, tv_nsec: 0)]
        _ = utimensat(AT_FDCWD, reports + "/report-20200101.html", &old, 0)
        try FileSystem.chown(t.root + "/locks", uid: try #require(getpwnam(t.cluster.osUser)).pointee.pw_uid, gid: try #require(getpwnam(t.cluster.osUser)).pointee.pw_gid)
        try FileSystem.chown(reports, uid: try #require(getpwnam(t.cluster.osUser)).pointee.pw_uid, gid: try #require(getpwnam(t.cluster.osUser)).pointee.pw_gid)
        let schedule = try t.waybackOK(["schedule"])
        #expect(schedule.contains("full") && schedule.contains("* * * * *") && schedule.contains("after each backup"), "\(schedule)")
        let crontab = try t.waybackOK(["schedule", "--print-crontab"])
        #expect(crontab.contains("* * * * *  ") && crontab.contains("backup --type full"), "\(crontab)")

        let daemon = try Daemon(t, log: t.root + "/daemon.log")
        try Self.waitFor("the daemon's first backup", timeout: 150) { try !Self.backups(t).isEmpty }
        let id = try #require(try Self.backups(t).first)
        // Its backup_logs row, every column as defined (the catalog test checks the values).
        try Self.waitFor("the row to say complete", timeout: 30) {
            try t.psql("SELECT status FROM wayback.backup_logs WHERE backup_id = '\(id)'") == "complete"
        }
        #expect(try t.psql("SELECT count(*) FROM wayback.backup_logs WHERE backup_id = '\(id)' AND backup_type = 'full' AND backup_size_bytes > 0 AND length(checksum_md5) = 32 AND length(checksum_sha256) = 64 AND location_local LIKE '%/main/backups/\(id)/' AND recovery_tested = false AND created_at IS NOT NULL AND error_message IS NULL") == "1")

        // The daily report (every minute here): today's HTML and JSON, the old one removed.
        try Self.waitFor("the daemon's report", timeout: 120) {
            (try FileSystem.list(reports)).contains { $0.hasSuffix(".json") && $0 != "report-20200101.json" }
        }
        let written = try FileSystem.list(reports)
        #expect(written.contains { $0.hasSuffix(".html") && $0 != "report-20200101.html" } && !written.contains("report-20200101.html"), "\(written)")

        // A second daemon for the same cluster and repositories: refused, naming the first.
        let second = try t.wayback(["daemon"])
        #expect(second.status == WaybackError.Code.locked.rawValue && second.stderr.contains("'wayback daemon'"), "\(second.status) \(second.stderr)")

        // SIGHUP with an invalid file: logged, the daemon goes on with the old configuration.
        let original = try String(contentsOfFile: t.configPath, encoding: .utf8)
        try (original + "\ncolour: blue\n").write(toFile: t.configPath, atomically: false, encoding: .utf8)
        kill(daemon.process.processIdentifier, SIGHUP)
        try Self.waitFor("the reload to be refused", timeout: 20) { daemon.output.contains("configuration not reloaded") }
        try original.write(toFile: t.configPath, atomically: false, encoding: .utf8)
        #expect(daemon.process.isRunning)

        let stopped = daemon.stop()
        #expect(stopped == 0, "daemon exit \(String(describing: stopped)): \(daemon.output)")

        // Catch-up: the daemon was down when its 02:00 full was due (the state says the full last
        // ran two days ago): it runs once, at start, without waiting for 02:00.
        let lockDir = t.root + "/locks"
        let stateFile = try #require(try FileSystem.list(lockDir).first { $0.hasSuffix(".schedule.json") })
        let twoDaysAgo = Date().addingTimeInterval(-2 * 86400).timeIntervalSince1970
        try Data("{\"lastRun\":{\"full\":\(twoDaysAgo),\"expire\":\(twoDaysAgo)}}".utf8).write(to: URL(fileURLWithPath: lockDir + "/" + stateFile))
        let nightly = try t.configVariant("nightly.yaml", replace: [("full: \"* * * * *\"", "full: \"0 2 * * *\"")])
        let before = try Self.backups(t).count
        let late = try Daemon(t, config: nightly, log: t.root + "/daemon2.log")
        try Self.waitFor("the missed full to run", timeout: 60) { try Self.backups(t).count == before + 1 }
        // Once: the next run is tomorrow's 02:00.
        usleep(3_000_000)
        #expect(try Self.backups(t).count == before + 1)
        #expect(late.stop() == 0, "\(late.output)")
    }

    @Test("SIGTERM during a scheduled backup: the daemon ends it and exits 0 within schedule.stop_timeout; the next backup resumes it")
    func sigtermDuringABackup() async throws {
        let t = try TestCluster(extraConfig: "schedule:\n  full: \"* * * * *\"\n  incr: null\n  expire: null\n  stop_timeout: 20s\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "3"])
        // Slow enough to be caught in the middle: 2 MB/s from the data directory.
        let slow = try t.configVariant("slow.yaml", replace: [("backup:\n", "backup:\n  max_rate_mb: 2\n  pack_size_mb: 1\n")])
        let daemon = try Daemon(t, config: slow, log: t.root + "/daemon.log")
        let backups = t.repositoryPath + "/main/backups"
        try Self.waitFor("the scheduled backup to store its first pack", timeout: 150) {
            ((try? FileSystem.list(backups)) ?? []).contains { id in ((try? FileSystem.list(backups + "/" + id + "/pack")) ?? []).contains { $0.hasSuffix(".index") } }
        }
        let started = monotonicSeconds()
        let status = daemon.stop(SIGTERM, timeout: 30)
        #expect(status == 0, "daemon exit \(String(describing: status)) after \(monotonicSeconds() - started) s: \(daemon.output)")
        #expect(monotonicSeconds() - started < 25, "the daemon took \(monotonicSeconds() - started) s to stop")
        #expect(try Self.backups(t).isEmpty, "the interrupted backup counts as complete")
        #expect(try t.psql("SELECT status FROM wayback.backup_logs") == "failed")
        // The next backup continues it (same id, the stored files reused).
        let next = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["backup", "--json"]).utf8)) as? [String: Any]
        let resumed = next?["resumed"] as? [String: Any]
        #expect((resumed?["files"] as? Int ?? 0) > 0, "the next backup did not resume: \(String(describing: next))")
        #expect(try t.psql("SELECT status FROM wayback.backup_logs") == "complete")
    }

    @Test("schedule.sync: a backup a repository missed is reported (check, and a copies.missing notification to a real webhook receiver) until the daemon's sync copies it (overdue at the daemon's start), then recovered, and its backup_logs row is complete; with one repository there is no sync job")
    func daemonSyncsRepositories() throws {
        let dir = try TestEnvironment.makeTemporaryDirectory("dsync")
        defer { try? FileSystem.removeTree(dir) }
        try FileSystem.makeDirectories(dir + "/http", mode: 0o755)
        let http = try NotificationTests.Receiver([S3TestServer.packageRoot + "/scripts/http/receiver.py", dir + "/http"])
        defer { http.stop() }
        let httpPort = try #require(Int(http.firstLine), "the HTTP receiver did not start: \(http.firstLine)")
        let monitorPort = try MonitorTests.freePort()
        let offsite = "  - name: offsite\n    type: local\n    path: \(dir)/offsite\n    wal_push: sync\n"
        let t = try TestCluster(repositoryPath: dir + "/local",
                                extraConfig: Self.nightlyFullOnly.replacingOccurrences(of: "full: \"0 2 * * *\"", with: "full: null") + """
                                    check:
                                      backup_age_warning: 1s
                                    monitor:
                                      listen: 127.0.0.1:\(monitorPort)
                                      refresh: 2s
                                    notifications:
                                      sinks:
                                        - name: hook
                                          type: webhook
                                          url: http://127.0.0.1:\(httpPort)/hook
                                    """,
                                repositories: "  - name: local\n    type: local\n    path: \(dir)/local\n" + offsite)
        defer { t.cleanup() }
        let localOnly = try t.configVariant("local-only.yaml", replace: [(offsite, "")])
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "1"])
        let id = try #require(try t.wayback(["backup", "--type", "full"], config: localOnly).stdout.split(separator: "\n").last.map(String.init))
        let manifest = dir + "/offsite/main/backups/\(id)/manifest.json"
        #expect(!FileManager.default.fileExists(atPath: manifest))
        #expect(try t.waybackOK(["schedule"]).contains("sync"))
        #expect(!(try t.wayback(["schedule"], config: localOnly).stdout.contains("sync")))
        try t.waybackOK(["catalog", "sync"])
        #expect(try t.psql("SELECT status FROM wayback.backup_logs WHERE backup_id = '\(id)'") == "partial")
        sleep(2)
        let check = try t.wayback(["check"])
        #expect(check.status == 1 && check.stdout.contains("WARNING: copies: backup \(id), ended ") && check.stdout.contains("is not in 'offsite'"),
                "\(check.status) \(check.stdout)")

        // The first daemon (the sync not due): the gathering sends copies.missing.
        let lockDir = t.root + "/locks"
        let first = try Daemon(t, log: t.root + "/daemon0.log")
        func events() throws -> [String] { try NotificationTests.posts(dir + "/http").compactMap(NotificationTests.event) }
        try Self.waitFor("copies.missing", timeout: 30) { try events().contains("copies.missing") }
        #expect(first.stop() == 0, "\(first.output)")
        #expect(!FileManager.default.fileExists(atPath: manifest), "the sync ran though not due")
        // The second (the sync overdue): it copies the backup, and the next gathering says so.
        let stateFile = lockDir + "/" + (try #require(try FileSystem.list(lockDir).first { $0.hasSuffix(".schedule.json") }))
        try Data("{\"lastRun\":{\"sync\":\(Date().addingTimeInterval(-2 * 86400).timeIntervalSince1970)}}".utf8).write(to: URL(fileURLWithPath: stateFile))
        let daemon = try Daemon(t, log: t.root + "/daemon1.log")
        try Self.waitFor("the scheduled sync", timeout: 60) { FileManager.default.fileExists(atPath: manifest) }
        try Self.waitFor("check.recovered", timeout: 30) { try events().contains("check.recovered") }
        #expect(try t.psql("SELECT status FROM wayback.backup_logs WHERE backup_id = '\(id)'") == "complete", "the sync job updates backup_logs")
        #expect(daemon.stop() == 0, "\(daemon.output)")
        let sent = try events()
        #expect(sent.filter { $0 == "copies.missing" }.count == 1, "sent once, not again after the restart: \(sent)")
        #expect(try t.wayback(["check"]).stdout.contains("OK: copies: the newest backup \(id) is in all 2 repositories"))
        // The copy is whole: verify reads it in the offsite repository alone.
        let verified = try t.wayback(["verify", "--backup", id, "--repository", "offsite"])
        #expect(verified.status == 0, "\(verified.stdout) \(verified.stderr)")
    }

    @Test("while the daemon runs it drains the asynchronous WAL queue itself (it holds the drainer's lock, so wal-push starts no wal-drain), and the S3 repository gets every segment")
    func daemonDrainsTheWALQueue() async throws {
        let s3 = try S3TestServer()
        defer { s3.stop() }
        let repoDir = try TestEnvironment.makeTemporaryDirectory("repo")
        defer { try? FileSystem.removeTree(repoDir) }
        let t = try TestCluster(repositoryPath: repoDir, extraConfig: "schedule:\n  full: null\n  incr: null\n  expire: null\n",
                                repositories: S3RepositoryTests.localYAML(repoDir) + s3.repositoryYAML(prefix: "daemon/"))
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        let daemon = try Daemon(t, log: t.root + "/daemon.log")
        let lockFile = t.cluster.dataDirectory + "/pg_wal/wayback-spool/.lock"
        func held() -> Bool {
            let fd = open(lockFile, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { _ = flock(fd, LOCK_UN); return false }
            return true
        }
        try Self.waitFor("the daemon to hold the drainer's lock", timeout: 30) { held() }
        try t.psql("CREATE TABLE w AS SELECT g FROM generate_series(1, 1000) g")
        for _ in 0..<4 {
            try t.psql("INSERT INTO w SELECT g FROM generate_series(1, 1000) g")
            try t.switchAndWaitForArchive()
        }
        try S3RepositoryTests.waitForDrain(t)
        #expect(held(), "the daemon let go of the drainer's lock")
        #expect(!daemon.output.contains("cannot start wal-drain"), "\(daemon.output)")
        #expect(daemon.stop() == 0, "\(daemon.output)")
        // Stopped: the lock is free again for wal-push's own drainer.
        #expect(!held())
    }

    @Test("with the daemon running, each segment PostgreSQL marks ready is stored before archive_command runs; wal-push then checks it and returns without reading its configuration; a marker that lies (object gone) or is damaged sends wal-push down its usual path, which stores the segment")
    func daemonPushesWALAhead() async throws {
        let t = try TestCluster(extraConfig: "schedule:\n  full: null\n  incr: null\n  expire: null\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.switchAndWaitForArchive()
        // PostgreSQL's own archiving fails meanwhile, so whatever is stored is the daemon's doing.
        _ = try t.psql("ALTER SYSTEM SET archive_command = 'false'")
        _ = try t.psql("SELECT pg_reload_conf()")
        let archivedBefore = try t.psql("SELECT archived_count FROM pg_stat_archiver")
        let daemon = try Daemon(t, log: t.root + "/daemon.log")
        let pgWAL = t.cluster.dataDirectory + "/pg_wal"
        let ahead = pgWAL + "/wayback-ahead"
        try Self.waitFor("the daemon to push ahead", timeout: 30) { FileManager.default.fileExists(atPath: ahead + "/.lock") }
        _ = try t.psql("CREATE TABLE w AS SELECT g FROM generate_series(1, 1000) g")
        var segments = [String]()
        for _ in 0..<4 {
            _ = try t.psql("INSERT INTO w SELECT g FROM generate_series(1, 1000) g")
            segments.append(try t.psql("SELECT pg_walfile_name(pg_switch_wal())"))
        }
        // The oldest ready segment is the archiver's (wal-push stores it); the daemon goes ahead
        // from the next one.
        let oldest = segments.removeFirst()
        try Self.waitFor("a marker for each segment after the oldest", timeout: 60) {
            segments.allSatisfy { FileManager.default.fileExists(atPath: ahead + "/" + $0) }
        }
        #expect(!FileManager.default.fileExists(atPath: ahead + "/" + oldest))
        let objects = segments.map { t.repositoryPath + "/main/wal/" + $0.prefix(16) + "/" + $0 }
        for o in objects { #expect(FileManager.default.fileExists(atPath: o), "\(o) not stored ahead") }
        #expect(try t.psql("SELECT archived_count FROM pg_stat_archiver") == archivedBefore, "PostgreSQL archived something itself")
        // Markers and the directory are the daemon's alone.
        #expect(try FileSystem.status(ahead)?.mode == 0o700)
        #expect(try FileSystem.status(ahead + "/" + segments[0])?.mode == 0o600)

        // wal-push as PostgreSQL runs it: the first segment is taken from its marker without
        // reading the configuration (unreadable meanwhile: chmod keeps the file's identity);
        // asked again (no marker now) it reads it, finds the object and says so.
        let info = try t.configVariant("info.yaml", replace: [("log_level: warning", "log_level: info")])
        try FileSystem.chmod(t.configPath, 0)
        let fast = try t.wayback(["wal-push", pgWAL + "/" + segments[0]])
        try FileSystem.chmod(t.configPath, 0o600)
        #expect(fast.status == 0 && fast.stderr.isEmpty, "\(fast.status) \(fast.stderr)")
        #expect(!FileManager.default.fileExists(atPath: ahead + "/" + segments[0]), "the marker was not consumed")
        let again = try t.wayback(["wal-push", pgWAL + "/" + segments[0]], config: info)
        #expect(again.status == 0 && again.stderr.contains("already archived"), "\(again.stderr)")

        // The object of the second segment is gone from the repository: the marker lies, and
        // wal-push stores the segment again rather than believe it.
        try FileSystem.remove(objects[1])
        let lied = try t.wayback(["wal-push", pgWAL + "/" + segments[1]], config: info)
        #expect(lied.status == 0 && lied.stderr.contains("storing it now"), "\(lied.status) \(lied.stderr)")
        #expect(FileManager.default.fileExists(atPath: objects[1]))

        // A damaged marker: ignored, removed, and the segment checked the usual way.
        try Data("wayback-ahead 1\nfile garbage\n".utf8).write(to: URL(fileURLWithPath: ahead + "/" + segments[2]))
        let damaged = try t.wayback(["wal-push", pgWAL + "/" + segments[2]], config: info)
        #expect(damaged.status == 0 && damaged.stderr.contains("damaged push-ahead marker"), "\(damaged.status) \(damaged.stderr)")
        #expect(!FileManager.default.fileExists(atPath: ahead + "/" + segments[2]))

        // PostgreSQL archiving again: it gets every segment, the daemon's markers are all used or
        // cleared, and the archive restores to the end.
        _ = try t.psql("ALTER SYSTEM RESET archive_command")
        _ = try t.psql("SELECT pg_reload_conf()")
        _ = try t.psql("INSERT INTO w SELECT g FROM generate_series(1, 1000) g")
        try t.switchAndWaitForArchive()
        try Self.waitFor("the markers to be gone", timeout: 30) {
            try FileSystem.list(ahead).filter { !$0.hasPrefix(".") }.isEmpty
        }
        let rows = try t.psql("SELECT count(*) FROM w")
        try t.waybackOK(["backup"])
        _ = try t.psql("INSERT INTO w SELECT g FROM generate_series(1, 1000) g")
        try t.switchAndWaitForArchive()
        #expect(daemon.stop() == 0, "\(daemon.output)")
        #expect(!daemon.output.contains("wal-ahead"), "\(daemon.output)")
        let target = t.root + "/restored"
        try t.waybackOK(["restore", "--target-dir", target])
        let restored = t.restoredCluster(at: target)
        defer { try? restored.stop(mode: "immediate") }
        try t.startRestored(restored)
        #expect(try restored.psql("SELECT count(*) FROM w") == String((Int(rows) ?? 0) + 1000))
    }

    @Test("packaging/wayback.service passes systemd-analyze verify (with the binary where the unit expects it)")
    func systemdUnitVerifies() throws {
        let unit = try String(contentsOfFile: S3TestServer.packageRoot + "/packaging/wayback.service", encoding: .utf8)
        #expect(unit.contains("User=postgres") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID") && unit.contains("Restart=on-failure"))
        let dir = try TestEnvironment.makeTemporaryDirectory("unit")
        defer { try? FileSystem.removeTree(dir) }
        let path = dir + "/wayback.service"
        try unit.replacingOccurrences(of: "/usr/local/bin/wayback", with: TestEnvironment.waybackBinary).write(toFile: path, atomically: true, encoding: .utf8)
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") else {
            #expect(ProcessInfo.processInfo.environment["CI"] != "true", "systemd-analyze is missing (Debian's systemd package)")
            return
        }
        let r = try Command.run(["/usr/bin/systemd-analyze", "verify", path], check: false)
        #expect(r.status == 0 && r.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(r.status) \(r.stderr)")
    }
}
