import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import WaybackCore
import WaybackStorage

/// How a job ended, as the daemon's runner reports it.
public enum JobResult: Sendable, Equatable {
    case succeeded
    /// Another command holds the cluster's lock: the job runs when it is free.
    case busy(String)
    /// Failed; retried with backoff up to `retries` times.
    case failed(String)
    /// Refused (an expiry that needs --force): not retried; the runner published why.
    case refused(String)
}

/// Where the schedule's state lives: a JSON file (0600) replaced atomically, next to the locks.
public struct ScheduleStateStore: Sendable {
    public let path: String
    public init(path: String) { self.path = path }

    /// The state, or an empty one when there is none (a damaged file is an empty state: the next
    /// runs count from now, which never runs a job twice).
    public func load() -> ScheduleState {
        guard let data = FileManager.default.contents(atPath: path) else { return ScheduleState() }
        let d = JSONDecoder()
        d.dateDecodingStrategy = .secondsSince1970
        return (try? d.decode(ScheduleState.self, from: data)) ?? ScheduleState()
    }

    public func save(_ state: ScheduleState) throws {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .secondsSince1970
        e.outputFormatting = .sortedKeys
        let temp = path + ".tmp-\(getpid())"
        let f = try PosixFile.create(temp, mode: 0o600)
        do {
            try Array(try e.encode(state)).withUnsafeBytes { try f.pwrite($0, offset: 0) }
            try f.fsync()
            try f.close()
            try FileSystem.rename(temp, path)
        } catch {
            try? FileSystem.remove(temp)
            throw error
        }
    }
}

/// The daemon's scheduler: sleeps until the next job is due (no polling), runs the due jobs one
/// at a time through `runner`, records when each ran, and stops at a graceful shutdown (the
/// running job is cancelled and ends cleanly). The decisions are `SchedulePlanner`'s; this only
/// sleeps, runs, retries and records.
public final class SchedulerService: Service, Sendable {
    public typealias Runner = @Sendable (JobSpec) async -> JobResult

    let current: Mutex<Schedule>
    let store: ScheduleStateStore
    let clock: any WaybackClock
    let runner: Runner
    let logger: Logger
    let retries: Int
    let retryDelay: Double
    let busyDelay: Double
    let wakeUp = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    public init(schedule: Schedule, store: ScheduleStateStore, clock: any WaybackClock = SystemClock(), retries: Int = 2,
                retryDelay: Double = 60, busyDelay: Double = 15, logger: Logger, runner: @escaping Runner) {
        current = Mutex(schedule); self.store = store; self.clock = clock; self.runner = runner; self.logger = logger
        self.retries = retries; self.retryDelay = retryDelay; self.busyDelay = busyDelay
    }

    public var schedule: Schedule { current.withLock { $0 } }

    /// Replaces the schedule (a reloaded configuration); the next wake-up is recomputed.
    public func reload(_ schedule: Schedule) {
        current.withLock { $0 = schedule }
        wakeUp.continuation.yield()
    }

    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await self.loop() }
        } catch is CancellationError {
            // Stopped: the running job was ended, the state is saved.
        }
    }

    func loop() async throws {
        var state = SchedulePlanner.baseline(schedule, state: store.load(), now: clock.now)
        try store.save(state)
        while !Task.isCancelled {
            let now = clock.now
            let schedule = self.schedule
            let (due, skipped) = SchedulePlanner.due(schedule, state: state, now: now)
            if due.isEmpty {
                // Sleep until the next time (at most an hour, so a clock that jumps is noticed),
                // or until a reload.
                let wake = SchedulePlanner.wake(schedule, state: state, now: now) ?? now.addingTimeInterval(3600)
                try await sleep(seconds: min(3600, max(0.05, wake.timeIntervalSince(now))))
                continue
            }
            for job in due {
                let ok = try await runWithRetries(job)
                state.lastRun[job.name] = clock.now
                if ok && job.isBackup {
                    for after in schedule.jobs where after.trigger == .afterBackup {
                        _ = try await runWithRetries(after)
                        state.lastRun[after.name] = clock.now
                    }
                }
                try store.save(state)
            }
            for s in skipped {
                logger.info("job skipped: another job of the same minute replaces it", metadata: ["wayback.job": "\(s.name)"])
                state.lastRun[s.name] = clock.now
            }
            try store.save(state)
        }
        throw CancellationError()
    }

    /// Runs `job` until it succeeds, waiting while the lock is held and retrying a failure
    /// `retries` times with a growing delay. Returns whether it succeeded.
    func runWithRetries(_ job: JobSpec) async throws -> Bool {
        var failures = 0
        while true {
            try Task.checkCancellation()
            switch await runner(job) {
            case .succeeded:
                return true
            case .refused(let why):
                logger.error("job refused: \(why)", metadata: ["wayback.job": "\(job.name)"])
                return false
            case .busy(let holder):
                logger.info("job waits for the lock", metadata: ["wayback.job": "\(job.name)", "holder": "\(holder)"])
                try await sleep(seconds: busyDelay)
            case .failed(let why):
                failures += 1
                guard failures <= retries else {
                    logger.error("job failed after \(failures) attempt(s): \(why)", metadata: ["wayback.job": "\(job.name)"])
                    return false
                }
                let delay = retryDelay * Double(1 << (failures - 1))
                logger.warning("job failed, retrying in \(Int(delay)) s: \(why)", metadata: ["wayback.job": "\(job.name)"])
                try await sleep(seconds: delay)
            }
        }
    }

    /// Sleeps, ending early at a reload; throws at cancellation.
    func sleep(seconds: Double) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await Task.sleep(for: .milliseconds(Int64(seconds * 1000))) }
            group.addTask {
                for await _ in self.wakeUp.stream { return }
                try await Task.sleep(for: .seconds(86400 * 365))
            }
            try await group.next()
            group.cancelAll()
        }
    }
}
