import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals
import WaybackArchive
import WaybackBackup
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackMonitor
import WaybackRetention
import WaybackS3
import WaybackSchedule
import WaybackStorage
import WaybackVerify

extension CommandRun {
    /// What a backup of `type` needs, from the configuration (the command and the daemon's jobs).
    func backupConfiguration(_ repository: Repository, type: BackupType) -> BackupConfiguration {
        var b = BackupConfiguration(repository: repository, cluster: config.cluster.name, pgdata: config.cluster.pgdata,
                                    connection: config.cluster.connection, compression: config.compression, parallelism: config.parallelism,
                                    lockDirectory: config.lockPath, archiveWaitSeconds: config.backup.archiveWaitSeconds,
                                    fastCheckpoint: config.backup.fastCheckpoint, packTargetBytes: config.backup.packSizeBytes,
                                    failOnPageChecksum: config.backup.pageChecksumFailures == .fail, type: type,
                                    maxChainLength: config.backup.maxChainLength, resume: true, events: events)
        b.maxRateBytes = config.backup.maxRateBytes
        b.recordRowCounts = config.backup.recordRowCounts
        b.incrMethod = config.backup.incrMethod
        b.pageCompression = config.pageCompression
        b.backupLog = backupLog()
        b.localRepositories = config.repositories.filter { $0.type == .local }.map { ($0.name, $0.path) }
        let run = self
        b.pushWAL = { path in
            _ = try await WALArchive.push(path: path, configuration: try archiveConfiguration(run, forPush: true), queueAsync: false, logger: run.logger)
        }
        return b
    }
}

extension WaybackConfiguration {
    /// Where disk space is watched: the local repositories, PGDATA, pg_wal, and the S3
    /// repositories with a quota (their bytes from `overview`, when there is one).
    func diskTargets(_ overview: StatusOverview?) -> [DiskWatch.Target] {
        var targets = repositories.filter { $0.type == .local }.map { DiskWatch.Target(label: "repository '\($0.name)'", path: $0.path) }
        if cluster.type == .physical {
            targets.append(DiskWatch.Target(label: "PGDATA", path: cluster.pgdata))
            targets.append(DiskWatch.Target(label: "pg_wal", path: cluster.pgdata + "/pg_wal"))
        }
        for r in repositories where r.type == .s3 {
            guard let quota = r.quotaBytes else { continue }
            let used = overview?.repositories.first { $0.name == r.name }?.storedBytes
            targets.append(DiskWatch.Target(label: "repository '\(r.name)' (quota_gb)", usedBytes: used, quotaBytes: quota))
        }
        return targets
    }

    var diskThresholds: DiskWatch.Thresholds {
        DiskWatch.Thresholds(warnPercent: diskWarnPercent, criticalPercent: diskCriticalPercent)
    }
}

/// The daemon's jobs from the configuration (the table later issues add to).
enum DaemonJobs {
    static func schedule(_ config: WaybackConfiguration) -> Schedule {
        let s = config.schedule
        var jobs = [JobSpec]()
        if let c = s.full { jobs.append(JobSpec(name: "full", trigger: .cron(c), supersedes: ["diff", "incr"], isBackup: true)) }
        if let c = s.diff { jobs.append(JobSpec(name: "diff", trigger: .cron(c), supersedes: ["incr"], isBackup: true)) }
        if let c = s.incr { jobs.append(JobSpec(name: "incr", trigger: .cron(c), isBackup: true)) }
        switch s.expire {
        case .afterBackup?: jobs.append(JobSpec(name: "expire", trigger: .afterBackup))
        case .cron(let c)?: jobs.append(JobSpec(name: "expire", trigger: .cron(c)))
        case nil: break
        }
        if let c = s.verify { jobs.append(JobSpec(name: "verify", trigger: .cron(c))) }
        if let c = s.drill { jobs.append(JobSpec(name: "drill", trigger: .cron(c))) }
        if let c = s.drillAged { jobs.append(JobSpec(name: "drill_aged", trigger: .cron(c))) }
        if let c = s.drillOffsite { jobs.append(JobSpec(name: "drill_offsite", trigger: .cron(c))) }
        if let c = s.report { jobs.append(JobSpec(name: "report", trigger: .cron(c))) }
        // A dump is a backup: the expiry that follows backups follows it too.
        if let c = s.dump { jobs.append(JobSpec(name: "dump", trigger: .cron(c), isBackup: true)) }
        // Every repository caught up from the others: what one missed (an outage) reaches it.
        if let c = s.sync, config.repositories.count > 1 { jobs.append(JobSpec(name: "sync", trigger: .cron(c))) }
        return Schedule(jobs: jobs, timeZone: TimeZone(identifier: s.timeZone) ?? TimeZone(identifier: "UTC")!, timeZoneName: s.timeZone)
    }

    /// The command line each job stands for (`schedule --print-crontab`).
    static func commands(_ config: WaybackConfiguration) -> [String: String] {
        let w = Context.waybackCommand(configPath: config.path)
        return ["full": "\(w) backup --type full", "diff": "\(w) backup --type diff", "incr": "\(w) backup --type incr", "expire": "\(w) expire",
                "verify": "\(w) verify", "drill": "\(w) drill", "drill_aged": "\(w) drill --age \(Int(config.drill.agedSeconds))s",
                "dump": "\(w) dump", "sync": "\(w) repo sync",
                "report": "\(w) report --format html --output \(Context.quoteIfNeeded(config.reportDirectory))/report-$(date +\\%Y\\%m\\%d).html",
                "drill_offsite": "\(w) drill --repository \(config.repositories.last.map { Context.quoteIfNeeded($0.name) } ?? "")"]
    }

    /// Runs one job with its own repositories, HTTP clients and events, as a command would.
    static func run(_ job: JobSpec, config: WaybackConfiguration, clock: any WaybackClock, logger: Logger, desk: AlertDesk? = nil) async -> JobResult {
        let cluster = config.cluster.name
        let operation: WaybackEvent.Operation = job.name == "expire" ? .expire : job.name == "verify" ? .verify
            : job.name.hasPrefix("drill") ? .drill : job.name == "dump" ? .dump : job.name == "sync" ? .sync : .backup
        let events = EventLog.logging(operation, cluster: config.cluster.name, to: logger)
        var log = logger
        log[metadataKey: "wayback.job"] = "\(job.name)"
        do {
            return try await HTTPClientPool.with { http in
                let run = CommandRun(config: config, logger: log, events: events, http: http)
                let repository = try run.repository()
                if let type = BackupType(rawValue: job.name) {
                    let m = try await PhysicalBackup.run(run.backupConfiguration(repository, type: type), logger: log)
                    let partial = (repository.driver as? ReplicatedStorage)?.failures.map(\.repository) ?? []
                    events.emit(partial.isEmpty ? .info : .warning, .jobOutcome,
                                "scheduled \(job.name) backup \(m.id) complete" + (partial.isEmpty ? "" : "; failed in \(partial.joined(separator: ", ")) (run 'wayback repo sync')"),
                                backup: m.id.rawValue)
                    desk?.raise(Alert(event: .backupSucceeded, cluster: cluster, time: clock.now, severity: partial.isEmpty ? "info" : "warning",
                                      message: "scheduled \(m.type.rawValue) backup \(m.id) complete" + (partial.isEmpty ? "" : "; not stored in \(partial.joined(separator: ", ")) (run 'wayback repo sync')"),
                                      backup: m.id.rawValue,
                                      details: [.init("type", m.type.rawValue), .init("size", Format.bytes(m.sizes.repository)),
                                                .init("duration", Format.seconds(m.stopTime.timeIntervalSince(m.startTime))),
                                                .init("repositories", repository.members.map(\.name).filter { !partial.contains($0) }.joined(separator: ", "))]))
                    desk?.clear("backup.failed:\(job.name)", message: "scheduled \(job.name) backups work again: \(m.id) is complete")
                    return .succeeded
                }
                if job.name == "dump" {
                    let m = try await LogicalDump.run(run.dumpConfiguration(repository, databases: nil), clock: clock, logger: log)
                    events.emit(.info, .jobOutcome, "scheduled dump \(m.id) complete: \(m.databases.map(\.name).joined(separator: ", ")), \(Format.bytes(m.repositoryBytes)) stored")
                    desk?.clear("dump.failed", message: "scheduled dumps work again: \(m.id) is complete")
                    return .succeeded
                }
                if job.name == "report" {
                    let report = try await run.integrityReport(since: clock.now.addingTimeInterval(-86400), now: clock.now)
                    try ReportCommand.writeDaily(report, directory: config.reportDirectory, keepDays: config.reportKeepDays, now: clock.now)
                    var daily = Alert(event: .reportDaily, cluster: cluster, time: clock.now, severity: report.problems.isEmpty ? "info" : "warning",
                                      message: "daily integrity report: \(report.problems.count) open problem(s)" + (report.problems.isEmpty ? "" : ": " + report.problems.prefix(3).joined(separator: "; ")),
                                      details: [.init("backups taken", String(report.backupsTaken.count)), .init("report", config.reportDirectory)])
                    daily.html = ReportRendering.html(report)
                    desk?.raise(daily)
                    events.emit(report.problems.isEmpty ? .info : .warning, .jobOutcome,
                                "daily report written to \(config.reportDirectory): \(report.problems.count) open problem(s)")
                    return .succeeded
                }
                if job.name.hasPrefix("drill") {
                    let choice: DrillChoice = job.name == "drill_aged" ? .aged(config.drill.agedSeconds) : .newest
                    let from = job.name == "drill_offsite" ? config.repositories.last?.name : nil
                    let record = try await run.drill(choice, toTime: nil, repository: from, keep: false, clock: clock, progress: nil)
                    let details: [Alert.Detail] = [.init("recovery time", Format.seconds(record.recoverySeconds)), .init("objective", Format.seconds(record.rtoSeconds)),
                                                   .init("drill", record.id)]
                    let failed = !record.passed ? "failed: \(record.checks.filter { !$0.passed }.map { $0.name }.joined(separator: ", "))"
                        : !(record.rtoMet && record.rpoMet) ? "missed an objective (recovery \(Format.seconds(record.recoverySeconds)))" : nil
                    if let failed {
                        desk?.raise(Alert(event: .drillFailed, cluster: cluster, time: clock.now, severity: "critical",
                                          message: "\(job.name) of backup \(record.backup) from '\(record.repository)' \(failed)" + (record.keptAt.map { "; the copy is kept in \($0)" } ?? ""),
                                          backup: record.backup, repository: record.repository, details: details, problem: "drill.failed:\(job.name)"))
                        return .refused("drill of \(record.backup) \(failed)")
                    }
                    desk?.raise(Alert(event: .drillSucceeded, cluster: cluster, time: clock.now, severity: "info",
                                      message: "\(job.name) of backup \(record.backup) from '\(record.repository)' passed, recovery \(Format.seconds(record.recoverySeconds))",
                                      backup: record.backup, repository: record.repository, details: details))
                    desk?.clear("drill.failed:\(job.name)", message: "\(job.name) passes again")
                    return .succeeded
                }
                if job.name == "sync" {
                    // As `repo sync` (no lock: objects are created if absent, manifests last).
                    let outcomes = try await run.syncRepositories(from: nil, to: nil, clock: clock)
                    if let warning = await run.recordSynced(outcomes, clock: clock) { events.emit(.warning, .recordFailed, warning) }
                    let copied = outcomes.filter { $0.error == nil && $0.objects > 0 }.map { "\($0.objects) object(s) to '\($0.to)'" }
                    if let problem = RepoSyncCommand.failure(outcomes) {
                        events.emit(.error, .jobOutcome, "scheduled sync: \(problem.message)")
                        return .refused(problem.message)
                    }
                    events.emit(.info, .jobOutcome, "scheduled sync: " + (copied.isEmpty ? "every repository is up to date" : "copied " + copied.joined(separator: ", ")))
                    return .succeeded
                }
                if job.name == "verify" {
                    // Read-only: no lock.
                    let report = await Verify.run(try run.verifyConfiguration(all: false, backup: nil, repository: nil), now: clock.now, logger: log)
                    let read = report.repositories.reduce(0) { $0 + $1.objectsRead }
                    if report.sound {
                        events.emit(.info, .jobOutcome, "scheduled verify: all sound (\(read) object(s) read)")
                        desk?.clear("verify.failed", message: "verify finds every backup sound again")
                        return .succeeded
                    }
                    desk?.raise(Alert(event: .verifyFailed, cluster: cluster, time: clock.now, severity: "critical",
                                      message: "verify found \(report.problems.count) problem(s): \(report.problems.first!.message)",
                                      details: report.problems.prefix(5).map { .init($0.kind.rawValue, $0.message) }, problem: "verify.failed"))
                    return .refused("verify found \(report.problems.count) problem(s): \(report.problems.first!.message)")
                }
                let lock = try await run.lockByBinding(repository, command: "daemon expire")
                defer { lock.release() }
                let report = await Expiry.run(ExpiryConfiguration(members: run.expiryMembers(repository), cluster: config.cluster.name,
                                                                  lockDirectory: config.lockPath, dryRun: false, force: false, events: events,
                                                                  backupLog: run.backupLog()), now: clock.now, logger: log)
                let expired = report.repositories.reduce(0) { $0 + ($1.plan?.expired.count ?? 0) }
                if let refused = report.repositories.first(where: { $0.error != nil }) {
                    return .refused("repository '\(refused.name)': \(refused.error!)")
                }
                events.emit(.info, .jobOutcome, "scheduled expire: \(expired) backup(s) expired, \(Format.bytes(report.repositories.reduce(0) { $0 + $1.freedBytes })) freed")
                return .succeeded
            }
        } catch let e as WaybackError where e.code == .locked {
            return .busy(e.message)
        } catch is CancellationError {
            events.emit(.warning, .jobOutcome, "scheduled \(job.name) stopped by the daemon's shutdown; the next backup resumes it")
            return .failed("stopped")
        } catch {
            let message = (error as? WaybackError)?.message ?? String(describing: error)
            events.emit(.error, .jobOutcome, "scheduled \(job.name) failed: \(message)")
            if job.name == "dump" {
                desk?.raise(Alert(event: .backupFailed, cluster: cluster, time: clock.now, severity: "critical",
                                  message: "scheduled dump failed: \(message)", details: [.init("type", "logical"), .init("error", message)],
                                  problem: "dump.failed"))
            }
            if job.isBackup {
                desk?.raise(Alert(event: .backupFailed, cluster: cluster, time: clock.now, severity: "critical",
                                  message: "scheduled \(job.name) backup failed: \(message)", details: [.init("type", job.name), .init("error", message)],
                                  problem: "backup.failed:\(job.name)"))
            }
            return .failed(message)
        }
    }
}

struct DaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "Run the scheduled jobs (backups, expiry) until stopped.",
        discussion: """
            Runs the jobs of schedule: (docs/configuration.md), one at a time, through the same lock \
            as the commands. A run missed while the daemon was down runs once when it is back. SIGTERM or \
            SIGINT stops it within schedule.stop_timeout (a running backup ends, and the next one resumes \
            it); SIGHUP reloads the configuration (an invalid one is reported and the old one kept). One \
            daemon per cluster and repositories. Run as the PostgreSQL OS user; see packaging/wayback.service.

            Examples:
              systemctl enable --now wayback    # the packaged unit runs it as postgres
              wayback daemon                    # in the foreground
            """)
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let path = global.configPath
        let config = try GlobalOptions.load(path)
        let logger = Context.logger(config.logLevel.rawValue)
        if getuid() == 0 {
            throw WaybackError(.cluster, "wayback daemon must not run as root: its backups read PGDATA as the PostgreSQL OS user; run it as that user (packaging/wayback.service sets User=postgres)")
        }
        let (lock, statePath) = try await HTTPClientPool.with { http in
            let repository = try config.repository(logger: logger, http: http, events: EventLog.logging(.daemon, cluster: config.cluster.name, to: logger))
            let binding = try await Catalog(repository: repository, cluster: config.cluster.name).requireBinding()
            let lock = try RepositoryLock.acquire(directory: config.lockPath, cluster: config.cluster.name, systemIdentifier: binding.systemID,
                                                  repository: repository, command: "daemon", role: "daemon")
            return (lock, lock.path.replacingOccurrences(of: ".daemon.lock", with: ".schedule.json"))
        }
        defer { lock.release() }
        let current = Mutex(config)
        let reloads = Atomic<Int>(0)
        let clock: any WaybackClock = SystemClock()
        let board = JobBoard(jobs: DaemonJobs.schedule(config).jobs.map(\.name))
        // Notifications: the sinks of the configuration at start (a restart changes them).
        let alertHTTP = HTTPClientPool()
        let desk = AlertDesk(notifier: Notifier(sinks: config.notifications.sinks, http: alertHTTP, logger: logger),
                             repeatSeconds: config.notifications.repeatSeconds,
                             store: statePath.replacingOccurrences(of: ".schedule.json", with: ".alerts.json"), clock: clock)
        let scheduler = SchedulerService(schedule: DaemonJobs.schedule(config), store: ScheduleStateStore(path: statePath), clock: clock,
                                         retries: config.schedule.retries, logger: logger) { job in
            await board.run(job) { await DaemonJobs.run(job, config: current.withLock { $0 }, clock: clock, logger: logger, desk: desk) }
        }
        let reloader = ReloadService { () -> Bool in
            do {
                let fresh = try GlobalOptions.load(path)
                current.withLock { $0 = fresh }
                reloads.add(1, ordering: .relaxed)
                scheduler.reload(DaemonJobs.schedule(fresh))
                board.reset(jobs: DaemonJobs.schedule(fresh).jobs.map(\.name))
                logger.notice("configuration reloaded from \(path)")
                return true
            } catch {
                logger.error("configuration not reloaded, the old one stays: \((error as? WaybackError)?.message ?? String(describing: error))")
                return false
            }
        }
        for job in scheduler.schedule.jobs {
            let next = SchedulePlanner.nextRun(job, schedule: scheduler.schedule, state: ScheduleStateStore(path: statePath).load(), now: clock.now)
            let when = job.cron.map { "\"\($0.text)\"" } ?? "after each backup"
            let nextText = next.map { ", next \(Format.timestamp($0))" } ?? ""
            logger.notice("job \(job.name): \(when)\(nextText)")
        }
        let disks = DiskWatchService(config: { current.withLock { $0 } }, clock: clock, logger: logger)
        let drain = WALDrainService(config: { current.withLock { $0 } }, logger: logger)
        let ahead = PushAheadService(config: { current.withLock { $0 } }, generation: { reloads.load(ordering: .relaxed) }, logger: logger)
        let monitorState = MonitorState()
        let refresh = MonitorRefreshService(config: { current.withLock { $0 } }, state: monitorState, board: board, desk: desk, clock: clock, logger: logger)
        let notifications = NotificationService(notifier: desk.notifier, http: alertHTTP)
        // The listener's address and token are read at start (a restart changes them; a reload does not).
        let listener = MonitorHTTPService(settings: config.monitor, state: monitorState, logger: logger)
        var groupConfig = ServiceGroupConfiguration(services: [.init(service: scheduler), .init(service: reloader), .init(service: disks),
                                                               .init(service: drain), .init(service: ahead), .init(service: refresh),
                                                               .init(service: listener), .init(service: notifications)],
                                                   gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        groupConfig.maximumGracefulShutdownDuration = .milliseconds(Int64(config.schedule.stopTimeoutSeconds * 1000))
        logger.notice("wayback daemon started for cluster '\(config.cluster.name)' (pid \(getpid()))")
        try await ServiceGroup(configuration: groupConfig).run()
        logger.notice("wayback daemon stopped")
    }
}

/// A daemon service whose work is one loop, ended by the daemon's graceful shutdown.
protocol LoopingService: Service {
    func loop() async throws
}

extension LoopingService {
    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await self.loop() }
        } catch is CancellationError {}
    }
}

/// Checks the disk space every minute (S3 quotas every 15 minutes: they cost a listing): logs
/// and publishes a `disk-space` event when a file system's level changes (and logs it again
/// every hour while it is not ok), with a forecast from the growth it measured.
struct DiskWatchService: LoopingService {
    let config: @Sendable () -> WaybackConfiguration
    let clock: any WaybackClock
    let logger: Logger
    var interval: Double = 60
    var quotaInterval: Double = 900

    func loop() async throws {
        var levels = [String: DiskWatch.Level](), lastLogged = [String: Date]()
        var samples = [String: [(time: Date, usedBytes: Int64)]]()
        var overview: StatusOverview?, overviewAt = Date.distantPast
        while !Task.isCancelled {
            let config = self.config()
            let now = clock.now
            let events = EventLog.logging(.daemon, cluster: config.cluster.name, to: logger)
            if config.repositories.contains(where: { $0.quotaBytes != nil }), now.timeIntervalSince(overviewAt) >= quotaInterval {
                overview = try? await HTTPClientPool.with { http in
                    try await CommandRun(config: config, logger: logger, events: events, http: http).statusOverview()
                }
                overviewAt = now
            }
            for var e in DiskWatch.check(config.diskTargets(overview), thresholds: config.diskThresholds) {
                let key = e.labels.joined(separator: ", ")
                if let total = e.totalBytes, let available = e.availableBytes {
                    var s = (samples[key] ?? []).filter { now.timeIntervalSince($0.time) < 86400 }
                    s.append((now, total - available))
                    samples[key] = s
                    e.daysUntilFull = DiskWatch.forecast(availableBytes: available, growthPerDay: DiskWatch.growthPerDay(s))
                }
                let previous = levels[key] ?? .ok
                levels[key] = e.level
                let hourly = e.level != .ok && now.timeIntervalSince(lastLogged[key] ?? .distantPast) >= 3600
                guard e.level != previous || hourly else { continue }
                lastLogged[key] = now
                let severity: WaybackEvent.Severity = e.level == .critical ? .critical : e.level == .warning ? .warning : e.level == .unknown ? .error : .info
                events.emit(severity, .diskSpace, e.level == .ok ? "disk space back under the threshold: \(e.text)" : "disk space: \(e.text)")
            }
            try await Task.sleep(for: .seconds(interval))
        }
    }
}

/// Drains the WAL queued for the asynchronous repositories while the daemon runs: it holds the
/// spool's lock (so `wal-push` starts no `wal-drain` process of its own), copies what is queued,
/// and sleeps until `wal-push` queues more (inotify), never polling.
struct WALDrainService: LoopingService {
    let config: @Sendable () -> WaybackConfiguration
    let logger: Logger

    func loop() async throws {
        var held: (fd: Int32, path: String)?
        defer { if let held { close(held.fd) } }
        while !Task.isCancelled {
            let config = self.config()
            let names = config.repositoryNames(walPush: .async)
            let spool = AsyncSpool(path: config.archive.spoolPath, limitBytes: config.archive.spoolLimitBytes)
            if let h = held, h.path != spool.path { close(h.fd); held = nil }
            guard !names.isEmpty else { try await Task.sleep(for: .seconds(60)); continue }
            if held == nil, let fd = try? spool.hold() { held = (fd, spool.path) }
            // A wal-drain process started before the daemon still runs: let it finish.
            guard held != nil else { try await Task.sleep(for: .seconds(5)); continue }
            let events = EventLog.logging(.walDrain, cluster: config.cluster.name, to: logger)
            do {
                try await HTTPClientPool.with { http in
                    let run = CommandRun(config: config, logger: logger, events: events, http: http)
                    let archive = try archiveConfiguration(run, forPush: true)
                    let targets = try run.repositoryList(only: Set(archive.asyncRepositories))
                    try await spool.drainHeld(cluster: config.cluster.name, source: archive.repository, targets: targets,
                                              parallelism: config.parallelism, events: events, logger: logger)
                }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                events.emit(.warning, .walQueueFailed, "the daemon could not drain the WAL queue (\(error)); it tries again in a minute")
                try await Task.sleep(for: .seconds(60))
                continue
            }
            try await spool.waitForEntries(names, timeout: 600)
        }
    }
}

/// Stores WAL segments as soon as PostgreSQL marks them ready, before it runs `wal-push`
/// (`PushAhead`; `archive.push_ahead`). It sleeps until a segment is marked ready (inotify),
/// never polling; a round that fails is logged and tried again at the next segment or in a minute.
struct PushAheadService: LoopingService {
    let config: @Sendable () -> WaybackConfiguration
    /// Counts the reloads: a new value starts a new session.
    let generation: @Sendable () -> Int
    let logger: Logger

    func loop() async throws {
        var held: (fd: Int32, path: String)?
        defer { if let held { close(held.fd) } }
        var done = Set<String>()
        while !Task.isCancelled {
            let started = generation()
            let config = self.config()
            let pgWAL = config.cluster.pgdata + "/pg_wal"
            let ahead = PushAhead(pgWAL: pgWAL)
            if let h = held, h.path != ahead.directory || !config.archive.pushAhead { close(h.fd); held = nil }
            // Switched off: wait for a reload (SIGHUP) to look again.
            guard config.archive.pushAhead else { try await Task.sleep(for: .seconds(60)); continue }
            if held == nil, let fd = try? ahead.hold() { held = (fd, ahead.directory) }
            guard held != nil else {
                logger.warning("another process holds \(ahead.directory)/.lock; WAL is not pushed ahead until it lets go")
                try await Task.sleep(for: .seconds(60)); continue
            }
            let events = EventLog.logging(.daemon, cluster: config.cluster.name, to: logger)
            do {
                try await HTTPClientPool.with { http in
                    let run = CommandRun(config: config, logger: logger, events: events, http: http)
                    let roots = Dictionary(config.repositories.filter { $0.type == .local }.map { ($0.name, FileSystem.absolute($0.path)) }) { a, _ in a }
                    let session = try await PushAhead.Session(pgWAL: pgWAL, configuration: archiveConfiguration(run, forPush: true),
                                                              configPath: config.path, environment: ProcessInfo.processInfo.environment,
                                                              localRoots: roots)
                    // One session per configuration: a reload (SIGHUP) takes effect at the next segment.
                    while !Task.isCancelled && generation() == started {
                        let tried = try await session.storeReady(workers: config.parallelism, done: &done, events: events, logger: logger)
                        try await ahead.waitForReady(pgWAL: pgWAL, skip: done.union(tried), timeout: 600)
                    }
                }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                events.emit(.warning, .walAhead, "the daemon could not push WAL ahead (\((error as? WaybackError)?.message ?? String(describing: error))); wal-push stores each segment itself, and the daemon tries again in a minute")
                try await Task.sleep(for: .seconds(60))
            }
        }
    }
}

/// Reloads the configuration at each SIGHUP, until the daemon stops.
struct ReloadService: Service {
    let reload: @Sendable () -> Bool
    init(_ reload: @escaping @Sendable () -> Bool) { self.reload = reload }

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals { _ = reload() }
        }
    }
}

struct ScheduleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule",
        abstract: "Show when the daemon runs each job next, or the equivalent crontab.",
        discussion: """
            The times follow schedule.timezone (UTC by default).

            Examples:
              wayback schedule
              wayback schedule --print-crontab   # the same jobs for cron
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON: [{job, trigger, next}].") var json = false
    @Flag(help: "Print a crontab that runs the same jobs (for running Wayback from cron instead of the daemon).") var printCrontab = false

    struct Entry: Encodable { var job: String; var trigger: String; var next: Date? }

    func run() async throws {
        let config = try GlobalOptions.load(global.configPath)
        let schedule = DaemonJobs.schedule(config)
        if printCrontab {
            print(SchedulePlanner.crontab(schedule, commands: DaemonJobs.commands(config)), terminator: "")
            return
        }
        // The daemon's own state, when it has run: the next times count from its last runs. Its
        // file is named after the daemon's lock: this cluster in these repositories.
        let logger = Context.logger(config.logLevel.rawValue)
        var state = ScheduleState()
        let repositories: [String]
        do {
            repositories = try await HTTPClientPool.with { http in
                try config.repository(logger: logger, http: http, events: EventLog.logging(.daemon, cluster: config.cluster.name, to: logger))
                    .members.map(\.description)
            }
        } catch {
            FileHandle.standardError.write(Data("wayback: warning: the repositories cannot be set up (\((error as? WaybackError)?.message ?? String(describing: error))), so the daemon's last runs are not read; the times below count from now\n".utf8))
            repositories = []
        }
        if !repositories.isEmpty, let file = try? FileSystem.list(config.lockPath).first(where: {
            RepositoryLock.isNamed($0, cluster: config.cluster.name, repositories: repositories, suffix: ".schedule.json")
        }) {
            state = ScheduleStateStore(path: config.lockPath + "/" + file).load()
        }
        let now = SystemClock().now
        let entries = schedule.jobs.map { j in
            Entry(job: j.name, trigger: j.cron?.text ?? "after each backup",
                  next: SchedulePlanner.nextRun(j, schedule: schedule, state: SchedulePlanner.baseline(schedule, state: state, now: now), now: now))
        }
        if json { try Context.printJSON(entries); return }
        print("schedule in \(schedule.timeZoneName):")
        if entries.isEmpty { print("  no jobs (schedule: switches every one off)") }
        let jobWidth = entries.map(\.job.count).max() ?? 0, triggerWidth = entries.map(\.trigger.count).max() ?? 0
        for e in entries {
            let next = e.next.map(Format.timestamp) ?? (e.trigger == "after each backup" ? "after the next backup" : "never")
            print("  \(e.job.padding(toLength: jobWidth, withPad: " ", startingAt: 0))  \(e.trigger.padding(toLength: triggerWidth, withPad: " ", startingAt: 0))  next: \(next)")
        }
    }
}
