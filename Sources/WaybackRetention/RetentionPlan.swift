import Foundation
import WaybackCatalog
import WaybackCore

/// What `expire` will do in one repository: for each backup, keep (with every reason) or expire;
/// and below which WAL segment the archive is not needed. A pure function of the backups, the
/// policy, the pins and the time (`RetentionPlanner.plan`).
public struct RetentionPlan: Sendable, Codable, Equatable {
    public enum Action: String, Sendable, Codable { case keep, expire }

    public struct Decision: Sendable, Codable, Equatable {
        public var id: String
        public var type: String
        public var stopTime: Date
        public var action: Action
        public var reasons: [String]
        public var repositoryBytes: Int64
    }

    /// Oldest first (by stop time).
    public var decisions: [Decision]
    /// The newest complete backup is older than `stale_after`: nothing is expired.
    public var stale: Bool
    /// The backup from which every point of the PITR window is recovered (nil: no backups).
    public var pitrAnchor: String?
    /// Archived WAL segments numbered below this are not needed (every kept backup older than the
    /// anchor holds the WAL of its own consistency); nil: keep every WAL file.
    public var walCutoff: UInt64?
    /// The expiry removes more than half of the complete backups (a policy typo?): it needs
    /// `--force` by hand, and the daemon refuses it.
    public var needsForce: Bool

    public var expired: [Decision] { decisions.filter { $0.action == .expire } }
    public var kept: [Decision] { decisions.filter { $0.action == .keep } }
}

public enum RetentionPlanner {
    /// A pin: kept while `until` is nil or later than now.
    public typealias Pins = [BackupID: Date?]

    /// Plans the expiry of `backups` (the complete backups of one repository) under `policy` at
    /// `now`. The order is the stop time in the manifests, never the id or the LSN.
    public static func plan(_ backups: [BackupSummary], policy: RetentionPolicy, pins: Pins = [:], now: Date) -> RetentionPlan {
        let sorted = backups.sorted { ($0.stopTime, $0.id) < ($1.stopTime, $1.id) }
        var reasons = [BackupID: [String]]()
        func keep(_ id: BackupID, _ why: String) { reasons[id, default: []].append(why) }
        guard let newest = sorted.last else {
            return RetentionPlan(decisions: [], stale: false, pitrAnchor: nil, walCutoff: nil, needsForce: false)
        }
        let byID = Dictionary(sorted.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })

        // Backups have stopped: deleting the last good ones would make it worse.
        if now.timeIntervalSince(newest.stopTime) > policy.staleAfter {
            let why = "stale: the newest backup (\(newest.id)) is older than stale_after (\(RetentionPolicy.formatDuration(policy.staleAfter))); nothing is expired until backups run again"
            return RetentionPlan(decisions: sorted.map { decision($0, .keep, [why]) }, stale: true, pitrAnchor: nil, walCutoff: nil, needsForce: false)
        }

        keep(newest.id, "newest")
        let newestFirst = Array(sorted.reversed())
        let fulls = newestFirst.filter { $0.type == .full }
        calendar(all: newestFirst.map { ($0.id, $0.stopTime) }, whole: fulls.map { ($0.id, $0.stopTime) }, policy: policy, keep: keep)
        for b in fulls.prefix(policy.minFull) { keep(b.id, "min_full") }
        for (id, until) in pins where byID[id] != nil {
            if let until {
                if until > now { keep(id, "pinned until \(Format.timestamp(until))") }
            } else {
                keep(id, "pinned")
            }
        }
        // Every point of the window: the newest restorable backup that ends before the window
        // starts (or the oldest one, when none does), and all WAL from its start on.
        let windowStart = now.addingTimeInterval(-policy.pitrWindow)
        let restorable = RecoverableWindows.restorable(sorted)
        let anchor = restorable.last { $0.stopTime <= windowStart } ?? restorable.first
        if let anchor { keep(anchor.id, "pitr_window: every point since \(Format.timestamp(windowStart)) is recovered from it") }

        // A kept diff/incr keeps its whole chain.
        for b in newestFirst where reasons[b.id] != nil {
            var next = b.reference
            var guardCount = 0
            while let r = next, let ref = byID[r], guardCount < sorted.count {
                if !(reasons[r] ?? []).contains("needed by \(b.id)") { keep(r, "needed by \(b.id)") }
                next = ref.reference
                guardCount += 1
            }
        }

        let decisions = sorted.map { b in reasons[b.id].map { decision(b, .keep, $0) } ?? decision(b, .expire, []) }
        let expiring = decisions.filter { $0.action == .expire }.count
        let cutoff = anchor.map { $0.startLSN.value / $0.walSegmentSize }
        return RetentionPlan(decisions: decisions, stale: false, pitrAnchor: anchor?.id.rawValue, walCutoff: cutoff,
                             needsForce: expiring * 2 > sorted.count)
    }

    /// The calendar keeps: the newest item of each of the last `hourly` hours among `all`, and of
    /// the last `daily` days, `weekly` weeks, `monthly` months and `quarterly` quarters among
    /// `whole` (fulls, or dumps); both newest first.
    static func calendar<ID>(all: [(ID, Date)], whole: [(ID, Date)], policy: RetentionPolicy, keep: (ID, String) -> Void) {
        let periods = Periods(timeZone: TimeZone(identifier: policy.timeZone) ?? TimeZone(identifier: "UTC")!)
        for (count, name, among, label) in [(policy.hourly, "hourly", all, periods.hour),
                                            (policy.daily, "daily", whole, periods.day), (policy.weekly, "weekly", whole, periods.week),
                                            (policy.monthly, "monthly", whole, periods.month), (policy.quarterly, "quarterly", whole, periods.quarter)]
            where count > 0 {
            var seen = Set<String>()
            for (id, time) in among {
                let period = label(time)
                guard !seen.contains(period) else { continue }
                seen.insert(period)
                keep(id, "\(name) \(period)")
                if seen.count == count { break }
            }
        }
    }

    /// Plans the expiry of logical dumps (`dumps`: the complete ones of one repository) by the
    /// same policy: each dump is whole, so it counts for every period and for `min_full`; the
    /// PITR window does not apply (a dump restores to its own time only). Times are the dumps'
    /// start times; stale, pins and `needsForce` as for backups.
    public static func plan(dumps: [DumpListing], policy: RetentionPolicy, pins: [DumpID: Date?] = [:], now: Date) -> RetentionPlan {
        let sorted = dumps.sorted { $0.id < $1.id }
        func decision(_ d: DumpListing, _ action: RetentionPlan.Action, _ reasons: [String]) -> RetentionPlan.Decision {
            .init(id: d.id.rawValue, type: DumpID.typeName, stopTime: d.id.time, action: action, reasons: reasons, repositoryBytes: d.bytes)
        }
        guard let newest = sorted.last else {
            return RetentionPlan(decisions: [], stale: false, pitrAnchor: nil, walCutoff: nil, needsForce: false)
        }
        if now.timeIntervalSince(newest.id.time) > policy.staleAfter {
            let why = "stale: the newest dump (\(newest.id)) is older than stale_after (\(RetentionPolicy.formatDuration(policy.staleAfter))); no dump is expired until dumps run again"
            return RetentionPlan(decisions: sorted.map { decision($0, .keep, [why]) }, stale: true, pitrAnchor: nil, walCutoff: nil, needsForce: false)
        }
        var reasons = [DumpID: [String]]()
        func keep(_ id: DumpID, _ why: String) { reasons[id, default: []].append(why) }
        keep(newest.id, "newest")
        let newestFirst = sorted.reversed().map { ($0.id, $0.id.time) }
        calendar(all: newestFirst, whole: newestFirst, policy: policy, keep: keep)
        for (id, _) in newestFirst.prefix(policy.minFull) { keep(id, "min_full") }
        let present = Set(sorted.map(\.id))
        for (id, until) in pins where present.contains(id) {
            if let until {
                if until > now { keep(id, "pinned until \(Format.timestamp(until))") }
            } else {
                keep(id, "pinned")
            }
        }
        let decisions = sorted.map { d in reasons[d.id].map { decision(d, .keep, $0) } ?? decision(d, .expire, []) }
        return RetentionPlan(decisions: decisions, stale: false, pitrAnchor: nil, walCutoff: nil,
                             needsForce: decisions.filter { $0.action == .expire }.count * 2 > sorted.count)
    }

    static func decision(_ b: BackupSummary, _ action: RetentionPlan.Action, _ reasons: [String]) -> RetentionPlan.Decision {
        .init(id: b.id.rawValue, type: b.type.rawValue, stopTime: b.stopTime, action: action, reasons: reasons, repositoryBytes: b.sizes.repository)
    }

    /// The archived WAL files an expiry with `cutoff` removes: segments (partial ones too) and
    /// `.backup` files numbered below it, on every timeline; history files are always kept.
    public static func walToRemove(_ archived: [WALFileName], cutoff: UInt64?, segmentSize: UInt64) -> [WALFileName] {
        guard let cutoff else { return [] }
        return archived.filter { $0.kind != .history && $0.segmentNumber(segmentSize: segmentSize) < cutoff }
    }

    /// The calendar periods of a time zone, as labels (`2026-12-06 14:00`, `2026-12-06`,
    /// `2026-W49`, `2026-12`, `2026-Q4`). An hour repeated by a DST change is two periods (its
    /// label carries the offset then); a skipped hour is none.
    struct Periods {
        let calendar: Calendar
        let iso: Calendar

        init(timeZone: TimeZone) {
            var c = Calendar(identifier: .gregorian)
            c.timeZone = timeZone
            calendar = c
            var i = Calendar(identifier: .iso8601)
            i.timeZone = timeZone
            iso = i
        }

        static func pad(_ n: Int, _ w: Int = 2) -> String { let s = String(n); return String(repeating: "0", count: max(0, w - s.count)) + s }

        func hour(_ d: Date) -> String {
            let c = calendar.dateComponents([.year, .month, .day, .hour], from: d)
            let base = "\(c.year!)-\(Self.pad(c.month!))-\(Self.pad(c.day!)) \(Self.pad(c.hour!)):00"
            // The offset tells the two hours apart that a DST change repeats.
            return calendar.timeZone.nextDaylightSavingTimeTransition(after: d.addingTimeInterval(-366 * 86400)) == nil
                ? base : base + " " + offsetText(calendar.timeZone.secondsFromGMT(for: d) / 60)
        }

        func offsetText(_ minutes: Int) -> String {
            let sign = minutes < 0 ? "-" : "+"
            return "\(sign)\(Self.pad(abs(minutes) / 60)):\(Self.pad(abs(minutes) % 60))"
        }

        func day(_ d: Date) -> String {
            let c = calendar.dateComponents([.year, .month, .day], from: d)
            return "\(c.year!)-\(Self.pad(c.month!))-\(Self.pad(c.day!))"
        }

        func week(_ d: Date) -> String {
            let c = iso.dateComponents([.yearForWeekOfYear, .weekOfYear], from: d)
            return "\(c.yearForWeekOfYear!)-W\(Self.pad(c.weekOfYear!))"
        }

        func month(_ d: Date) -> String {
            let c = calendar.dateComponents([.year, .month], from: d)
            return "\(c.year!)-\(Self.pad(c.month!))"
        }

        func quarter(_ d: Date) -> String {
            let c = calendar.dateComponents([.year, .month], from: d)
            return "\(c.year!)-Q\((c.month! - 1) / 3 + 1)"
        }
    }
}
