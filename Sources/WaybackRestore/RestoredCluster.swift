import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// `restore --start`: starts the restored cluster as a private instance (unix socket only, in the
/// data directory), waits until recovery has reached its target, checks in the server log that it
/// stopped where the plan said, and measures each phase. These timings are the recovery time that
/// drills record.
public enum RestoredCluster {
    public struct Options: Sendable {
        public var port: Int
        public var osUser: String
        /// PostgreSQL's binaries (nil: those of the restored directory's `PG_VERSION`).
        public var binDirectory: String?
        public var timeoutSeconds: Double
        /// User, password and database for the checks (host and port are replaced by the private socket).
        public var connection: ConnectionSettings
        /// The restore was written with `RestoreConfiguration.promoteAfterCheck`: for a promote
        /// action, recovery pauses at the target; it is promoted here once the stop is checked
        /// (or, with `earlyPromotion`, on arrival).
        public var promoteAfterCheck: Bool
        /// With `promoteAfterCheck`: request the promotion while recovery still replays, so that
        /// PostgreSQL promotes the moment it reaches the target; the stop is checked right after.
        /// For copies that do not archive (nothing of theirs leaves them before the check).
        public var earlyPromotion: Bool
        /// Settings for this start only (`-c name=value`): a drill's copy that must not reach out.
        public var settings: [String: String] = [:]
        public init(port: Int = 5432, osUser: String, binDirectory: String? = nil,
                    timeoutSeconds: Double = 6 * 3600, connection: ConnectionSettings = ConnectionSettings(), promoteAfterCheck: Bool = false,
                    earlyPromotion: Bool = false) {
            self.port = port; self.osUser = osUser; self.binDirectory = binDirectory; self.timeoutSeconds = timeoutSeconds
            self.connection = connection; self.promoteAfterCheck = promoteAfterCheck; self.earlyPromotion = earlyPromotion
        }
    }

    public struct Report: Sendable, Codable {
        /// `paused`, `promoted` or `shut down`.
        public var state: String
        public var port: Int
        public var socketDirectory: String
        public var logFile: String
        /// From `pg_ctl start` to the first accepted connection (read-only during recovery).
        public var readySeconds: Double?
        /// From `pg_ctl start` to the target reached (paused, promoted or shut down).
        public var recoverySeconds: Double
        /// The server's own words: "recovery stopping before commit of transaction ...".
        public var stopMessage: String?
        public var lastReplayedTransaction: String?
        public var replayLSN: String?
    }

    public static func start(directory: String, plan: RecoveryPlan, options: Options, logger: Logger) async throws -> Report {
        let socketDir = directory.utf8.count + 20 < 100 ? directory : try privateSocketDirectory(owner: options.osUser)
        let bin = try options.binDirectory ?? LocalCluster.binDirectory(forDataDirectory: directory)
        let cluster = LocalCluster(binDirectory: bin, dataDirectory: directory, socketDirectory: socketDir,
                                   port: options.port, osUser: options.osUser)
        let logFile = directory + "/wayback-start.log"
        try? FileSystem.remove(logFile)
        var opts = "-c listen_addresses='' -c unix_socket_directories='\(socketDir)' -p \(options.port) -c logging_collector=off -c hot_standby=on"
        // The restore synced every file already: one syncfs instead of an fsync per file (and a
        // flush each) when the server syncs the data directory before recovery (PostgreSQL 14+).
        if let major = DataDirectory.majorVersion(directory).flatMap({ Int($0) }), major >= 14 { opts += " -c recovery_init_sync_method=syncfs" }
        for (k, v) in options.settings.sorted(by: { $0.key < $1.key }) { opts += " -c \(k)='\(v)'" }
        let began = monotonicSeconds()
        let r = try await cluster.execute([bin + "/pg_ctl", "-D", directory, "-l", logFile, "-W", "-o", opts, "start"], check: false)
        guard r.status == 0 else {
            throw WaybackError(.cluster, "pg_ctl could not start the restored cluster in \(directory): \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        var report = Report(state: "", port: options.port, socketDirectory: socketDir, logFile: logFile, recoverySeconds: 0)
        var connection = options.connection
        connection.host = socketDir; connection.port = options.port; connection.sslMode = .disable
        var session: PostgresSession?
        // A promote target written as a pause (see `Options.promoteAfterCheck`).
        let pauseFirst = options.promoteAfterCheck && plan.action == .promote && plan.targetKind != .latest
        do {
            try await waitForTarget(directory: directory, plan: plan, action: pauseFirst ? .pause : plan.action,
                                    promoteOnArrival: pauseFirst && options.earlyPromotion, options: options,
                                    connection: connection, began: began, session: &session, report: &report, logger: logger)
            if report.state == "paused" && pauseFirst {
                // Check where recovery stopped before anything irreversible, then promote.
                let log = stopMessage(logFile, into: &report)
                try verify(report, plan: plan, log: log)
                try await promote(directory: directory, cluster: cluster, session: session, logger: logger)
                try await waitForTarget(directory: directory, plan: plan, action: .promote, options: options, connection: connection,
                                        began: began, session: &session, report: &report, logger: logger)
            }
        } catch {
            await session?.close()
            throw error
        }
        report.recoverySeconds = monotonicSeconds() - began
        if let s = session, let row = (try? await s.execute("SELECT pg_last_xact_replay_timestamp()::text, pg_last_wal_replay_lsn()::text"))?.first {
            report.lastReplayedTransaction = row[0]
            report.replayLSN = row[1]
        }
        await session?.close()
        let log = stopMessage(logFile, into: &report)
        try verify(report, plan: plan, log: log)
        // Recovery is over: the prefetch spool is of no further use (a paused cluster keeps it for --advance).
        if report.state != "paused" { try? FileSystem.removeTree(PrefetchSpool.path(dataDirectory: directory)) }
        logger.info("restored cluster reached its target", metadata: ["state": "\(report.state)", "seconds": "\(report.recoverySeconds)"])
        return report
    }

    /// Reads the server log; records its "recovery stopping ..." line in the report.
    static func stopMessage(_ logFile: String, into report: inout Report) -> String {
        let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        report.stopMessage = log.split(separator: "\n").first { $0.contains("recovery stopping") }.map { line in
            String(line[(line.range(of: "recovery stopping")?.lowerBound ?? line.startIndex)...])
        }
        return log
    }

    /// Promotes a cluster paused at its target. Requested from the pause, PostgreSQL 15 takes its
    /// fast path (an end-of-recovery record; the checkpoint follows in the background) instead of
    /// the full checkpoint it waits for after `recovery_target_action = promote`; a paused server
    /// notices the request when its pause wait ends (at most a second).
    static func promote(directory: String, cluster: LocalCluster, session: PostgresSession?, logger: Logger) async throws {
        if let s = session, (try? await s.execute("SELECT pg_promote(false)::text")) != nil { return }
        let r = try await cluster.execute([cluster.binDirectory + "/pg_ctl", "-D", directory, "promote", "-W"], check: false)
        guard r.status == 0 else {
            throw WaybackError(.cluster, "the restored cluster in \(directory) reached its target but could not be promoted: \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)); it is paused, promote it with 'pg_ctl promote'")
        }
    }

    /// Polls the server (and its log) until the target is reached or the server exits.
    ///
    /// `promoteOnArrival` (with a `pause` action): as soon as a connection is possible, while
    /// recovery still replays, request the promotion; PostgreSQL then promotes on reaching the
    /// target instead of pausing ("if the recovery target is reached while a promotion is ongoing,
    /// a setting of pause will act the same as promote"), and from its pause loop, so by the fast
    /// path. If the target is reached before the request, the server pauses as written.
    static func waitForTarget(directory: String, plan: RecoveryPlan, action: TargetAction, promoteOnArrival: Bool = false, options: Options,
                              connection: ConnectionSettings, began: Double, session: inout PostgresSession?, report: inout Report,
                              logger: Logger) async throws {
        let logFile = report.logFile
        var action = action
        let isLatest = plan.targetKind == .latest
        // Poll until the target is reached (or the server exits).
        while true {
            let elapsed = monotonicSeconds() - began
            if elapsed > options.timeoutSeconds {
                throw WaybackError(.cluster, "recovery of \(directory) did not reach its target within \(Int(options.timeoutSeconds)) s; the server is still running (log: \(logFile))")
            }
            let running = DataDirectory.runningPostmasterPID(directory) != nil
            if !running && elapsed > 0.5 {
                let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
                if action == .shutdown && !isLatest && log.contains("recovery stopping") {
                    report.state = "shut down"
                    return
                }
                let tail = log.split(separator: "\n").filter { ($0.contains("FATAL") || $0.contains("PANIC") || $0.contains("ERROR")) && !$0.contains("not yet accepting connections") && !$0.contains("is starting up") }.suffix(3)
                throw WaybackError(.cluster, "the restored cluster in \(directory) stopped during recovery: \(tail.isEmpty ? "see \(logFile)" : tail.joined(separator: " | "))")
            }
            let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
            // Connect once the server says it accepts connections (postmaster.pid), not before:
            // each refused attempt forks a backend on the cores recovery needs.
            if session == nil, DataDirectory.postmasterStatus(directory).map({ $0 == "standby" || $0 == "ready" }) ?? (elapsed > 0.5) {
                session = try? await PostgresSession.connect(connection, logger: logger)
                if session != nil && report.readySeconds == nil { report.readySeconds = monotonicSeconds() - began }
            }
            if let s = session {
                let row = (try? await s.execute("SELECT pg_is_in_recovery()::text, CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END"))?.first
                let inRecovery = row?[0] == "true"
                if row != nil && !inRecovery && (action == .promote || isLatest) { report.state = "promoted"; return }
                if inRecovery && action == .pause && !isLatest && row?[1] == "paused" { report.state = "paused"; return }
                if inRecovery && action == .pause && promoteOnArrival && row?[1] == "not paused",
                   (try? await s.execute("SELECT pg_promote(false)::text")) != nil {
                    action = .promote
                }
                if row == nil { await s.close(); session = nil }
            }
            // Without a connection (authentication the checks cannot pass), the log tells.
            if session == nil {
                if action == .pause && !isLatest && log.contains("pausing at the end of recovery") { report.state = "paused"; return }
                if (action == .promote || isLatest) && log.contains("database system is ready to accept connections") { report.state = "promoted"; return }
            }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
    }

    /// Checks that recovery stopped at the record the plan found.
    static func verify(_ report: Report, plan: RecoveryPlan, log: String) throws {
        guard let stop = plan.stop else {
            if plan.targetKind == .backupEnd {
                guard log.contains("consistent recovery state reached") else {
                    throw WaybackError(.restoreTarget, "recovery of the restored cluster did not report reaching consistency; see \(report.logFile)")
                }
            }
            return
        }
        guard let message = report.stopMessage else {
            throw WaybackError(.restoreTarget, "the restored cluster did not report where recovery stopped (expected \(stop.position) \(stop.record)); see \(report.logFile)")
        }
        let expected: String
        if let name = stop.restorePoint {
            expected = "at restore point \"\(name)\""
        } else if let xid = stop.xid {
            expected = "\(stop.position) " + (message.contains("abort") ? "abort" : "commit") + " of transaction \(xid)"
        } else {
            expected = "\(stop.position) WAL location (LSN) \"\(stop.lsn)\""
        }
        guard message.contains(expected) else {
            throw WaybackError(.restoreTarget, "recovery stopped somewhere other than planned: the server says \"\(message)\", the plan expected \(stop.position) \(stop.record)")
        }
    }

    static func privateSocketDirectory(owner: String) throws -> String {
        var template = Array("/tmp/wayback-sock-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw PosixError.make(errno, "create a socket directory", "/tmp") }
        let dir = String(cString: p)
        if getuid() == 0, let pw = getpwnam(owner) { try FileSystem.chown(dir, uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid) }
        return dir
    }
}
