import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackMonitor

/// The pure rules of notifications: once, reminders, recovery, worse sent at once; the payloads.
@Suite("alerts: the ledger and the payloads")
struct AlertTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func failed(_ at: Date, _ message: String = "connection refused") -> Alert {
        Alert(event: .backupFailed, cluster: "main", time: at, severity: "critical", message: message, problem: "backup.failed:full")
    }

    @Test("a problem is sent once, held back while it repeats, reminded after the repeat time, and cleared once with check.recovered")
    func onceReminderRecovery() {
        var l = AlertLedger(repeatSeconds: 6 * 3600)
        #expect(l.admit(Self.failed(Self.t0), now: Self.t0).count == 1)
        #expect(l.admit(Self.failed(Self.t0.addingTimeInterval(60)), now: Self.t0.addingTimeInterval(60)).isEmpty)
        #expect(l.admit(Self.failed(Self.t0.addingTimeInterval(5 * 3600)), now: Self.t0.addingTimeInterval(5 * 3600)).isEmpty)
        let reminder = l.admit(Self.failed(Self.t0.addingTimeInterval(6 * 3600)), now: Self.t0.addingTimeInterval(6 * 3600))
        #expect(reminder.count == 1 && reminder[0].openSince == Self.t0 && reminder[0].title.contains("still backup.failed"), "\(reminder)")
        #expect(l.admit(Self.failed(Self.t0.addingTimeInterval(7 * 3600)), now: Self.t0.addingTimeInterval(7 * 3600)).isEmpty)
        let recovered = l.clear("backup.failed:full", now: Self.t0.addingTimeInterval(8 * 3600))
        #expect(recovered.count == 1 && recovered[0].event == .checkRecovered && recovered[0].details.contains(.init("open for", "8h00m")), "\(recovered)")
        #expect(l.clear("backup.failed:full", now: Self.t0.addingTimeInterval(9 * 3600)).isEmpty, "cleared once")
        #expect(l.admit(Self.failed(Self.t0.addingTimeInterval(10 * 3600)), now: Self.t0.addingTimeInterval(10 * 3600)).count == 1, "a new failure is new")
    }

    @Test("outcomes always go out; a problem that gets worse goes out at once")
    func outcomesAndWorse() {
        var l = AlertLedger(repeatSeconds: 3600)
        let ok = Alert(event: .backupSucceeded, cluster: "main", time: Self.t0, severity: "info", message: "done")
        #expect(l.admit(ok, now: Self.t0).count == 1 && l.admit(ok, now: Self.t0).count == 1)
        let warn = Alert(event: .diskWarning, cluster: "main", time: Self.t0, severity: "warning", message: "85%", problem: "disk:/srv")
        let crit = Alert(event: .diskCritical, cluster: "main", time: Self.t0, severity: "critical", message: "95%", problem: "disk:/srv")
        #expect(l.admit(warn, now: Self.t0).count == 1)
        #expect(l.admit(warn, now: Self.t0.addingTimeInterval(10)).isEmpty)
        #expect(l.admit(crit, now: Self.t0.addingTimeInterval(20)).count == 1)
    }

    @Test("a gathering raises archiving, repository and disk problems and clears the ones it no longer sees")
    func observe() {
        var l = AlertLedger(repeatSeconds: 3600)
        var f = HealthFacts(cluster: "main", gatheredAt: Self.t0)
        f.archiver = .init(archivedCount: 1, failedCount: 3, lastArchivedWAL: "A", lastArchivedTime: Self.t0.addingTimeInterval(-600),
                           lastFailedWAL: "B", lastFailedTime: Self.t0.addingTimeInterval(-5))
        f.repositories = [.init(name: "offsite", reachable: false, error: "timeout", walPush: "async", storedBytes: nil, queued: nil, queueError: nil)]
        let first = HealthAlerts.observe(f, ledger: &l, now: Self.t0)
        #expect(Set(first.map(\.event)) == [.walArchiveFailing, .repositoryUnreachable], "\(first)")
        #expect(HealthAlerts.observe(f, ledger: &l, now: Self.t0.addingTimeInterval(60)).isEmpty)
        f.archiver?.lastArchivedTime = Self.t0.addingTimeInterval(100)
        f.repositories[0].reachable = true
        let cleared = HealthAlerts.observe(f, ledger: &l, now: Self.t0.addingTimeInterval(120))
        #expect(cleared.count == 2 && cleared.allSatisfy { $0.event == .checkRecovered }, "\(cleared)")
    }

    @Test("a repository that lacks the newest settled backup is a copies.missing problem for it, kept while it does not answer, cleared once it has the backup")
    func copiesMissing() {
        var l = AlertLedger(repeatSeconds: 3600)
        var f = HealthFacts(cluster: "main", gatheredAt: Self.t0)
        f.backups = [.init(id: "20270115-000000F", type: "full", start: Self.t0.addingTimeInterval(-4 * 3600), stop: Self.t0.addingTimeInterval(-3 * 3600), repositoryBytes: 1)]
        f.repositories = [.init(name: "local", reachable: true, error: nil, walPush: "sync", storedBytes: 1, queued: nil, queueError: nil, backups: ["20270115-000000F"]),
                          .init(name: "offsite", reachable: true, error: nil, walPush: "async", storedBytes: 1, queued: 0, queueError: nil, backups: [])]
        let raised = HealthAlerts.observe(f, ledger: &l, now: Self.t0)
        #expect(raised.count == 1 && raised[0].event == .copiesMissing && raised[0].repository == "offsite" && raised[0].backup == "20270115-000000F"
                && raised[0].message.contains("is not in 'offsite'"), "\(raised)")
        #expect(HealthAlerts.observe(f, ledger: &l, now: Self.t0.addingTimeInterval(60)).isEmpty, "held back")
        // Unreachable: its own problem, and the copies one is not called recovered.
        f.repositories[1].reachable = false
        #expect(HealthAlerts.observe(f, ledger: &l, now: Self.t0.addingTimeInterval(120)).map(\.event) == [.repositoryUnreachable])
        f.repositories[1].reachable = true
        f.repositories[1].backups = ["20270115-000000F"]
        let cleared = HealthAlerts.observe(f, ledger: &l, now: Self.t0.addingTimeInterval(180))
        #expect(cleared.count == 2 && cleared.allSatisfy { $0.event == .checkRecovered }, "\(cleared)")
        // A backup that ended within the grace is not missing yet.
        f.backups[0].stop = Self.t0.addingTimeInterval(-600)
        f.repositories[1].backups = []
        #expect(HealthAlerts.observe(f, ledger: &l, now: Self.t0.addingTimeInterval(240)).isEmpty)
    }

    @Test("the Slack payload has text and blocks with the facts; the webhook body is the documented JSON and its HMAC-SHA256 signature is RFC 4231's")
    func payloads() throws {
        var a = Self.failed(Self.t0, "pg_backup_start: <refused> & more")
        a.backup = "20270115-020000F"
        a.details = [.init("type", "full")]
        let slack = try JSONSerialization.jsonObject(with: Data(SlackMessage.payload(a))) as? [String: Any] ?? [:]
        #expect((slack["text"] as? String ?? "").hasPrefix("[wayback] CRITICAL main: backup.failed"))
        let blocks = slack["blocks"] as? [[String: Any]] ?? []
        #expect(blocks.count == 4, "\(blocks)")
        let section = String(describing: blocks[1])
        #expect(section.contains("&lt;refused&gt; &amp; more"), "Slack's control characters escaped: \(section)")
        let body = WebhookMessage.body(a)
        let json = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] ?? [:]
        #expect(json["event"] as? String == "backup.failed" && json["cluster"] as? String == "main" && json["severity"] as? String == "critical"
                && json["backup"] as? String == "20270115-020000F" && json["time"] as? String == "2027-01-15T08:00:00Z", "\(json)")
        // RFC 4231, test case 2.
        #expect(WebhookMessage.signature(Array("what do ya want for nothing?".utf8), secret: Array("Jefe".utf8))
                == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test("an email has the headers, a base64 body without long lines, and the HTML report as an alternative")
    func email() throws {
        var a = Self.failed(Self.t0)
        let plain = EmailMessage.render(a, from: "w@example.org", to: ["a@example.org", "b@example.org"], now: Self.t0)
        #expect(plain.contains("To: a@example.org, b@example.org\r\n") && plain.contains("Subject: [wayback] CRITICAL main: backup.failed\r\n"))
        #expect(plain.components(separatedBy: "\r\n").allSatisfy { $0.count <= 998 })
        a.html = "<html>" + String(repeating: "x", count: 5000) + "</html>"
        let multi = EmailMessage.render(a, from: "w@example.org", to: ["a@example.org"], now: Self.t0)
        #expect(multi.contains("multipart/alternative") && multi.contains("Content-Type: text/html; charset=utf-8"))
        #expect(multi.components(separatedBy: "\r\n").allSatisfy { $0.count <= 998 })
    }

    @Test("a secret file must be a regular file readable by its owner alone, and not empty")
    func secretFiles() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/wayback-secret-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = dir + "/good", open = dir + "/open", empty = dir + "/empty", link = dir + "/link"
        for (path, text, mode) in [(good, "s3cret\n", 0o600), (open, "s3cret", 0o644), (empty, "\n", 0o600)] {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            _ = chmod(path, mode_t(mode))
        }
        _ = symlink(good, link)
        #expect(try SecretFile.read(good, what: "url_file") == "s3cret")
        for (path, words) in [(open, "chmod 600"), (empty, "is empty"), (link, "not a regular file"), (dir + "/missing", "cannot be read")] {
            do {
                _ = try SecretFile.read(path, what: "url_file")
                Issue.record("\(path) was accepted")
            } catch let e as WaybackError {
                #expect(e.message.contains(words) && !e.message.contains("s3cret"), "\(e.message)")
            }
        }
    }
}
