import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// The data-safety and security defects found by probing (issue 13), each against real
/// PostgreSQL: every one of these tests failed before its fix.
@Suite("data safety: no early end of recovery, no backup of the wrong directory, no trusted plant", .serialized,
       .enabled(if: TestEnvironment.runIntegration))
struct DataSafetyTests {
    typealias Code = WaybackError.Code

    /// Gives `path` to the test's OS user (tests run as root in CI).
    static func own(_ path: String) {
        if getuid() == 0, let pw = getpwnam(TestEnvironment.osUser) { chown(path, pw.pointee.pw_uid, pw.pointee.pw_gid) }
    }

    static func write(_ text: String, _ path: String, mode: mode_t = 0o600) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        _ = chmod(path, mode)
        own(path)
    }

    /// A second configuration for `t`, with `replace` applied to its text.
    static func config(_ t: TestCluster, _ name: String, replace: [(String, String)], mode: mode_t = 0o600) throws -> String {
        let path = try t.configVariant(name, replace: replace)
        _ = chmod(path, mode)
        return path
    }

    static func waybackRun(_ args: [String], asRoot: Bool = false) throws -> Command.Result {
        try Command.run([TestEnvironment.waybackBinary] + args, asUser: asRoot ? nil : TestEnvironment.osUser, check: false)
    }

    @Test("the backup stores its stop segment itself once PostgreSQL marked it ready and the archive has the segment before: it does not wait for a slow archive_command, whose own push then finds the segment archived")
    func stopSegmentPushedByTheBackup() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.waybackOK(["backup"])
        // Everything up to now archived, then an archive_command that takes 4 s per file.
        _ = try t.psql("CREATE TABLE t(x int); INSERT INTO t VALUES (1)")
        try t.switchAndWaitForArchive()
        _ = try t.psql("ALTER SYSTEM SET archive_command = 'sleep 4; \(TestEnvironment.waybackBinary) --config \(t.configPath) wal-push %p'")
        _ = try t.psql("SELECT pg_reload_conf()")
        let out = try t.waybackOK(["backup", "--type", "incr", "--json"])
        let stopWAL = try #require((try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])?["stopWAL"] as? String)
        // The backup is complete while the archiver is still asleep before its push of the stop
        // segment: the backup stored it.
        #expect(try t.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < stopWAL)
        #expect(FileManager.default.fileExists(atPath: "\(t.repositoryPath)/main/wal/\(stopWAL.prefix(16))/\(stopWAL)"))
        // The archiver's push of the same segment succeeds: it finds the same content there.
        try DaemonTests.waitFor("the archiver", timeout: 30) {
            try t.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= stopWAL
        }
        #expect(try t.psql("SELECT failed_count FROM pg_stat_archiver") == "0")
        _ = try t.psql("ALTER SYSTEM RESET archive_command")
        _ = try t.psql("SELECT pg_reload_conf()")
        try t.waybackOK(["verify"])
    }

    // MARK: 1. wal-fetch never says "not archived" when it could not look

    @Test("wal-fetch: an emptied or removed repository, or a missing destination directory, is an error, never 'not archived' (exit 1)")
    func walFetchNeverReportsAbsentWhenItCannotLook() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.switchAndWaitForArchive()
        let seg = try t.psql("SELECT last_archived_wal FROM pg_stat_archiver")
        let next = try #require(WALFileName(seg)).next().description
        let dest = t.root + "/fetched"
        try FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: true)
        Self.own(dest)
        // Sound repository: an archived file is fetched, the next one is really absent (exit 1).
        try t.waybackOK(["wal-fetch", seg, dest + "/" + seg])
        #expect(try t.wayback(["wal-fetch", next, dest + "/x"]).status == Code.notFound.rawValue)

        // A destination directory that does not exist: an I/O error, not "not archived".
        let noDir = try t.wayback(["wal-fetch", seg, t.root + "/no/such/dir/" + seg])
        #expect(noDir.status == Code.io.rawValue, "\(noDir.status) \(noDir.stderr)")
        #expect(noDir.stderr.contains("does not exist"))

        // The repository's file system unmounted: the path is there, but empty.
        let aside = t.root + "/repository-aside"
        try FileSystem.rename(t.repositoryPath, aside)
        try FileManager.default.createDirectory(atPath: t.repositoryPath, withIntermediateDirectories: false)
        Self.own(t.repositoryPath)
        for name in [seg, next] {
            let r = try t.wayback(["wal-fetch", name, dest + "/y"])
            #expect(r.status == Code.repository.rawValue, "\(name): \(r.status) \(r.stderr)")
            #expect(r.stderr.contains("has no cluster 'main'"), "\(r.stderr)")
        }
        // The cluster folder removed, and the repository path itself gone.
        try FileSystem.removeTree(t.repositoryPath)
        #expect(try t.wayback(["wal-fetch", next, dest + "/y"]).status == Code.repository.rawValue)
        try FileSystem.rename(aside, t.repositoryPath)
        #expect(try t.wayback(["wal-fetch", next, dest + "/y"]).status == Code.notFound.rawValue)
    }

    @Test("recovery with its repository gone stops with an error instead of ending early, and finishes with nothing lost once the repository is back")
    func recoveryStopsWhenTheRepositoryIsGone() throws {
        let t = try TestCluster()
        let restoredDir = t.root + "/restored"
        let restored = t.restoredCluster(at: restoredDir)
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        try t.waybackOK(["backup"])
        // Written after the backup: only the archived WAL has it.
        _ = try t.psql("CREATE TABLE after_backup AS SELECT g FROM generate_series(1, 1000) g")
        try t.switchAndWaitForArchive()
        try t.waybackOK(["restore", "--target-dir", restoredDir])

        // The repository disappears (an unmounted file system) before the copy is started.
        let aside = t.root + "/repository-aside"
        try FileSystem.rename(t.repositoryPath, aside)
        try FileManager.default.createDirectory(atPath: t.repositoryPath, withIntermediateDirectories: false)
        Self.own(t.repositoryPath)
        try? restored.start(extraOptions: "-c archive_mode=off")
        let deadline = monotonicSeconds() + 60
        var promoted = false
        while monotonicSeconds() < deadline && restored.isRunning {
            if (try? restored.psql("SELECT pg_is_in_recovery()")) == "f" { promoted = true; break }
            usleep(100_000)
        }
        #expect(!promoted, "recovery ended early and promoted without the archived WAL")
        #expect(!restored.isRunning, "recovery did not stop")
        let log = (try? String(contentsOfFile: restoredDir + ".log", encoding: .utf8)) ?? ""
        #expect(log.contains("has no cluster 'main'"), "the server log names the cause")

        // Repository back: the same copy recovers everything.
        try FileSystem.removeTree(t.repositoryPath)
        try FileSystem.rename(aside, t.repositoryPath)
        try t.startRestored(restored)
        #expect(try restored.psql("SELECT count(*) FROM after_backup") == "1000")
    }

    // MARK: 2. backup proves that pgdata is the server's data directory

    @Test("backup refuses a cluster.pgdata that is not the connected server's data directory (a stopped restored copy), naming both; init too")
    func backupRefusesAnotherDataDirectory() throws {
        let t = try TestCluster()
        let copyDir = t.root + "/copy"
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        let first = try t.waybackOK(["backup"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try t.waybackOK(["restore", "--target-dir", copyDir])
        let wrong = try Self.config(t, "wrong.yaml", replace: [("pgdata: \(t.cluster.dataDirectory)\n", "pgdata: \(copyDir)\n")])
        for command in ["backup", "init"] {
            let r = try Self.waybackRun(["--config", wrong, command])
            #expect(r.status == Code.config.rawValue, "\(command): \(r.status) \(r.stderr)")
            #expect(r.stderr.contains(copyDir) && r.stderr.contains(t.cluster.dataDirectory), "names both paths: \(r.stderr)")
        }
        let status = try t.waybackOK(["status", "--json"])
        let backups = try #require((try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any])?["backups"] as? [[String: Any]])
        #expect(backups.map { $0["id"] as? String } == [first], "no backup of the copy was kept")

        // A symbolic link to the real data directory is the same directory.
        let link = t.root + "/pgdata-link"
        try FileSystem.symlink(target: t.cluster.dataDirectory, at: link)
        let linked = try Self.config(t, "linked.yaml", replace: [("pgdata: \(t.cluster.dataDirectory)\n", "pgdata: \(link)\n")])
        let ok = try Self.waybackRun(["--config", linked, "backup"])
        #expect(ok.status == 0, "\(ok.stderr)")
    }

    @Test("repository: a symbolic link planted inside it (a backup folder pointing elsewhere) is refused by status, expire and verify, naming it; its target is untouched")
    func repositoryRefusesPlantedLinks() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.waybackOK(["backup", "--type", "full"])
        let victim = t.root + "/victim"
        try FileSystem.makeDirectories(victim)
        try "precious\n".write(toFile: victim + "/precious", atomically: true, encoding: .utf8)
        try FileSystem.symlink(target: victim, at: t.repositoryPath + "/main/backups/20200101-000000F")
        for command in [["status"], ["expire", "--force"], ["verify", "--all"]] {
            let r = try t.wayback(command)
            #expect(r.status == Code.repository.rawValue, "\(command): \(r.status) \(r.stdout)")
            #expect(r.stderr.contains("is a symbolic link") && r.stderr.contains(victim), "\(command): \(r.status) \(r.stderr)")
        }
        #expect(try FileSystem.list(victim) == ["precious"])
        // Once it is gone, all is as before.
        try FileSystem.remove(t.repositoryPath + "/main/backups/20200101-000000F")
        try t.waybackOK(["status"])
    }

    // MARK: 3. the lock never follows a plant

    @Test("lock: a symbolic link planted as the lock file is refused and its target untouched; an unsafe lock directory is refused; new ones are 0700 and 0600")
    func lockRefusesPlants() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        let locks = t.root + "/locks"
        try t.waybackOK(["init"])
        let dirMode = try #require(try FileSystem.status(locks)).mode
        #expect(dirMode & 0o777 == 0o700, "lock directory mode \(String(dirMode, radix: 8))")
        // Keyed by the cluster's system identifier and its repositories, named for the cluster.
        let sysid = try t.psql("SELECT system_identifier FROM pg_control_system()")
        let lockFiles = try FileSystem.list(locks).filter { $0.hasSuffix(".lock") }
        #expect(lockFiles.count == 1 && lockFiles[0].hasPrefix("main-\(sysid)-"), "\(lockFiles)")
        let lockFile = locks + "/" + (lockFiles.first ?? "main.lock")
        let fileStatus = try #require(try FileSystem.status(lockFile))
        #expect(fileStatus.mode & 0o777 == 0o600)
        let rootOwner = try FileSystem.status(t.root)?.uid
        #expect(getuid() != 0 || fileStatus.uid == rootOwner, "lock file owned by the cluster's user")

        // A local user plants a symbolic link to a file only root may change, then root runs init.
        let victim = t.root + "/victim"
        try "precious\n".write(toFile: victim, atomically: true, encoding: .utf8)
        _ = chmod(victim, 0o644)
        try FileSystem.remove(lockFile)
        try FileSystem.symlink(target: victim, at: lockFile)
        let r = try t.wayback(["init"], asRoot: true)
        #expect(r.status == Code.io.rawValue, "\(r.status) \(r.stderr)")
        #expect(r.stderr.contains("symbolic link"), "\(r.stderr)")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious\n")
        #expect(try #require(try FileSystem.status(victim)).mode & 0o777 == 0o644)
        try FileSystem.remove(lockFile)

        // A lock directory another user can write (the old /tmp/wayback, mode 1777, owned by root).
        if getuid() == 0 {
            let open = t.root + "/open-locks"
            try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: false)
            _ = chmod(open, 0o1777)
            let cfg = try Self.config(t, "open.yaml", replace: [("lock_path: \(locks)\n", "lock_path: \(open)\n")])
            let refused = try Self.waybackRun(["--config", cfg, "backup"])
            #expect(refused.status == Code.io.rawValue, "\(refused.status) \(refused.stderr)")
            #expect(refused.stderr.contains("can be written by other users"), "\(refused.stderr)")
            // Its owner may make it safe, and Wayback does so itself for a directory it owns.
            Self.own(open)
            #expect(try Self.waybackRun(["--config", cfg, "backup"]).status == 0)
            #expect(try #require(try FileSystem.status(open)).mode & 0o777 == 0o700)
        }
        // A lock file of another user's (uid 65534, nobody) is not taken over.
        if getuid() == 0 {
            try Self.write("", lockFile)
            chown(lockFile, 65534, 65534)
            let other = try t.wayback(["backup"])
            #expect(other.status != 0 && other.stderr.contains(lockFile), "\(other.status) \(other.stderr)")
        }
    }

    // MARK: 4. delta restores only onto the same cluster

    @Test("restore --delta refuses the data directory of another cluster, in the plan too, and leaves it untouched")
    func deltaRefusesAnotherCluster() throws {
        let a = try TestCluster()
        let b = try TestCluster()
        defer { a.cleanup(); b.cleanup() }
        try a.waybackOK(["init"])
        try a.waybackOK(["backup"])
        _ = try b.psql("CREATE TABLE only_in_b AS SELECT 1 AS x")
        try b.cluster.stop()
        let target = b.cluster.dataDirectory
        let before = try FileSystem.list(target)
        // The plan says the restore would fail (exit non-zero), the restore refuses (conflict).
        let plan = try a.wayback(["restore", "--target-dir", target, "--delta", "--dry-run"])
        #expect(plan.status != 0 && plan.stderr.contains("another cluster"), "\(plan.status) \(plan.stderr)")
        let r = try a.wayback(["restore", "--target-dir", target, "--delta"])
        #expect(r.status == Code.conflict.rawValue, "\(r.status) \(r.stderr)")
        #expect(r.stderr.contains("another cluster"), "\(r.stderr)")
        #expect(try FileSystem.list(target) == before)
        #expect(try ControlFile.read(dataDirectory: target) != nil, "its pg_control is still there")
        try b.cluster.start()
        #expect(try b.psql("SELECT x FROM only_in_b") == "1")

        // Onto a copy of its own cluster it works, also after an interrupted delta restore that
        // moved the control file aside.
        let own = a.root + "/own"
        try a.waybackOK(["restore", "--target-dir", own])
        try FileSystem.rename(own + "/global/pg_control", own + "/global/pg_control.wayback-before-delta")
        try a.waybackOK(["restore", "--target-dir", own, "--delta"])
        #expect(try ControlFile.read(dataDirectory: own) != nil)
        #expect(try FileSystem.status(own + "/global/pg_control.wayback-before-delta") == nil)
    }

    // MARK: 5. wal-push validates history and backup history files

    @Test("wal-push refuses junk under a .history or .backup name and stores real ones")
    func walPushValidatesHistoryFiles() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.waybackOK(["backup"])
        // The backup history file PostgreSQL wrote at pg_backup_stop is archived (the backup
        // does not wait for it: it stores its stop segment itself).
        try DaemonTests.waitFor("the backup history file in the archive", timeout: 30) {
            try FileManager.default.subpathsOfDirectory(atPath: t.repositoryPath + "/main/wal").contains { $0.hasSuffix(".backup") }
        }
        #expect(try t.psql("SELECT failed_count FROM pg_stat_archiver") == "0")

        let stash = t.root + "/stash"
        try FileManager.default.createDirectory(atPath: stash, withIntermediateDirectories: true)
        Self.own(stash)
        let junk: [(String, String)] = [
            ("00000002.history", "this is not a history file\n"),
            ("00000003.history", "5\t0/3000000\tparent above the child\n"),
            ("00000004.history", ""),
            ("00000001.history", "1\t0/3000000\tno history for timeline 1\n"),
            ("000000010000000000000005.00000028.backup", "hello\n"),
            ("000000010000000000000005.00000028.backup", "START WAL LOCATION: 0/6000028 (file 000000010000000000000006)\nSTOP WAL LOCATION: 0/6000100 (file 000000010000000000000006)\n"),
        ]
        for (name, text) in junk {
            try Self.write(text, stash + "/" + name)
            let r = try t.wayback(["wal-push", stash + "/" + name])
            #expect(r.status == Code.corrupt.rawValue, "\(name): \(r.status) \(r.stderr)")
            #expect(r.stderr.contains("refusing to archive"), "\(r.stderr)")
            #expect(try t.wayback(["wal-fetch", name, stash + "/back"]).status == Code.notFound.rawValue, "\(name) was stored")
        }
        // Real ones are stored, and planning still works.
        try Self.write("1\t0/3000000\tno recovery target specified\n", stash + "/00000002.history")
        try t.waybackOK(["wal-push", stash + "/00000002.history"])
        try Self.write("START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nSTOP WAL LOCATION: 0/5000100 (file 000000010000000000000005)\nLABEL: x\n",
                       stash + "/000000010000000000000005.00000028.backup")
        try t.waybackOK(["wal-push", stash + "/000000010000000000000005.00000028.backup"])
        try t.waybackOK(["restore", "--target-dir", t.root + "/plan", "--dry-run", "--timeline", "current"])
    }

    // MARK: 6. status and the plan say what they know

    @Test("status shows a damaged last segment and a damaged pack, the window never ends before it starts, and the plan refuses a damaged backup")
    func statusAndPlanShowDamage() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        _ = try t.psql("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
        let id = try t.waybackOK(["backup"]).trimmingCharacters(in: .whitespacesAndNewlines)
        func status() throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: Data(t.waybackOK(["status", "--json"]).utf8)) as? [String: Any])
        }
        // Nothing committed since the backup: the window ends at the end of the backup, not before.
        let window = try #require((try status()["recoverable"] as? [[String: Any]])?.first)
        let earliest = try #require(window["earliest"] as? String), latest = try #require(window["latest"] as? String)
        #expect(latest >= earliest, "window \(earliest) .. \(latest)")
        #expect(try status()["checked"] as? String != nil)

        // The newest archived segment truncated: shown as damaged, the window ends before it.
        _ = try t.psql("INSERT INTO big SELECT g, 'x' FROM generate_series(1, 10) g")
        try t.switchAndWaitForArchive()
        let last = try t.psql("SELECT last_archived_wal FROM pg_stat_archiver")
        let segPath = t.repositoryPath + "/main/wal/\(last.prefix(16))/\(last)"
        #expect(truncate(segPath, 1000) == 0)
        let text = try t.waybackOK(["status"])
        let walLine = try #require(text.split(separator: "\n").first { $0.contains("WAL timeline 1:") })
        #expect(walLine.contains("DAMAGED: \(last)"), "the archive line shows the damaged segment: \(text)")
        #expect(!text.contains("no archived WAL"), "\(text)")
        let damaged = try #require((try status()["recoverable"] as? [[String: Any]])?.first?["damaged"] as? [String])
        #expect(damaged == [last])

        // A pack cut short: status names the backup, the plan refuses it (exit 7), before writing anything.
        let packs = try FileSystem.list(t.repositoryPath + "/main/backups/\(id)/pack").filter { $0.hasSuffix(".pack") }
        let pack = t.repositoryPath + "/main/backups/\(id)/pack/" + (try #require(packs.first))
        #expect(truncate(pack, 100) == 0)
        let after = try t.waybackOK(["status"])
        #expect(after.contains("DAMAGED: pack/"), "\(after)")
        let plan = try t.wayback(["restore", "--target-dir", t.root + "/r", "--dry-run"])
        #expect(plan.status == Code.corrupt.rawValue, "\(plan.status) \(plan.stderr)")
        #expect(plan.stderr.contains("backup \(id) is damaged"), "\(plan.stderr)")
    }

    // MARK: 7. modes, owners and secrets

    @Test("repository files are 0600 in 0700 directories and stay the repository owner's when root restores; a readable configuration with secrets is warned about")
    func modesOwnersAndSecrets() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.waybackOK(["backup"])
        if getuid() == 0 {
            let root = t.root + "/as-root"
            let r = try t.wayback(["restore", "--target-dir", root, "--owner", TestEnvironment.osUser], asRoot: true)
            #expect(r.status == 0, "\(r.stderr)")
        }
        let owner = try #require(try FileSystem.status(t.repositoryPath)).uid
        var checked = 0
        for rel in try FileManager.default.subpathsOfDirectory(atPath: t.repositoryPath) {
            let st = try #require(try FileSystem.status(t.repositoryPath + "/" + rel))
            #expect(st.mode & 0o777 == (st.isDirectory ? 0o700 : 0o600), "\(rel) has mode \(String(st.mode & 0o777, radix: 8))")
            #expect(st.uid == owner, "\(rel) is owned by uid \(st.uid), the repository by \(owner)")
            checked += 1
        }
        #expect(checked > 10)
        if getuid() == 0 {
            #expect(try FileManager.default.contentsOfDirectory(atPath: t.repositoryPath + "/main/restores").count == 1, "the root restore was recorded")
        }

        // Secrets in a file others can read: a warning naming the fix, never the secret.
        let url = "postgresql://postgres:Sup3rSecret@/postgres?host=\(t.root)&port=\(t.cluster.port)"
        let loose = try Self.config(t, "loose.yaml", replace: [("connection: postgresql://postgres@/postgres?host=\(t.root)&port=\(t.cluster.port)", "connection: \(url)")], mode: 0o644)
        let warned = try Self.waybackRun(["--config", loose, "status"])
        #expect(warned.status == 0, "\(warned.stderr)")
        #expect(warned.stderr.contains("wayback: warning:") && warned.stderr.contains("chmod 600"), "\(warned.stderr)")
        #expect(!warned.stderr.contains("Sup3rSecret") && !warned.stdout.contains("Sup3rSecret"))
        _ = chmod(loose, 0o600)
        #expect(!(try Self.waybackRun(["--config", loose, "status"])).stderr.contains("warning"))
    }

    // MARK: 8. messages name causes

    @Test("messages name causes: a password the server asks for, the version as 15.x, errors of arguments and YAML, a misspelt command, --config in --help, application_name honoured, the backup's wait for its WAL")
    func messagesNameCauses() throws {
        let t = try TestCluster(settings: ["log_connections": "on"])
        defer { t.cleanup() }
        let initOut = try t.waybackOK(["init"])
        #expect(initOut.contains("PostgreSQL 15."), "\(initOut)")
        #expect(!initOut.contains("PostgreSQL 1500"), "\(initOut)")
        #expect(initOut.contains("exit 126"), "init prints the restore_command that stops recovery on an error: \(initOut)")

        let time = try t.wayback(["restore", "--target-dir", t.root + "/x", "--to-time", "yesterday-ish"])
        #expect(time.status == Code.usage.rawValue && time.stderr.hasPrefix("wayback: error: --to-time"), "\(time.stderr)")
        let misspelt = try t.wayback(["statsu"])
        #expect(misspelt.status == Code.usage.rawValue && misspelt.stderr.contains("'statsu' is not a wayback command"), "\(misspelt.stderr)")
        let help = try Self.waybackRun(["--help"])
        #expect(help.stdout.contains("--config"), "\(help.stdout)")

        let dup = t.root + "/dup.yaml"
        try Self.write("cluster:\n  name: main\n  name: again\n  pgdata: /x\nrepositories:\n  - path: /r\n", dup)
        let yaml = try Self.waybackRun(["--config", dup, "status"])
        #expect(yaml.status == Code.config.rawValue && yaml.stderr.contains("'name' more than once"), "\(yaml.stderr)")
        #expect(!yaml.stderr.contains("Context"), "\(yaml.stderr)")

        // application_name and connect_timeout are honoured (the server log shows the name).
        let named = try Self.config(t, "named.yaml", replace: [("&port=\(t.cluster.port)\n", "&port=\(t.cluster.port)&application_name=wbprobe&connect_timeout=5\n")])
        #expect(try Self.waybackRun(["--config", named, "init"]).status == 0)
        let log = try String(contentsOfFile: t.cluster.dataDirectory + ".log", encoding: .utf8)
        #expect(log.contains("application_name=wbprobe"), "the server log does not show the application name")
        let badTimeout = try Self.config(t, "timeout.yaml", replace: [("&port=\(t.cluster.port)\n", "&port=\(t.cluster.port)&connect_timeout=soon\n")])
        #expect(try Self.waybackRun(["--config", badTimeout, "init"]).status == Code.config.rawValue)

        // The backup says what it waits for (an archive_command that takes its time, and behind:
        // the segment before the stop segment is still being archived, so the backup does not
        // push its stop segment itself).
        let info = try Self.config(t, "info.yaml", replace: [("log_level: warning", "log_level: info")])
        _ = try t.psql("ALTER SYSTEM SET archive_command = 'sleep 4; \(TestEnvironment.waybackBinary) --config \(t.configPath) wal-push %p'")
        _ = try t.psql("SELECT pg_reload_conf()")
        _ = try t.psql("CREATE TABLE IF NOT EXISTS behind(x int); INSERT INTO behind VALUES (1); SELECT pg_switch_wal()")
        let waited = try Self.waybackRun(["--config", info, "backup"])
        #expect(waited.status == 0, "\(waited.stderr)")
        #expect(waited.stderr.contains("waiting for WAL file") && waited.stderr.contains("archive_command"), "\(waited.stderr)")
        _ = try t.psql("ALTER SYSTEM RESET archive_command")
        _ = try t.psql("SELECT pg_reload_conf()")

        // The server asks for a password and none is given.
        _ = try t.psql("ALTER USER postgres PASSWORD 'pw-for-the-test'")
        let hba = t.cluster.dataDirectory + "/pg_hba.conf"
        try Self.write("local all all scram-sha-256\n", hba)
        _ = try t.psql("SELECT pg_reload_conf()")
        usleep(300_000)
        let noPassword = try t.wayback(["init"])
        #expect(noPassword.status == Code.connection.rawValue, "\(noPassword.status) \(noPassword.stderr)")
        #expect(noPassword.stderr.contains("the server asks for a password and none was given"), "\(noPassword.stderr)")
        #expect(!noPassword.stderr.contains("authMechanismRequiresPassword"))
        // Nobody listens: the socket named, no library words.
        let nobody = try Self.config(t, "nobody.yaml", replace: [("&port=\(t.cluster.port)\n", "&port=1\n")])
        let refused = try Self.waybackRun(["--config", nobody, "init"])
        #expect(refused.status == Code.connection.rawValue && refused.stderr.contains("no server answers"), "\(refused.stderr)")
        #expect(!refused.stderr.contains("connectionError"), "\(refused.stderr)")
    }

    // MARK: 9. a standby that archives everything it restores

    @Test("prefetch on a standby with archive_mode = always: every restored segment is archived by the standby, none marked done behind its back")
    func standbyWithArchiveModeAlways() throws {
        let t = try TestCluster()
        let standbyDir = t.root + "/standby"
        let standby = t.restoredCluster(at: standbyDir)
        defer { t.cleanup(extra: [standby]) }
        try t.waybackOK(["init"])
        try t.waybackOK(["backup"])
        var names = [String]()
        for i in 0..<4 {
            _ = try t.psql("CREATE TABLE s\(i) AS SELECT g FROM generate_series(1, 1000) g")
            try t.switchAndWaitForArchive()
            names.append(try t.psql("SELECT last_archived_wal FROM pg_stat_archiver"))
        }
        // A copy that keeps archiving, made a standby by hand with the restore_command init prints.
        try t.waybackOK(["restore", "--target-dir", standbyDir, "--archive-mode", "preserve"])
        let standbyArchive = t.root + "/standby-archive"
        try FileManager.default.createDirectory(atPath: standbyArchive, withIntermediateDirectories: false)
        Self.own(standbyArchive)
        try FileSystem.remove(standbyDir + "/recovery.signal")
        try Self.write("", standbyDir + "/standby.signal")
        let fetch = PrefetchSpool.stoppingOnError("\(TestEnvironment.waybackBinary) --config \(t.configPath) wal-fetch %f %p")
        try Self.write("restore_command = '\(fetch)'\narchive_mode = 'always'\narchive_command = 'cp %p \(standbyArchive)/%f'\n",
                       standbyDir + "/postgresql.auto.conf")
        try standby.start()
        let deadline = monotonicSeconds() + 60
        var archived = Set<String>()
        while monotonicSeconds() < deadline {
            archived = Set(try FileSystem.list(standbyArchive))
            if names.allSatisfy(archived.contains) { break }
            usleep(200_000)
        }
        #expect(names.allSatisfy(archived.contains), "the standby archived \(archived.sorted()), not all of \(names)")
        // A segment is archived once restored, before it is replayed: wait for the replay.
        var replayed = ""
        while monotonicSeconds() < deadline {
            replayed = try standby.psql("SELECT count(*) FROM pg_class WHERE relname = 's3'")
            if replayed == "1" { break }
            usleep(100_000)
        }
        let rows = replayed == "1" ? try standby.psql("SELECT count(*) FROM s3") : "no table s3"
        #expect(rows == "1000", "the standby replayed every segment")
    }
}
