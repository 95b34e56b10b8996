import Foundation
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// The test environment: where PostgreSQL and the wayback binary are.
public enum TestEnvironment {
    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// PostgreSQL's bin directory: `WAYBACK_PG_BIN`, else the newest installed.
    public static var pgBin: String { LocalCluster.defaultBinDirectory(override: ProcessInfo.processInfo.environment["WAYBACK_PG_BIN"]) }

    public static var postgresAvailable: Bool {
        FileManager.default.isExecutableFile(atPath: TestEnvironment.pgBin + "/initdb")
    }

    /// Integration tests run when PostgreSQL is installed, and always in CI (where a missing
    /// PostgreSQL is then a failure, never a silent skip).
    public static var runIntegration: Bool { postgresAvailable || isCI }

    /// The OS user that runs PostgreSQL and wayback in tests.
    public static var osUser: String {
        getuid() == 0 ? "postgres" : (getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "postgres")
    }

    /// The wayback executable: TEST_WAYBACK_BIN, or .build/debug/wayback of this package.
    public static var waybackBinary: String {
        if let p = ProcessInfo.processInfo.environment["TEST_WAYBACK_BIN"], !p.isEmpty { return p }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/wayback").path
    }

    public static func requirePostgres() throws {
        guard postgresAvailable else {
            throw WaybackError(.cluster, "PostgreSQL binaries not found in \(TestEnvironment.pgBin); run scripts/setup")
        }
        guard FileManager.default.isExecutableFile(atPath: waybackBinary) else {
            throw WaybackError(.cluster, "wayback binary not found at \(waybackBinary); run 'swift build' or scripts/test")
        }
    }

    /// Gives `path` to the test OS user with `mode`.
    public static func giveToTestUser(_ path: String, mode: mode_t) throws {
        guard chmod(path, mode) == 0 else { throw WaybackError(.io, "chmod \(path) failed") }
        if getuid() == 0, let pw = getpwnam(osUser) { _ = chown(path, pw.pointee.pw_uid, pw.pointee.pw_gid) }
    }

    /// A new directory under /var/tmp owned by the test OS user, named after this process
    /// (`wayback-<label>-p<pid>-XXXXXX`, see `sweepStale`).
    public static func makeTemporaryDirectory(_ label: String) throws -> String {
        _ = swept
        var template = Array("/var/tmp/wayback-\(label)-p\(getpid())-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw WaybackError(.io, "mkdtemp failed") }
        let path = String(cString: p)
        _ = chmod(path, 0o755)
        if getuid() == 0, let pw = getpwnam(osUser) { _ = chown(path, pw.pointee.pw_uid, pw.pointee.pw_gid) }
        return path
    }

    /// The first new directory of a test process sweeps what killed runs left (not with
    /// `TEST_WAYBACK_KEEP`: what a run kept stays until a run without it).
    private static let swept: [String] = ProcessInfo.processInfo.environment["TEST_WAYBACK_KEEP"] == nil ? sweepStale() : []

    /// Removes the directories `makeTemporaryDirectory` made for test processes that are gone (a run
    /// stopped by a timeout or a signal leaves its throwaway clusters running, and they hold memory
    /// and ports on the machine): every cluster in them (a `postmaster.pid` up to three levels
    /// down) is stopped first. Returns the directories removed. A directory whose process still
    /// runs, or whose name holds no process number, is left alone.
    @discardableResult
    public static func sweepStale(in parent: String = "/var/tmp") -> [String] {
        var removed = [String]()
        for name in (try? FileSystem.list(parent)) ?? [] where name.hasPrefix("wayback-") {
            let parts = name.split(separator: "-")
            guard parts.count >= 4, parts.last?.count == 6, parts[parts.count - 2].first == "p", let pid = Int32(parts[parts.count - 2].dropFirst()), pid > 0,
                  kill(pid, 0) != 0, errno == ESRCH else { continue }
            let dir = parent + "/" + name
            for data in postmasterDirectories(dir, depth: 3) {
                try? LocalCluster(binDirectory: pgBin, dataDirectory: data, socketDirectory: dir, port: 0, osUser: osUser).stop(mode: "immediate")
            }
            if (try? FileSystem.removeTree(dir)) != nil { removed.append(dir) }
        }
        return removed
    }

    /// The directories under `dir` (itself included, `depth` levels down, links not followed)
    /// that hold a `postmaster.pid`.
    static func postmasterDirectories(_ dir: String, depth: Int) -> [String] {
        guard let status = try? FileSystem.status(dir, followLinks: false), status.isDirectory else { return [] }
        if (try? FileSystem.status(dir + "/postmaster.pid", followLinks: false)) != nil { return [dir] }
        guard depth > 0 else { return [] }
        return ((try? FileSystem.list(dir)) ?? []).flatMap { postmasterDirectories(dir + "/" + $0, depth: depth - 1) }
    }

    /// Writes an executable script (mode 0755). The descriptor is opened with `O_CLOEXEC`:
    /// a child that another test thread spawns while the file is open must not inherit it for
    /// its whole life, or running the script fails with "Text file busy" (ETXTBSY).
    public static func writeExecutable(_ text: String, to path: String) throws {
        let file = try PosixFile.create(path, mode: 0o755)
        try Array(text.utf8).withUnsafeBytes { try file.write($0) }
        try file.close()
        guard chmod(path, 0o755) == 0 else { throw WaybackError(.io, "cannot make \(path) executable") }
    }
}

/// A throwaway PostgreSQL cluster with a Wayback configuration and repository, in its own
/// temporary directory, listening on a unix socket only. `cleanup()` stops it and removes everything.
public final class TestCluster: @unchecked Sendable {
    public let root: String
    public let cluster: LocalCluster
    public let configPath: String
    public let repositoryPath: String
    public let name: String
    private static let portLock = NSLock()
    nonisolated(unsafe) private static var nextPort = 15432

    /// - Parameters:
    ///   - repositoryPath: share a repository between clusters (default: one of its own).
    ///   - repositories: the `repositories:` entries (YAML list items); default: one local repository.
    public init(name: String = "main", checksums: Bool = true, repositoryPath: String? = nil,
                settings: [String: String] = [:], extraConfig: String = "", repositories: String? = nil,
                compression: String = "zstd") throws {
        try TestEnvironment.requirePostgres()
        self.name = name
        root = try TestEnvironment.makeTemporaryDirectory("test")
        let port: Int = Self.portLock.withLock { defer { Self.nextPort += 1 }; return Self.nextPort }
        cluster = LocalCluster(binDirectory: TestEnvironment.pgBin, dataDirectory: root + "/pgdata", socketDirectory: root, port: port, osUser: TestEnvironment.osUser)
        configPath = root + "/wayback.yaml"
        self.repositoryPath = repositoryPath ?? root + "/repository"
        let config = """
            cluster:
              name: \(name)
              pgdata: \(cluster.dataDirectory)
              connection: postgresql://postgres@/postgres?host=\(root)&port=\(port)
            repositories:
            \(repositories ?? "  - name: local\n    type: local\n    path: \(self.repositoryPath)")
            compression:
              algorithm: \(compression)
              level: 1
            parallelism: 2
            lock_path: \(root)/locks
            log_level: warning
            backup:
              archive_wait_seconds: 60
            \(extraConfig)
            """
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        // As docs/configuration.md asks: the PostgreSQL OS user's, readable by it alone.
        try TestEnvironment.giveToTestUser(configPath, mode: 0o600)
        try cluster.initdb(checksums: checksums)
        var conf = ["wal_level": "replica", "archive_mode": "on", "max_wal_senders": "2", "fsync": "off",
                    "archive_command": "\(TestEnvironment.waybackBinary) --config \(configPath) wal-push %p"]
        for (k, v) in settings { conf[k] = v }
        try cluster.configure(conf)
        try cluster.start()
    }

    /// Runs the wayback binary as the cluster's OS user (or as root with `asRoot`), with this
    /// cluster's configuration (or `config`).
    @discardableResult
    public func wayback(_ args: [String], asRoot: Bool = false, environment: [String: String] = [:], config: String? = nil) throws -> Command.Result {
        try Command.run([TestEnvironment.waybackBinary, "--config", config ?? configPath] + args,
                        asUser: asRoot ? nil : cluster.osUser, environment: environment, check: false)
    }

    /// A second configuration file next to this cluster's: its text with each `(old, new)` of
    /// `replace` applied (each must occur), owned by the cluster's OS user, mode 0600.
    public func configVariant(_ name: String, replace: [(String, String)]) throws -> String {
        var text = try String(contentsOfFile: configPath, encoding: .utf8)
        for (a, b) in replace {
            guard text.contains(a) else { throw WaybackError(.internal, "the test configuration has no '\(a)'") }
            text = text.replacingOccurrences(of: a, with: b)
        }
        let path = root + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        try TestEnvironment.giveToTestUser(path, mode: 0o600)
        return path
    }

    /// Runs wayback and fails with its stderr unless it exits 0.
    @discardableResult
    public func waybackOK(_ args: [String]) throws -> String {
        let r = try wayback(args)
        guard r.status == 0 else { throw WaybackError(.internal, "wayback \(args.joined(separator: " ")) exited \(r.status): \(r.stderr)") }
        return r.stdout
    }

    public func psql(_ sql: String, database: String = "postgres") throws -> String { try cluster.psql(sql, database: database) }

    /// Starts pgbench (the built-in script) on a thread of its own and returns once it has
    /// committed a transaction, so that what the caller runs next runs under load. Not a task:
    /// the suites running alongside may hold Swift's cooperative threads, and a load in a task
    /// could then start only after the work it should overlap.
    public func startPgbench(_ args: [String], timeout: Double = 60) throws -> BackgroundLoad {
        let before = Int(try psql("SELECT count(*) FROM pgbench_history")) ?? 0
        let load = BackgroundLoad { [cluster] in try cluster.pgbench(args) }
        let deadline = monotonicSeconds() + timeout
        while (Int(try psql("SELECT count(*) FROM pgbench_history")) ?? 0) <= before {
            if load.isDone { try load.wait(); throw WaybackError(.internal, "pgbench ended before it committed anything") }
            guard monotonicSeconds() < deadline else { throw WaybackError(.internal, "pgbench committed nothing within \(timeout) s") }
            usleep(20_000)
        }
        return load
    }

    /// Transactions pgbench's built-in script committed between two times (RFC 3339, as
    /// `backup --json` prints `startTime` and `stopTime`), counted from `pgbench_history.mtime`:
    /// proof that a load ran while a backup did, not before or after it.
    public func pgbenchCommits(from start: String, to stop: String) throws -> Int {
        func local(_ t: String) -> String { "('\(t)'::timestamptz AT TIME ZONE current_setting('TimeZone'))" }
        return Int(try psql("SELECT count(*) FROM pgbench_history WHERE mtime BETWEEN \(local(start)) AND \(local(stop))")) ?? 0
    }

    /// Forces a segment switch and waits until that segment is archived.
    public func switchAndWaitForArchive(timeout: Double = 60) throws {
        let seg = try psql("SELECT pg_walfile_name(pg_switch_wal())")
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            let last = try psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if last >= seg { return }
            usleep(100_000)
        }
        throw WaybackError(.archiveTimeout, "segment \(seg) was not archived within \(timeout)s")
    }

    /// A restored copy of this cluster, to be started on its own port.
    public func restoredCluster(at dir: String) -> LocalCluster {
        let port: Int = Self.portLock.withLock { defer { Self.nextPort += 1 }; return Self.nextPort }
        return LocalCluster(binDirectory: cluster.binDirectory, dataDirectory: dir, socketDirectory: root, port: port, osUser: cluster.osUser)
    }

    /// Starts a restored directory (archiving off, so a test copy never writes to the archive)
    /// and waits until recovery has ended and the server is promoted.
    public func startRestored(_ restored: LocalCluster, timeout: Double = 120) throws {
        try restored.start(extraOptions: "-c archive_mode=off")
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            if (try? restored.psql("SELECT pg_is_in_recovery()")) == "f" { return }
            usleep(100_000)
        }
        throw WaybackError(.restoreTarget, "restored cluster in \(restored.dataDirectory) did not leave recovery")
    }

    /// An order-independent digest of a table's content (row count and hash of all rows).
    public static func tableDigest(_ cluster: LocalCluster, _ table: String, database: String = "postgres") throws -> String {
        try cluster.psql("SELECT count(*) || ':' || coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') FROM \(table) t", database: database)
    }

    public func cleanup(extra: [LocalCluster] = []) {
        for c in extra { try? c.stop(mode: "immediate") }
        try? cluster.stop(mode: "immediate")
        if ProcessInfo.processInfo.environment["TEST_WAYBACK_KEEP"] == nil { try? FileSystem.removeTree(root) }
    }
}

/// Work on a thread of its own, started at once whatever Swift's cooperative threads are doing.
public final class BackgroundLoad: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let state = NSLock()
    private var result: Result<Void, any Error>?

    public init(_ body: @escaping @Sendable () throws -> Void) {
        Thread.detachNewThread { [self] in
            let r = Result { try body() }
            state.lock(); result = r; state.unlock()
            done.signal()
        }
    }

    public var isDone: Bool { state.lock(); defer { state.unlock() }; return result != nil }

    /// Waits for the end; rethrows its error.
    public func wait() throws {
        done.wait()
        done.signal()
        state.lock(); defer { state.unlock() }
        try result?.get()
    }
}
