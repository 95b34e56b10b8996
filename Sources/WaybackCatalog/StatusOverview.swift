import Foundation
import WaybackCore
import WaybackStorage

/// The read side of the queue `wal-push` keeps for asynchronous repositories (written by
/// `AsyncSpool` in WaybackArchive): one empty file per queued WAL file and repository
/// (`<spool>/<repository>/<wal file>`), and an `.overflow` mark once the queue passed its limit.
public struct WALQueue: Sendable {
    public let path: String
    public init(path: String) { self.path = path }

    public static let overflowMark = ".overflow"

    public func directory(_ repository: String) -> String { path + "/" + repository }

    /// Queued WAL file names for `repository`, oldest name first.
    public func entries(_ repository: String) -> [String] {
        ((try? FileSystem.list(directory(repository))) ?? []).filter { !$0.hasPrefix(".") }
    }

    public func overflowed(_ repository: String) -> Bool {
        (try? FileSystem.status(directory(repository) + "/" + Self.overflowMark)) != nil
    }
}

/// Everything `status` shows, gathered by one function for every caller (the command line, the
/// daemon's pages and checks): the combined report, the recoverable window per timeline (the same
/// the restore plan uses), and each repository's own state with its WAL queue.
public struct StatusOverview: Sendable {
    /// One configured repository, as the overview shows it.
    public struct Member: Sendable {
        public var repository: Repository
        public var type: String
        public var location: String
        public var walPush: String
        public init(repository: Repository, type: String, location: String, walPush: String) {
            self.repository = repository; self.type = type; self.location = location; self.walPush = walPush
        }
    }

    public var report: StatusReport
    public var windows: [RecoveryWindow]
    public var repositories: [RepositoryState]

    /// `catalog` reads all repositories as one; `members` are the same repositories one by one.
    public static func gather(_ catalog: Catalog, members: [Member], queue: WALQueue) async throws -> StatusOverview {
        // Every manifest and the archive's listing are read once, for the report and the windows.
        let binding = try await catalog.requireBinding()
        let manifests = try await catalog.manifests()
        let wal = try await catalog.archivedWAL()
        let report = try await StatusReport.gather(catalog, binding: binding, manifests: manifests, wal: wal)
        let windows = try await RecoverableWindows.compute(catalog: catalog, manifests: manifests, wal: wal)
        var states = [RepositoryState]()
        for m in members {
            var s = await RepositoryState.gather(Catalog(repository: m.repository, cluster: catalog.layout.cluster), type: m.type,
                                                 location: m.location, allBackups: report.backups.map(\.id))
            s.walPush = m.walPush
            if m.walPush == "async" {
                s.queuedWAL = queue.entries(m.repository.name).count
                s.queueOverflowed = queue.overflowed(m.repository.name)
            }
            states.append(s)
        }
        return StatusOverview(report: report, windows: windows, repositories: states)
    }
}
