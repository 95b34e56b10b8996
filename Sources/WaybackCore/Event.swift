import Foundation
import Logging
import Synchronization

/// Something an operation noticed that a person may have to act on: a repository dropped from a
/// run, a WAL queue falling behind, damaged pages, a record that could not be written, a job's
/// outcome. Operations return these as values; the command line logs them, the daemon routes
/// them to notifications and metrics. A message never carries a secret.
public struct WaybackEvent: Sendable, Equatable, Codable, CustomStringConvertible {
    public enum Severity: String, Sendable, Codable, Comparable, CaseIterable {
        case info, warning, error, critical

        public static func < (a: Severity, b: Severity) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }
    }

    /// What happened, as a stable name (part of the JSON and of notification routing: only add).
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// A repository failed a write and gets nothing more in this run (the others go on).
        case repositoryDropped = "repository-dropped"
        /// A read fell back to the next repository (missing, damaged or unreachable in one).
        case repositoryFallback = "repository-fallback"
        /// A repository could not be listed or asked; the others answered.
        case repositoryUnreachable = "repository-unreachable"
        /// The asynchronous WAL queue of a repository is over half its limit, or over it.
        case walQueueBehind = "wal-queue-behind"
        /// WAL could not be queued for, or copied to, an asynchronous repository.
        case walQueueFailed = "wal-queue-failed"
        /// The daemon could not store a WAL segment ahead of PostgreSQL (`wal-push` stores it).
        case walAhead = "wal-ahead"
        /// Data pages failed their checksum while being backed up.
        case damagedPages = "damaged-pages"
        /// A backup's type or reference was decided otherwise than asked (a diff/incr became a full).
        case backupDecision = "backup-decision"
        /// Part of an interrupted backup could not be reused.
        case resumeSkipped = "resume-skipped"
        /// Leftovers (temporary objects, an interrupted restore's directory) were removed, or
        /// could not be.
        case cleanup = "cleanup"
        /// A record the repository or the catalog keeps (restore timings, `backup_logs`) could not
        /// be written; the operation itself succeeded.
        case recordFailed = "record-failed"
        /// The outcome of a whole operation or scheduled job.
        case jobOutcome = "job-outcome"
        /// A file system (or an S3 quota) crossed a disk-space threshold, or could not be looked at.
        case diskSpace = "disk-space"
        /// `verify` found an object damaged or missing, a broken chain, or a hole in the WAL; or
        /// `repo sync` left out a backup, dump or WAL file whose source copy is damaged.
        case verifyProblem = "verify-problem"
        /// A restore drill's result (passed, failed a check, missed an objective).
        case drillResult = "drill-result"
    }

    /// The operation that noticed it.
    public enum Operation: String, Sendable, Codable, CaseIterable {
        case initialize = "init", backup, walPush = "wal-push", walFetch = "wal-fetch", walDrain = "wal-drain",
             walPrefetch = "wal-prefetch", restore, status, sync = "repo-sync", demo, expire, verify, drill, dump, daemon,
             catalogSync = "catalog-sync"
    }

    public var time: Date
    public var severity: Severity
    public var kind: Kind
    public var operation: Operation
    public var cluster: String?
    public var repository: String?
    public var backup: String?
    public var segment: String?
    public var message: String

    public init(time: Date, severity: Severity, kind: Kind, operation: Operation, cluster: String? = nil,
                repository: String? = nil, backup: String? = nil, segment: String? = nil, message: String) {
        self.time = time
        self.severity = severity
        self.kind = kind
        self.operation = operation
        self.cluster = cluster
        self.repository = repository
        self.backup = backup
        self.segment = segment
        self.message = message
    }

    public var description: String { "\(severity.rawValue) \(kind.rawValue): \(message)" }
}

/// The events of one operation (one command, or one job of the daemon): each is handed to the
/// sink as it happens (the command line logs it at once, so a warning is not held back by a long
/// backup) and kept, up to `limit`, for the operation's result. Safe to share between the tasks of
/// one operation; give each operation its own, so that a daemon running for months keeps none.
public final class EventLog: Sendable {
    public typealias Sink = @Sendable (WaybackEvent) -> Void

    public let operation: WaybackEvent.Operation
    public let cluster: String?
    private let clock: any WaybackClock
    private let sink: Sink
    private let limit: Int
    private let state = Mutex<(events: [WaybackEvent], dropped: Int)>(([], 0))

    public init(operation: WaybackEvent.Operation, cluster: String?, clock: any WaybackClock = SystemClock(),
                limit: Int = 1000, sink: @escaping Sink = { _ in }) {
        self.operation = operation
        self.cluster = cluster
        self.clock = clock
        self.limit = limit
        self.sink = sink
    }

    /// A log that keeps its events and tells nobody (tests, and callers that read `events`).
    public static func collecting(_ operation: WaybackEvent.Operation, cluster: String? = nil) -> EventLog {
        EventLog(operation: operation, cluster: cluster)
    }

    @discardableResult
    public func emit(_ severity: WaybackEvent.Severity, _ kind: WaybackEvent.Kind, _ message: String,
                     repository: String? = nil, backup: String? = nil, segment: String? = nil) -> WaybackEvent {
        let e = WaybackEvent(time: clock.now, severity: severity, kind: kind, operation: operation, cluster: cluster,
                             repository: repository, backup: backup, segment: segment, message: message)
        state.withLock { s in
            if s.events.count < limit { s.events.append(e) } else { s.dropped += 1 }
        }
        sink(e)
        return e
    }

    /// The events so far, oldest first (at most `limit`; `dropped` counts the rest).
    public var events: [WaybackEvent] { state.withLock { $0.events } }
    public var dropped: Int { state.withLock { $0.dropped } }

    /// The most severe event so far, if any.
    public var worst: WaybackEvent.Severity? { events.map(\.severity).max() }
}

extension EventLog {
    /// A log whose sink writes each event to `logger` as it happens, at its severity, with the
    /// fixed metadata keys (`wayback.repository`, `wayback.backup`, `wayback.segment`).
    public static func logging(_ operation: WaybackEvent.Operation, cluster: String?, to logger: Logger,
                               clock: any WaybackClock = SystemClock()) -> EventLog {
        EventLog(operation: operation, cluster: cluster, clock: clock) { e in
            var metadata = Logger.Metadata()
            if let r = e.repository { metadata["wayback.repository"] = "\(r)" }
            if let b = e.backup { metadata["wayback.backup"] = "\(b)" }
            if let s = e.segment { metadata["wayback.segment"] = "\(s)" }
            logger.log(level: e.severity.logLevel, "\(e.message)", metadata: metadata.isEmpty ? nil : metadata)
        }
    }
}

extension WaybackEvent.Severity {
    public var logLevel: Logger.Level {
        switch self {
        case .info: return .info
        case .warning: return .warning
        case .error: return .error
        case .critical: return .critical
        }
    }
}
