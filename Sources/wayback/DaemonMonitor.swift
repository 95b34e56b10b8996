import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import WaybackConfig
import WaybackCore
import WaybackMonitor
import WaybackPostgres
import WaybackS3
import WaybackSchedule

/// The daemon's jobs as the monitor sees them: which one runs now, and a signal to gather again
/// (after a job) or only to render again (when one starts).
final class JobBoard: Sendable {
    let running = Mutex<[String: Bool]>([:])
    let failures = Mutex<[String: Int]>([:])
    /// What the monitor should do next: nil nothing, false render again, true gather again.
    let pending = Mutex<Bool?>(nil)

    func poke(regather: Bool) { pending.withLock { $0 = ($0 ?? false) || regather } }

    /// The next poke (true: gather again), or nil after `timeout` seconds. Looks five times a
    /// second: a job's start shows on the page within 0.2 s.
    func next(timeout: Double) async -> Bool? {
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline && !Task.isCancelled {
            if let p = pending.withLock({ p in defer { p = nil }; return p }) { return p }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return nil
    }

    init(jobs: [String]) { running.withLock { r in for j in jobs { r[j] = false } } }

    func reset(jobs: [String]) {
        running.withLock { r in
            for j in jobs where r[j] == nil { r[j] = false }
            for j in r.keys where !jobs.contains(j) && r[j] == false { r[j] = nil }
        }
    }

    /// Runs `body` as job `name`: marked running meanwhile; the monitor gathers again after it.
    func run(_ job: JobSpec, _ body: () async -> JobResult) async -> JobResult {
        let name = job.name
        running.withLock { $0[name] = true }
        poke(regather: false)
        let result = await body()
        running.withLock { $0[name] = false }
        // Keyed as backup_logs' backup_type: a dump's is "logical".
        if job.isBackup, case .failed = result { failures.withLock { $0[name == "dump" ? DumpID.typeName : name, default: 0] += 1 } }
        poke(regather: true)
        return result
    }
}


/// Gathers what the listener serves (`healthFacts`, the same as `wayback check`) every
/// `monitor.refresh` and after each job, and renders it once: requests read the renderings.
struct MonitorRefreshService: LoopingService {
    let config: @Sendable () -> WaybackConfiguration
    let state: MonitorState
    let board: JobBoard
    let desk: AlertDesk?
    let clock: any WaybackClock
    let logger: Logger

    func loop() async throws {
        var facts: HealthFacts?
        var failures = [String: Int]()
        var regather = true
        while !Task.isCancelled {
            let config = self.config()
            if regather || facts == nil {
                let events = EventLog.logging(.daemon, cluster: config.cluster.name, to: logger)
                let now = clock.now
                facts = try? await HTTPClientPool.with { http in
                    await CommandRun(config: config, logger: logger, events: events, http: http)
                        .healthFacts(now: now, timeout: max(config.check.timeoutSeconds, 10), budget: 60)
                }
                failures = await Self.failures(config, logger: logger) ?? board.failures.withLock { $0 }
                if let facts { desk?.observe(facts, copiesGrace: config.check.backupAgeWarning) }
            }
            if let facts {
                let now = clock.now
                let report = HealthCheck.evaluate(facts, thresholds: config.check, now: now)
                let jobs = board.running.withLock { $0 }
                let document = StatusDocument(health: report, facts: facts, jobsRunning: jobs)
                let encoder = JSONEncoder()
                encoder.dateEncodingStrategy = .iso8601
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                state.publish(.init(metrics: Array(MetricsText.render(facts, report: report, extras: MetricsExtras(backupFailures: failures, jobsRunning: jobs)).utf8),
                                    json: Array((try? encoder.encode(document)) ?? Data("{}".utf8)),
                                    html: Array(StatusPage.render(document, now: now).utf8), at: now))
            }
            // The next gathering: after a job, or at the refresh interval; a job starting only renders again.
            let wait = config.monitor.refreshSeconds
            regather = await board.next(timeout: wait) ?? true
        }
    }

    /// Failed backups by type from `backup_logs` (nil: no catalog, or it cannot be read).
    static func failures(_ config: WaybackConfiguration, logger: Logger) async -> [String: Int]? {
        guard let settings = config.catalog else { return nil }
        do {
            let store = try await CatalogStore.open(settings, logger: logger)
            let rows = try await store.rows()
            await store.close()
            var out = [String: Int]()
            for r in rows where r.status == .failed { out[r.backupType, default: 0] += 1 }
            return out
        } catch {
            return nil
        }
    }
}

/// The listener: bound at start (a port that cannot be bound is logged; the daemon goes on with
/// its jobs), closed at shutdown.
struct MonitorHTTPService: Service {
    let settings: WaybackConfiguration.MonitorSettings
    let state: MonitorState
    let logger: Logger

    func run() async throws {
        var server: MonitorServer?
        if let host = settings.host {
            do {
                var token: String?
                if let file = settings.tokenFile { token = try SecretFile.read(file, what: "monitor.token_file") }
                let s = MonitorServer(host: host, port: settings.port, token: token, state: state)
                let port = try await s.start()
                server = s
                logger.notice("monitor listening on http://\(host.contains(":") ? "[\(host)]" : host):\(port)/ (/metrics, /status.json)")
                if token == nil && !["127.0.0.1", "::1", "localhost"].contains(host) {
                    logger.warning("monitor.listen \(host) is not a loopback address and monitor.token_file is not set: anyone who reaches it reads the status")
                }
            } catch {
                logger.error("the monitor listener did not start: \((error as? WaybackError)?.message ?? String(describing: error)); the daemon runs its jobs without it")
            }
        }
        try? await gracefulShutdown()
        await server?.stop()
    }
}

/// Delivers the daemon's notifications until it stops; owns their HTTP clients.
struct NotificationService: Service {
    let notifier: Notifier
    let http: HTTPClientPool

    func run() async throws {
        await cancelWhenGracefulShutdown { await notifier.run() }
        await http.shutdown()
    }
}
