import Foundation
import Testing
import WaybackCore
import WaybackSchedule
import WaybackStorage
import WaybackTesting

/// Cron expressions and the schedule's decisions, driven by a manual clock.
@Suite struct ScheduleTests {
    static let utc = TimeZone(identifier: "UTC")!
    static func at(_ text: String) -> Date { Date(timeIntervalSince1970: Double(Format.parseInstant(text)!) / 1_000_000) }

    @Test func fieldsListsRangesStepsNamesAndNicknames() throws {
        let every15 = try CronExpression("*/15 9-17 * * mon-fri")
        #expect(every15.next(after: Self.at("2026-12-05 12:00:00+00"), in: Self.utc) == Self.at("2026-12-07 09:00:00+00"))  // Saturday -> Monday
        #expect(every15.next(after: Self.at("2026-12-07 09:00:00+00"), in: Self.utc) == Self.at("2026-12-07 09:15:00+00"))
        #expect(every15.next(after: Self.at("2026-12-07 17:45:00+00"), in: Self.utc) == Self.at("2026-12-08 09:00:00+00"))
        let list = try CronExpression("5,35 1,13 1 jan,JUL *")
        #expect(list.next(after: Self.at("2026-12-06 00:00:00+00"), in: Self.utc) == Self.at("2027-01-01 01:05:00+00"))
        #expect(try CronExpression("@daily").next(after: Self.at("2026-12-06 00:00:00+00"), in: Self.utc) == Self.at("2026-12-07 00:00:00+00"))
        #expect(try CronExpression("@hourly").next(after: Self.at("2026-12-06 10:59:59+00"), in: Self.utc) == Self.at("2026-12-06 11:00:00+00"))
        #expect(try CronExpression("0 0 * * 7").next(after: Self.at("2026-12-06 00:00:00+00"), in: Self.utc) == Self.at("2026-12-13 00:00:00+00"))
        // Both day fields restricted: either matches (the 13th, or any Friday).
        let either = try CronExpression("0 12 13 * fri")
        #expect(either.next(after: Self.at("2026-12-06 00:00:00+00"), in: Self.utc) == Self.at("2026-12-11 12:00:00+00"))
        #expect(try CronExpression("0 0 29 2 *").next(after: Self.at("2026-03-01 00:00:00+00"), in: Self.utc) == Self.at("2028-02-29 00:00:00+00"))
        #expect(try CronExpression("0 0 31 2 *").next(after: Self.at("2026-03-01 00:00:00+00"), in: Self.utc) == nil)
    }

    @Test func aMalformedFieldIsNamed() {
        for (text, words) in [("61 * * * *", "'minute' is '61'"), ("0 24 * * *", "'hour'"), ("0 0 0 * *", "'day of month'"),
                              ("0 0 * 13 *", "'month'"), ("0 0 * * 8", "'day of week'"), ("0 0 * * funday", "not a number or name"),
                              ("* * * *", "five"), ("@reboot", "nickname"), ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"), ("1,,2 * * * *", "empty")] {
            do {
                _ = try CronExpression(text, origin: "w.yaml: schedule.full")
                Issue.record("'\(text)' was accepted")
            } catch let e as WaybackError {
                #expect(e.code == .config && e.message.contains(words) && e.message.hasPrefix("w.yaml: schedule.full"), "\(text): \(e.message)")
            } catch { Issue.record("\(error)") }
        }
    }

    @Test func daylightSavingChangesRunSkippedTimesOnceAfterTheGapAndRepeatedOnesOnce() throws {
        let berlin = TimeZone(identifier: "Europe/Berlin")!
        // 2027-03-28: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist: runs at 03:00 CEST (01:00 UTC), once.
        let skipped = try CronExpression("30 2 * * *")
        let spring = skipped.next(after: Self.at("2027-03-27 12:00:00+00"), in: berlin)
        #expect(spring == Self.at("2027-03-28 01:00:00+00"), "\(String(describing: spring))")
        #expect(skipped.next(after: spring!, in: berlin) == Self.at("2027-03-29 00:30:00+00"))
        // Every 15 minutes in the skipped hour: one run at the end of the gap, then 03:00 is that
        // same instant, so the next is 03:15.
        let quarter = try CronExpression("*/15 * * * *")
        let gapEnd = quarter.next(after: Self.at("2027-03-28 00:50:00+00"), in: berlin)
        #expect(gapEnd == Self.at("2027-03-28 01:00:00+00"))
        #expect(quarter.next(after: gapEnd!, in: berlin) == Self.at("2027-03-28 01:15:00+00"))
        // 2027-10-31: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice: runs once, the first time.
        let autumn = skipped.next(after: Self.at("2027-10-30 12:00:00+00"), in: berlin)
        #expect(autumn == Self.at("2027-10-31 00:30:00+00"), "\(String(describing: autumn))")
        #expect(skipped.next(after: autumn!, in: berlin) == Self.at("2027-11-01 01:30:00+00"))
    }

    static func schedule() throws -> Schedule {
        Schedule(jobs: [JobSpec(name: "full", trigger: .cron(try CronExpression("0 2 * * *")), supersedes: ["incr"], isBackup: true),
                        JobSpec(name: "incr", trigger: .cron(try CronExpression("0 * * * *")), isBackup: true),
                        JobSpec(name: "expire", trigger: .afterBackup)], timeZone: utc)
    }

    @Test func aMissedRunRunsOnceWhenTheDaemonComesBackAndAFullReplacesTheIncrOfItsMinute() throws {
        let clock = ManualClock(Self.at("2026-12-06 00:30:00+00"))
        let schedule = try Self.schedule()
        // First start: nothing runs at once; the next time is 01:00 (incr).
        var state = SchedulePlanner.baseline(schedule, state: ScheduleState(), now: clock.now)
        #expect(SchedulePlanner.due(schedule, state: state, now: clock.now).run.isEmpty)
        #expect(SchedulePlanner.wake(schedule, state: state, now: clock.now) == Self.at("2026-12-06 01:00:00+00"))
        clock.set(Self.at("2026-12-06 01:00:00+00"))
        #expect(SchedulePlanner.due(schedule, state: state, now: clock.now).run.map(\.name) == ["incr"])
        state.lastRun["incr"] = clock.now
        // 02:00: the full runs, the incr of the same minute does not.
        clock.set(Self.at("2026-12-06 02:00:00+00"))
        let at2 = SchedulePlanner.due(schedule, state: state, now: clock.now)
        #expect(at2.run.map(\.name) == ["full"] && at2.skipped.map(\.name) == ["incr"])
        state.lastRun["full"] = clock.now.addingTimeInterval(600)
        state.lastRun["incr"] = clock.now.addingTimeInterval(600)
        // The daemon is down from 02:10 to 09:20 the next day: the full (02:00) and the incr
        // (every hour) each run once, not once per missed time; the full replaces the incr.
        clock.set(Self.at("2026-12-07 09:20:00+00"))
        let back = SchedulePlanner.due(schedule, state: state, now: clock.now)
        #expect(back.run.map(\.name) == ["full"] && back.skipped.map(\.name) == ["incr"])
        state.lastRun["full"] = clock.now
        state.lastRun["incr"] = clock.now
        #expect(SchedulePlanner.due(schedule, state: state, now: clock.now).run.isEmpty)
        #expect(SchedulePlanner.wake(schedule, state: state, now: clock.now) == Self.at("2026-12-07 10:00:00+00"))
        // The clock goes back a day: last runs in the future count as now; nothing runs twice.
        clock.advance(by: -86400)
        #expect(SchedulePlanner.due(schedule, state: state, now: clock.now).run.isEmpty)
        #expect(SchedulePlanner.wake(schedule, state: state, now: clock.now) == Self.at("2026-12-06 10:00:00+00"))
    }

    @Test func theStateFileRoundTripsAndADamagedOneIsAnEmptyState() throws {
        let dir = NSTemporaryDirectory() + "wayback-schedule-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = ScheduleStateStore(path: dir + "/state.json")
        #expect(store.load() == ScheduleState())
        let s = ScheduleState(lastRun: ["full": Self.at("2026-12-06 02:00:00+00")])
        try store.save(s)
        #expect(store.load() == s)
        #expect((try FileSystem.status(store.path)?.mode ?? 0) & 0o777 == 0o600)
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: store.path))
        #expect(store.load() == ScheduleState())
    }

    @Test func theCrontabSaysTheSame() throws {
        let text = SchedulePlanner.crontab(try Self.schedule(), commands: ["full": "wayback backup --type full", "incr": "wayback backup --type incr",
                                                                             "expire": "wayback expire"])
        #expect(text.contains("CRON_TZ=UTC") && text.contains("0 2 * * *  wayback backup --type full"))
        #expect(text.contains("0 * * * *  wayback backup --type incr   # the daemon skips it when full runs in the same minute"))
        #expect(text.contains("'&& wayback expire'"))
    }
}
