import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

@Suite("bad input gets a clear error and a documented exit status", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct BadInputTests {
    typealias Code = WaybackError.Code

    static func run(_ args: [String], asUser: String? = TestEnvironment.osUser) throws -> Command.Result {
        try TestEnvironment.requirePostgres()
        return try Command.run([TestEnvironment.waybackBinary] + args, asUser: asUser, check: false)
    }

    static func writeConfig(_ text: String) throws -> String {
        let dir = try TestEnvironment.makeTemporaryDirectory("cfg")
        let path = dir + "/wayback.yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        _ = chmod(path, 0o644)
        return path
    }

    static func removeConfig(_ path: String) { try? FileSystem.removeTree(FileSystem.parentPath(path)) }

    @Test("missing configuration file, unknown key, wrong type")
    func configErrors() throws {
        let missing = try Self.run(["--config", "/nonexistent/wayback.yaml", "status"])
        #expect(missing.status == Code.config.rawValue)
        #expect(missing.stderr.contains("/nonexistent/wayback.yaml does not exist"))

        let unknown = try Self.writeConfig("cluster:\n  name: main\n  pgdata: /tmp/x\n  colour: blue\nrepositories:\n  - path: /tmp/r\n")
        defer { Self.removeConfig(unknown) }
        let r = try Self.run(["--config", unknown, "status"])
        #expect(r.status == Code.config.rawValue)
        #expect(r.stderr.contains("unknown key 'cluster.colour'"))
        #expect(r.stderr.contains(":4"), "names the line: \(r.stderr)")

        let wrongType = try Self.writeConfig("cluster:\n  name: main\n  pgdata: /tmp/x\nrepositories:\n  - path: /tmp/r\nparallelism: many\n")
        defer { Self.removeConfig(wrongType) }
        let w = try Self.run(["--config", wrongType, "status"])
        #expect(w.status == Code.config.rawValue)
        #expect(w.stderr.contains("'parallelism' must be a whole number"))
    }

    @Test("unreachable database: exit 4, and the password is never printed")
    func unreachableDatabase() throws {
        let dir = try TestEnvironment.makeTemporaryDirectory("unreach")
        defer { try? FileSystem.removeTree(dir) }
        let cfg = try Self.writeConfig("""
            cluster:
              name: main
              pgdata: \(dir)
              connection: postgresql://postgres:s3cretPassw0rd@/postgres?host=\(dir)&port=1
            repositories:
              - path: \(dir)/repo
            lock_path: \(dir)/locks
            """)
        defer { Self.removeConfig(cfg) }
        let r = try Self.run(["--config", cfg, "init"])
        #expect(r.status == Code.connection.rawValue, "\(r.stderr)")
        #expect(r.stderr.contains("cannot connect to PostgreSQL"))
        #expect(!r.stderr.contains("s3cretPassw0rd"))
        #expect(!r.stdout.contains("s3cretPassw0rd"))
    }

    @Test("a running server that refuses: a database or role that does not exist is exit 4 with its own fix, not 'check that the server is running'")
    func serverRefuses() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        let url = "postgresql://postgres@/postgres?host=\(t.root)&port=\(t.cluster.port)"
        let noDatabase = try t.configVariant("nodb.yaml", replace: [(url, url.replacingOccurrences(of: "@/postgres?", with: "@/nosuch?"))])
        let db = try t.wayback(["init"], config: noDatabase)
        #expect(db.status == Code.connection.rawValue && db.stderr.contains("\"nosuch\" does not exist")
                && db.stderr.contains("name a database that exists") && !db.stderr.contains("server is running"), "\(db.stderr)")
        let noRole = try t.configVariant("norole.yaml", replace: [(url, url.replacingOccurrences(of: "postgres@", with: "nobody@"))])
        let role = try t.wayback(["init"], config: noRole)
        #expect(role.status == Code.connection.rawValue && role.stderr.contains("refused the login") && !role.stderr.contains("server is running"),
                "\(role.stderr)")
    }

    @Test("init: an archive_command naming wayback and its configuration through symbolic links is done; another command is still to do")
    func archiveCommandThroughLinks() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try FileSystem.symlink(target: TestEnvironment.waybackBinary, at: t.root + "/wayback-link")
        try FileSystem.symlink(target: t.configPath, at: t.root + "/config-link.yaml")
        for (command, done) in [("\(t.root)/wayback-link --config \(t.root)/config-link.yaml wal-push %p", true), ("/bin/true", false)] {
            _ = try t.psql("ALTER SYSTEM SET archive_command = '\(command)'; SELECT pg_reload_conf()")
            try DaemonTests.waitFor("the reload", timeout: 10) { try t.psql("SHOW archive_command") == command }
            let out = try t.waybackOK(["init"])
            #expect(out.contains("Still to do") != done && out.contains("  - archive_command = ") != done, "\(command): \(out)")
        }
    }

    @Test("a repository of another cluster is refused by init, backup and wal-push")
    func repositoryOfAnotherCluster() throws {
        let a = try TestCluster()
        defer { a.cleanup() }
        try a.waybackOK(["init"])
        #expect(try a.waybackOK(["init"]).contains("already initialised"), "init twice is harmless")
        let b = try TestCluster(repositoryPath: a.repositoryPath)
        defer { b.cleanup() }
        let r = try b.wayback(["init"])
        #expect(r.status == Code.repository.rawValue)
        #expect(r.stderr.contains("system identifier"))
        let backup = try b.wayback(["backup"])
        #expect(backup.status == Code.repository.rawValue)
        // A segment of cluster b pushed into cluster a's folder.
        let seg = try b.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        let push = try b.wayback(["wal-push", b.cluster.dataDirectory + "/pg_wal/" + seg])
        #expect(push.status == Code.repository.rawValue, "\(push.stderr)")
    }

    @Test("wal-push: same content again succeeds, different content is refused; wal-fetch of a missing file exits 1")
    func walPushIdempotence() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.switchAndWaitForArchive()
        let seg = try t.psql("SELECT last_archived_wal FROM pg_stat_archiver")
        let stash = t.root + "/stash"
        try FileManager.default.createDirectory(atPath: stash, withIntermediateDirectories: true)
        if getuid() == 0, let pw = getpwnam("postgres") { chown(stash, pw.pointee.pw_uid, pw.pointee.pw_gid) }

        // Fetch it back, push the same bytes again: success.
        try t.waybackOK(["wal-fetch", seg, stash + "/" + seg])
        #expect(try t.wayback(["wal-push", stash + "/" + seg]).status == 0)

        // Change one byte past the header: refused, and the archived copy is unchanged.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: stash + "/" + seg)))
        bytes[100_000] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: stash + "/" + seg))
        let r = try t.wayback(["wal-push", stash + "/" + seg])
        #expect(r.status == Code.conflict.rawValue)
        #expect(r.stderr.contains("different content"))
        try t.waybackOK(["wal-fetch", seg, stash + "/again"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: stash + "/again")) != Data(bytes))

        let missing = try t.wayback(["wal-fetch", "0000000100000000000000FE", stash + "/none"])
        #expect(missing.status == Code.notFound.rawValue)
        #expect(!FileManager.default.fileExists(atPath: stash + "/none"))
    }

    @Test("wal-fetch prefetch: segments are linked into pg_wal and marked archived up to the target's last; a hit (shell fast path or wal-fetch) exits 1 for PostgreSQL to read pg_wal; a spool of another boot is not used")
    func prefetchHandsOverInPGWAL() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        var names = [String]()
        for _ in 0..<3 {
            _ = try t.psql("CREATE TABLE IF NOT EXISTS noise(x int); INSERT INTO noise SELECT generate_series(1, 1000)")
            try t.switchAndWaitForArchive()
            names.append(try t.psql("SELECT last_archived_wal FROM pg_stat_archiver"))
        }
        // A pg_wal as a restore leaves it, owned by the cluster's user.
        let dataDir = t.root + "/restored", pgWAL = dataDir + "/pg_wal", spool = pgWAL + "/" + PrefetchSpool.directoryName
        let user = t.cluster.osUser
        func own(_ paths: [String]) {
            if getuid() == 0, let pw = getpwnam(user) { for p in paths { chown(p, pw.pointee.pw_uid, pw.pointee.pw_gid) } }
        }
        func write(_ text: String, _ path: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: path)); own([path]) }
        // No spool, no prefetcher: it was removed at the end of recovery, and is not made again.
        try t.waybackOK(["wal-prefetch", names[0], "8", spool])
        #expect(!FileManager.default.fileExists(atPath: spool))
        for d in [pgWAL + "/archive_status", spool] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        own([dataDir, pgWAL, pgWAL + "/archive_status", spool])
        // The spool as a restore that archives nothing makes it (this boot, hand-over in pg_wal), with
        // the target's last segment.
        try write(PrefetchSpool.bootID() + "\n", spool + "/" + PrefetchSpool.bootFile)
        try write("", spool + "/" + PrefetchSpool.handOverFile)
        try write(names[1] + "\n", spool + "/" + PrefetchSpool.lastFile)
        // The prefetcher from the first segment: it fetches up to the last one the target needs, and stops there.
        try t.waybackOK(["wal-prefetch", names[0], "8", spool])
        for name in names.prefix(2) {
            let inSpool = try #require(try FileSystem.status(spool + "/" + name))
            let inPGWAL = try #require(try FileSystem.status(pgWAL + "/" + name), "\(name) was not offered in pg_wal")
            #expect(inSpool.inode == inPGWAL.inode && inSpool.size == 16 << 20)
            #expect(FileManager.default.fileExists(atPath: pgWAL + "/archive_status/\(name).done"))
        }
        #expect(!FileManager.default.fileExists(atPath: spool + "/" + names[2]), "fetched beyond the target's last segment")
        try t.waybackOK(["wal-fetch", names[1], t.root + "/expected"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: pgWAL + "/" + names[1])) == Data(contentsOf: URL(fileURLWithPath: t.root + "/expected")))

        // restore_command as a restore writes it, run by the shell in the data directory as PostgreSQL does.
        let fetch = "\(TestEnvironment.waybackBinary) --config \(t.configPath) wal-fetch %f %p"
        func restoreCommand(_ name: String) throws -> Command.Result {
            let command = PrefetchSpool.restoreCommand(fetch: fetch).replacingOccurrences(of: "%f", with: name)
                .replacingOccurrences(of: "%p", with: "pg_wal/RECOVERYXLOG")
            return try Command.run(["/bin/sh", "-c", "cd '\(dataDir)' && { \(command); }"], asUser: user, check: false)
        }
        // The fast path: no process; exit 1, recovery's position recorded, the segment left in pg_wal.
        let fast = try restoreCommand(names[1])
        #expect(fast.status == 1 && fast.stderr.isEmpty, "\(fast.status) \(fast.stderr)")
        #expect(!FileManager.default.fileExists(atPath: pgWAL + "/RECOVERYXLOG"))
        #expect(try String(contentsOfFile: spool + "/.position", encoding: .utf8).hasPrefix(names[1]))
        // wal-fetch's own hand-over: exit 1, nothing on stderr, the spool's name dropped.
        let hit = try t.wayback(["wal-fetch", names[0], pgWAL + "/RECOVERYXLOG"])
        #expect(hit.status == 1 && hit.stderr.isEmpty, "\(hit.status) \(hit.stderr)")
        #expect(!FileManager.default.fileExists(atPath: pgWAL + "/RECOVERYXLOG"))
        #expect(!FileManager.default.fileExists(atPath: spool + "/" + names[0]))

        // A spool of another boot: its files may not be whole; neither path uses it, the segment comes through %p.
        try write("another-boot\n", spool + "/" + PrefetchSpool.bootFile)
        let other = try restoreCommand(names[1])
        #expect(other.status == 0, "\(other.status) \(other.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: pgWAL + "/RECOVERYXLOG")) == Data(contentsOf: URL(fileURLWithPath: t.root + "/expected")))
        #expect(try String(contentsOfFile: spool + "/" + PrefetchSpool.bootFile, encoding: .utf8).hasPrefix(PrefetchSpool.bootID()), "the old spool was not replaced")
        try FileSystem.remove(pgWAL + "/RECOVERYXLOG")

        // Another file under the segment's name in pg_wal (not the spool's): delivered through %p.
        // (wal-fetch started a prefetcher on the new spool; wait until it has finished.)
        let lock = open(spool + "/.lock", O_RDWR | O_CLOEXEC)
        if lock >= 0 { flock(lock, LOCK_EX); close(lock) }
        try FileSystem.remove(pgWAL + "/" + names[2])
        try write("stale", pgWAL + "/" + names[2])
        try t.waybackOK(["wal-fetch", names[2], pgWAL + "/RECOVERYXLOG"])
        try t.waybackOK(["wal-fetch", names[2], t.root + "/expected2"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: pgWAL + "/RECOVERYXLOG")) == Data(contentsOf: URL(fileURLWithPath: t.root + "/expected2")))
        // A real error (here an unreadable configuration) stops recovery: status 126, not "not in the archive".
        let broken = PrefetchSpool.restoreCommand(fetch: "\(TestEnvironment.waybackBinary) --config /nonexistent.yaml wal-fetch %f %p")
            .replacingOccurrences(of: "%f", with: "000000010000000000000077").replacingOccurrences(of: "%p", with: "pg_wal/RECOVERYXLOG")
        let failed = try Command.run(["/bin/sh", "-c", "cd '\(dataDir)' && { \(broken); }"], asUser: user, check: false)
        #expect(failed.status == 126 && failed.stderr.contains("nonexistent"), "\(failed.status) \(failed.stderr)")
        // A timeline history file asked for into pg_wal (the end of recovery): pg_wal is synced, and a missing one is reported as such.
        let history = try t.wayback(["wal-fetch", "00000009.history", pgWAL + "/RECOVERYHISTORY"])
        #expect(history.status == Code.notFound.rawValue, "\(history.status) \(history.stderr)")
    }

    @Test("corrupt object: restore refuses naming the file and leaves no target; non-empty target is refused")
    func corruptObjectAndNonEmptyTarget() async throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.psql("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g;")
        let id = try t.waybackOK(["backup"]).trimmingCharacters(in: .whitespacesAndNewlines)

        // No target: a usage error that says what to give; --dry-run alone prints the plan.
        let none = try t.wayback(["restore"])
        #expect(none.status == Code.usage.rawValue && none.stderr.contains("restore needs --target-dir"), "\(none.stderr)")
        let planOnly = try t.wayback(["restore", "--dry-run"])
        #expect(planOnly.status == 0 && planOnly.stdout.contains("the restore would succeed"), "\(planOnly.stdout) \(planOnly.stderr)")

        // Non-empty target.
        let busy = t.root + "/busy"
        try FileManager.default.createDirectory(atPath: busy, withIntermediateDirectories: true)
        try "keep me".write(toFile: busy + "/precious", atomically: true, encoding: .utf8)
        let r1 = try t.wayback(["restore", "--target-dir", busy])
        #expect(r1.status == Code.conflict.rawValue)
        #expect(try String(contentsOfFile: busy + "/precious", encoding: .utf8) == "keep me")

        // Running cluster's directory.
        let r2 = try t.wayback(["restore", "--target-dir", t.cluster.dataDirectory])
        #expect(r2.status == Code.conflict.rawValue)

        // Flip a byte inside the frame that holds the table's data.
        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        let manifest = try await catalog.manifest(try #require(BackupID(id)))
        let relPath = try t.psql("SELECT pg_relation_filepath('big')")
        let file = try #require(manifest.files.first { $0.path == relPath })
        let chunk = file.chunks[0]
        let packPath = t.repositoryPath + "/main/backups/\(id)/" + manifest.objects[chunk.object].name
        let handle = try #require(FileHandle(forUpdatingAtPath: packPath))
        let at = UInt64(chunk.offset) + UInt64(chunk.length) - 10
        try handle.seek(toOffset: at)
        let old = try #require(try handle.read(upToCount: 1))
        try handle.seek(toOffset: at)
        try handle.write(contentsOf: Data([old[0] ^ 0x55]))
        try handle.close()

        let target = t.root + "/restored"
        let r3 = try t.wayback(["restore", "--target-dir", target])
        #expect(r3.status == Code.corrupt.rawValue, "\(r3.stderr)")
        #expect(r3.stderr.contains(relPath), "names the damaged file: \(r3.stderr)")
        #expect(!FileManager.default.fileExists(atPath: target))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: t.root).filter { $0.contains("wayback-restore") }
        #expect(leftovers.isEmpty)
    }

    @Test("backup as root is refused; a second command on a locked cluster is refused naming the holder")
    func rootAndLock() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        if getuid() == 0 {
            let r = try t.wayback(["backup"], asRoot: true)
            #expect(r.status == Code.cluster.rawValue)
            #expect(r.stderr.contains("must not run as root"))
        }
        let sysid = try #require(UInt64(try t.psql("SELECT system_identifier FROM pg_control_system()")))
        let repository = Repository(name: "local", driver: LocalStorage(root: t.repositoryPath))
        // Another cluster also named 'main' (another system identifier) holding its lock on this
        // host does not block this one.
        let other = try RepositoryLock.acquire(directory: t.root + "/locks", cluster: "main", systemIdentifier: sysid + 1,
                                               repository: repository, command: "backup")
        let unblocked = try t.wayback(["backup"])
        other.release()
        #expect(unblocked.status == 0, "a lock of another cluster named main blocked this one: \(unblocked.stderr)")
        let lock = try RepositoryLock.acquire(directory: t.root + "/locks", cluster: "main", systemIdentifier: sysid,
                                              repository: repository, command: "backup")
        let r = try t.wayback(["backup"])
        lock.release()
        #expect(r.status == Code.locked.rawValue, "\(r.status) \(r.stderr)")
        #expect(r.stderr.contains("'wayback backup'"))
        #expect(try t.wayback(["backup"]).status == 0)
    }
}
