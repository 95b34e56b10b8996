import Crypto
import Foundation
import WaybackCatalog
import Synchronization
import WaybackCore
import WaybackStorage

/// What a notification is about (`notifications.sinks[].events`).
public enum AlertEvent: String, Codable, Sendable, CaseIterable {
    case backupFailed = "backup.failed"
    case backupSucceeded = "backup.succeeded"
    case walArchiveFailing = "wal.archive_failing"
    case repositoryUnreachable = "repository.unreachable"
    case diskWarning = "disk.warning"
    case diskCritical = "disk.critical"
    case verifyFailed = "verify.failed"
    case drillFailed = "drill.failed"
    case drillSucceeded = "drill.succeeded"
    case reportDaily = "report.daily"
    /// A repository lacks the newest backup (or dump) past the sync's grace: one copy fewer.
    case copiesMissing = "copies.missing"
    case checkRecovered = "check.recovered"
    /// `wayback notify --test`: every sink gets it, whatever its events.
    case test = "test"
}

/// One notification: the facts, the same for every sink (each renders it its own way).
public struct Alert: Codable, Sendable, Equatable {
    public var event: AlertEvent
    public var cluster: String
    public var time: Date
    /// info, warning or critical.
    public var severity: String
    public var message: String
    public var backup: String?
    public var repository: String?
    /// Facts for the reader (type, size, duration, error, ...), in this order.
    public var details: [Detail]
    /// The problem it reports (the same key for the same problem; nil: an outcome, never held back).
    public var problem: String?
    /// Set on a reminder of a problem still open: since when.
    public var openSince: Date?
    /// The HTML report, mailed with `report.daily` (never in a webhook or Slack message).
    public var html: String?

    public struct Detail: Codable, Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) { self.name = name; self.value = value }
    }

    public init(event: AlertEvent, cluster: String, time: Date, severity: String, message: String, backup: String? = nil,
                repository: String? = nil, details: [Detail] = [], problem: String? = nil) {
        self.event = event; self.cluster = cluster; self.time = time; self.severity = severity; self.message = message
        self.backup = backup; self.repository = repository; self.details = details; self.problem = problem
    }

    enum CodingKeys: String, CodingKey { case event, cluster, time, severity, message, backup, repository, details, problem, openSince }

    /// A one-line title: `[wayback] CRITICAL main: backup.failed`.
    public var title: String {
        "[wayback] \(severity.uppercased()) \(cluster): \(openSince != nil ? "still " : "")\(event.rawValue)"
    }

    /// The plain-text body (email, logs).
    public var text: String {
        var s = message + "\n\n"
        for d in details { s += "\(d.name): \(d.value)\n" }
        if let b = backup { s += "backup: \(b)\n" }
        if let r = repository { s += "repository: \(r)\n" }
        if let o = openSince { s += "open since: \(Format.timestamp(o))\n" }
        s += "cluster: \(cluster)\ntime: \(Format.timestamp(time))\n"
        return s
    }
}

/// Which notifications go out: a problem is sent once, then again only as a reminder every
/// `repeatSeconds` while it stays open, and once more (`check.recovered`) when it clears.
/// Outcomes (a backup that succeeded, the daily report) always go out. Pure: the caller gives
/// the time.
public struct AlertLedger: Sendable {
    public struct Open: Sendable, Equatable, Codable {
        public var since: Date
        public var lastSent: Date
        public var alert: Alert
    }
    public private(set) var open: [String: Open] = [:]
    public var repeatSeconds: Double

    public init(repeatSeconds: Double, open: [String: Open] = [:]) { self.repeatSeconds = repeatSeconds; self.open = open }

    /// What to send for `alert` now.
    public mutating func admit(_ alert: Alert, now: Date) -> [Alert] {
        guard let key = alert.problem else { return [alert] }
        guard var o = open[key] else {
            open[key] = Open(since: now, lastSent: now, alert: alert)
            return [alert]
        }
        // Worse than what was sent (a disk from warning to critical): sent at once.
        if alert.event != o.alert.event || alert.severity != o.alert.severity {
            o.alert = alert
            o.lastSent = now
            open[key] = o
            return [alert]
        }
        o.alert = alert
        guard now.timeIntervalSince(o.lastSent) >= repeatSeconds else {
            open[key] = o
            return []
        }
        o.lastSent = now
        open[key] = o
        var reminder = alert
        reminder.openSince = o.since
        return [reminder]
    }

    /// The problem `key` is over: one `check.recovered` if it was open.
    public mutating func clear(_ key: String, now: Date, message: String? = nil) -> [Alert] {
        guard let o = open.removeValue(forKey: key) else { return [] }
        var a = Alert(event: .checkRecovered, cluster: o.alert.cluster, time: now, severity: "info",
                      message: message ?? "recovered: \(o.alert.message)", backup: o.alert.backup, repository: o.alert.repository,
                      details: [.init("was", o.alert.event.rawValue), .init("open for", Format.age(now.timeIntervalSince(o.since)))])
        a.problem = nil
        return [a]
    }

    /// The problems under `prefix` that `present` no longer holds are over.
    public mutating func reconcile(prefix: String, present: Set<String>, now: Date) -> [Alert] {
        open.keys.filter { $0.hasPrefix(prefix) && !present.contains($0) }.sorted().flatMap { clear($0, now: now) }
    }
}

/// The problems a gathering shows (the daemon's monitor gathers every `monitor.refresh`):
/// `archive_command` failing, a repository unreadable, a disk over its thresholds.
public enum HealthAlerts {
    public static func observe(_ f: HealthFacts, ledger: inout AlertLedger, now: Date, copiesGrace: Double = HealthThresholds().backupAgeWarning) -> [Alert] {
        var out = [Alert]()
        var present = Set<String>()
        if let m = HealthCheck.missingCopies(f, grace: copiesGrace, now: now) {
            for name in m.lacking {
                let key = "copies:\(name)"
                present.insert(key)
                out += ledger.admit(Alert(event: .copiesMissing, cluster: f.cluster, time: now, severity: "warning", message: m.message,
                                          backup: m.id, repository: name, problem: key), now: now)
            }
        }
        // A repository that did not answer is its own problem: what it lacks is not known, so not cleared.
        for r in f.repositories where !r.reachable { present.insert("copies:\(r.name)") }
        if let a = f.archiver, a.failing {
            let key = "wal.archive_failing"
            present.insert(key)
            out += ledger.admit(Alert(event: .walArchiveFailing, cluster: f.cluster, time: now, severity: "critical",
                                      message: "archive_command is failing: \(a.failedCount) failure(s), the last for \(a.lastFailedWAL ?? "?"); nothing is archived until it works",
                                      details: [.init("last archived", a.lastArchivedWAL ?? "none"),
                                                .init("last archived at", a.lastArchivedTime.map(Format.timestamp) ?? "never")],
                                      problem: key), now: now)
        }
        for r in f.repositories where !r.reachable {
            let key = "repository:\(r.name)"
            present.insert(key)
            out += ledger.admit(Alert(event: .repositoryUnreachable, cluster: f.cluster, time: now, severity: "critical",
                                      message: "repository '\(r.name)' cannot be read: \(r.error ?? "unknown error")", repository: r.name,
                                      problem: key), now: now)
        }
        for d in f.disks where d.level == .warning || d.level == .critical {
            let key = "disk:\(d.path)"
            present.insert(key)
            out += ledger.admit(Alert(event: d.level == .critical ? .diskCritical : .diskWarning, cluster: f.cluster, time: now,
                                      severity: d.level == .critical ? "critical" : "warning", message: "disk space: \(d.text)",
                                      problem: key), now: now)
        }
        // Only what a gathering can see is cleared by one (a failed backup clears with a backup).
        if f.archiver != nil { out += ledger.reconcile(prefix: "wal.archive_failing", present: present, now: now) }
        out += ledger.reconcile(prefix: "repository:", present: present, now: now)
        out += ledger.reconcile(prefix: "disk:", present: present, now: now)
        if f.backupsError == nil { out += ledger.reconcile(prefix: "copies:", present: present, now: now) }
        return out
    }
}

// MARK: payloads

/// Slack's incoming-webhook message: `text` (the notification's fallback) plus blocks.
public enum SlackMessage {
    public static func payload(_ a: Alert) -> [UInt8] {
        let icon = a.event == .checkRecovered || a.severity == "info" ? ":white_check_mark:" : a.severity == "critical" ? ":rotating_light:" : ":warning:"
        var fields = a.details.map { "*\(escape($0.name))*: \(escape($0.value))" }
        if let b = a.backup { fields.insert("*backup*: `\(escape(b))`", at: 0) }
        if let r = a.repository { fields.append("*repository*: \(escape(r))") }
        if let o = a.openSince { fields.append("*open since*: \(escape(Format.timestamp(o)))") }
        var blocks: [[String: Any]] = [
            ["type": "header", "text": ["type": "plain_text", "text": String(a.title.prefix(150))]],
            ["type": "section", "text": ["type": "mrkdwn", "text": "\(icon) \(escape(a.message))"]],
        ]
        if !fields.isEmpty {
            blocks.append(["type": "section", "fields": fields.prefix(10).map { ["type": "mrkdwn", "text": $0] }])
        }
        blocks.append(["type": "context", "elements": [["type": "mrkdwn", "text": "cluster *\(escape(a.cluster))* · \(escape(Format.timestamp(a.time)))"]]])
        let object: [String: Any] = ["text": "\(a.title): \(a.message)", "blocks": blocks]
        return Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
    }

    /// Slack's control characters in text: `&`, `<`, `>`.
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

/// The webhook's JSON body (docs/monitoring.md) and its HMAC-SHA256 signature.
public enum WebhookMessage {
    public static let signatureHeader = "X-Wayback-Signature"

    public static func body(_ a: Alert) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(a)) ?? Data("{}".utf8))
    }

    /// `sha256=<hex HMAC-SHA256 of the body with the secret>`.
    public static func signature(_ body: [UInt8], secret: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: secret))
        return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }
}

/// The daemon's one place for notifications: the ledger that holds back repeats, and the
/// notifier that delivers. Jobs and the monitor's gatherings raise and clear problems here.
///
/// The open problems are kept in `store` (a JSON file next to the daemon's lock), so that a
/// restarted daemon neither sends them again nor forgets to say when they clear.
public final class AlertDesk: Sendable {
    let ledger: Mutex<AlertLedger>
    public let notifier: Notifier
    let clock: any WaybackClock
    let store: String?

    public init(notifier: Notifier, repeatSeconds: Double, store: String? = nil, clock: any WaybackClock = SystemClock()) {
        self.notifier = notifier; self.clock = clock; self.store = store
        ledger = Mutex(AlertLedger(repeatSeconds: repeatSeconds, open: store.map(Self.load) ?? [:]))
    }

    /// A problem or an outcome: sent unless it repeats an open problem within the repeat time.
    public func raise(_ alert: Alert) {
        let now = clock.now
        change { $0.admit(alert, now: now) }
    }

    /// The problem `key` is over (one `check.recovered` if it was open).
    public func clear(_ key: String, message: String? = nil) {
        let now = clock.now
        change { $0.clear(key, now: now, message: message) }
    }

    /// What a gathering shows: archiving failing, repositories unreadable, disks.
    public func observe(_ facts: HealthFacts, copiesGrace: Double = HealthThresholds().backupAgeWarning) {
        let now = clock.now
        change { HealthAlerts.observe(facts, ledger: &$0, now: now, copiesGrace: copiesGrace) }
    }

    private func change(_ body: (inout AlertLedger) -> [Alert]) {
        let (out, open, changed) = ledger.withLock { l -> ([Alert], [String: AlertLedger.Open], Bool) in
            let before = l.open
            let out = body(&l)
            return (out, l.open, l.open != before)
        }
        if changed, let store { Self.save(open, to: store) }
        notifier.post(out)
    }

    static func load(_ path: String) -> [String: AlertLedger.Open] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        let d = JSONDecoder()
        d.dateDecodingStrategy = .secondsSince1970
        return (try? d.decode([String: AlertLedger.Open].self, from: data)) ?? [:]
    }

    /// Written whole and renamed into place (0600); a failure only costs a resend after a restart.
    static func save(_ open: [String: AlertLedger.Open], to path: String) {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .secondsSince1970
        e.outputFormatting = .sortedKeys
        guard let data = try? e.encode(open) else { return }
        let temp = path + ".tmp-\(getpid())"
        do {
            let f = try PosixFile.create(temp, mode: 0o600)
            try Array(data).withUnsafeBytes { try f.pwrite($0, offset: 0) }
            try f.fsync()
            try f.close()
            try FileSystem.rename(temp, path)
        } catch {
            try? FileSystem.remove(temp)
        }
    }
}
