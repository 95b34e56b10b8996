import Foundation
import WaybackCore

/// One job of the daemon: what it is called (the event and the state file use the name) and when
/// it runs. The table is open: verification, restore drills and reports add jobs here.
public struct JobSpec: Sendable, Equatable {
    public enum Trigger: Sendable, Equatable {
        /// At the times of a cron expression (in the schedule's time zone).
        case cron(CronExpression)
        /// After every successful backup job.
        case afterBackup
    }

    public var name: String
    public var trigger: Trigger
    /// Jobs this one replaces when both are due in the same minute (a full replaces the incr).
    public var supersedes: [String]
    /// Whether this job takes a backup (after which `afterBackup` jobs run).
    public var isBackup: Bool

    public init(name: String, trigger: Trigger, supersedes: [String] = [], isBackup: Bool = false) {
        self.name = name; self.trigger = trigger; self.supersedes = supersedes; self.isBackup = isBackup
    }

    public var cron: CronExpression? { if case .cron(let c) = trigger { return c }; return nil }
}

/// The daemon's jobs in a time zone.
public struct Schedule: Sendable, Equatable {
    public var jobs: [JobSpec]
    public var timeZone: TimeZone
    /// The zone as it was written (`UTC`; Foundation may call it `GMT`).
    public var timeZoneName: String
    public init(jobs: [JobSpec], timeZone: TimeZone, timeZoneName: String? = nil) {
        self.jobs = jobs; self.timeZone = timeZone
        self.timeZoneName = timeZoneName ?? (timeZone.secondsFromGMT() == 0 && timeZone.nextDaylightSavingTimeTransition == nil ? "UTC" : timeZone.identifier)
    }
}

/// When each job last ran (kept in a file by the daemon, so a restart catches up).
public struct ScheduleState: Sendable, Codable, Equatable {
    public var lastRun: [String: Date]
    public init(lastRun: [String: Date] = [:]) { self.lastRun = lastRun }
}

/// The schedule's decisions as pure functions of the schedule, the state and the time.
///
/// - A job is due when its next time after its last run has come: however many times were
///   missed while the daemon was down, it runs once.
/// - A job that never ran counts from `start` (the daemon's first start): no run at start-up.
/// - A last run in the future (the clock went back) counts as now.
/// - Of jobs due together, one that `supersedes` another leaves that one out (marked as run).
public enum SchedulePlanner {
    static func last(_ job: JobSpec, _ state: ScheduleState, now: Date) -> Date {
        let l = state.lastRun[job.name] ?? now
        return l > now ? now : l
    }

    /// The next time `job` runs (nil: it has no times of its own, or none comes).
    public static func nextRun(_ job: JobSpec, schedule: Schedule, state: ScheduleState, now: Date) -> Date? {
        job.cron?.next(after: last(job, state, now: now), in: schedule.timeZone)
    }

    /// The jobs due at `now`, in table order, and those they supersede (to be marked as run).
    public static func due(_ schedule: Schedule, state: ScheduleState, now: Date) -> (run: [JobSpec], skipped: [JobSpec]) {
        let due = schedule.jobs.filter { j in nextRun(j, schedule: schedule, state: state, now: now).map { $0 <= now } ?? false }
        let superseded = Set(due.flatMap(\.supersedes))
        return (due.filter { !superseded.contains($0.name) }, due.filter { superseded.contains($0.name) })
    }

    /// When the daemon next has something to do (nil: never).
    public static func wake(_ schedule: Schedule, state: ScheduleState, now: Date) -> Date? {
        schedule.jobs.compactMap { nextRun($0, schedule: schedule, state: state, now: now) }.min()
    }

    /// The state with the jobs that never ran counted from `now` (the daemon's first start).
    public static func baseline(_ schedule: Schedule, state: ScheduleState, now: Date) -> ScheduleState {
        var s = state
        for j in schedule.jobs where s.lastRun[j.name] == nil { s.lastRun[j.name] = now }
        return s
    }

    /// The equivalent crontab lines (for those who run Wayback from cron instead of the daemon).
    public static func crontab(_ schedule: Schedule, commands: [String: String]) -> String {
        var lines = ["# Wayback's schedule as a crontab (times in \(schedule.timeZoneName))", "CRON_TZ=\(schedule.timeZoneName)"]
        for j in schedule.jobs {
            guard let command = commands[j.name] else { continue }
            switch j.trigger {
            case .cron(let c):
                let others = schedule.jobs.filter { $0.supersedes.contains(j.name) }.map(\.name)
                lines.append("\(c.text)  \(command)" + (others.isEmpty ? "" : "   # the daemon skips it when \(others.joined(separator: ", ")) runs in the same minute"))
            case .afterBackup:
                lines.append("# \(j.name) runs after each backup: append '&& \(command)' to the backup lines")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
