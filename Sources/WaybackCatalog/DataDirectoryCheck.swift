import Foundation
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What proves that a configured data directory is the connected server's (`init` and `backup`
/// check it before they bind or copy anything).
extension ClusterFacts {
    /// Proves that `pgdata` is the connected server's data directory, before anything is copied:
    /// the same directory as the server's `data_directory` (symbolic links resolved), and a
    /// `global/pg_control` of the same system identifier. A stopped copy of the cluster elsewhere
    /// (a restored one) has the same identifier, so the path is what tells it apart.
    public func requireDataDirectory(_ pgdata: String) throws {
        guard let configured = FileSystem.realPath(pgdata) else {
            throw WaybackError(.config, "cluster.pgdata \(pgdata) does not exist or cannot be read by this user; set it to the server's data_directory (\(dataDirectory))")
        }
        guard configured == FileSystem.realPath(dataDirectory) else {
            throw WaybackError(.config, "cluster.pgdata is \(pgdata)\(configured == pgdata ? "" : " (\(configured))"), but the connected server's data_directory is \(dataDirectory): Wayback would back up another directory than the server's; fix cluster.pgdata or cluster.connection")
        }
        guard let control = try ControlFile.read(dataDirectory: configured) else {
            throw WaybackError(.config, "cluster.pgdata \(pgdata) has no \(ControlFile.relativePath); it is not a PostgreSQL data directory")
        }
        guard control.systemIdentifier == systemIdentifier else {
            throw WaybackError(.config, "\(pgdata)/\(ControlFile.relativePath) belongs to the cluster with system identifier \(control.systemIdentifier), but the connected server is \(systemIdentifier); fix cluster.pgdata or cluster.connection")
        }
    }

    /// After `pg_backup_start`: the checkpoint it made must be in `pgdata`'s control file (a copy
    /// of the cluster elsewhere has an older one, or another timeline).
    public func requireStartCheckpoint(in pgdata: String, startLSN: LSN) throws {
        guard let control = try ControlFile.read(dataDirectory: pgdata), control.systemIdentifier == systemIdentifier,
              control.redoLSN >= startLSN, control.timeline == timeline else {
            throw WaybackError(.config, "\(pgdata)/\(ControlFile.relativePath) does not record the checkpoint the server made for this backup (redo \(startLSN), timeline \(timeline)): cluster.pgdata is not the running server's data directory; fix cluster.pgdata")
        }
    }
}
