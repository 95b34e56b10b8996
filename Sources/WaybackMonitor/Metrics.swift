import Foundation
import WaybackCatalog
import WaybackCore

/// What the metrics add to the health facts: counters and the daemon's own state.
public struct MetricsExtras: Sendable, Equatable {
    /// Failed backups by type (`backup_logs`, else the daemon's own count since it started).
    public var backupFailures: [String: Int]
    /// The daemon's jobs, and whether each is running now.
    public var jobsRunning: [String: Bool]
    public init(backupFailures: [String: Int] = [:], jobsRunning: [String: Bool] = [:]) {
        self.backupFailures = backupFailures; self.jobsRunning = jobsRunning
    }
}

/// Prometheus' text exposition format (version 0.0.4), written by hand: a few dozen gauges and
/// counters from one snapshot do not need a metrics registry.
public enum MetricsText {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    struct Family {
        var name: String
        var help: String
        var type: String
        var samples: [(labels: [(String, String)], value: Double)] = []
    }

    public static func render(_ f: HealthFacts, report: HealthReport, extras: MetricsExtras) -> String {
        var families = [Family]()
        func add(_ name: String, _ type: String, _ help: String, _ samples: [(labels: [(String, String)], value: Double)]) {
            families.append(Family(name: name, help: help, type: type, samples: samples))
        }
        let types = ["full", "diff", "incr"]
        func newest(_ type: String) -> HealthFacts.Backup? { f.backups.filter { $0.type == type }.max { $0.stop < $1.stop } }

        add("wayback_up", "gauge", "1 when the last gathering read at least one repository.", [([], f.backupsError == nil ? 1 : 0)])
        add("wayback_check_status", "gauge", "The result of the health checks: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (as wayback check).",
            [([], Double(report.status.exitCode))])
        add("wayback_last_gather_timestamp_seconds", "gauge", "When these values were gathered (Unix time).", [([], f.gatheredAt.timeIntervalSince1970)])
        add("wayback_backup_last_success_timestamp_seconds", "gauge", "End of the newest complete backup of each type (Unix time).",
            types.compactMap { t in newest(t).map { ([("type", t)], $0.stop.timeIntervalSince1970) } })
        add("wayback_backup_last_duration_seconds", "gauge", "How long the newest complete backup of each type took.",
            types.compactMap { t in newest(t).map { ([("type", t)], $0.stop.timeIntervalSince($0.start)) } })
        add("wayback_backup_last_size_bytes", "gauge", "Bytes the newest complete backup of each type stores, in each repository that holds it.",
            types.flatMap { t -> [(labels: [(String, String)], value: Double)] in
                guard let b = newest(t) else { return [] }
                return f.repositories.filter { $0.backups.contains(b.id) }.map { ([("type", t), ("repository", $0.name)], Double(b.repositoryBytes)) }
            })
        add("wayback_backup_failures_total", "counter", "Failed backups of each type, logical dumps as type logical (from backup_logs).",
            (types + [DumpID.typeName]).map { ([("type", $0)], Double(extras.backupFailures[$0] ?? 0)) })
        add("wayback_wal_last_archived_timestamp_seconds", "gauge", "When WAL was last archived (pg_stat_archiver; else the newest archived transaction).",
            f.lastArchived.map { [([], $0.time.timeIntervalSince1970)] } ?? [])
        add("wayback_wal_archive_failures_total", "counter", "archive_command failures since the server's statistics were reset (pg_stat_archiver.failed_count).",
            f.archiver.map { [([], Double($0.failedCount))] } ?? [])
        add("wayback_wal_queue_segments", "gauge", "WAL segments queued for each asynchronous repository.",
            f.repositories.compactMap { r in r.queued.map { ([("repository", r.name)], Double($0)) } })
        add("wayback_pitr_window_start_timestamp_seconds", "gauge", "The earliest point each timeline can be recovered to (Unix time).",
            f.windows.compactMap { w in w.earliest.map { ([("timeline", String(w.timeline))], $0.timeIntervalSince1970) } })
        let current = f.windows.max { $0.timeline < $1.timeline }
        add("wayback_pitr_window_seconds", "gauge", "Length of the recoverable window of the newest timeline (its earliest to its latest point).",
            current.flatMap { w in w.earliest.flatMap { e in w.latest.map { [([], max(0, $0.timeIntervalSince(e)))] } } } ?? [])
        add("wayback_repository_size_bytes", "gauge", "Bytes of this cluster's backups and WAL in each repository (from its listing).",
            f.repositories.compactMap { r in r.storedBytes.map { ([("repository", r.name)], Double($0)) } })
        add("wayback_repository_reachable", "gauge", "1 when the repository answered the last gathering.",
            f.repositories.map { ([("repository", $0.name)], $0.reachable ? 1 : 0) })
        add("wayback_filesystem_used_ratio", "gauge", "Share of each watched file system (or S3 quota) in use.",
            f.disks.compactMap { d in d.usedPercent.map { ([("path", d.path)], $0 / 100) } })
        let newestDump = f.dumps.max { $0.id < $1.id }
        add("wayback_dump_last_success_timestamp_seconds", "gauge", "When the newest complete logical dump started (Unix time).",
            newestDump?.id.startTime.map { [([], $0.timeIntervalSince1970)] } ?? [])
        add("wayback_dump_last_size_bytes", "gauge", "Bytes the newest complete logical dump stores, in each repository that holds it.",
            newestDump.map { d in d.repositories.map { ([("repository", $0)], Double(d.bytes)) } } ?? [])
        add("wayback_verify_last_success_timestamp_seconds", "gauge", "The newest verification that found a backup sound (Unix time).",
            f.lastVerified.map { [([], $0.timeIntervalSince1970)] } ?? [])
        add("wayback_verify_damaged_backups", "gauge", "Backups found damaged by their last verification.", [([], Double(f.damagedBackups.count))])
        add("wayback_drill_last_recovery_seconds", "gauge", "Recovery time of the last drill (plan, files and replay to a server accepting queries).",
            f.lastDrill.map { [([], $0.recoverySeconds)] } ?? [])
        add("wayback_drill_last_success_timestamp_seconds", "gauge", "When the last passed drill started (Unix time).",
            f.lastPassedDrill.map { [([], $0.at.timeIntervalSince1970)] } ?? [])
        add("wayback_drill_last_passed", "gauge", "1 when the last drill passed its checks, 0 when it failed.",
            f.lastDrill.map { [([], $0.passed ? 1 : 0)] } ?? [])
        add("wayback_job_running", "gauge", "1 while the daemon runs this job.",
            extras.jobsRunning.keys.sorted().map { ([("job", $0)], extras.jobsRunning[$0]! ? 1 : 0) })

        let cluster = ("cluster", f.cluster)
        var out = ""
        for family in families where !family.samples.isEmpty {
            out += "# HELP \(family.name) \(family.help)\n# TYPE \(family.name) \(family.type)\n"
            for s in family.samples {
                let labels = ([cluster] + s.labels).map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",")
                out += "\(family.name){\(labels)} \(number(s.value))\n"
            }
        }
        return out
    }

    /// Label values: backslash, double quote and newline escaped.
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(format: "%.3f", v)
    }
}
