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

    /// The newest /usr/lib/postgresql/N/bin, or the directory of `pg_ctl` on PATH.
    public static func defaultBinDirectory() -> String {
        if let env = ProcessInfo.processInfo.environment["WAYBACK_PG_BIN"], !env.isEmpty { return env }
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted()
        if let v = versions.last { return "\(base)/\(v)/bin" }
        return "/usr/bin"
    }

    public var connection: ConnectionSettings {
        ConnectionSettings(host: socketDirectory, port: port, user: "postgres", password: nil, database: "postgres", sslMode: .disable)
    }

    func bin(_ name: String) -> String { binDirectory + "/" + name }

    @discardableResult
    public func run(_ args: [String], check: Bool = true, input: String? = nil, captureOutput: Bool = true) throws -> Command.Result {
        try Command.run(args, asUser: osUser, input: input, check: check, captureOutput: captureOutput)
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

/// Facts read from a data directory on disk.
public enum DataDirectory {
    /// The PID of a live postmaster using `path`, from postmaster.pid; nil if none runs.
    public static func runningPostmasterPID(_ path: String) -> Int32? {
        guard let text = try? String(contentsOfFile: path + "/postmaster.pid", encoding: .utf8),
              let first = text.split(separator: "\n").first, let pid = Int32(first.trimmingCharacters(in: .whitespaces)), pid > 0 else { return nil }
        if kill(pid, 0) == 0 || errno == EPERM { return pid }
        return nil
    }

    /// The server's state from the last line of postmaster.pid (`starting`, `standby`, `ready`,
    /// `stopping`), as `pg_ctl -w` reads it; nil when there is no such line. Reading it costs the
    /// server nothing, unlike a connection attempt (a backend forked, only to be refused).
    public static func postmasterStatus(_ path: String) -> String? {
        guard let text = try? String(contentsOfFile: path + "/postmaster.pid", encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count > 7 else { return nil }
        let status = lines[7].trimmingCharacters(in: .whitespaces)
        return status.isEmpty ? nil : status
    }

    /// The major version from PG_VERSION (e.g. "15"); nil when absent.
    public static func majorVersion(_ path: String) -> String? {
        (try? String(contentsOfFile: path + "/PG_VERSION", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
