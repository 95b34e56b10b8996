import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// The whole of a restore as `wayback restore` does it, for every caller (the command line, the
/// demo, and the drills and the daemon to come): the policy decisions live here, not in a command.
extension Restore {
    /// `--archive-mode` when none is given: a restore into the cluster's own data directory keeps
    /// archiving as configured (it is the cluster again); any other copy must not archive into the
    /// cluster's repository.
    public static func defaultArchiveMode(targetDirectory: String, pgdata: String) -> ArchiveMode {
        FileSystem.absolute(targetDirectory) == FileSystem.absolute(pgdata) ? .preserve : .off
    }

    /// Starting the restored cluster once its files are written.
    public struct Start: Sendable {
        public var port: Int
        /// User, password and database for the checks.
        public var connection: ConnectionSettings
        public init(port: Int, connection: ConnectionSettings) { self.port = port; self.connection = connection }
    }

    public struct Outcome: Sendable {
        public var report: RestoreReport
        /// With `start`: how the started cluster reached its target.
        public var started: RestoredCluster.Report?
    }

    /// Restores (plan, files), then with `start` starts the copy, checks where recovery stopped
    /// against the plan and promotes it as the target says (a copy that does not archive is
    /// promoted the moment it arrives), and records the timings in the repository for later
    /// estimates (a record that cannot be written is an event, not a failure).
    public static func perform(_ config: RestoreConfiguration, start: Start?, logger: Logger,
                               progress: ProgressHandler? = nil) async throws -> Outcome {
        var config = config
        config.promoteAfterCheck = start != nil
        let report = try await run(config, logger: logger, progress: progress)
        var started: RestoredCluster.Report?
        if let start {
            let user = try osUserName(for: report.targetDirectory)
            started = try await RestoredCluster.start(
                directory: report.targetDirectory, plan: report.plan,
                options: .init(port: start.port, osUser: user, binDirectory: config.pgBinDirectory, connection: start.connection,
                               promoteAfterCheck: true, earlyPromotion: config.archiveMode == .off),
                logger: logger)
        }
        await record(report, started: started, catalog: Catalog(repository: config.repository, cluster: config.cluster),
                     clock: config.clock, events: config.events)
        return Outcome(report: report, started: started)
    }
}
