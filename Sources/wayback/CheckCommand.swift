import ArgumentParser
import Foundation
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackMonitor
import WaybackPostgres
import WaybackRestore
import WaybackStorage
import WaybackVerify

extension CommandRun {
    /// Gathers what the health checks judge, each source within `timeout` (a repository or a
    /// server that hangs is reported as not answering; the rest is still gathered), all of it
    /// within `budget` seconds.
    func healthFacts(now: Date, timeout: Double, budget: Double = 9.5) async -> HealthFacts {
        let began = monotonicSeconds()
        func left() -> Double { max(0.2, min(timeout, budget - (monotonicSeconds() - began))) }
        func text(_ e: any Error) -> String { (e as? WaybackError)?.message ?? String(describing: e) }
        var facts = HealthFacts(cluster: config.cluster.name, gatheredAt: now)
        facts.logical = config.cluster.type == .logical
        let members: [Repository]
        do {
            members = try repository().members
        } catch {
            facts.backupsError = text(error)
            return facts
        }
        let cluster = config.cluster.name, connection = config.cluster.connection, logger = self.logger
        async let archiver: Result<ArchiverState, any Error> = Result(awaiting: {
            try await Deadline.run(timeout, what: "PostgreSQL at \(connection.redacted)") {
                let session = try await PostgresSession.connect(connection, logger: logger)
                do {
                    let state = try await session.archiverState()
                    await session.close()
                    return state
                } catch {
                    await session.close()
                    throw error
                }
            }
        })
        // Drills are recorded in the repository they restored from.
        async let drills: [Result<[DrillRecord], any Error>] = withTaskGroup(of: (Int, Result<[DrillRecord], any Error>).self) { group in
            for (i, m) in members.enumerated() {
                group.addTask { (i, await Result(awaiting: { try await Deadline.run(timeout, what: "repository '\(m.name)'") { try await Drill.records(m, cluster: cluster) } })) }
            }
            var out = [Result<[DrillRecord], any Error>?](repeating: nil, count: members.count)
            for await (i, r) in group { out[i] = r }
            return out.compactMap { $0 }
        }
        var overview: StatusOverview?
        do {
            overview = try await statusOverview(timeout: timeout)
        } catch {
            facts.backupsError = text(error)
            facts.repositories = zip(members, config.repositories).map {
                .init(name: $0.name, reachable: false, error: text(error), walPush: $1.walPush.rawValue, storedBytes: nil, queued: nil, queueError: nil)
            }
        }
        if let overview {
            facts.backups = overview.summaries.map {
                .init(id: $0.id.rawValue, type: $0.type.rawValue, start: $0.startTime, stop: $0.stopTime, repositoryBytes: $0.sizes.repository)
            }
            facts.windows = overview.windows
            facts.dumps = overview.dumps
            facts.repositories = overview.repositories.map {
                .init(name: $0.name, reachable: $0.reachable, error: $0.error, walPush: $0.walPush ?? "sync", storedBytes: $0.storedBytes,
                      queued: $0.queuedWAL, queueError: $0.queueError, backups: $0.backups)
            }
            // The verification records of the first repository that answered.
            if let first = zip(members, overview.repositories).first(where: { $0.1.reachable })?.0 {
                let summaries = overview.summaries
                do {
                    let states = try await Deadline.run(left(), what: "repository '\(first.name)'") {
                        await Verify.states(first, cluster: cluster, backups: summaries)
                    }
                    facts.lastVerified = states.values.compactMap(\.verifiedAt).max()
                    facts.damagedBackups = states.filter { $0.value.sound == false }.map(\.key.rawValue).sorted()
                } catch {
                    facts.verifyError = text(error)
                }
            }
        }
        facts.disks = DiskWatch.check(config.diskTargets(overview), thresholds: config.diskThresholds)
        switch await archiver {
        case .success where facts.logical:
            break  // no archive: the connection answered, which is all a logical cluster needs
        case .success(let a):
            facts.archiver = .init(archivedCount: a.archivedCount, failedCount: a.failedCount,
                                   lastArchivedWAL: a.lastArchivedWAL.isEmpty ? nil : a.lastArchivedWAL, lastArchivedTime: a.lastArchivedTime,
                                   lastFailedWAL: a.lastFailedWAL.isEmpty ? nil : a.lastFailedWAL, lastFailedTime: a.lastFailedTime)
        case .failure(let e):
            facts.archiverError = text(e)
        }
        var records = [DrillRecord]()
        for (m, r) in zip(members, await drills) {
            switch r {
            case .success(let list): records += list
            // An unreachable repository is reported as such; its drills are only missing.
            case .failure(let e) where facts.repositories.first(where: { $0.name == m.name })?.reachable != false:
                facts.drillError = "repository '\(m.name)': \(text(e))"
            case .failure: break
            }
        }
        func drill(_ d: DrillRecord) -> HealthFacts.Drill {
            .init(id: d.id, backup: d.backup, repository: d.repository, at: d.startedAt, passed: d.passed, recoverySeconds: d.recoverySeconds,
                  rtoSeconds: d.rtoSeconds, failedChecks: d.checks.filter { !$0.passed }.map(\.name))
        }
        records.sort { $0.startedAt < $1.startedAt }
        facts.lastDrill = records.last.map(drill)
        facts.lastPassedDrill = records.last(where: \.passed).map(drill)
        return facts
    }
}

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "A Nagios-style check of the backups, the WAL archive, the repositories, the disks, verification and drills.",
        discussion: """
            Prints one line, WAYBACK OK|WARNING|CRITICAL|UNKNOWN - <summary> | <perfdata>, then one line per \
            check, and exits 0, 1, 2 or 3 as Nagios expects (UNKNOWN also when the configuration cannot be read). \
            The thresholds are in check: (docs/monitoring.md). It answers within 10 s: a repository or server that \
            does not answer within check.timeout is reported as such.

            Examples:
              wayback check
              wayback check --json
              # a Nagios/Icinga command definition
              sudo -u postgres /usr/bin/wayback --config /etc/wayback/wayback.yaml check
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON: the status, the summary and every check with its perfdata (docs/monitoring.md).") var json = false

    func run() async throws {
        let report: HealthReport
        do {
            report = try await CommandRun.with(global.configPath, .status) { run in
                let now = SystemClock().now
                let facts = await run.healthFacts(now: now, timeout: run.config.check.timeoutSeconds)
                return HealthCheck.evaluate(facts, thresholds: run.config.check, now: now)
            }
        } catch {
            let message = (error as? WaybackError)?.message ?? String(describing: error)
            report = HealthReport(cluster: "", checkedAt: Date(), status: .unknown, summary: message,
                                  items: [HealthItem("configuration", .unknown, message)])
        }
        if json { try Context.printJSON(report) } else { print(report.nagios, terminator: "") }
        if report.status != .ok { throw ExitCode(report.status.exitCode) }
    }
}
