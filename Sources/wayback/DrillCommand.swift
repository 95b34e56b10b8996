import ArgumentParser
import Foundation
import WaybackCatalog
import WaybackCore
import WaybackRestore
import WaybackStorage

/// Which backup a drill restores, and to where.
enum DrillChoice: Sendable {
    /// The newest backup, to the latest point.
    case newest
    /// The newest backup at least this many seconds old, to its end.
    case aged(Double)
    case backup(BackupID)
    /// A logical dump (`--backup` with an id ending in L).
    case dump(DumpID)
}

extension CommandRun {
    /// Runs a drill as the command and the daemon's drill jobs do.
    func drill(_ choice: DrillChoice, toTime: Int64?, repository name: String?, keep: Bool, clock: any WaybackClock,
               progress: ProgressHandler?) async throws -> DrillRecord {
        var repository = try self.repository()
        if let name {
            guard let one = repository.members.first(where: { $0.name == name }) else {
                throw WaybackError(.usage, "--repository '\(name)' is not in the configuration; it has \(config.repositories.map { "'\($0.name)'" }.joined(separator: ", "))")
            }
            repository = one
        }
        let dumpID: DumpID?
        switch choice {
        case .dump(let id): dumpID = id
        case .newest where config.cluster.type == .logical: dumpID = nil
        default:
            if config.cluster.type == .logical {
                throw WaybackError(.usage, "a logical cluster's drill restores a dump: the newest, or one given with --backup (an id ending in L); --age and --to-time are for physical backups")
            }
            return try await physicalDrill(choice, toTime: toTime, repository: repository, name: name, keep: keep, clock: clock, progress: progress)
        }
        guard toTime == nil else { throw WaybackError(.usage, "--to-time is for physical backups: a dump restores to its own moment") }
        var d = DumpDrillConfiguration(repository: repository, cluster: config.cluster.name, id: dumpID, scratchDirectory: config.drill.scratchDirectory,
                                       rtoSeconds: config.drill.rtoSeconds, rpoSeconds: config.drill.rpoSeconds, keep: keep, events: events)
        d.binDirectory = config.pgBinDirectory
        d.backupLog = backupLog()
        return report(try await DumpDrill.run(d, clock: clock, logger: logger))
    }

    func physicalDrill(_ choice: DrillChoice, toTime: Int64?, repository: Repository, name: String?, keep: Bool, clock: any WaybackClock,
                       progress: ProgressHandler?) async throws -> DrillRecord {
        var target: RecoveryTarget = toTime.map { .time($0) } ?? .latest
        var backupID: BackupID?
        switch choice {
        case .newest, .dump: break
        case .backup(let id):
            backupID = id
            if toTime == nil { target = .backupEnd }
        case .aged(let seconds):
            let summaries = try await StatusIndex.summaries(Catalog(repository: repository, cluster: config.cluster.name)).summaries
            let cutoff = clock.now.addingTimeInterval(-seconds)
            guard let old = RecoverableWindows.restorable(summaries).filter({ $0.stopTime <= cutoff }).max(by: { $0.stopTime < $1.stopTime }) else {
                throw WaybackError(.notFound, "no backup in \(repository.description) is \(Format.seconds(seconds)) old or older; 'wayback status' lists the backups")
            }
            backupID = old.id
            if toTime == nil { target = .backupEnd }
        }
        let restore = RestoreConfiguration(
            repository: repository, cluster: config.cluster.name, targetDirectory: config.drill.scratchDirectory + "/pending",
            request: RecoveryRequest(target: target, action: .promote, backupID: backupID), archiveMode: .off,
            parallelism: config.parallelism,
            restoreCommand: PrefetchSpool.restoreCommand(fetch: Context.waybackCommand(configPath: config.path) + " wal-fetch"
                + (name.map { " --repository \(Context.quoteIfNeeded($0))" } ?? "") + " %f %p"),
            events: events)
        var r = restore
        r.pgBinDirectory = config.pgBinDirectory
        let d = config.drill
        let drill = DrillConfiguration(restore: r, scratchDirectory: d.scratchDirectory, connection: config.cluster.connection,
                                       assertions: d.assertions.map { .init(name: $0.name, database: $0.database, sql: $0.sql) },
                                       rtoSeconds: d.rtoSeconds, rpoSeconds: d.rpoSeconds, keep: keep, backupLog: backupLog())
        return report(try await Drill.run(drill, clock: clock, logger: logger, progress: progress))
    }

    /// The drill's event (its outcome), and the record.
    func report(_ record: DrillRecord) -> DrillRecord {
        let failedChecks = record.checks.filter { !$0.passed }.map { $0.name }
        let outcome = !record.passed ? "FAILED (\(failedChecks.joined(separator: ", ")))"
            : !record.rtoMet || !record.rpoMet ? "missed an objective" : "passed"
        events.emit(record.passed && record.rtoMet && record.rpoMet ? .info : .error, .drillResult,
                    "drill of backup \(record.backup) from '\(record.repository)' \(outcome): recovery in \(Format.seconds(record.recoverySeconds)) (objective \(Format.seconds(record.rtoSeconds)))",
                    repository: record.repository, backup: record.backup)
        return record
    }
}

struct DrillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drill",
        abstract: "Restore a backup into a scratch directory, start it privately, check it, and measure the recovery time (docs/verification.md).",
        discussion: """
            Picks the newest backup (restored to the latest point), or --backup ID / --age 7d (restored to \
            its end), restores it into drill.scratch_dir, starts a server on a unix socket only (archiving \
            off, no replication or preloaded background workers), and checks it: pg_verifybackup, pg_amcheck, \
            a pg_dump of every database, the assertions of drill.assertions, pg_checksums. Records the result \
            in the repository and in backup_logs. Exit 19 when a check fails (the copy is kept), 20 when the \
            recovery time or point misses drill.rto_seconds or drill.rpo_seconds.

            A logical dump (--backup with an id ending in L; in a logical cluster, the newest dump by \
            default) is drilled into a new scratch server: its roles, then each database restored by \
            restore-dump and its row counts compared; the recovery time is the server's start, the roles \
            and the restores.

            Examples:
              wayback drill                         # the newest backup, to the latest
              wayback drill --repository offsite    # from the offsite copy alone
              wayback drill --age 7d --keep         # a week-old backup; keep the copy
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: ArgumentHelp("Drill this backup, or this logical dump (an id ending in L).", valueName: "id")) var backup: String?
    @Option(help: ArgumentHelp("Drill the newest backup at least this old (7d, 36h).", valueName: "duration")) var age: String?
    @Option(help: ArgumentHelp("Recovery target time (default: the latest point for the newest backup, else the backup's end).", valueName: "time"))
    var toTime: String?
    @Option(help: ArgumentHelp("Restore from this repository alone.", valueName: "name")) var repository: String?
    @Flag(help: "Keep the stopped copy in drill.scratch_dir.") var keep = false
    @Flag(help: "Print JSON (docs/verification.md).") var json = false

    func validate() throws {
        if backup != nil && age != nil { throw ValidationError("--backup and --age each choose a backup: give one") }
    }

    func run() async throws {
        try await CommandRun.with(global.configPath, .drill) { run in try await self.run(run) }
    }

    func run(_ run: CommandRun) async throws {
        var choice = DrillChoice.newest
        if let backup {
            if let dump = DumpID(backup) {
                choice = .dump(dump)
            } else {
                guard let id = BackupID(backup) else { throw WaybackError(.usage, "--backup '\(backup)' is not a backup id; 'wayback status' lists them") }
                choice = .backup(id)
            }
        }
        if let age {
            guard let s = RetentionPolicy.parseDuration(age), s > 0 else { throw WaybackError(.usage, "--age '\(age)' is not a duration; write e.g. 7d or 36h") }
            choice = .aged(s)
        }
        var time: Int64?
        if let toTime {
            guard let t = Format.parseInstant(toTime) else { throw WaybackError(.usage, "--to-time '\(toTime)' is not a time; write e.g. '2026-12-06 03:00:00+00'") }
            time = t
        }
        let record = try await run.drill(choice, toTime: time, repository: repository, keep: keep, clock: SystemClock(),
                                         progress: json ? nil : Context.progressHandler(logger: run.logger))
        if json { try Context.printJSON(record) } else { Self.print(record) }
        if !record.passed {
            let failed = record.checks.filter { !$0.passed }
            throw WaybackError(.drillFailed, "the drill failed: \(failed.map { "\($0.name): \($0.detail ?? "failed")" }.joined(separator: "; ")); the copy is kept in \(record.keptAt ?? "?") (remove it when done)")
        }
        if !record.rtoMet {
            throw WaybackError(.objectiveMissed, "the recovery took \(Format.seconds(record.recoverySeconds)), over drill.rto_seconds (\(Format.seconds(record.rtoSeconds)))")
        }
        if !record.rpoMet {
            throw WaybackError(.objectiveMissed, "the recovery point is \(Format.seconds(record.recoveryPointSeconds ?? 0)) behind, over drill.rpo_seconds (\(Format.seconds(record.rpoSeconds)))")
        }
    }

    static func print(_ r: DrillRecord) {
        Swift.print("drill \(r.id): backup \(r.backup) from '\(r.repository)' to \(r.target)")
        if r.target == "dump" {
            Swift.print("  server and roles \(Format.seconds(r.recoverySeconds - r.filesSeconds)), restore \(Format.seconds(r.filesSeconds)) (\(Format.bytes(r.bytes))), count checks \(Format.seconds(r.checksSeconds))")
        } else {
            Swift.print("  plan \(Format.seconds(r.planSeconds)), files \(Format.seconds(r.filesSeconds)) (\(Format.bytes(r.bytes))), replay \(Format.seconds(r.replaySeconds)), checks \(Format.seconds(r.checksSeconds))")
        }
        Swift.print("  recovery time \(Format.seconds(r.recoverySeconds)) (objective \(Format.seconds(r.rtoSeconds)): \(r.rtoMet ? "met" : "MISSED"))")
        if let p = r.recoveryPoint, let s = r.recoveryPointSeconds {
            Swift.print("  recovery point \(Format.timestamp(p)), \(Format.seconds(s)) behind (objective \(Format.seconds(r.rpoSeconds)): \(r.rpoMet ? "met" : "MISSED"))")
        }
        for c in r.checks { Swift.print("  \(c.skipped == true ? "skip" : c.passed ? "ok  " : "FAIL") \(c.name) (\(Format.seconds(c.seconds)))\(c.detail.map { ": \($0)" } ?? "")") }
        if let k = r.keptAt { Swift.print("  the copy is in \(k)") }
        Swift.print(r.passed ? "drill passed" : "drill FAILED")
    }
}
