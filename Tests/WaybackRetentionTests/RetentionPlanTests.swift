import Foundation
import Testing
import WaybackCatalog
import WaybackCore
@testable import WaybackRetention

/// The retention planner over simulated years of backups, with its invariants checked after every
/// daily expiry: bucket contents (computed here another way), whole chains, `min_full`, the newest
/// backup, the PITR anchor and WAL cutoff, and nothing expired while backups are stale.
@Suite struct RetentionPlanTests {
    static let segment: UInt64 = 16 << 20

    static func backup(_ start: Date, _ type: BackupType, reference: BackupID?, minutes: Double = 20) -> BackupSummary {
        let lsn = UInt64(start.timeIntervalSince1970 / 60) * 0x10000
        let m = BackupManifest(
            id: BackupID(startTime: start, type: type), type: type, reference: reference, cluster: "c", systemIdentifier: "1",
            pgVersionNumber: 150004, walSegmentSize: segment, dataChecksums: true, startTime: start,
            stopTime: start.addingTimeInterval(minutes * 60), startLSN: LSN(lsn), stopLSN: LSN(lsn + 0x8000), timeline: 1,
            startWAL: "", stopWAL: "", backupLabel: "", tablespaceMap: "", tablespaces: [], compression: CompressionSettings(),
            objects: [.init(name: "pack/00-0000.pack", size: 100, sha256: "")], directories: [], files: [], wal: [], copySeconds: 1)
        return BackupSummary(m)
    }

    /// What the buckets must keep, computed independently: group by calendar period with
    /// `Calendar.dateInterval`, take the newest of each, the N most recent periods.
    static func expectedBucket(_ backups: [BackupSummary], component: Calendar.Component, count: Int, calendar: Calendar) -> Set<BackupID> {
        guard count > 0 else { return [] }
        var newestPerPeriod = [Date: BackupSummary]()
        for b in backups {
            let start = component == .quarter
                ? calendar.date(from: DateComponents(year: calendar.component(.year, from: b.stopTime), month: (calendar.component(.month, from: b.stopTime) - 1) / 3 * 3 + 1, day: 1))!
                : calendar.dateInterval(of: component, for: b.stopTime)!.start
            if let have = newestPerPeriod[start], (have.stopTime, have.id) > (b.stopTime, b.id) { continue }
            newestPerPeriod[start] = b
        }
        return Set(newestPerPeriod.keys.sorted(by: >).prefix(count).map { newestPerPeriod[$0]!.id })
    }

    static func checkInvariants(_ plan: RetentionPlan, before: [BackupSummary], policy: RetentionPolicy, now: Date, pins: RetentionPlanner.Pins = [:]) {
        let kept = Set(plan.kept.compactMap { BackupID($0.id) })
        let byID = Dictionary(before.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(plan.decisions.count == before.count)
        let newest = before.max { ($0.stopTime, $0.id) < ($1.stopTime, $1.id) }
        if let newest { #expect(kept.contains(newest.id), "the newest backup \(newest.id) was expired at \(now)") }
        if plan.stale {
            #expect(plan.expired.isEmpty, "expired while stale at \(now)")
            return
        }
        // Whole chains.
        for id in kept {
            var next = byID[id]?.reference
            while let r = next, let ref = byID[r] {
                #expect(kept.contains(r), "kept \(id) but expired \(r) of its chain at \(now)")
                next = ref.reference
            }
        }
        // Buckets (fulls only from daily on), computed another way.
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: policy.timeZone)!
        var iso = Calendar(identifier: .iso8601)
        iso.timeZone = calendar.timeZone
        let fulls = before.filter { $0.type == .full }
        let must = expectedBucket(before, component: .hour, count: policy.hourly, calendar: calendar)
            .union(expectedBucket(fulls, component: .day, count: policy.daily, calendar: calendar))
            .union(expectedBucket(fulls, component: .weekOfYear, count: policy.weekly, calendar: iso))
            .union(expectedBucket(fulls, component: .month, count: policy.monthly, calendar: calendar))
            .union(expectedBucket(fulls, component: .quarter, count: policy.quarterly, calendar: calendar))
        for id in must { #expect(kept.contains(id), "a bucket's backup \(id) was expired at \(now)") }
        // min_full.
        #expect(kept.filter { byID[$0]?.type == .full }.count >= min(policy.minFull, fulls.count))
        // Nothing kept without a reason, nothing expired with one.
        for d in plan.decisions { #expect((d.action == .keep) == !d.reasons.isEmpty) }
        // PITR: the anchor is kept, ends before the window (when any backup does), and the WAL
        // cutoff is its start.
        let windowStart = now.addingTimeInterval(-policy.pitrWindow)
        if let anchorID = plan.pitrAnchor.flatMap({ BackupID($0) }), let anchor = byID[anchorID] {
            #expect(kept.contains(anchorID))
            if before.contains(where: { $0.stopTime <= windowStart }) { #expect(anchor.stopTime <= windowStart) }
            #expect(!before.contains { $0.stopTime <= windowStart && ($0.stopTime, $0.id) > (anchor.stopTime, anchor.id) },
                    "a newer backup than the anchor also ends before the window")
            #expect(plan.walCutoff == anchor.startLSN.value / segment)
        } else {
            #expect(before.isEmpty)
        }
        for (id, until) in pins where byID[id] != nil && (until.map { $0 > now } ?? true) { #expect(kept.contains(id)) }
    }

    /// Simulates `years` of backups (a daily full at 02:00 local time and an incr every
    /// `incrEvery` hours), expiring once a day at 03:00, with days missed and a two-week stop.
    static func simulate(years: Int, policy: RetentionPolicy, incrEvery: Int, clockJumps: Bool = false) -> Int {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: policy.timeZone)!
        var rng = SplitMix(seed: 20261206)
        var now = calendar.date(from: DateComponents(year: 2019, month: 1, day: 1, hour: 0))!
        let end = calendar.date(byAdding: .year, value: years, to: now)!
        let stopFrom = calendar.date(from: DateComponents(year: 2021, month: 6, day: 1))!
        let stopTo = calendar.date(byAdding: .day, value: 14, to: stopFrom)!
        var backups = [BackupSummary]()
        var expiries = 0
        var jumped = false
        while now < end {
            let hour = calendar.component(.hour, from: now)
            let down = now >= stopFrom && now < stopTo
            let missedDay = rng.next() % 40 == 0
            if !down && !missedDay {
                if hour == 2 {
                    backups.append(backup(now, .full, reference: nil))
                } else if hour % incrEvery == 0, let last = backups.last {
                    backups.append(backup(now, .incr, reference: last.id, minutes: 5))
                }
            }
            if hour == 3 {
                var planAt = now
                // The clock jumps back two days once, and forward a day once.
                if clockJumps && !jumped && now > calendar.date(from: DateComponents(year: 2022, month: 3, day: 3))! {
                    planAt = now.addingTimeInterval(-2 * 86400)
                    jumped = true
                }
                let plan = RetentionPlanner.plan(backups, policy: policy, now: planAt)
                checkInvariants(plan, before: backups, policy: policy, now: planAt)
                let gone = Set(plan.expired.map(\.id))
                backups.removeAll { gone.contains($0.id.rawValue) }
                expiries += 1
            }
            // Steps of one hour in absolute time: a DST change repeats or skips a local hour.
            now = now.addingTimeInterval(3600)
        }
        return backups.count
    }

    @Test func eightYearsOfHourlyAndDailyBackupsInUTC() {
        let policy = RetentionPolicy()
        let left = Self.simulate(years: 8, policy: policy, incrEvery: 1, clockJumps: true)
        // Bounded: the buckets' sum, the PITR window's chain and a day of incrs, not 8 years.
        #expect(left < 24 + 30 + 12 + 12 + 28 + 2 + 8 * 24, "\(left) backups left")
    }

    @Test func aNonUTCZoneAcrossDSTChanges() {
        let policy = RetentionPolicy(hourly: 12, daily: 10, weekly: 6, monthly: 6, quarterly: 8, minFull: 3, pitrWindow: 3 * 86400,
                                     timeZone: "Europe/Berlin")
        let left = Self.simulate(years: 3, policy: policy, incrEvery: 3)
        #expect(left > 0)
    }

    @Test func theOrderIsTheStopTimeNeverTheIdOrLSN() throws {
        // wal-g #636: after an upgrade, names sorted the other way and the newest were deleted.
        // Here ids and LSNs sort against the stop times.
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        var backups = [BackupSummary]()
        for day in 0..<10 {
            var b = Self.backup(now.addingTimeInterval(Double(-day) * 86400 - 3600), .full, reference: nil)
            b.startLSN = LSN(UInt64(day + 1) << 32)
            b.id = BackupID("2030\(String(format: "%02d", day + 1))01-000000F")!
            backups.append(b)
        }
        let policy = RetentionPolicy(hourly: 0, daily: 2, weekly: 0, monthly: 0, quarterly: 0, minFull: 0, pitrWindow: 0)
        let plan = RetentionPlanner.plan(backups, policy: policy, now: now)
        let newestTwo = backups.sorted { $0.stopTime > $1.stopTime }.prefix(2).map(\.id.rawValue)
        #expect(Set(plan.kept.map(\.id)) == Set(newestTwo), "\(plan.kept.map(\.id))")
        #expect(plan.needsForce, "expiring 8 of 10 needs --force")
    }

    @Test func pinsStaleBackupsAndAPolicyThatKeepsNothing() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let backups = (0..<6).map { Self.backup(now.addingTimeInterval(Double(-$0 - 1) * 86400), .full, reference: nil) }.reversed()
        let policy = RetentionPolicy(hourly: 0, daily: 1, weekly: 0, monthly: 0, quarterly: 0, minFull: 1, pitrWindow: 0)
        let old = backups.first!.id, middle = Array(backups)[2].id
        let plan = RetentionPlanner.plan(Array(backups), policy: policy,
                                         pins: [old: nil, middle: now.addingTimeInterval(-1)], now: now)
        #expect(plan.kept.first { $0.id == old.rawValue }?.reasons.contains("pinned") == true)
        #expect(plan.expired.contains { $0.id == middle.rawValue }, "a pin that ran out still kept its backup")
        // Backups stopped 4 days ago (stale_after 3d): nothing goes.
        let stale = RetentionPlanner.plan(Array(backups), policy: policy, now: now.addingTimeInterval(4 * 86400))
        #expect(stale.stale && stale.expired.isEmpty && stale.walCutoff == nil)
        #expect(throws: WaybackError.self) {
            try RetentionPolicy(hourly: 0, daily: 0, weekly: 0, monthly: 0, quarterly: 0, minFull: 0).validate(origin: "test")
        }
        #expect(throws: WaybackError.self) { try RetentionPolicy(timeZone: "Mars/Olympus").validate(origin: "test") }
        #expect(RetentionPolicy.parseDuration("7d") == 7 * 86400 && RetentionPolicy.parseDuration("36h") == 36 * 3600)
        #expect(RetentionPolicy.parseDuration("7") == nil && RetentionPolicy.parseDuration("-1d") == nil)
    }

    @Test func logicalDumpsAreKeptByTheCalendarEachOneWhole() throws {
        // A nightly dump at 02:00 UTC for 100 days, and a second one on the last day at 14:00.
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let day0 = Calendar(identifier: .gregorian).startOfDay(for: now).addingTimeInterval(2 * 3600 - 99 * 86400)
        var dumps = (0..<100).map { d -> DumpListing in
            DumpListing(id: DumpID(startTime: day0.addingTimeInterval(Double(d) * 86400)), databases: ["shop"], bytes: 10, repositories: ["local"])
        }
        dumps.append(DumpListing(id: DumpID(startTime: day0.addingTimeInterval(99 * 86400 + 12 * 3600)), databases: ["shop"], bytes: 10, repositories: ["local"]))
        let policy = RetentionPolicy(hourly: 0, daily: 7, weekly: 4, monthly: 3, quarterly: 0, minFull: 2, pitrWindow: 30 * 86400)
        let plan = RetentionPlanner.plan(dumps: dumps.shuffled(), policy: policy, now: day0.addingTimeInterval(99 * 86400 + 13 * 3600))
        #expect(!plan.stale && plan.walCutoff == nil && plan.pitrAnchor == nil)
        #expect(plan.decisions.allSatisfy { $0.type == "logical" } && plan.decisions.map(\.id) == dumps.map(\.id.rawValue))
        // Independently: the newest dump of each of the 7 latest days, 4 latest ISO weeks, 3 latest months; the 2 newest.
        var utc = Calendar(identifier: .iso8601)
        utc.timeZone = TimeZone(identifier: "UTC")!
        var want = Set<String>()
        for (component, count) in [(Calendar.Component.day, 7), (.weekOfYear, 4), (.month, 3)] {
            var newest = [Date: DumpListing]()
            for d in dumps {
                let start = utc.dateInterval(of: component, for: d.id.time)!.start
                if let have = newest[start], have.id > d.id { continue }
                newest[start] = d
            }
            for k in newest.keys.sorted(by: >).prefix(count) { want.insert(newest[k]!.id.rawValue) }
        }
        for d in dumps.suffix(2) { want.insert(d.id.rawValue) }
        #expect(Set(plan.kept.map(\.id)) == want)
        // The PITR window (30 days) keeps no dump: those in it that no bucket keeps go.
        let inWindow = dumps[70..<100].filter { !want.contains($0.id.rawValue) }
        #expect(inWindow.count > 10 && inWindow.allSatisfy { d in plan.expired.contains { $0.id == d.id.rawValue } })
        #expect(plan.kept.first { $0.id == dumps.last!.id.rawValue }?.reasons.contains("newest") == true)
        #expect(plan.needsForce, "expiring most of the dumps at once needs --force")
        // Pins: one for ever and one until a later time are kept; one whose time has passed is not.
        let at = day0.addingTimeInterval(99 * 86400 + 13 * 3600)
        let expiring = plan.expired.compactMap { DumpID($0.id) }
        let pinned = RetentionPlanner.plan(dumps: dumps, policy: policy,
                                           pins: [expiring[0]: nil, expiring[1]: at.addingTimeInterval(86400), expiring[2]: at.addingTimeInterval(-1)], now: at)
        #expect(pinned.kept.first { $0.id == expiring[0].rawValue }?.reasons == ["pinned"])
        #expect(pinned.kept.first { $0.id == expiring[1].rawValue }?.reasons.first?.hasPrefix("pinned until ") == true)
        #expect(pinned.expired.contains { $0.id == expiring[2].rawValue })
        #expect(pinned.expired.count == plan.expired.count - 2)
        // Dumps stopped 4 days ago: none goes.
        let stale = RetentionPlanner.plan(dumps: dumps, policy: policy, now: now.addingTimeInterval(4 * 86400))
        #expect(stale.stale && stale.expired.isEmpty)
        #expect(RetentionPlanner.plan(dumps: [], policy: policy, now: now).decisions.isEmpty)
    }

    @Test func walBelowTheAnchorGoesHistoryFilesStay() {
        let names = ["000000010000000000000001", "000000010000000000000002", "000000010000000000000003",
                     "000000010000000000000002.00000028.backup", "00000002.history", "000000020000000000000003"].compactMap(WALFileName.init)
        let removed = RetentionPlanner.walToRemove(names, cutoff: 3, segmentSize: Self.segment).map(\.description)
        #expect(removed == ["000000010000000000000001", "000000010000000000000002", "000000010000000000000002.00000028.backup"])
        #expect(RetentionPlanner.walToRemove(names, cutoff: nil, segmentSize: Self.segment).isEmpty)
    }

    @Test func planningTwentyThousandBackupsIsQuick() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        var backups = [BackupSummary]()
        var last: BackupID?
        for i in 0..<20_000 {
            let t = now.addingTimeInterval(Double(i - 20_000) * 3600)
            let full = i % 24 == 0
            let b = Self.backup(t, full ? .full : .incr, reference: full ? nil : last)
            backups.append(b)
            last = b.id
        }
        let started = Date()
        let plan = RetentionPlanner.plan(backups, policy: RetentionPolicy(), now: now)
        let seconds = Date().timeIntervalSince(started)
        // Measured, not asserted (timing assertions are flaky): docs/benchmarks.md records it.
        print("planned the expiry of \(backups.count) backups in \(String(format: "%.3f", seconds)) s: \(plan.expired.count) expire")
        Self.checkInvariants(plan, before: backups, policy: RetentionPolicy(), now: now)
    }
}

/// A small deterministic generator for the simulation.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
