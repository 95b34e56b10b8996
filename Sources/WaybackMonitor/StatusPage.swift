import Foundation
import WaybackCatalog
import WaybackCore

/// `/status.json`: what the status page shows, as data.
public struct StatusDocument: Codable, Sendable {
    public var health: HealthReport
    /// The facts, with the newest `backupLimit` backups (`backupCount` says how many there are).
    public var facts: HealthFacts
    public var backupCount: Int
    public var jobsRunning: [String: Bool]
    public static let backupLimit = 400
    public init(health: HealthReport, facts: HealthFacts, jobsRunning: [String: Bool]) {
        self.health = health; self.jobsRunning = jobsRunning
        backupCount = facts.backups.count
        var f = facts
        if f.backups.count > Self.backupLimit { f.backups = Array(f.backups.sorted { $0.stop < $1.stop }.suffix(Self.backupLimit)) }
        self.facts = f
    }
}

/// The status page: one self-contained HTML page (inline CSS and SVG, no script, no asset from
/// elsewhere) a person reads at a glance: protected or not and why, the recoverable window per
/// timeline with the backups on it, the newest backups, verification and drills, disks, queues.
public enum StatusPage {
    static func state(_ s: HealthStatus) -> (color: String, word: String) {
        switch s {
        case .ok: ("#1a7f37", "Protected")
        case .warning: ("#b35900", "Attention")
        case .critical: ("#c62828", "At risk")
        case .unknown: ("#666666", "Unknown")
        }
    }

    /// The top of the page: the state and why, and the recoverable window of each timeline (the
    /// HTML integrity report starts with it too).
    public static func summary(_ d: StatusDocument, now: Date) -> String {
        let f = d.facts, r = d.health
        let (color, word) = state(r.status)
        var body = """
            <header style="border-left: 0.6rem solid \(color)">
            <h1>Wayback: cluster \(escape(f.cluster))</h1>
            <p class="state" style="color: \(color)" id="state" data-status="\(r.status.rawValue)"><strong>\(word)</strong> (\(r.status.rawValue))</p>
            <p>\(escape(r.summary))</p>
            <p class="small">Gathered \(escape(Format.timestamp(f.gatheredAt))); the page shows that gathering.</p>
            </header>

            """
        if f.logical {
            // No WAL: each dump restores to the moment it started, and nothing in between.
            body += "<h2>Recovery points</h2>\n"
            let started = f.dumps.compactMap(\.id.startTime).sorted()
            if let oldest = started.first, let newest = started.last {
                body += "<p id=\"points\">\(started.count) logical dump(s), from \(escape(Format.timestamp(oldest))) to \(escape(Format.timestamp(newest))) "
                    + "(\(escape(Format.age(now.timeIntervalSince(newest)))) ago): each restores the databases as they were when it started.</p>\n"
            } else {
                body += "<p class=\"bad\" id=\"points\">No logical dump: nothing can be restored.</p>\n"
            }
            return body
        }
        body += "<h2>Recoverable window</h2>\n"
        if f.windows.isEmpty {
            body += "<p class=\"bad\">No recoverable window: no backup with its WAL.</p>\n"
        }
        for w in f.windows.sorted(by: { $0.timeline > $1.timeline }) {
            body += "<p>\(escape(w.text.prefix(1).uppercased() + w.text.dropFirst()))</p>\n" + timeline(w, backups: f.backups, now: now)
        }

        return body
    }

    /// The CSS the summary needs (the report adds it to its own).
    public static let css = """
        .state { font-size: 1.6rem; margin: 0.2rem 0; }
        .small { font-size: 0.8rem; color: #666; }
        header { padding-left: 0.8rem; }
        svg.window { width: 100%; height: auto; max-height: 9rem; }
        """

    public static func render(_ d: StatusDocument, now: Date) -> String {
        let f = d.facts, r = d.health
        let word = state(r.status).word
        var body = summary(d, now: now)
        if !f.logical {
            body += "<h2>Newest backups</h2>\n" + (d.backupCount > 12 ? "<p class=\"small\">\(d.backupCount) complete backups in all.</p>\n" : "")
            let newest = Array(f.backups.sorted { $0.stop > $1.stop }.prefix(12))
            if newest.isEmpty { body += "<p class=\"bad\">No complete backup.</p>\n" } else {
                body += "<div class=\"scroll\"><table><thead><tr><th>backup</th><th>type</th><th>ended</th><th>took</th><th>size</th></tr></thead><tbody>\n"
                for b in newest {
                    body += "<tr><td class=\"id\">\(escape(b.id))</td><td>\(escape(b.type))</td><td>\(escape(Format.timestamp(b.stop)))</td>"
                        + "<td>\(escape(Format.seconds(b.stop.timeIntervalSince(b.start))))</td><td>\(escape(Format.bytes(b.repositoryBytes)))</td></tr>\n"
                }
                body += "</tbody></table></div>\n"
            }
        }
        if f.logical || !f.dumps.isEmpty {
            body += "<h2>Newest logical dumps</h2>\n" + (f.dumps.count > 12 ? "<p class=\"small\">\(f.dumps.count) complete dumps in all.</p>\n" : "")
            let newest = Array(f.dumps.sorted { $0.id > $1.id }.prefix(12))
            if newest.isEmpty { body += "<p class=\"bad\">No complete logical dump.</p>\n" } else {
                body += "<div class=\"scroll\"><table><thead><tr><th>dump</th><th>started</th><th>databases</th><th>size</th><th>in</th></tr></thead><tbody>\n"
                for dump in newest {
                    body += "<tr><td class=\"id\">\(escape(dump.id.rawValue))</td><td>\(escape(dump.id.startTime.map(Format.timestamp) ?? "?"))</td>"
                        + "<td>\(escape(dump.databases.joined(separator: ", ")))</td><td>\(escape(Format.bytes(dump.bytes)))</td>"
                        + "<td>\(escape(dump.repositories.joined(separator: ", ")))</td></tr>\n"
                }
                body += "</tbody></table></div>\n"
            }
        }

        body += "<h2>Verification and drills</h2>\n<ul>\n"
        if let v = f.lastVerified { body += "<li>Last verification: \(escape(Format.timestamp(v))) (\(escape(Format.age(now.timeIntervalSince(v)))) ago)</li>\n" }
        else { body += "<li>No verification yet.</li>\n" }
        for id in f.damagedBackups { body += "<li class=\"bad\">Backup \(escape(id)) was found damaged.</li>\n" }
        if let dr = f.lastDrill {
            let met = dr.recoverySeconds <= dr.rtoSeconds
            body += "<li class=\"\(dr.passed && met ? "" : "bad")\" id=\"drill\">Last drill \(escape(dr.id)) of \(escape(dr.backup)) from '\(escape(dr.repository))', "
                + "\(escape(Format.timestamp(dr.at))): \(dr.passed ? "passed" : "FAILED (\(escape(dr.failedChecks.joined(separator: ", "))))"); "
                + "recovery time \(escape(Format.seconds(dr.recoverySeconds))) against the objective of \(escape(Format.seconds(dr.rtoSeconds))) (\(met ? "met" : "MISSED"))</li>\n"
        } else {
            body += "<li>No restore drill yet.</li>\n"
        }
        body += "</ul>\n"

        body += "<h2>Repositories and disks</h2>\n<ul>\n"
        for repo in f.repositories {
            var line = "'\(escape(repo.name))': " + (repo.reachable ? "reachable" : "<span class=\"bad\">cannot be read: \(escape(repo.error ?? "?"))</span>")
            if let b = repo.storedBytes { line += ", \(escape(Format.bytes(b)))" }
            if repo.walPush == "async" { line += ", WAL queue: " + (repo.queued.map { "\($0) segment(s)" } ?? "unknown") }
            body += "<li>\(line)</li>\n"
        }
        body += "</ul>\n"
        for disk in f.disks {
            let pct = disk.usedPercent ?? 0
            let barColor = disk.level == .critical ? "#c62828" : disk.level == .warning ? "#b35900" : "#1a7f37"
            body += "<div class=\"disk\"><span>\(escape(disk.text))</span>"
                + "<svg viewBox=\"0 0 100 4\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"\(String(format: "%.0f", pct)) % used\">"
                + "<rect width=\"100\" height=\"4\" fill=\"#e5e5e5\"/><rect width=\"\(String(format: "%.1f", min(100, pct)))\" height=\"4\" fill=\"\(barColor)\"/></svg></div>\n"
        }
        if let arch = f.archiver {
            body += "<p>Archiver: \(arch.archivedCount) segment(s) archived, \(arch.failedCount) failure(s)"
                + (arch.failing ? " <span class=\"bad\">(failing now: \(escape(arch.lastFailedWAL ?? "?")))</span>" : "") + ".</p>\n"
        }
        let running = d.jobsRunning.filter(\.value).map(\.key).sorted()
        if !running.isEmpty { body += "<p>Running now: \(escape(running.joined(separator: ", "))).</p>\n" }

        body += "<h2>Checks</h2>\n<ul>\n"
        for i in r.items {
            body += "<li class=\"\(i.status == .ok ? "" : "bad")\"><strong>\(i.status.rawValue)</strong> \(escape(i.name)): \(escape(i.message))</li>\n"
        }
        body += "</ul>\n"

        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(word): Wayback, cluster \(escape(f.cluster))</title>
            <style>
            body { font-family: system-ui, sans-serif; margin: 1rem; max-width: 60rem; color: #222; }
            \(css)
            h1 { font-size: 1.4rem; margin: 0.2rem 0; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
            .bad { color: #c62828; }
            .scroll { overflow-x: auto; }
            table { border-collapse: collapse; font-size: 0.9rem; } th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #ddd; text-align: left; }
            td.id { font-family: ui-monospace, monospace; }
            .disk svg { width: 100%; height: 0.6rem; display: block; margin: 0.1rem 0 0.6rem; }
            </style></head>
            <body>
            \(body)</body></html>

            """
    }

    /// One timeline as SVG: the recoverable window as a bar, each backup as a mark (full tall,
    /// diff medium, incr short) at its end, from the oldest point shown to now.
    static func timeline(_ w: RecoveryWindow, backups all: [HealthFacts.Backup], now: Date) -> String {
        // The newest backups only: a mark per backup of a repository with thousands says nothing.
        let backups = all.count <= markLimit ? all : Array(all.sorted { $0.stop > $1.stop }.prefix(markLimit))
        let points = backups.map(\.stop) + [w.earliest, w.latest].compactMap { $0 }
        guard let first = points.min() else { return "" }
        let start = first.timeIntervalSince1970, end = max(now.timeIntervalSince1970, start + 60)
        func x(_ d: Date) -> Double { 10 + 980 * (d.timeIntervalSince1970 - start) / (end - start) }
        var svg = "<svg class=\"window\" viewBox=\"0 0 1000 120\" role=\"img\" aria-label=\"recoverable window of timeline \(w.timeline)\">\n"
        svg += "<line x1=\"10\" y1=\"70\" x2=\"990\" y2=\"70\" stroke=\"#999\" stroke-width=\"1\"/>\n"
        if let e = w.earliest {
            let l = w.latest ?? e
            svg += "<rect x=\"\(f(x(e)))\" y=\"60\" width=\"\(f(max(2, x(l) - x(e))))\" height=\"20\" fill=\"#1a7f37\" opacity=\"0.35\"><title>recoverable: \(escape(Format.timestamp(e))) to \(escape(Format.timestamp(l)))</title></rect>\n"
        }
        for b in backups {
            let (h, color): (Double, String) = b.type == "full" ? (40, "#1f3b73") : b.type == "diff" ? (28, "#3f6fb5") : (18, "#7fa3d9")
            svg += "<line x1=\"\(f(x(b.stop)))\" y1=\"\(f(70 - h))\" x2=\"\(f(x(b.stop)))\" y2=\"70\" stroke=\"\(color)\" stroke-width=\"3\"><title>\(escape(b.id)) (\(escape(b.type)))</title></line>\n"
        }
        svg += "<text x=\"10\" y=\"100\" font-size=\"14\">\(escape(Format.timestamp(first)))</text>\n"
        svg += "<text x=\"990\" y=\"100\" font-size=\"14\" text-anchor=\"end\">now</text>\n"
        svg += "<text x=\"10\" y=\"16\" font-size=\"13\" fill=\"#555\">full (tall), diff, incr (short) at their end; green: recoverable</text>\n"
        return svg + "</svg>\n"
    }

    static let markLimit = 400

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    public static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
