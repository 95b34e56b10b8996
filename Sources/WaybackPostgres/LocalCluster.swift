import Foundation
import WaybackCore

/// Control of a PostgreSQL cluster on this host through the installed binaries (initdb, pg_ctl,
/// psql): used by `wayback demo`, restore drills and the tests. Clusters listen on a unix socket in
/// `socketDirectory` only, so throwaway clusters never clash on TCP ports. When Wayback runs as
/// root, every PostgreSQL program runs as `osUser` (PostgreSQL refuses to run as root).
public struct LocalCluster: Sendable {
    public var binDirectory: String
    public var dataDirectory: String
    public var socketDirectory: String
    public var port: Int
    public var osUser: String

    public init(binDirectory: String = LocalCluster.defaultBinDirectory(), dataDirectory: String, socketDirectory: String,
                port: Int, osUser: String = "postgres") {
        self.binDirectory = binDirectory
        self.dataDirectory = dataDirectory
        self.socketDirectory = socketDirectory
        self.port = port
        self.osUser = osUser
    }

    /// `override` (`WAYBACK_PG_BIN`, read at the edge) when given, else the newest
    /// /usr/lib/postgresql/N/bin, else /usr/bin.
    public static func defaultBinDirectory(override: String? = nil) -> String {
        if let override, !override.isEmpty { return override }
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted()
        if let v = versions.last { return "\(base)/\(v)/bin" }
        return "/usr/bin"
    }

    /// The binaries that run the data directory `path`: those of its `PG_VERSION` (a PostgreSQL
    /// 15 directory needs PostgreSQL 15's server, whatever else is installed). `.cluster` naming
    /// the package when that version is not installed. `override` (`WAYBACK_PG_BIN`) wins.
    public static func binDirectory(forDataDirectory path: String, override: String? = nil) throws -> String {
        if let override, !override.isEmpty { return override }
        guard let major = DataDirectory.majorVersion(path), Int(major) != nil else {
            throw WaybackError(.cluster, "\(path) has no PG_VERSION; it is not a PostgreSQL data directory")
        }
        let dir = "/usr/lib/postgresql/\(major)/bin"
        guard FileManager.default.isExecutableFile(atPath: dir + "/pg_ctl") else {
            throw WaybackError(.cluster, "\(path) is a PostgreSQL \(major) data directory, but PostgreSQL \(major) is not installed (no \(dir)/pg_ctl); install postgresql-\(major), or set WAYBACK_PG_BIN to its bin directory")
        }
        return dir
    }

    public var connection: ConnectionSettings {
        ConnectionSettings(host: socketDirectory, port: port, user: "postgres", password: nil, database: "postgres", sslMode: .disable)
    }

    func bin(_ name: String) -> String { binDirectory + "/" + name }

    @discardableResult
    public func run(_ args: [String], check: Bool = true, input: String? = nil, captureOutput: Bool = true) throws -> Command.Result {
        try Command.run(args, asUser: osUser, input: input, check: check, captureOutput: captureOutput)
    }

    /// `run`, from async code (see `Command.execute`).
    @discardableResult
    public func execute(_ args: [String], check: Bool = true, input: String? = nil, captureOutput: Bool = true) async throws -> Command.Result {
        try await Command.execute(args, asUser: osUser, input: input, check: check, captureOutput: captureOutput)
    }

    /// initdb with data checksums (unless disabled); trust authentication on the socket only.
    public func initdb(checksums: Bool = true) throws {
        var args = [bin("initdb"), "-D", dataDirectory, "-U", "postgres", "-A", "trust", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"]
        if checksums { args.append("-k") }
        try run(args)
    }

    /// Appends settings to postgresql.conf.
    public func configure(_ settings: [String: String]) throws {
        var text = "\n# added by wayback\n"
        for (k, v) in settings.sorted(by: { $0.key < $1.key }) { text += "\(k) = '\(v.replacingOccurrences(of: "'", with: "''"))'\n" }
        let path = dataDirectory + "/postgresql.conf"
        guard let h = FileHandle(forWritingAtPath: path) else { throw WaybackError(.io, "cannot open \(path)") }
        h.seekToEndOfFile()
        h.write(Data(text.utf8))
        try h.close()
    }

    public func start(timeoutSeconds: Int = 120, extraOptions: String = "") throws {
        let opts = "-c listen_addresses='' -c unix_socket_directories='\(socketDirectory)' -p \(port) \(extraOptions)"
        let r = try run([bin("pg_ctl"), "-D", dataDirectory, "-l", dataDirectory + ".log", "-w", "-t", "\(timeoutSeconds)", "-o", opts, "start"], check: false, captureOutput: false)
        if r.status != 0 {
            let log = (try? String(contentsOfFile: dataDirectory + ".log", encoding: .utf8)) ?? ""
            let tail = log.split(separator: "\n").suffix(5).joined(separator: " | ")
            throw WaybackError(.cluster, "PostgreSQL in \(dataDirectory) did not start: \(tail)")
        }
    }

    public func stop(mode: String = "fast") throws {
        try run([bin("pg_ctl"), "-D", dataDirectory, "-m", mode, "-w", "-t", "120", "stop"], check: false)
    }

    /// `stop`, from async code (`pg_ctl -w` waits on a thread of its own).
    public func stopAsync(mode: String = "fast") async throws {
        try await execute([bin("pg_ctl"), "-D", dataDirectory, "-m", mode, "-w", "-t", "120", "stop"], check: false)
    }

    public var isRunning: Bool {
        DataDirectory.runningPostmasterPID(dataDirectory) != nil
    }

    /// Runs SQL through psql and returns its unaligned, tuples-only output.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        let r = try run([bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", socketDirectory, "-p", "\(port)",
                         "-U", "postgres", "-d", database, "-f", "-"], check: false, input: sql)
        if r.status != 0 { throw WaybackError(.postgres, "psql failed: \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func pgbench(_ args: [String], database: String = "postgres") throws {
        try run([bin("pgbench"), "-h", socketDirectory, "-p", "\(port)", "-U", "postgres"] + args + [database])
    }
}

/// `postmaster.pid` as PostgreSQL writes it, one field a line: PID, data directory, start time,
/// port, socket directory, listen address, shared memory key, status. The one parser of it.
public struct PostmasterFile: Sendable, Equatable {
    public var pid: Int32
    public var port: Int?
    /// The first unix-socket directory (empty when the server listens on TCP only).
    public var socketDirectory: String?
    /// `starting`, `stopping`, `ready` or `standby` (nil while the server has not written it).
    public var status: String?

    public static func parse(_ text: String) -> PostmasterFile? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard let pid = lines.first.flatMap({ Int32($0) }), pid > 0 else { return nil }
        func line(_ i: Int) -> String? { i < lines.count && !lines[i].isEmpty ? lines[i] : nil }
        return PostmasterFile(pid: pid, port: line(3).flatMap { Int($0) }, socketDirectory: line(4), status: line(7))
    }

    /// The file of the data directory `path`; nil when there is none (or it is not readable).
    public static func read(_ path: String) -> PostmasterFile? {
        (try? String(contentsOfFile: path + "/postmaster.pid", encoding: .utf8)).flatMap(parse)
    }

    /// True when its process lives.
    public var isAlive: Bool { kill(pid, 0) == 0 || errno == EPERM }
}

/// Facts read from a data directory on disk.
public enum DataDirectory {
    /// The PID of a live postmaster using `path`, from postmaster.pid; nil if none runs.
    public static func runningPostmasterPID(_ path: String) -> Int32? {
        PostmasterFile.read(path).flatMap { $0.isAlive ? $0.pid : nil }
    }

    /// The server's state from the last line of postmaster.pid (`starting`, `standby`, `ready`,
    /// `stopping`), as `pg_ctl -w` reads it; nil when there is no such line. Reading it costs the
    /// server nothing, unlike a connection attempt (a backend forked, only to be refused).
    public static func postmasterStatus(_ path: String) -> String? {
        PostmasterFile.read(path)?.status
    }

    /// The major version from PG_VERSION (e.g. "15"); nil when absent.
    public static func majorVersion(_ path: String) -> String? {
        (try? String(contentsOfFile: path + "/PG_VERSION", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
