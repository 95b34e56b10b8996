import Foundation
import WaybackCore
import WaybackStorage

/// What `wayback status` shows for one repository: backups and the WAL archive per timeline.
public struct StatusReport: Codable, Sendable {
    public struct Backup: Codable, Sendable {
        public var id: String
        public var type: String
        public var reference: String?
        public var startTime: Date
        public var stopTime: Date
        public var startLSN: String
        public var stopLSN: String
        public var timeline: UInt32
        public var databaseBytes: Int64
        public var repositoryBytes: Int64
        /// Plain bytes the backup stored itself (less than `databaseBytes` for diff/incr).
        public var copiedBytes: Int64
        public var files: Int
        public var compressionRatio: Double
        public var sha256: String
        public var md5: String
        /// Objects of the backup missing or of another size than recorded (from listings).
        public var problems: [String]?
    }

    /// What `status` looked at, and what it did not: it never claims more than it checked.
    public static let checked = "each repository's status index where it matches the listing, else the manifests; object listings (every backup's objects present with their recorded sizes; WAL names, gaps) and the last WAL segments of each timeline (decoded for the recoverable window); not read: backup data and the other WAL segments ('restore --dry-run' reads all the WAL a restore needs)"

    public var repository: String
    public var cluster: String
    public var systemIdentifier: String
    public var pgVersion: Int
    public var backups: [Backup]
    public var archive: [TimelineRange]

    /// The report of the backups `summaries` (with `problems` from `Catalog.objectProblems`) and
    /// the archive `wal` (pure: `StatusOverview.gather` reads them).
    public init(repository: String, cluster: String, binding: ClusterBinding, summaries: [BackupSummary], problems: [BackupID: [String]], wal: [WALFileName]) {
        self.repository = repository
        self.cluster = cluster
        systemIdentifier = binding.systemIdentifier
        pgVersion = binding.pgVersionNumber
        backups = summaries.map { m in
            Backup(id: m.id.rawValue, type: m.type.rawValue, reference: m.reference?.rawValue, startTime: m.startTime,
                   stopTime: m.stopTime, startLSN: m.startLSN.description, stopLSN: m.stopLSN.description, timeline: m.timeline,
                   databaseBytes: m.sizes.database, repositoryBytes: m.sizes.repository, copiedBytes: m.sizes.copied ?? m.sizes.database,
                   files: m.sizes.files,
                   compressionRatio: (m.compressionRatio * 100).rounded() / 100, sha256: m.digests.sha256, md5: m.digests.md5,
                   problems: problems[m.id])
        }
        archive = TimelineRange.summarize(wal, segmentSize: binding.walSegmentSize)
    }
}

/// One repository's own state, for `status` with several repositories: whether it answers, which
/// backups are complete there, and its WAL archive.
public struct RepositoryState: Codable, Sendable {
    public var name: String
    public var type: String
    public var location: String
    public var reachable: Bool
    public var error: String?
    public var backups: [String]
    /// Backups complete in some other repository but not in this one.
    public var missingBackups: [String]
    public var archive: [TimelineRange]
    public var walPush: String?
    /// WAL files queued for this repository (asynchronous repositories).
    public var queuedWAL: Int?
    public var queueOverflowed: Bool?
    /// Why the WAL queue could not be read (then `queuedWAL` is nil: unknown, not zero).
    public var queueError: String?
    /// Bytes of this cluster's backups and WAL here (from the listings).
    public var storedBytes: Int64?

    public var text: String {
        guard reachable else { return "\(name) (\(type) \(location)): UNAVAILABLE: \(error ?? "unknown error")" }
        var parts = ["\(backups.count) backup(s)"]
        if !missingBackups.isEmpty { parts.append("MISSING backups \(missingBackups.joined(separator: ", "))") }
        for t in archive { parts.append("WAL TL\(t.timeline) \(t.first)..\(t.last)" + (t.gaps.isEmpty ? "" : " with gaps")) }
        if let e = queueError { parts.append("WAL queue UNKNOWN: \(e)") }
        if let q = queuedWAL, q > 0 || queueOverflowed == true {
            parts.append("\(q) WAL file(s) queued" + (queueOverflowed == true ? ", queue over its limit (run 'wayback repo sync')" : ""))
        }
        return "\(name) (\(type) \(location), wal_push \(walPush ?? "sync")): " + parts.joined(separator: "; ")
    }
}
