import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// Iterative point-in-time recovery: a restored cluster paused at its target (not promoted) gets a
/// later target and resumes replay, without restoring its files again.
public enum Advance {
    public struct Result: Sendable {
        public var plan: RecoveryPlan
        public var previousLSN: LSN?
        public var report: RestoredCluster.Report
    }

    /// Plans the new target for the restored directory `config.targetDirectory`; with `apply`,
    /// stops the server if it runs, rewrites the recovery settings and starts it again, waiting until
    /// the new target is reached.
    public static func run(_ config: RestoreConfiguration, port: Int?, connection: ConnectionSettings,
                           logger: Logger) async throws -> Result {
        let dir = config.targetDirectory
        let (backup, archiveMode, previous, runningPort) = try await inspect(dir, connection: connection, logger: logger)
        var request = config.request
        request.backupID = backup
        let catalog = Catalog(repository: config.repository, cluster: config.cluster)
        let plan = try await RecoveryPlanner.plan(request, catalog: catalog, parallelism: config.parallelism, logger: logger).plan
        try plan.requireFeasible()
        if let previous, let stop = plan.stop, stop.lsn < previous {
            throw WaybackError(.restoreTarget, "the new target (\(stop.position) \(stop.record)) is before the point already replayed (\(previous)); replay cannot go back: restore again instead")
        }
        let osUser = try Restore.osUserName(for: dir)
        let cluster = LocalCluster(binDirectory: try LocalCluster.binDirectory(forDataDirectory: dir, override: config.pgBinDirectory), dataDirectory: dir, socketDirectory: dir,
                                   port: runningPort ?? port ?? 5432, osUser: osUser)
        if DataDirectory.runningPostmasterPID(dir) != nil {
            try await cluster.stopAsync(mode: "fast")
            guard DataDirectory.runningPostmasterPID(dir) == nil else {
                throw WaybackError(.cluster, "the server in \(dir) did not stop; stop it with pg_ctl -D \(dir) stop and try again")
            }
        }
        let autoPath = dir + "/postgresql.auto.conf"
        var auto = (try? String(contentsOfFile: autoPath, encoding: .utf8)) ?? ""
        auto = auto.split(separator: "\n", omittingEmptySubsequences: false).filter { !RecoverySettings.owns($0) }.joined(separator: "\n")
        while auto.hasSuffix("\n\n") { auto.removeLast() }
        if !auto.isEmpty && !auto.hasSuffix("\n") { auto += "\n" }
        auto += RecoverySettings.text(plan: plan, request: request, restoreCommand: config.restoreCommand, archiveMode: archiveMode)
        try rewrite(autoPath, auto)
        Restore.limitPrefetch(dir, plan: plan)
        let report = try await RestoredCluster.start(directory: dir, plan: plan,
                                                     options: .init(port: runningPort ?? port ?? 5432, osUser: osUser, binDirectory: config.pgBinDirectory, connection: connection),
                                                     logger: logger)
        return Result(plan: plan, previousLSN: previous, report: report)
    }

    /// The restored directory's backup, archive mode, replay position, and port if it runs.
    static func inspect(_ dir: String, connection: ConnectionSettings, logger: Logger) async throws -> (BackupID, ArchiveMode, LSN?, Int?) {
        guard FileManager.default.fileExists(atPath: dir + "/PG_VERSION") else {
            throw WaybackError(.usage, "\(dir) is not a data directory; --advance works on a directory restored by wayback restore")
        }
        guard FileManager.default.fileExists(atPath: dir + "/recovery.signal") else {
            throw WaybackError(.conflict, "\(dir) is not in recovery (no recovery.signal): it was promoted, so its timeline has moved on; restore again with the new target")
        }
        let auto = (try? String(contentsOfFile: dir + "/postgresql.auto.conf", encoding: .utf8)) ?? ""
        guard let (backup, mode) = RecoverySettings.read(auto) else {
            throw WaybackError(.usage, "\(dir) has no recovery settings written by wayback restore; --advance works on a directory restored by wayback restore")
        }
        guard let running = PostmasterFile.read(dir), running.isAlive, let port = running.port else { return (backup, mode, nil, nil) }
        var settings = connection
        settings.host = running.socketDirectory ?? dir
        settings.port = port
        settings.sslMode = .disable
        guard let session = try? await PostgresSession.connect(settings, logger: logger) else { return (backup, mode, nil, port) }
        let row = try? await session.execute("SELECT pg_is_in_recovery()::text, pg_last_wal_replay_lsn()::text").first
        await session.close()
        if row?[0] == "false" {
            throw WaybackError(.conflict, "the server in \(dir) has left recovery (promoted), so its timeline has moved on; restore again with the new target")
        }
        return (backup, mode, (row?[1] ?? nil).flatMap { LSN($0) }, port)
    }

    static func rewrite(_ path: String, _ text: String) throws {
        let tmp = path + ".wayback-tmp"
        let f = try PosixFile.create(tmp, mode: 0o600)
        try Array(text.utf8).withUnsafeBytes { try f.write($0) }
        try f.fsync()
        try f.close()
        if getuid() == 0, let st = try FileSystem.status(FileSystem.parentPath(path)) { try FileSystem.chown(tmp, uid: st.uid, gid: st.gid) }
        try FileSystem.rename(tmp, path)
    }
}
