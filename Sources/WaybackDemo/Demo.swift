import Foundation
import Logging
import WaybackArchive
import WaybackBackup
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackPostgres
import WaybackRestore
import WaybackS3
import WaybackStorage

/// `wayback demo`: the whole cycle on a throwaway cluster, with a short report.
public enum Demo {
    public struct Options: Sendable {
        public var workdir: String?
        public var keep: Bool
        public var scale: Int
        public var executable: String
        public var logger: Logger
        /// `WAYBACK_PG_BIN`, read at the edge (nil: the newest installed PostgreSQL).
        public var pgBinDirectory: String?
        public init(workdir: String?, keep: Bool, scale: Int, executable: String, logger: Logger, pgBinDirectory: String? = nil) {
            self.workdir = workdir; self.keep = keep; self.scale = scale; self.executable = executable; self.logger = logger
            self.pgBinDirectory = pgBinDirectory
        }
    }

    static func say(_ s: String) {
        print(s)
        fflush(nil)
    }

    /// Runs the demo; returns true when the restored data matched the source.
    public static func run(_ o: Options) async throws -> Bool {
        let workdir = FileSystem.absolute(o.workdir ?? "/var/tmp/wayback-demo-\(getpid())")
        if getuid() == 0 {
            // PostgreSQL refuses root and backups must run as the cluster's owner: run the demo as `postgres`.
            try FileSystem.makeDirectories(workdir, mode: 0o755)
            guard let pw = getpwnam("postgres") else {
                throw WaybackError(.cluster, "there is no 'postgres' OS user to run the demo cluster; install PostgreSQL or run as a non-root user")
            }
            try FileSystem.chown(workdir, uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid)
            var args = ["/usr/sbin/runuser", "-u", "postgres", "--", o.executable, "demo", "--workdir", workdir, "--scale", String(o.scale)]
            if o.keep { args.append("--keep") }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: args[0])
            p.arguments = Array(args.dropFirst())
            try p.run()
            p.waitUntilExit()
            if !o.keep, p.terminationStatus == 0 { try? FileSystem.removeTree(workdir) }
            return p.terminationStatus == 0
        }
        try FileSystem.makeDirectories(workdir, mode: 0o755)
        let socketDir = workdir + "/run"
        try FileSystem.makeDirectories(socketDir, mode: 0o755)
        let bin = LocalCluster.defaultBinDirectory(override: o.pgBinDirectory)
        let source = LocalCluster(binDirectory: bin, dataDirectory: workdir + "/source", socketDirectory: socketDir, port: 5432, osUser: currentUser())
        let restored = LocalCluster(binDirectory: bin, dataDirectory: workdir + "/restored", socketDirectory: socketDir, port: 5433, osUser: currentUser())
        let configPath = workdir + "/wayback.yaml"
        let waybackCommand = "\(o.executable) --config \(configPath)"
        var timings = [(String, Double)]()
        func timed<R>(_ label: String, _ body: () async throws -> R) async throws -> R {
            let t = monotonicSeconds()
            let r = try await body()
            timings.append((label, monotonicSeconds() - t))
            return r
        }
        say("Wayback demo in \(workdir)")
        defer {
            try? source.stop(mode: "immediate")
            try? restored.stop(mode: "immediate")
            if !o.keep { try? FileSystem.removeTree(workdir) } else { say("kept \(workdir) (clusters stopped)") }
        }

        try await timed("create cluster") {
            try source.initdb(checksums: true)
            try source.configure(["wal_level": "replica", "archive_mode": "on",
                                  "archive_command": "\(waybackCommand) wal-push %p", "max_wal_size": "1GB",
                                  "shared_buffers": "128MB"])
            try source.start()
        }
        let config = """
            cluster:
              name: demo
              pgdata: \(source.dataDirectory)
              connection: postgresql://postgres@/postgres?host=\(socketDir)&port=\(source.port)
            repositories:
              - name: local
                type: local
                path: \(workdir)/repository
            compression: { algorithm: zstd, level: 1 }
            parallelism: 2
            lock_path: \(workdir)/locks
            log_level: warning

            """
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(path: configPath, environment: [:])
        let events = EventLog.logging(.demo, cluster: c.cluster.name, to: o.logger)
        return try await HTTPClientPool.with { http in
            let repo = try c.repository(logger: o.logger, http: http, events: events)
            _ = try await ClusterSetup.initialize(repository: repo, cluster: c.cluster.name, pgdata: c.cluster.pgdata, connection: c.cluster.connection,
                                                  waybackCommand: waybackCommand, lockDirectory: c.lockPath, logger: o.logger)
            say("  cluster created and repository initialised")

            try await timed("load sample data (pgbench scale \(o.scale))") {
                try source.pgbench(["-i", "-q", "-s", String(o.scale)])
                try source.psql("CREATE TABLE demo_markers (id serial PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp()); INSERT INTO demo_markers (note) VALUES ('before backup');")
            }
            let manifest = try await timed("full backup") {
                try await PhysicalBackup.run(BackupConfiguration(repository: repo, cluster: c.cluster.name, pgdata: c.cluster.pgdata, connection: c.cluster.connection,
                                                             compression: c.compression, parallelism: c.parallelism, lockDirectory: c.lockPath,
                                                             events: events),
                                         logger: o.logger)
            }
            say("  backup \(manifest.id): \(Format.bytes(manifest.sizes.database)) -> \(Format.bytes(manifest.sizes.repository)) in the repository")

            try await timed("more writes after the backup") {
                try source.pgbench(["-n", "-c", "2", "-t", "500"])
                try source.psql("INSERT INTO demo_markers (note) SELECT 'after backup ' || g FROM generate_series(1, 100) g;")
            }
            let tables = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "demo_markers"]
            // The point in time to go back to, then an accident and more writes after it.
            let expected = try tables.map { try digest(source, $0) }
            let pointInTime = try source.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            usleep(20_000)
            try await timed("accident: DELETE, DROP TABLE, more writes") {
                try source.psql("DELETE FROM demo_markers;")
                try source.pgbench(["-n", "-c", "2", "-t", "300"])
                try source.psql("DROP TABLE pgbench_history;")
            }
            say("  point in time chosen: \(pointInTime), just before the accident")
            // Close the current WAL segment so that everything written is in the archive.
            let switched = try source.psql("SELECT pg_walfile_name(pg_switch_wal())")
            try await waitForArchive(switched, catalog: Catalog(repository: repo, cluster: c.cluster.name))

            var restoreConfig = RestoreConfiguration(
                repository: repo, cluster: c.cluster.name, targetDirectory: restored.dataDirectory,
                request: RecoveryRequest(target: .time(Format.parseInstant(pointInTime)!), action: .promote), archiveMode: .off,
                parallelism: c.parallelism, restoreCommand: PrefetchSpool.restoreCommand(fetch: "\(waybackCommand) wal-fetch %f %p"),
                events: events)
            restoreConfig.pgBinDirectory = bin
            restoreConfig.promoteAfterCheck = true  // as `perform` writes it: the plan shown is the one restored
            let plan = try await Restore.plan(restoreConfig, logger: o.logger)
            say("")
            say("Restore plan (wayback restore --to-time \(pointInTime) --dry-run):")
            for line in plan.text.split(separator: "\n") { say("  \(line)") }
            say("")
            // What `wayback restore --start` does: the files, then the copy started and checked.
            let outcome = try await Restore.perform(restoreConfig, start: .init(port: restored.port, connection: restored.connection), logger: o.logger)
            let report = outcome.report, started = outcome.started!
            timings.append(("restore to the point in time", report.seconds))
            timings.append(("start restored copy, replay WAL, promote", started.recoverySeconds))
            say("  restored \(report.files) files into \(restored.dataDirectory)")
            say("  \(started.stopMessage ?? "recovery ended")")
            let restoredAtSocket = LocalCluster(dataDirectory: restored.dataDirectory, socketDirectory: started.socketDirectory,
                                                port: restored.port, osUser: restored.osUser)
            let actual = try tables.map { try digest(restoredAtSocket, $0) }
            var ok = true
            say("")
            say("Data check (restored vs source):")
            for (i, t) in tables.enumerated() {
                let same = expected[i] == actual[i]
                ok = ok && same
                say("  \(same ? "OK  " : "DIFF") \(t)")
            }
            say("")
            say("Timings:")
            for (label, s) in timings { say("  \(label.padding(toLength: 44, withPad: " ", startingAt: 0)) \(Format.seconds(s))") }
            say("")
            say(ok ? "PASS: the restored cluster matches the source at \(pointInTime)" : "FAIL: the restored cluster differs from the source at \(pointInTime)")
            return ok
        }
    }

    static func currentUser() -> String {
        getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "postgres"
    }

    /// An order-independent digest of a table's rows.
    static func digest(_ cluster: LocalCluster, _ table: String) throws -> String {
        try cluster.psql("SELECT count(*) || ':' || coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') FROM \(table) t")
    }

    static func waitForArchive(_ segment: String, catalog: Catalog) async throws {
        guard let name = WALFileName(segment) else { return }
        for _ in 0..<600 {
            if try await catalog.repository.driver.exists(catalog.walKey(name)) { return }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        throw WaybackError(.archiveTimeout, "WAL file \(segment) did not reach the archive within 60s")
    }
}
