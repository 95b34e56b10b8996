import ArgumentParser
import Foundation
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackMonitor
import WaybackPostgres
import WaybackRestore
import WaybackStorage
import WaybackVerify

/// The daily integrity report: what happened in a period and the state now, open problems first.
struct IntegrityReport: Codable, Sendable {
    struct Backup: Codable, Sendable {
        var id: String
        var type: String
        var start: Date
        var seconds: Double
        var bytes: Int64
        var verifiedAt: Date?
        /// nil: not every object verified yet.
        var sound: Bool?
        var drilled: Bool
    }
    struct Drill: Codable, Sendable {
        var id: String
        var backup: String
        var repository: String
        var at: Date
        var passed: Bool
        var recoverySeconds: Double
        var rtoSeconds: Double
        var recoveryPointSeconds: Double?
        var rpoSeconds: Double
        var failedChecks: [String]
    }
    var cluster: String
    var generatedAt: Date
    var since: Date
    /// Open problems, the worst first: what needs someone today.
    var problems: [String]
    var notes: [String]
    /// Backups taken in the period, then the state of every backup.
    var backupsTaken: [Backup]
    var backups: [Backup]
    var failedBackups: [String]
    var expiredBackups: [String]
    var drills: [Drill]
    var windows: [RecoveryWindow]
    /// How far behind the newest archived transaction is (the recovery point a restore now gets).
    var recoveryPointSeconds: Double?
    var disks: [DiskWatch.Entry]
    /// The status page's view (the state, the window): the HTML report starts with it.
    var status: StatusDocument?
}

extension CommandRun {
    /// Gathers the report from the repositories, the verification and drill records, the
    /// catalog and the disks; what cannot be read is a problem, never left out in silence.
    func integrityReport(since: Date, now: Date) async throws -> IntegrityReport {
        let overview = try await statusOverview()
        let first = try repository().members[0]
        var problems = [String](), notes = [String]()
        for r in overview.repositories where !r.reachable { problems.append("repository '\(r.name)' cannot be read: \(r.error ?? "unknown error")") }
        for r in overview.repositories where !r.missingBackups.isEmpty {
            problems.append("repository '\(r.name)' lacks backup(s) \(r.missingBackups.joined(separator: ", ")) (run 'wayback repo sync')")
        }
        for b in overview.report.backups { for p in b.problems ?? [] { problems.append("backup \(b.id): \(p)") } }
        for w in overview.windows where !(w.damaged ?? []).isEmpty { problems.append("WAL damaged: \(w.text)") }

        let states = await Verify.states(first, cluster: config.cluster.name, backups: overview.summaries)
        // Drills are recorded in the repository they restored from (an offsite drill in the offsite one).
        var drillRecords = [DrillRecord]()
        for member in try repository().members {
            do {
                drillRecords += try await Drill.records(member, cluster: config.cluster.name)
            } catch {
                problems.append("the drill records of repository '\(member.name)' cannot be read (\((error as? WaybackError)?.message ?? String(describing: error))): its drills are not listed")
            }
        }
        drillRecords.sort { $0.startedAt < $1.startedAt }
        let drilledIDs = Set(drillRecords.filter(\.passed).map(\.backup))
        let backups = overview.summaries.map { s in
            IntegrityReport.Backup(id: s.id.rawValue, type: s.type.rawValue, start: s.startTime, seconds: s.stopTime.timeIntervalSince(s.startTime),
                                   bytes: s.sizes.repository, verifiedAt: states[s.id]?.verifiedAt, sound: states[s.id]?.sound,
                                   drilled: drilledIDs.contains(s.id.rawValue))
        }
        for b in backups where b.sound == false { problems.append("backup \(b.id) was found damaged by its last verification ('wayback verify --backup \(b.id)')") }
        if let newest = backups.last, newest.verifiedAt == nil, newest.sound == nil { notes.append("the newest backup \(newest.id) is not verified yet") }

        let drills = drillRecords.filter { $0.startedAt >= since || $0.id == drillRecords.last?.id }.map { d in
            IntegrityReport.Drill(id: d.id, backup: d.backup, repository: d.repository, at: d.startedAt, passed: d.passed,
                                  recoverySeconds: d.recoverySeconds, rtoSeconds: d.rtoSeconds, recoveryPointSeconds: d.recoveryPointSeconds,
                                  rpoSeconds: d.rpoSeconds, failedChecks: d.checks.filter { !$0.passed }.map(\.name))
        }
        if let last = drills.last {
            if !last.passed { problems.append("the last drill (\(last.id), backup \(last.backup)) FAILED: \(last.failedChecks.joined(separator: ", "))") }
            else if last.recoverySeconds > last.rtoSeconds {
                problems.append("the last drill took \(Format.seconds(last.recoverySeconds)) to recover, over the objective of \(Format.seconds(last.rtoSeconds))")
            }
        } else {
            notes.append("no restore drill has run yet ('wayback drill')")
        }

        var failed = [String](), expired = [String]()
        if let settings = config.catalog {
            do {
                let store = try await CatalogStore.open(settings, logger: logger)
                let rows = try await store.rows()
                await store.close()
                failed = rows.filter { $0.status == .failed && $0.backupTimestamp >= since }.map { "\($0.backupID): \($0.errorMessage ?? "failed")" }
                expired = rows.filter { ($0.purgedAt ?? .distantPast) >= since }.map(\.backupID)
            } catch {
                problems.append("backup_logs cannot be read (\((error as? WaybackError)?.message ?? String(describing: error))): failed and expired backups are not listed")
            }
        } else {
            notes.append("catalog.enabled is false: failed and expired backups are not listed")
        }
        for f in failed { problems.append("backup failed: \(f)") }

        let latest = overview.windows.compactMap(\.latest).max()
        let rpo = latest.map { max(0, now.timeIntervalSince($0)) }
        if let rpo, rpo > config.drill.rpoSeconds {
            problems.append("the newest archived transaction is \(Format.seconds(rpo)) old, over the recovery point objective of \(Format.seconds(config.drill.rpoSeconds)): is archiving working?")
        }
        let disks = DiskWatch.check(config.diskTargets(overview), thresholds: config.diskThresholds)
        for d in disks where d.level != .ok { problems.append("disk space: \(d.text)") }

        let facts = await healthFacts(now: now, timeout: max(config.check.timeoutSeconds, 10), budget: 60)
        let status = StatusDocument(health: HealthCheck.evaluate(facts, thresholds: config.check, now: now), facts: facts, jobsRunning: [:])
        return IntegrityReport(cluster: config.cluster.name, generatedAt: now, since: since, problems: problems, notes: notes,
                               backupsTaken: backups.filter { $0.start >= since }, backups: backups, failedBackups: failed,
                               expiredBackups: expired, drills: drills, windows: overview.windows, recoveryPointSeconds: rpo, disks: disks,
                               status: status)
    }
}

/// The report as Markdown, and as one self-contained HTML file (inline CSS, no script).
enum ReportRendering {
    static func markdown(_ r: IntegrityReport) -> String {
        var s = "# Wayback integrity report: cluster \(r.cluster)\n\n"
        s += "Generated \(Format.timestamp(r.generatedAt)); period from \(Format.timestamp(r.since)).\n\n"
        s += "## Problems\n\n" + (r.problems.isEmpty ? "None.\n" : r.problems.map { "- **\($0)**\n" }.joined()) + "\n"
        if !r.notes.isEmpty { s += r.notes.map { "- \($0)\n" }.joined() + "\n" }
        s += "## Backups taken in the period\n\n" + backupTable(r.backupsTaken) + "\n"
        if !r.failedBackups.isEmpty { s += "Failed:\n\n" + r.failedBackups.map { "- \($0)\n" }.joined() + "\n" }
        s += "## Restore drills\n\n"
        s += r.drills.isEmpty ? "None.\n" : "| drill | backup | repository | result | recovery time (objective) | recovery point (objective) |\n|---|---|---|---|---|---|\n"
            + r.drills.map { d in "| \(d.id) | \(d.backup) | \(d.repository) | \(drillResult(d)) | \(Format.seconds(d.recoverySeconds)) (\(Format.seconds(d.rtoSeconds))) | \(d.recoveryPointSeconds.map(Format.seconds) ?? "-") (\(Format.seconds(d.rpoSeconds))) |\n" }.joined()
        s += "\n## Recoverable window\n\n" + r.windows.map { "- \($0.text)\n" }.joined()
        s += "- recovery point now: " + (r.recoveryPointSeconds.map { "the newest archived transaction is \(Format.seconds($0)) old" } ?? "unknown") + "\n\n"
        s += "## Every backup\n\n" + backupTable(r.backups) + "\n"
        s += "## Disks\n\n" + r.disks.map { "- \($0.text)\n" }.joined() + "\n"
        s += "## Expired in the period\n\n" + (r.expiredBackups.isEmpty ? "None.\n" : r.expiredBackups.map { "- \($0)\n" }.joined())
        return s
    }

    static func backupTable(_ backups: [IntegrityReport.Backup]) -> String {
        guard !backups.isEmpty else { return "None.\n" }
        return "| backup | type | started | duration | size | verified | drilled |\n|---|---|---|---|---|---|---|\n"
            + backups.map { b in "| \(b.id) | \(b.type) | \(Format.timestamp(b.start)) | \(Format.seconds(b.seconds)) | \(Format.bytes(b.bytes)) | \(verified(b)) | \(b.drilled ? "yes" : "no") |\n" }.joined()
    }

    static func verified(_ b: IntegrityReport.Backup) -> String {
        switch b.sound {
        case false?: return "DAMAGED"
        case true?: return "sound, \(b.verifiedAt.map(Format.timestamp) ?? "")"
        case nil: return "not yet"
        }
    }

    static func drillResult(_ d: IntegrityReport.Drill) -> String {
        !d.passed ? "FAILED (\(d.failedChecks.joined(separator: ", ")))" : d.recoverySeconds > d.rtoSeconds ? "passed, objective MISSED" : "passed"
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// Markdown's structure in HTML: headings, lists and tables, every text escaped.
    static func html(_ r: IntegrityReport) -> String {
        var body = ""
        var inList = false, inTable = false
        func close() {
            if inList { body += "</ul>\n"; inList = false }
            if inTable { body += "</tbody></table></div>\n"; inTable = false }
        }
        for line in markdown(r).split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("# ") {
                close()
                body += "<h1>\(escape(String(line.dropFirst(2))))</h1>\n"
                if let s = r.status { body += StatusPage.summary(s, now: r.generatedAt).replacingOccurrences(of: "<h1>", with: "<p><strong>").replacingOccurrences(of: "</h1>", with: "</strong></p>") }
            }
            else if line.hasPrefix("## ") {
                close()
                let title = String(line.dropFirst(3))
                body += "<h2\(title == "Problems" ? " class=\"problems\"" : "")>\(escape(title))</h2>\n"
            } else if line.hasPrefix("- ") {
                if !inList { close(); body += "<ul>\n"; inList = true }
                let text = String(line.dropFirst(2))
                let strong = text.hasPrefix("**") && text.hasSuffix("**")
                body += strong ? "<li class=\"problem\">\(escape(String(text.dropFirst(2).dropLast(2))))</li>\n" : "<li>\(escape(text))</li>\n"
            } else if line.hasPrefix("|") {
                let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast().map { $0.trimmingCharacters(in: .whitespaces) }
                if cells.allSatisfy({ $0.allSatisfy { $0 == "-" } }) { continue }
                if !inTable {
                    close()
                    body += "<div class=\"scroll\"><table><thead><tr>" + cells.map { "<th>\(escape($0))</th>" }.joined() + "</tr></thead><tbody>\n"
                    inTable = true
                } else {
                    body += "<tr>" + cells.map { "<td\($0.contains("FAILED") || $0.contains("DAMAGED") || $0.contains("MISSED") ? " class=\"bad\"" : "")>\(escape($0))</td>" }.joined() + "</tr>\n"
                }
            } else {
                close()
                if !line.isEmpty { body += "<p>\(escape(line))</p>\n" }
            }
        }
        close()
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Wayback integrity report: \(escape(r.cluster))</title>
            <style>
            body { font-family: system-ui, sans-serif; margin: 1rem; max-width: 60rem; color: #222; }
            h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.5rem; border-bottom: 1px solid #ccc; }
            .problem, .bad { color: #b00020; font-weight: 600; }
            .scroll { overflow-x: auto; }
            table { border-collapse: collapse; font-size: 0.9rem; }
            th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; white-space: nowrap; }
            th { background: #f4f4f4; }
            \(StatusPage.css)
            </style></head><body>
            \(body)</body></html>

            """
    }
}

struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "The integrity report: backups, verification, drills, the recoverable window, disks; open problems first (docs/verification.md).",
        discussion: """
            Markdown by default; the daemon writes one every day (schedule.report) into report.dir.

            Examples:
              wayback report                      # the last 24 hours
              wayback report --format html --output /srv/www/wayback.html --since 7d
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "md (default), html or json.") var format: String = "md"
    @Option(help: ArgumentHelp("Write the report here (mode 600) instead of standard output.", valueName: "file")) var output: String?
    @Option(help: ArgumentHelp("The period the report covers, back from now (24h, 7d).", valueName: "duration")) var since: String = "24h"

    func validate() throws {
        guard ["md", "html", "json"].contains(format) else { throw ValidationError("--format must be md, html or json") }
        guard RetentionPolicy.parseDuration(since) != nil else { throw ValidationError("--since '\(since)' is not a duration; write e.g. 24h or 7d") }
    }

    func run() async throws {
        try await CommandRun.with(global.configPath, .status) { run in
            let now = SystemClock().now
            let report = try await run.integrityReport(since: now.addingTimeInterval(-(RetentionPolicy.parseDuration(since) ?? 86400)), now: now)
            let text = try Self.render(report, format: format)
            if let output { try Self.write(text, to: output) } else { print(text, terminator: "") }
        }
    }

    static func render(_ report: IntegrityReport, format: String) throws -> String {
        switch format {
        case "html": return ReportRendering.html(report)
        case "json":
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            e.dateEncodingStrategy = .iso8601
            return String(decoding: try e.encode(report), as: UTF8.self) + "\n"
        default: return ReportRendering.markdown(report)
        }
    }

    /// Written whole, then renamed into place (mode 600).
    static func write(_ text: String, to path: String) throws {
        let tmp = path + ".tmp"
        try? FileSystem.remove(tmp)
        let f = try PosixFile.create(tmp, mode: 0o600)
        try Array(text.utf8).withUnsafeBytes { try f.write($0) }
        try f.fsync()
        try f.close()
        try FileSystem.rename(tmp, path)
    }

    /// The daemon's daily report: `report-YYYYMMDD.html` and `.json` in `directory`; reports
    /// older than `keepDays` are removed.
    static func writeDaily(_ report: IntegrityReport, directory: String, keepDays: Int, now: Date) throws {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let day = String(Format.timestamp(now).prefix(10)).replacingOccurrences(of: "-", with: "")
        for format in ["html", "json"] { try write(try render(report, format: format), to: "\(directory)/report-\(day).\(format)") }
        for name in try FileSystem.list(directory) where name.hasPrefix("report-") {
            guard let st = try FileSystem.status(directory + "/" + name), st.isRegular,
                  now.timeIntervalSince1970 - Double(st.mtime) > Double(keepDays) * 86400 else { continue }
            try FileSystem.remove(directory + "/" + name)
        }
    }
}
