import Foundation
import WaybackCatalog
import WaybackCore
import WaybackPostgres

/// Where recovery stops.
public enum RecoveryTarget: Sendable, Equatable, CustomStringConvertible {
    /// Replay all archived WAL, then promote (the default).
    case latest
    /// Stop as soon as the backup is consistent (`recovery_target = 'immediate'`).
    case backupEnd
    /// Microseconds since 1970-01-01 UTC (`recovery_target_time`).
    case time(Int64)
    case lsn(LSN)
    case xid(UInt32)
    /// A restore point made with `pg_create_restore_point`.
    case name(String)

    public var isPointInTime: Bool {
        switch self { case .latest, .backupEnd: false; default: true }
    }

    /// A stable name for scripts and for decisions made after planning.
    public enum Kind: String, Sendable, Codable {
        case latest, backupEnd = "backup-end", time, lsn, xid, name
    }

    public var kind: Kind {
        switch self {
        case .latest: .latest
        case .backupEnd: .backupEnd
        case .time: .time
        case .lsn: .lsn
        case .xid: .xid
        case .name: .name
        }
    }

    public var description: String {
        switch self {
        case .latest: "the end of the archived WAL (latest)"
        case .backupEnd: "the end of the backup (immediate)"
        case .time(let t): "time \(Format.postgresTimestamp(micros: t)) (UTC)"
        case .lsn(let l): "LSN \(l)"
        case .xid(let x): "transaction \(x)"
        case .name(let n): "restore point \"\(n)\""
        }
    }
}

/// What the server does once the target is reached (`recovery_target_action`).
public enum TargetAction: String, Sendable, Codable, CaseIterable {
    case pause, promote, shutdown
}

/// Which timeline to recover along (`recovery_target_timeline`).
public enum TimelineChoice: Sendable, Equatable, CustomStringConvertible {
    case latest, current
    case number(UInt32)

    public init?(_ text: String) {
        switch text {
        case "latest": self = .latest
        case "current": self = .current
        default:
            guard let n = UInt32(text), n > 0 else { return nil }
            self = .number(n)
        }
    }

    public var description: String {
        switch self { case .latest: "latest"; case .current: "current"; case .number(let n): "\(n)" }
    }
}

/// Whether the restored cluster archives WAL into the archive it was restored from.
public enum ArchiveMode: String, Sendable, Codable, CaseIterable {
    case preserve, off
}

/// What the user asked for.
public struct RecoveryRequest: Sendable {
    public var target: RecoveryTarget
    public var exclusive: Bool
    /// Nil: the default for the target (see `defaultAction`).
    public var action: TargetAction?
    public var timeline: TimelineChoice
    public var backupID: BackupID?

    public init(target: RecoveryTarget = .latest, exclusive: Bool = false, action: TargetAction? = nil,
                timeline: TimelineChoice = .latest, backupID: BackupID? = nil) {
        self.target = target; self.exclusive = exclusive; self.action = action; self.timeline = timeline; self.backupID = backupID
    }

    /// `pause` for a point in time: the data can be checked (read-only) before the irreversible
    /// promotion to a new timeline, and `--advance` can move the target further. `promote` for the
    /// end of the backup and for latest (where there is nothing to pause at).
    public var effectiveAction: TargetAction { action ?? (target.isPointInTime ? .pause : .promote) }
}

/// The plan of a restore: everything decided before a byte is written. `restore --dry-run`
/// prints it; a restore executes it.
public struct RecoveryPlan: Sendable, Codable {
    public struct WAL: Sendable, Codable, Equatable {
        /// First and last segment PostgreSQL will read (nil: none beyond the backup).
        public var first: String?
        public var last: String?
        public var segments: Int
        /// Segments that come from the backup's own WAL copies.
        public var inBackup: Int
        /// History files recovery reads (present ones).
        public var histories: [String]
        public var missing: [String]
        public var damaged: [String]
        public var bytes: Int64
    }

    /// The record where recovery is expected to stop, found in the archived WAL.
    public struct StopPoint: Sendable, Codable, Equatable {
        /// `before` or `after` the record.
        public var position: String
        public var record: String
        public var lsn: LSN
        public var xid: UInt32?
        public var time: Date?
        public var restorePoint: String?
    }

    public struct Estimate: Sendable, Codable, Equatable {
        public var seconds: Double
        public var filesSeconds: Double
        public var replaySeconds: Double
        /// Where the rates come from.
        public var basis: String
    }

    public var target: String
    public var targetKind: RecoveryTarget.Kind
    /// For a time target: the instant as PostgreSQL will read it.
    public var targetTime: String?
    public var exclusive: Bool
    public var action: TargetAction
    public var timeline: UInt32
    /// Timelines from the backup's to the target's, oldest first.
    public var timelinePath: [UInt32]
    public var backup: BackupID
    public var backupReason: String
    public var backupStop: Date
    public var files: Int
    public var bytes: Int64
    public var wal: WAL
    public var stop: StopPoint?
    public var windows: [RecoveryWindow]
    public var estimate: Estimate
    public var problems: [String]
    /// The backups read, oldest (the full) first, when the backup is a diff or incr.
    public var chain: [BackupID] = []
    /// Objects of the chain's backups that are missing or of another size than recorded in
    /// every repository (from listings; the data is read, and verified, by the restore).
    public var damagedObjects: [String]?

    public var ok: Bool { problems.isEmpty }
}

/// The pure decisions of recovery planning, given what the archive holds.
public enum RecoverySelection {
    /// Where a target lies once the archive has been read: a backup must end at or before it.
    public enum Position: Sendable, Equatable {
        case end
        case time(Int64)
        case lsn(LSN)
        /// The target record, and other records of the same restore-point name that recovery
        /// must not meet first.
        case record(LSN, others: [LSN])
    }

    /// The newest usable backup that ends before the position, or the requested one if it does;
    /// throws `.restoreTarget` naming the window otherwise.
    public static func choose(_ usable: [BackupFacts], position: Position, requested: BackupID?,
                              windowText: @autoclosure () -> String) throws -> (BackupFacts, String) {
        func fits(_ b: BackupFacts) -> Bool {
            switch position {
            case .end: return true
            case .time(let t): return Int64((b.stopTime.timeIntervalSince1970 * 1_000_000).rounded(.up)) <= t
            case .lsn(let l): return b.stopLSN <= l
            case .record(let l, let others): return b.stopLSN <= l && !others.contains { $0 >= b.startLSN && $0 < l }
            }
        }
        if let requested {
            guard let b = usable.first(where: { $0.id == requested }) else {
                throw WaybackError(.restoreTarget, "backup \(requested) does not lead to the target timeline (it was taken on another timeline or after the switch); recoverable: \(windowText())")
            }
            guard fits(b) else {
                throw WaybackError(.restoreTarget, "backup \(requested) ends after the target (at \(b.stopLSN), \(Format.timestamp(b.stopTime))), so recovery cannot stop there; choose an earlier backup or omit --backup. Recoverable: \(windowText())")
            }
            return (b, "requested with --backup")
        }
        guard let b = usable.last(where: fits) else {
            throw WaybackError(.restoreTarget, "the target is before the earliest recoverable point: no backup ends before it. Recoverable: \(windowText())")
        }
        let reason: String
        switch position {
        case .end: reason = "the newest backup on this timeline"
        default: reason = "the newest backup that ends before the target"
        }
        return (b, reason)
    }

    /// Segments of `range` that neither the archive nor the backup's copies hold.
    public static func missing(_ segments: [SegmentOnPath], archive: ArchiveContents, backup: BackupFacts) -> [SegmentOnPath] {
        segments.filter { s in !archive.has(s.timeline, s.number) && !(s.timeline == backup.timeline && backup.walCopies.contains(s.number)) }
    }

    /// Seconds to restore `bytes` and replay `walBytes`, from measured rates when there are any.
    public static func estimate(bytes: Int64, walBytes: Int64, history: [RestoreRecord], backups: [BackupFacts]) -> RecoveryPlan.Estimate {
        let measured = history.filter { $0.filesSeconds > 0 && $0.bytes > 0 }.suffix(5)
        var basis = [String]()
        let fileRate: Double
        if !measured.isEmpty {
            fileRate = median(measured.map { Double($0.bytes) / $0.filesSeconds })
            basis.append("restore speed of the last \(measured.count) restore(s) of this repository")
        } else if let b = backups.last(where: { $0.copySeconds > 0 && $0.bytes > 0 }) {
            fileRate = Double(b.bytes) / b.copySeconds
            basis.append("copy speed of backup \(b.id) (no restore measured yet)")
        } else {
            fileRate = 100 * 1024 * 1024
            basis.append("an assumed 100 MiB/s for files (nothing measured yet)")
        }
        let replays = history.filter { ($0.replaySeconds ?? 0) > 0 && ($0.walBytes ?? 0) > 0 }.suffix(5)
        let replayRate: Double
        if !replays.isEmpty {
            replayRate = median(replays.map { Double($0.walBytes!) / $0.replaySeconds! })
            basis.append("WAL replay speed of the last \(replays.count) started restore(s)")
        } else {
            replayRate = 64 * 1024 * 1024
            basis.append("an assumed 64 MiB/s WAL replay (no started restore measured yet)")
        }
        let f = Double(bytes) / max(fileRate, 1), r = Double(walBytes) / max(replayRate, 1)
        return .init(seconds: f + r, filesSeconds: f, replaySeconds: r, basis: basis.joined(separator: "; "))
    }

    static func median(_ v: [Double]) -> Double {
        let s = v.sorted()
        return s.isEmpty ? 0 : s[s.count / 2]
    }
}
