import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackMonitor

/// The pure judgement of `wayback check`: thresholds, never-run checks, the Nagios line.
@Suite("health: check thresholds and the Nagios output")
struct HealthTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func facts(backupAge: Double = 600, fullAge: Double = 3600, walAge: Double = 60) -> HealthFacts {
        var f = HealthFacts(cluster: "main", gatheredAt: now)
        f.backups = [HealthFacts.Backup(id: "20270115-000000F", type: "full", start: now.addingTimeInterval(-fullAge - 60), stop: now.addingTimeInterval(-fullAge), repositoryBytes: 10),
                     HealthFacts.Backup(id: "20270115-010000I", type: "incr", start: now.addingTimeInterval(-backupAge - 10), stop: now.addingTimeInterval(-backupAge), repositoryBytes: 1)]
        f.archiver = .init(archivedCount: 10, failedCount: 0, lastArchivedWAL: "000000010000000000000010", lastArchivedTime: now.addingTimeInterval(-walAge),
                           lastFailedWAL: nil, lastFailedTime: nil)
        f.repositories = [.init(name: "local", reachable: true, error: nil, walPush: "sync", storedBytes: 11, queued: nil, queueError: nil)]
        return f
    }

    @Test("a fresh backup, WAL and reachable repository is OK, with perfdata; no drill or verification yet is said but not a warning")
    func ok() {
        let r = HealthCheck.evaluate(Self.facts(), thresholds: HealthThresholds(), now: Self.now)
        #expect(r.status == .ok)
        #expect(r.status.exitCode == 0)
        let line = r.nagios.split(separator: "\n")[0]
        #expect(line.hasPrefix("WAYBACK OK - cluster main, newest backup 10m ago"), "\(line)")
        #expect(line.contains("| backup_age=600s;7200;93600;0 full_age=3600s;93600;180000;0 wal_age=60s;5400;21600;0"), "\(line)")
        #expect(r.items.contains { $0.name == "drill" && $0.status == .ok && $0.message.contains("no restore drill yet") })
        #expect(r.items.contains { $0.name == "verify" && $0.status == .ok && $0.message.contains("no verification yet") })
    }

    @Test("ages past the warning and critical thresholds, a failing archiver, an unreachable repository and a full queue are judged, the worst first")
    func thresholds() {
        var t = HealthThresholds()
        let warn = HealthCheck.evaluate(Self.facts(backupAge: 3 * 3600, fullAge: 4 * 3600), thresholds: t, now: Self.now)
        #expect(warn.status == .warning && warn.status.exitCode == 1)
        #expect(warn.summary.contains("backup age: newest backup 20270115-010000I (incr) ended 3h"), "\(warn.summary)")
        t.fullAgeCritical = 60
        let crit = HealthCheck.evaluate(Self.facts(backupAge: 3 * 3600, fullAge: 4 * 3600), thresholds: t, now: Self.now)
        #expect(crit.status == .critical && crit.status.exitCode == 2)
        #expect(crit.summary.hasPrefix("cluster main: full age"), "critical first: \(crit.summary)")

        var failing = Self.facts()
        failing.archiver?.failedCount = 3
        failing.archiver?.lastFailedWAL = "000000010000000000000011"
        failing.archiver?.lastFailedTime = Self.now.addingTimeInterval(-5)
        let a = HealthCheck.evaluate(failing, thresholds: HealthThresholds(), now: Self.now)
        #expect(a.status == .warning)
        #expect(a.summary.contains("archive_command is failing (3 failure(s), last for 000000010000000000000011"), "\(a.summary)")

        var down = Self.facts()
        down.repositories.append(.init(name: "offsite", reachable: false, error: "repository 'offsite' did not answer within 8 s", walPush: "async",
                                       storedBytes: nil, queued: nil, queueError: nil))
        down.repositories.append(.init(name: "third", reachable: true, error: nil, walPush: "async", storedBytes: 1, queued: 2000, queueError: nil))
        let d = HealthCheck.evaluate(down, thresholds: HealthThresholds(), now: Self.now)
        #expect(d.status == .critical)
        #expect(d.items.contains { $0.name == "repository offsite" && $0.status == .critical && $0.message.contains("did not answer") })
        #expect(d.items.contains { $0.name == "queue third" && $0.status == .critical })
    }

    @Test("no backup, no repository read, a failed drill and a damaged backup are CRITICAL; a drill over the RTO or too old is a WARNING")
    func critical() {
        var none = HealthFacts(cluster: "main", gatheredAt: Self.now)
        none.backupsError = "repository 'local' cannot be read"
        #expect(HealthCheck.evaluate(none, thresholds: HealthThresholds(), now: Self.now).status == .critical)

        var f = Self.facts()
        f.lastDrill = .init(id: "d1", backup: "b", repository: "local", at: Self.now.addingTimeInterval(-3600), passed: false, recoverySeconds: 3,
                            rtoSeconds: 900, failedChecks: ["pg_amcheck"])
        #expect(HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now).status == .critical)
        f.lastDrill?.passed = true
        f.lastDrill?.recoverySeconds = 1000
        let slow = HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now)
        #expect(slow.status == .warning && slow.summary.contains("over the objective of 15m"), "\(slow.summary)")
        f.lastDrill?.recoverySeconds = 3
        f.lastDrill?.at = Self.now.addingTimeInterval(-9 * 86400)
        #expect(HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now).status == .warning)
        f.lastDrill?.at = Self.now
        f.damagedBackups = ["20270115-000000F"]
        #expect(HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now).status == .critical)
    }

    @Test("a never-run verification or drill becomes a WARNING once the first backup is older than its age threshold")
    func neverRun() {
        var t = HealthThresholds()
        t.drillAgeWarning = 60
        let r = HealthCheck.evaluate(Self.facts(), thresholds: t, now: Self.now)
        #expect(r.items.contains { $0.name == "drill" && $0.status == .warning })
    }

    @Test("perfdata labels with spaces are quoted; the summary never holds a '|' or a newline")
    func nagiosSyntax() {
        #expect(PerfValue("disk PGDATA", 12.5, unit: "%").text == "'disk PGDATA'=12.500%;;;0")
        var f = Self.facts()
        f.repositories[0].reachable = false
        f.repositories[0].error = "bad | thing\nsecond line"
        let text = HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now).nagios
        let first = String(text.split(separator: "\n")[0])
        #expect(first.components(separatedBy: " | ").count == 2, "\(first)")
        #expect(first.contains("bad / thing second line"), "\(first)")
    }

    @Test("a cluster with logical dumps gets a dump age check (a WARNING past its threshold); one without gets none")
    func dumpAge() throws {
        #expect(!HealthCheck.evaluate(Self.facts(), thresholds: HealthThresholds(), now: Self.now).items.contains { $0.name == "dump age" })
        var f = Self.facts()
        f.dumps = [DumpListing(id: DumpID(startTime: Self.now.addingTimeInterval(-30 * 3600)), databases: ["shop"], bytes: 1, repositories: ["local"])]
        let r = HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now)
        let item = try #require(r.items.first { $0.name == "dump age" })
        #expect(item.status == .warning && item.message.contains("started 1d06h ago"), "\(item)")
        #expect(r.nagios.contains("dump_age=108000s;93600;;0"), "\(r.nagios)")
    }

    @Test("copies: with two repositories, the newest backup older than backup_age_warning missing from one that answered is a WARNING naming it; newer ones, a repository that did not answer and one repository are not judged")
    func copies() throws {
        var f = Self.facts(backupAge: 3 * 3600, fullAge: 5 * 3600)
        #expect(!HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now).items.contains { $0.name == "copies" }, "one repository")
        f.repositories = [.init(name: "local", reachable: true, error: nil, walPush: "sync", storedBytes: 1, queued: nil, queueError: nil,
                                backups: ["20270115-000000F", "20270115-010000I"]),
                          .init(name: "offsite", reachable: true, error: nil, walPush: "sync", storedBytes: 1, queued: nil, queueError: nil,
                                backups: ["20270115-000000F"])]
        let lacking = try #require(HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now).items.first { $0.name == "copies" })
        #expect(lacking.status == .warning && lacking.message.contains("backup 20270115-010000I, ended 3h00m ago, is not in 'offsite'")
                && lacking.message.contains("wayback repo sync"), "\(lacking)")
        f.repositories[1].backups.append("20270115-010000I")
        #expect(HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now).items.first { $0.name == "copies" }?.status == .ok)
        // Still within the grace (the sync has not had its hour): the older full is judged, and it is there.
        f.repositories[1].backups = ["20270115-000000F"]
        var fresh = f
        fresh.backups[1].stop = Self.now.addingTimeInterval(-600)
        #expect(HealthCheck.evaluate(fresh, thresholds: HealthThresholds(), now: Self.now).items.first { $0.name == "copies" }?.message.contains("20270115-000000F is in all 2") == true)
        // A repository that did not answer is the repository check's business, not this one's.
        f.repositories[1].reachable = false
        #expect(HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now).items.first { $0.name == "copies" }?.status == .ok)
    }

    @Test("a logical cluster's status page shows its dumps as its recovery points (no complaint about backups or a window), and its metrics the dumps' size and failures")
    func logicalClusterPageAndMetrics() throws {
        var f = HealthFacts(cluster: "hosted", gatheredAt: Self.now)
        f.logical = true
        f.repositories = [.init(name: "local", reachable: true, error: nil, walPush: "sync", storedBytes: 11, queued: nil, queueError: nil),
                          .init(name: "offsite", reachable: true, error: nil, walPush: "sync", storedBytes: 11, queued: nil, queueError: nil)]
        let older = DumpID(startTime: Self.now.addingTimeInterval(-26 * 3600)), newer = DumpID(startTime: Self.now.addingTimeInterval(-2 * 3600))
        f.dumps = [DumpListing(id: older, databases: ["app"], bytes: 700, repositories: ["local", "offsite"]),
                   DumpListing(id: newer, databases: ["app", "<b>odd</b>"], bytes: 900, repositories: ["local", "offsite"])]
        let report = HealthCheck.evaluate(f, thresholds: HealthThresholds(), now: Self.now)
        let page = StatusPage.render(StatusDocument(health: report, facts: f, jobsRunning: [:]), now: Self.now)
        #expect(page.contains("<h2>Recovery points</h2>") && page.contains("2 logical dump(s)") && page.contains("(2h00m ago)"), "\(page)")
        #expect(page.contains("<h2>Newest logical dumps</h2>") && page.contains(newer.rawValue) && page.contains("app, &lt;b&gt;odd&lt;/b&gt;"))
        #expect(page.range(of: newer.rawValue)!.lowerBound < page.range(of: older.rawValue)!.lowerBound, "newest first")
        #expect(!page.contains("Recoverable window") && !page.contains("No complete backup") && !page.contains("Newest backups"))
        #expect(report.status == .ok, "\(report.items)")
        #expect(report.items.first { $0.name == "copies" }?.message.contains("logical dump \(older) is in all 2 repositories") == true, "\(report.items)")

        var none = f
        none.dumps = []
        let empty = StatusPage.render(StatusDocument(health: HealthCheck.evaluate(none, thresholds: HealthThresholds(), now: Self.now), facts: none, jobsRunning: [:]),
                                      now: Self.now)
        #expect(empty.contains("No logical dump: nothing can be restored") && empty.contains("No complete logical dump"))

        let metrics = MetricsText.render(f, report: report, extras: MetricsExtras(backupFailures: ["logical": 3]))
        #expect(metrics.contains("wayback_backup_failures_total{cluster=\"hosted\",type=\"logical\"} 3"), "\(metrics)")
        #expect(metrics.contains("wayback_dump_last_size_bytes{cluster=\"hosted\",repository=\"local\"} 900")
                && metrics.contains("wayback_dump_last_size_bytes{cluster=\"hosted\",repository=\"offsite\"} 900"), "\(metrics)")
        #expect(metrics.contains("wayback_dump_last_success_timestamp_seconds{cluster=\"hosted\"} \(Int(Self.now.timeIntervalSince1970) - 7200)"))
    }
}
