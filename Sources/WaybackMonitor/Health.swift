import Foundation
import WaybackCatalog
import WaybackCore

/// What the health of a cluster's backups is judged from: gathered by the command layer (the
/// repositories, the server's archiver, the verification and drill records, the disks), judged
/// here by pure functions, shared by `wayback check`, `/metrics`, the status page and alerts.
public struct HealthFacts: Codable, Sendable {
    public struct Backup: Codable, Sendable, Equatable {
        public var id: String
        public var type: String
        public var start: Date
        public var stop: Date
        public var repositoryBytes: Int64
        public init(id: String, type: String, start: Date, stop: Date, repositoryBytes: Int64) {
            self.id = id; self.type = type; self.start = start; self.stop = stop; self.repositoryBytes = repositoryBytes
        }
    }
    public struct Repository: Codable, Sendable, Equatable {
        public var name: String
        public var reachable: Bool
        public var error: String?
        public var walPush: String
        public var storedBytes: Int64?
        /// Segments queued for this (asynchronous) repository.
        public var queued: Int?
        public var queueError: String?
        /// The backups it holds.
        public var backups: [String]
        public init(name: String, reachable: Bool, error: String?, walPush: String, storedBytes: Int64?, queued: Int?, queueError: String?,
                    backups: [String] = []) {
            self.name = name; self.reachable = reachable; self.error = error; self.walPush = walPush; self.storedBytes = storedBytes
            self.queued = queued; self.queueError = queueError; self.backups = backups
        }
    }
    /// `pg_stat_archiver`.
    public struct Archiver: Codable, Sendable, Equatable {
        public var archivedCount: Int
        public var failedCount: Int
        public var lastArchivedWAL: String?
        public var lastArchivedTime: Date?
        public var lastFailedWAL: String?
        public var lastFailedTime: Date?
        public init(archivedCount: Int, failedCount: Int, lastArchivedWAL: String?, lastArchivedTime: Date?, lastFailedWAL: String?, lastFailedTime: Date?) {
            self.archivedCount = archivedCount; self.failedCount = failedCount; self.lastArchivedWAL = lastArchivedWAL
            self.lastArchivedTime = lastArchivedTime; self.lastFailedWAL = lastFailedWAL; self.lastFailedTime = lastFailedTime
        }
        /// The last attempt failed: nothing is archived until it works again.
        public var failing: Bool { lastFailedTime.map { f in lastArchivedTime.map { f > $0 } ?? true } ?? false }
    }
    public struct Drill: Codable, Sendable, Equatable {
        public var id: String
        public var backup: String
        public var repository: String
        public var at: Date
        public var passed: Bool
        public var recoverySeconds: Double
        public var rtoSeconds: Double
        public var failedChecks: [String]
        public init(id: String, backup: String, repository: String, at: Date, passed: Bool, recoverySeconds: Double, rtoSeconds: Double,
                    failedChecks: [String]) {
            self.id = id; self.backup = backup; self.repository = repository; self.at = at; self.passed = passed
            self.recoverySeconds = recoverySeconds; self.rtoSeconds = rtoSeconds; self.failedChecks = failedChecks
        }
    }

    public var cluster: String
    public var gatheredAt: Date
    /// Complete backups, oldest first (empty when no repository could be read).
    public var backups: [Backup]
    /// Why the backups could not be listed (no repository answered).
    public var backupsError: String?
    public var repositories: [Repository]
    public var windows: [RecoveryWindow]
    public var archiver: Archiver?
    public var archiverError: String?
    /// The newest verification of any backup, and the backups found damaged at their last one.
    public var lastVerified: Date?
    public var damagedBackups: [String]
    public var verifyError: String?
    public var lastDrill: Drill?
    public var lastPassedDrill: Drill?
    public var drillError: String?
    public var disks: [DiskWatch.Entry]
    /// Logical dumps (id and start), oldest first; empty when the cluster takes none.
    public var dumps: [DumpListing] = []
    /// A logical cluster (`cluster.type: logical`): dumps are its backups; no WAL, no physical backups.
    public var logical = false

    public init(cluster: String, gatheredAt: Date) {
        self.cluster = cluster; self.gatheredAt = gatheredAt
        backups = []; repositories = []; windows = []; damagedBackups = []; disks = []
    }

    public var newestBackup: Backup? { backups.max { $0.stop < $1.stop } }
    public var newestFull: Backup? { backups.filter { $0.type == "full" }.max { $0.stop < $1.stop } }
    /// When WAL was last archived: the server's word, else the newest archived transaction.
    public var lastArchived: (time: Date, source: String)? {
        if let t = archiver?.lastArchivedTime { return (t, "pg_stat_archiver") }
        if let t = windows.compactMap(\.latest).max() { return (t, "newest archived transaction") }
        return nil
    }
}

/// The thresholds of `check:` (seconds, segments).
public struct HealthThresholds: Sendable, Equatable {
    public var backupAgeWarning: Double = 2 * 3600
    public var backupAgeCritical: Double = 26 * 3600
    public var fullAgeWarning: Double = 26 * 3600
    public var fullAgeCritical: Double = 50 * 3600
    public var walAgeWarning: Double = 90 * 60
    public var walAgeCritical: Double = 6 * 3600
    public var queueWarning: Int = 100
    public var queueCritical: Int = 1000
    public var verifyAgeWarning: Double = 50 * 3600
    public var drillAgeWarning: Double = 8 * 86400
    /// The newest logical dump (only when the cluster has dumps).
    public var dumpAgeWarning: Double = 26 * 3600
    /// How long `check` waits for each repository and for the server.
    public var timeoutSeconds: Double = 5
    public init() {}
}

public enum HealthStatus: String, Codable, Sendable, CaseIterable {
    case ok = "OK", warning = "WARNING", critical = "CRITICAL", unknown = "UNKNOWN"

    /// The Nagios plugin exit status.
    public var exitCode: Int32 {
        switch self { case .ok: 0; case .warning: 1; case .critical: 2; case .unknown: 3 }
    }
    /// Worse first: CRITICAL, WARNING, UNKNOWN, OK.
    var rank: Int {
        switch self { case .ok: 0; case .unknown: 1; case .warning: 2; case .critical: 3 }
    }
    public static func worst(_ list: [HealthStatus]) -> HealthStatus { list.max { $0.rank < $1.rank } ?? .ok }
}

/// One line of perfdata: `label=value[unit];warn;crit;min`.
public struct PerfValue: Codable, Sendable, Equatable {
    public var label: String
    public var value: Double
    public var unit: String
    public var warning: Double?
    public var critical: Double?
    public init(_ label: String, _ value: Double, unit: String = "", warning: Double? = nil, critical: Double? = nil) {
        self.label = label; self.value = value; self.unit = unit; self.warning = warning; self.critical = critical
    }

    /// Nagios' form: labels with spaces or quotes are single-quoted (a quote doubled).
    public var text: String {
        let quoted = label.contains { " '=".contains($0) } ? "'" + label.replacingOccurrences(of: "'", with: "''") + "'" : label
        func n(_ v: Double?) -> String { v.map { $0 == $0.rounded() && abs($0) < 1e15 ? String(Int64($0)) : String(format: "%.3f", $0) } ?? "" }
        var s = "\(quoted)=\(n(value))\(unit);\(n(warning));\(n(critical))"
        if unit == "s" || unit == "%" || unit.isEmpty { s += ";0" }
        return s
    }
}

/// One check's verdict.
public struct HealthItem: Codable, Sendable, Equatable {
    public var name: String
    public var status: HealthStatus
    public var message: String
    public var perf: [PerfValue]
    public init(_ name: String, _ status: HealthStatus, _ message: String, perf: [PerfValue] = []) {
        self.name = name; self.status = status; self.message = message; self.perf = perf
    }
}

/// Every check's verdict, the worst first in the summary.
public struct HealthReport: Codable, Sendable {
    public var cluster: String
    public var checkedAt: Date
    public var status: HealthStatus
    public var summary: String
    public var items: [HealthItem]

    public init(cluster: String, checkedAt: Date, status: HealthStatus, summary: String, items: [HealthItem]) {
        self.cluster = cluster; self.checkedAt = checkedAt; self.status = status; self.summary = summary; self.items = items
    }

    /// `WAYBACK STATUS - summary | perfdata`, then one line per check (Nagios long output).
    public var nagios: String {
        // '|' starts the perfdata and a newline the long output: neither may appear in the text.
        func clean(_ t: String) -> String { t.replacingOccurrences(of: "|", with: "/").split(whereSeparator: \.isNewline).joined(separator: " ") }
        let perf = items.flatMap(\.perf).map(\.text).joined(separator: " ")
        var s = "WAYBACK \(status.rawValue) - \(clean(summary))" + (perf.isEmpty ? "" : " | " + perf) + "\n"
        for i in items { s += "\(i.status.rawValue): \(clean(i.name)): \(clean(i.message))\n" }
        return s
    }
}

public enum HealthCheck {
    /// With two or more repositories: the newest backup (a logical cluster: dump) that ended more
    /// than `grace` ago, and the repositories that answered but lack it (empty: every one has it).
    /// The daemon's hourly sync copies what one missed, so within `grace` a copy is not missing
    /// yet. Only the newest is judged: each repository's own retention may keep older ones
    /// differently. Nil: one repository, or nothing that old.
    public static func missingCopies(_ facts: HealthFacts, grace: Double, now: Date)
        -> (id: String, kind: String, ended: Date, lacking: [String], message: String)? {
        guard facts.repositories.count > 1 else { return nil }
        let settled = facts.logical
            ? facts.dumps.filter { now.timeIntervalSince($0.id.time) > grace }.max { $0.id < $1.id }
                .map { (id: $0.id.rawValue, ended: $0.id.time, kind: "logical dump", holders: Set($0.repositories)) }
            : facts.backups.filter { now.timeIntervalSince($0.stop) > grace }.max { $0.stop < $1.stop }
                .map { b in (id: b.id, ended: b.stop, kind: "backup", holders: Set(facts.repositories.filter { $0.backups.contains(b.id) }.map(\.name))) }
        guard let b = settled else { return nil }
        let lacking = facts.repositories.filter { $0.reachable && !b.holders.contains($0.name) }.map(\.name)
        let message = "\(b.kind) \(b.id), ended \(Format.age(max(0, now.timeIntervalSince(b.ended)))) ago, is not in \(lacking.map { "'\($0)'" }.joined(separator: ", ")): "
            + "one copy fewer than configured; 'wayback repo sync' copies it (the daemon's sync job, hourly)"
        return (b.id, b.kind, b.ended, lacking, message)
    }

    /// Judges `facts` at `now` (pure).
    public static func evaluate(_ facts: HealthFacts, thresholds t: HealthThresholds, now: Date) -> HealthReport {
        var items = [HealthItem]()
        func age(_ d: Date) -> Double { max(0, now.timeIntervalSince(d)) }
        func level(_ value: Double, _ warning: Double, _ critical: Double?) -> HealthStatus {
            if let critical, value > critical { return .critical }
            return value > warning ? .warning : .ok
        }
        let since = facts.logical ? facts.dumps.compactMap(\.id.startTime).min() : facts.backups.map(\.start).min()

        // Backups: the newest of any type, and the newest full.
        if let error = facts.backupsError {
            items.append(HealthItem("backups", .critical, "no repository could be read: \(error)"))
        } else if facts.logical {
            if facts.dumps.isEmpty { items.append(HealthItem("dump age", .critical, "no logical dump (take one with 'wayback dump')")) }
        } else {
            for (name, backup, warning, critical) in [("backup age", facts.newestBackup, t.backupAgeWarning, t.backupAgeCritical),
                                                      ("full age", facts.newestFull, t.fullAgeWarning, t.fullAgeCritical)] {
                let label = name.replacingOccurrences(of: " ", with: "_")
                guard let b = backup else {
                    items.append(HealthItem(name, .critical, name == "backup age" ? "no complete backup (take one with 'wayback backup')"
                                                                                  : "no complete full backup (take one with 'wayback backup --type full')"))
                    continue
                }
                let a = age(b.stop)
                let s = level(a, warning, critical)
                items.append(HealthItem(name, s, "newest \(name == "full age" ? "full" : "backup") \(b.id) (\(b.type)) ended \(Format.age(a)) ago"
                                        + (s == .ok ? "" : ", over \(Format.age(s == .critical ? critical : warning))"),
                                        perf: [PerfValue(label, a.rounded(), unit: "s", warning: warning, critical: critical)]))
            }
        }

        // WAL: the newest archived segment, and the archiver's failures since then.
        if facts.logical {
            // No WAL archive: a logical cluster's recovery points are its dumps.
        } else if let last = facts.lastArchived {
            let a = age(last.time)
            var s = level(a, t.walAgeWarning, t.walAgeCritical)
            var message = "WAL last archived \(Format.age(a)) ago (\(last.source))"
            if let arch = facts.archiver, arch.failing {
                s = HealthStatus.worst([s, .warning])
                message += "; archive_command is failing (\(arch.failedCount) failure(s), last for \(arch.lastFailedWAL ?? "?")"
                    + (arch.lastFailedTime.map { " \(Format.age(age($0))) ago" } ?? "") + "): nothing is archived until it works"
            }
            if s != .ok && !message.contains("over") { message += "; warning at \(Format.age(t.walAgeWarning)), critical at \(Format.age(t.walAgeCritical))" }
            items.append(HealthItem("wal age", s, message, perf: [PerfValue("wal_age", a.rounded(), unit: "s", warning: t.walAgeWarning, critical: t.walAgeCritical)]))
        } else if let arch = facts.archiver, arch.failing {
            items.append(HealthItem("wal age", .critical, "no WAL archived yet and archive_command is failing (\(arch.failedCount) failure(s), last for \(arch.lastFailedWAL ?? "?"))"))
        } else {
            items.append(HealthItem("wal age", since.map { age($0) > t.walAgeWarning } == true ? .warning : .ok, "no WAL archived yet"))
        }
        if let e = facts.archiverError { items.append(HealthItem("archiver", .unknown, "pg_stat_archiver not read: \(e)")) }

        // Repositories, and the asynchronous queues.
        for r in facts.repositories {
            guard r.reachable else {
                items.append(HealthItem("repository \(r.name)", .critical, "cannot be read: \(r.error ?? "unknown error")",
                                        perf: [PerfValue("reachable_\(r.name)", 0, warning: nil, critical: nil)]))
                continue
            }
            if r.walPush == "async" {
                if let q = r.queued {
                    let s: HealthStatus = q > t.queueCritical ? .critical : q > t.queueWarning ? .warning : .ok
                    items.append(HealthItem("queue \(r.name)", s, "\(q) WAL segment(s) queued for '\(r.name)'",
                                            perf: [PerfValue("queue_\(r.name)", Double(q), warning: Double(t.queueWarning), critical: Double(t.queueCritical))]))
                } else {
                    items.append(HealthItem("queue \(r.name)", .unknown, "the WAL queue of '\(r.name)' cannot be read: \(r.queueError ?? "unknown")"))
                }
            }
            items.append(HealthItem("repository \(r.name)", .ok, "reachable", perf: [PerfValue("reachable_\(r.name)", 1)]))
        }

        // Copies (3-2-1): see `missingCopies`.
        if facts.repositories.count > 1, let m = missingCopies(facts, grace: t.backupAgeWarning, now: now) {
            items.append(m.lacking.isEmpty
                ? HealthItem("copies", .ok, "the newest \(m.kind) \(m.id) is in all \(facts.repositories.count) repositories")
                : HealthItem("copies", .warning, m.message))
        }

        // Disks (the disk watch's thresholds).
        for d in facts.disks {
            let s: HealthStatus = d.level == .critical ? .critical : d.level == .warning ? .warning : d.level == .unknown ? .unknown : .ok
            items.append(HealthItem("disk \(d.path)", s, d.text,
                                    perf: d.usedPercent.map { [PerfValue("disk \(d.path)", ($0 * 10).rounded() / 10, unit: "%")] } ?? []))
        }

        // Logical dumps, when the cluster takes them.
        if let newest = facts.dumps.max(by: { $0.id < $1.id }), let started = newest.id.startTime {
            let a = age(started)
            items.append(HealthItem("dump age", level(a, t.dumpAgeWarning, nil), "newest logical dump \(newest.id) started \(Format.age(a)) ago"
                                    + (a > t.dumpAgeWarning ? ", over \(Format.age(t.dumpAgeWarning))" : ""),
                                    perf: [PerfValue("dump_age", a.rounded(), unit: "s", warning: t.dumpAgeWarning)]))
        }

        // Verification.
        if let e = facts.verifyError {
            items.append(HealthItem("verify", .unknown, "the verification records cannot be read: \(e)"))
        } else if !facts.damagedBackups.isEmpty {
            items.append(HealthItem("verify", .critical, "backup(s) \(facts.damagedBackups.joined(separator: ", ")) found damaged by their last verification ('wayback verify')"))
        } else if let v = facts.lastVerified {
            let a = age(v)
            items.append(HealthItem("verify", level(a, t.verifyAgeWarning, nil), "last verification \(Format.age(a)) ago"
                                    + (a > t.verifyAgeWarning ? ", over \(Format.age(t.verifyAgeWarning))" : ""),
                                    perf: [PerfValue("verify_age", a.rounded(), unit: "s", warning: t.verifyAgeWarning)]))
        } else {
            let overdue = since.map { age($0) > t.verifyAgeWarning } ?? false
            items.append(HealthItem("verify", overdue ? .warning : .ok, "no verification yet ('wayback verify')"))
        }

        // Drills.
        if let e = facts.drillError { items.append(HealthItem("drill", .unknown, "the drill records cannot be read: \(e)")) }
        if let d = facts.lastDrill {
            let a = age(d.at)
            var s = level(a, t.drillAgeWarning, nil)
            var message = "last drill \(d.id) of \(d.backup) from '\(d.repository)' \(Format.age(a)) ago"
            if !d.passed {
                s = .critical
                message += " FAILED (\(d.failedChecks.joined(separator: ", ")))"
            } else if d.recoverySeconds > d.rtoSeconds {
                s = HealthStatus.worst([s, .warning])
                message += ": recovery took \(Format.seconds(d.recoverySeconds)), over the objective of \(Format.seconds(d.rtoSeconds))"
            } else {
                message += ": passed, recovery \(Format.seconds(d.recoverySeconds)) (objective \(Format.seconds(d.rtoSeconds)))"
            }
            if a > t.drillAgeWarning { message += "; over \(Format.age(t.drillAgeWarning)) old" }
            items.append(HealthItem("drill", s, message, perf: [PerfValue("drill_age", a.rounded(), unit: "s", warning: t.drillAgeWarning),
                                                                PerfValue("drill_recovery", (d.recoverySeconds * 1000).rounded() / 1000, unit: "s", critical: d.rtoSeconds)]))
        } else if facts.drillError == nil {
            let overdue = since.map { age($0) > t.drillAgeWarning } ?? false
            items.append(HealthItem("drill", overdue ? .warning : .ok, "no restore drill yet ('wayback drill')"))
        }

        let status = HealthStatus.worst(items.map(\.status))
        let bad = items.filter { $0.status != .ok }.sorted { $0.status.rank > $1.status.rank }
        let summary: String
        if bad.isEmpty {
            var parts = ["cluster \(facts.cluster)"]
            if let b = facts.newestBackup { parts.append("newest backup \(Format.age(age(b.stop))) ago") }
            if let w = facts.lastArchived { parts.append("WAL \(Format.age(age(w.time))) ago") }
            parts.append("\(facts.repositories.count) repositor\(facts.repositories.count == 1 ? "y" : "ies") reachable")
            summary = parts.joined(separator: ", ")
        } else {
            summary = "cluster \(facts.cluster): " + bad.map { "\($0.name): \($0.message)" }.joined(separator: "; ")
        }
        return HealthReport(cluster: facts.cluster, checkedAt: now, status: status, summary: summary, items: items)
    }
}
