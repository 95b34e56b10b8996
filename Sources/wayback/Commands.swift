import ArgumentParser
import Foundation
import Logging
import WaybackArchive
import WaybackBackup
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackRestore
import WaybackRetention
import WaybackStorage

struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Check the cluster, bind the repository to it, and print the archive settings to use.",
        discussion: """
            Running it again is harmless: an existing binding to the same cluster is kept.

            Examples:
              wayback init
              wayback --config /etc/wayback/other.yaml init     # a second cluster
            """)
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await CommandRun.with(global.configPath, .initialize) { run in try await Self.run(run) }
    }

    static func run(_ run: CommandRun) async throws {
        let config = run.config, logger = run.logger
        if config.cluster.type == .logical { try await initializeLogical(run); return }
        let r = try await ClusterSetup.initialize(
            repository: run.repository(), cluster: config.cluster.name, pgdata: config.cluster.pgdata,
            connection: config.cluster.connection, waybackCommand: Context.waybackCommand(configPath: config.path),
            lockDirectory: config.lockPath, catalog: config.catalog, logger: logger)
        print("cluster '\(config.cluster.name)': PostgreSQL \(Format.postgresVersion(r.facts.versionNumber)), system identifier \(r.facts.systemIdentifier)")
        print("  data directory \(r.facts.dataDirectory) (owner \(r.pgdataOwner)), wal_level \(r.facts.walLevel), data checksums \(r.facts.dataChecksums ? "on" : "off")")
        printBindings(config, initialized: r.initialized, migrations: r.catalogMigrations)
        print("Set in postgresql.conf:")
        print("  archive_mode = on")
        print("  archive_command = '\(r.archiveCommand)'")
        print("A restore writes this itself:")
        print("  restore_command = '\(r.restoreCommand)'")
        if !r.todo.isEmpty {
            print("")
            print("Still to do on the server:")
            for t in r.todo { print("  - \(t)") }
        }
    }
}

extension InitCommand {
    /// Each repository's binding (made now, or there already) and the catalog's migrations.
    static func printBindings(_ config: WaybackConfiguration, initialized: [String], migrations: [Int]?) {
        for repo in config.repositories {
            print("repository '\(repo.name)' (\(repo.path)): \(initialized.contains(repo.name) ? "initialised" : "already initialised for this cluster")")
        }
        if let catalog = config.catalog, let applied = migrations {
            let what = applied.isEmpty ? "up to date" : "migrations \(applied.map(String.init).joined(separator: ", ")) applied"
            print("catalog: table \(catalog.schema).backup_logs at \(catalog.connection.redacted): \(what)")
        }
        print("")
    }

    /// A logical cluster: the server by its connection, the repositories bound, no archive.
    static func initializeLogical(_ run: CommandRun) async throws {
        let config = run.config
        let r = try await ClusterSetup.initializeLogical(repository: run.repository(), cluster: config.cluster.name, connection: config.cluster.connection,
                                                         lockDirectory: config.lockPath, catalog: config.catalog, logger: run.logger)
        print("cluster '\(config.cluster.name)' (logical): PostgreSQL \(Format.postgresVersion(r.versionNumber)) at \(config.cluster.connection.redacted)")
        printBindings(config, initialized: r.initialized, migrations: r.catalogMigrations)
        print("A logical cluster is protected by dumps: 'wayback dump' takes one now; the daemon takes them on schedule.dump.")
        print("No archive settings are needed (there is no WAL archive and no point-in-time recovery).")
    }
}

struct WalPushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-push",
        abstract: "Archive one WAL file (archive_command = 'wayback wal-push %p').",
        discussion: """
            Exit 0 when the file is stored (or the same content already was); non-zero otherwise, and PostgreSQL keeps the file and retries.

            Examples:
              # postgresql.conf
              archive_command = 'wayback --config /etc/wayback/wayback.yaml wal-push %p'
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Path of the WAL file (%p).") var path: String

    func run() async throws {
        try await Self.push(path: path, configPath: global.configPath)
    }

    /// Shared with the fast path in `CLI.run`, which skips the argument parser for this command.
    static func push(path: String, configPath: String) async throws {
        try await CommandRun.with(configPath, .walPush) { run in
            let outcome = try await WALArchive.push(path: path, configuration: archiveConfiguration(run, forPush: true), logger: run.logger)
            if case .alreadyArchived = outcome {
                run.logger.info("WAL file already archived with the same content", metadata: ["wayback.segment": "\(FileSystem.lastComponent(path))"])
            }
        }
    }
}

struct WalFetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-fetch",
        abstract: "Fetch one WAL file from the archive (restore_command = 'wayback wal-fetch %f %p').",
        discussion: """
            Exit 1 when the file is not in the archive (the normal end of recovery), or when a prefetched segment was placed in pg_wal under its own name for PostgreSQL to read there; other non-zero statuses are real errors.

            Examples:
              # fetch one segment by hand (to look at it with pg_waldump)
              wayback wal-fetch 000000010000000000000042 /tmp/000000010000000000000042
              # restore writes restore_command itself; for a standby set up by hand,
              # use the one 'wayback init' prints (it turns statuses above 1 into
              # 126, so that PostgreSQL stops instead of ending recovery early)
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "WAL file name (%f).") var name: String
    @Argument(help: "Destination path (%p).") var destination: String
    @Option(help: ArgumentHelp("Read this repository alone (a drill of an offsite copy).", valueName: "name")) var repository: String?

    func run() async throws {
        try await Self.fetch(name: name, destination: destination, configPath: global.configPath, repository: repository)
    }

    static func fetch(name: String, destination: String, configPath: String, repository: String? = nil) async throws {
        let placed = try await CommandRun.with(configPath, .walFetch) { run in
            var archive = try archiveConfiguration(run, only: repository)
            archive.prefetchCommand = [Context.executablePath, "--config", run.config.path, "wal-prefetch"] + (repository.map { ["--repository", $0] } ?? [])
            return try await WALArchive.restore(name: name, destination: destination, configuration: archive, logger: run.logger)
        }
        // A segment handed over in pg_wal: exit 1 (quietly) makes PostgreSQL read it from there.
        if placed == .pgWAL { throw ExitCode(1) }
    }
}

/// The background helper `wal-fetch` starts (not for direct use).
struct WalPrefetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-prefetch",
        abstract: "Fetch the WAL segments from one on into the prefetch spool (started by wal-fetch).",
        shouldDisplay: false)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The segment recovery asks for: the window starts there.") var from: String
    @Argument(help: "How many segments to fetch ahead.") var count: Int
    @Argument(help: "The spool directory.") var spool: String
    @Option(help: ArgumentHelp("Read this repository alone.", valueName: "name")) var repository: String?

    func run() async throws {
        guard let name = WALFileName(from), name.kind == .segment else { throw ValidationError("'\(from)' is not a WAL segment name") }
        try await CommandRun.with(global.configPath, .walPrefetch) { run in
            try await Prefetch.run(from: name, count: count, spool: spool, configuration: archiveConfiguration(run, only: repository), logger: run.logger)
        }
    }
}

/// The background helper `wal-push` starts for asynchronous repositories (not for direct use).
struct WalDrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-drain",
        abstract: "Copy the WAL queued for asynchronous repositories (started by wal-push).",
        shouldDisplay: false)
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await CommandRun.with(global.configPath, .walDrain) { run in
            let config = run.config
            let archive = try archiveConfiguration(run, forPush: true)
            let targets = try run.repositoryList(only: Set(archive.asyncRepositories))
            try await AsyncSpool(path: config.archive.spoolPath, limitBytes: config.archive.spoolLimitBytes)
                .drain(cluster: config.cluster.name, source: archive.repository, targets: targets, parallelism: config.parallelism,
                       events: run.events, logger: run.logger)
        }
    }
}

/// `wal-push` writes the synchronous repositories (and never builds a driver for the others);
/// `wal-fetch` reads every repository in priority order.
/// `only`: `wal-fetch --repository NAME` reads that repository alone.
func archiveConfiguration(_ run: CommandRun, forPush: Bool = false, only: String? = nil) throws -> ArchiveConfiguration {
    let c = run.config
    try c.cluster.requirePhysical(forPush ? "wal-push" : "wal-fetch")
    let asyncNames = c.repositoryNames(walPush: .async)
    let sync = try run.repositoryList(only: Set(c.repositoryNames(walPush: .sync)))
    var read = forPush ? Repository.combined(sync, events: run.events) : try run.repository()
    if let only {
        guard let one = read.members.first(where: { $0.name == only }) else {
            throw WaybackError(.usage, "--repository '\(only)' is not in the configuration; it has \(c.repositories.map { "'\($0.name)'" }.joined(separator: ", "))")
        }
        read = one
    }
    return ArchiveConfiguration(repository: read, syncRepositories: sync, asyncRepositories: asyncNames, cluster: c.cluster.name,
                                compression: c.compression, parallelism: c.parallelism, prefetchSegments: c.restore.prefetchSegments,
                                spoolPath: c.archive.spoolPath, spoolLimitBytes: c.archive.spoolLimitBytes,
                                drainCommand: [Context.executablePath, "--config", c.path, "wal-drain"], events: run.events)
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Take an online base backup of the cluster.",
        discussion: """
            Run as the PostgreSQL OS user. Prints the backup id (or a JSON summary with --json).

            Examples:
              wayback backup                      # a full backup
              wayback backup --type incr          # what changed since the newest backup
              wayback backup --type full --pin    # before a risky change: kept
              wayback backup --json               # what it stored and read, for scripts
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Backup type: full (default); diff (the pages changed since the newest full); incr (changed since the newest backup).",
            transform: Arguments.backupType)
    var type: BackupType = .full
    @Flag(help: "Start over instead of continuing an interrupted backup (whose leftover is then removed).") var noResume = false
    @Flag(help: "Pin the backup: retention never expires it ('wayback unpin' lets it go).") var pin = false
    @Flag(help: "Back up even when the expected size does not fit in a local repository's free space.") var force = false
    @Flag(help: "Print a JSON summary.") var json = false

    func run() async throws {
        try await CommandRun.with(global.configPath, .backup) { run in try await self.run(run) }
    }

    func run(_ run: CommandRun) async throws {
        let config = run.config, logger = run.logger
        try config.cluster.requirePhysical("backup")
        let started = monotonicSeconds()
        let repository = try run.repository()
        var backup = run.backupConfiguration(repository, type: type)
        backup.resume = !noResume
        backup.pin = pin
        backup.force = force
        let m = try await PhysicalBackup.run(backup,
            logger: logger, progress: json ? nil : Context.progressHandler(logger: logger))
        let seconds = monotonicSeconds() - started
        if json {
            try Context.printJSON(BackupSummary(m, seconds: seconds))
        } else {
            print(m.id)
        }
        if let failures = m.pageChecksumFailures, !failures.isEmpty {
            if let replicated = repository.driver as? ReplicatedStorage, !replicated.failures.isEmpty {
                logger.error("backup \(m.id) also failed in \(replicated.failures.map(\.repository).joined(separator: ", ")); run 'wayback repo sync' when it works again")
            }
            throw WaybackError(.pageChecksum, "backup \(m.id) is complete, but the cluster has damaged pages: \(PageFailureReport.summary(failures)). Find the relations with pg_filenode_relation(), restore them from an earlier backup or rebuild them (REINDEX, or dump and reload the rows that read), and see docs/backup-procedures.md")
        }
        try Context.requireEveryRepository(repository, what: "backup \(m.id)")
    }
}

/// The stable `--json` output of `backup`.
struct BackupSummary: Encodable {
    var id: String, type: String, reference: String?, note: String?, copiedBytes: Int64, startTime: Date, stopTime: Date, startLSN: String, stopLSN: String, timeline: UInt32
    var startWAL: String, stopWAL: String, databaseBytes: Int64, repositoryBytes: Int64, files: Int, compressionRatio: Double
    var sha256: String, md5: String, seconds: Double
    var pageChecksumFailures: [BackupManifest.PageFailure]
    var resumed: BackupManifest.Resumed?
    /// Bytes and pages read from the data directory, how the changed pages were found, fallbacks.
    var reading: BackupManifest.Reading?
    init(_ m: BackupManifest, seconds: Double) {
        resumed = m.resumed
        reading = m.reading
        pageChecksumFailures = m.pageChecksumFailures ?? []
        id = m.id.rawValue; type = m.type.rawValue; reference = m.reference?.rawValue; note = m.note
        copiedBytes = m.sizes.copied ?? m.sizes.database; startTime = m.startTime; stopTime = m.stopTime
        startLSN = m.startLSN.description; stopLSN = m.stopLSN.description; timeline = m.timeline
        startWAL = m.startWAL; stopWAL = m.stopWAL; databaseBytes = m.sizes.database; repositoryBytes = m.sizes.repository
        files = m.sizes.files; compressionRatio = (m.compressionRatio * 100).rounded() / 100
        sha256 = m.digests.sha256; md5 = m.digests.md5; self.seconds = (seconds * 1000).rounded() / 1000
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a backup into an empty directory and set up recovery to a target.",
        discussion: """
            The plan (backup, WAL, where recovery stops) is made and checked before anything is written; \
            --dry-run prints it and writes nothing. Targets: --to-latest (default), --to-backup-end, --to-time, \
            --to-lsn, --to-xid, --to-name. After a point-in-time target the server pauses (--target-action). \
            See docs/recovery-procedures.md.

            Examples:
              # the plan of a restore to a point in time; writes nothing
              wayback restore --to-time '2026-12-06 09:59:00' --dry-run
              # restore it next to production, start it, check where it stopped
              wayback restore --target-dir /srv/pitr --to-time '2026-12-06 09:59:00' \\
                  --start --port 5499
              # too early? move the paused copy forward
              wayback restore --target-dir /srv/pitr --advance \\
                  --to-time '2026-12-06 10:05:00'
              # the data directory is lost: the latest state
              wayback restore --target-dir /var/lib/postgresql/15/main
            """)
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("target-dir"), help: "Directory to restore into: empty or new (with --delta a stopped data directory; with --advance the restored one). With --dry-run, optional: given, the plan checks it too.") var targetDir: String?
    @Option(help: "Backup id to restore (default: chosen from the target).", transform: Arguments.backupID) var backup: BackupID?
    @Flag(name: .customLong("to-latest"), help: "Replay all archived WAL (default).") var toLatest = false
    @Flag(name: .customLong("to-backup-end"), help: "Stop recovery as soon as the backup is consistent.") var toBackupEnd = false
    @Option(name: .customLong("to-time"), help: ArgumentHelp("Stop at a time: RFC 3339 or a PostgreSQL timestamptz; no zone means UTC.", valueName: "time")) var toTime: String?
    @Option(name: .customLong("to-lsn"), help: ArgumentHelp("Stop at a WAL location.", valueName: "lsn")) var toLSN: String?
    @Option(name: .customLong("to-xid"), help: ArgumentHelp("Stop at the commit (or abort) of a transaction.", valueName: "xid")) var toXID: String?
    @Option(name: .customLong("to-name"), help: ArgumentHelp("Stop at a restore point (pg_create_restore_point).", valueName: "name")) var toName: String?
    @Flag(help: "Stop just before the target instead of just after it.") var exclusive = false
    @Option(name: .customLong("target-action"), help: "pause (default for a point in time), promote or shutdown.",
            transform: Arguments.targetAction) var targetAction: TargetAction?
    @Option(help: "Timeline to follow: latest (default), current (the backup's) or a number.", transform: Arguments.timeline) var timeline: TimelineChoice = .latest
    @Option(name: .customLong("archive-mode"), help: "preserve or off (default: preserve when restoring into the configured pgdata, off otherwise).",
            transform: Arguments.archiveMode) var archiveMode: ArchiveMode?
    @Flag(name: .customLong("dry-run"), help: "Print the plan and write nothing; exit 0 only if the restore would succeed.") var dryRun = false
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Start the restored cluster, wait until recovery reaches the target, check it, and report the timings.") var start = false
    @Flag(help: "Restore onto an existing stopped data directory, rewriting only files that differ and removing files the backup does not have.") var delta = false
    @Flag(help: "Move the target of a restored cluster that is paused in recovery forward and resume replay (no files restored).") var advance = false
    @Option(help: "Port of the started cluster (unix socket in the data directory; default 5432).") var port: Int?
    @Option(help: "Owner of the restored files when run as root (default: owner of the target's parent).") var owner: String?
    @Option(name: .customLong("tablespace-map"), help: "Restore tablespace OID to DIR (OID=DIR); repeatable.",
            transform: Arguments.tablespaceMapping) var tablespaceMap: [Arguments.TablespaceMapping] = []

    func validate() throws {
        let targets = [toLatest, toBackupEnd, toTime != nil, toLSN != nil, toXID != nil, toName != nil].filter { $0 }.count
        if targets > 1 { throw ValidationError("choose one target: --to-latest, --to-backup-end, --to-time, --to-lsn, --to-xid or --to-name") }
        _ = try target()
        if exclusive && toTime == nil && toLSN == nil && toXID == nil {
            throw ValidationError("--exclusive applies to --to-time, --to-lsn and --to-xid")
        }
        if targetAction != nil, toLatest || targets == 0 {
            throw ValidationError("--target-action needs a target other than latest (recovery to the end of the archive always promotes)")
        }
        if port != nil && !start && !advance { throw ValidationError("--port goes with --start or --advance") }
        if dryRun && start { throw ValidationError("--dry-run writes nothing, so it cannot --start") }
        if targetDir == nil && !dryRun { throw ValidationError("restore needs --target-dir: an empty or new directory to restore into (--dry-run alone prints the plan)") }
        if advance {
            if toBackupEnd { throw ValidationError("--advance moves to a later point: use --to-time, --to-lsn, --to-xid, --to-name or --to-latest") }
            if backup != nil || !tablespaceMap.isEmpty || owner != nil { throw ValidationError("--advance keeps the restored backup: drop --backup, --owner and --tablespace-map") }
            if dryRun { throw ValidationError("--advance cannot be combined with --dry-run; run --dry-run without --advance to see a plan") }
            if delta { throw ValidationError("--advance restores no files, so --delta does not apply") }
        }
    }

    func target() throws -> RecoveryTarget {
        if toBackupEnd { return .backupEnd }
        if let toTime {
            guard let t = Format.parseInstant(toTime) else {
                throw ValidationError("--to-time '\(toTime)' is not a time; use RFC 3339 (2026-11-29T03:10:00Z) or 'YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]' (no zone: UTC)")
            }
            return .time(t)
        }
        if let toLSN {
            guard let l = LSN(toLSN) else { throw ValidationError("--to-lsn '\(toLSN)' is not an LSN (like 0/3000060)") }
            return .lsn(l)
        }
        if let toXID {
            guard let x = UInt32(toXID), x >= 3 else { throw ValidationError("--to-xid '\(toXID)' is not a transaction id (a number from 3)") }
            return .xid(x)
        }
        if let toName {
            guard !toName.isEmpty, toName.utf8.count < 64 else { throw ValidationError("--to-name needs a restore point name of 1 to 63 bytes") }
            return .name(toName)
        }
        return .latest
    }

    func run() async throws {
        try await CommandRun.with(global.configPath, .restore) { run in try await self.run(run) }
    }

    func run(_ run: CommandRun) async throws {
        let config = run.config, logger = run.logger
        try config.cluster.requirePhysical("restore")
        var ownerIDs: (uid: UInt32, gid: UInt32)?
        if let owner {
            guard let pw = getpwnam(owner) else { throw WaybackError(.usage, "--owner \(owner): no such user") }
            ownerIDs = (pw.pointee.pw_uid, pw.pointee.pw_gid)
        }
        let map = Dictionary(tablespaceMap.map { ($0.oid, $0.directory) }, uniquingKeysWith: { _, last in last })
        let request = RecoveryRequest(target: try target(), exclusive: exclusive, action: targetAction, timeline: timeline, backupID: backup)
        let directory = targetDir.map { FileSystem.absolute($0) } ?? ""
        let mode = archiveMode ?? Restore.defaultArchiveMode(targetDirectory: directory, pgdata: config.cluster.pgdata)
        var restoreConfig = RestoreConfiguration(
            repository: try run.repository(), cluster: config.cluster.name, targetDirectory: directory,
            request: request, archiveMode: mode, parallelism: config.parallelism,
            restoreCommand: PrefetchSpool.restoreCommand(fetch: Context.waybackCommand(configPath: config.path) + " wal-fetch %f %p"),
            owner: ownerIDs, tablespaceMap: map, events: run.events)
        restoreConfig.delta = delta
        restoreConfig.pgBinDirectory = config.pgBinDirectory

        if advance {
            let r = try await Advance.run(restoreConfig, port: port, connection: config.cluster.connection, logger: logger)
            if json { try Context.printJSON(RestoreOutput(plan: r.plan, files: 0, bytes: 0, planSeconds: 0, filesSeconds: 0, archiveMode: mode.rawValue, start: r.report)); return }
            print("advanced \(directory)\(r.previousLSN.map { " from \($0)" } ?? "") to \(r.plan.target)\(r.plan.stop.map { ", stopping \($0.position) \($0.record)" } ?? "")")
            print("the server is \(r.report.state) (\(r.report.stopMessage ?? "end of archived WAL")) after \(Format.seconds(r.report.recoverySeconds))")
            if r.report.state != "shut down" { print("connect: psql -h \(r.report.socketDirectory) -p \(r.report.port)") }
            return
        }
        if dryRun {
            let plan = try await Restore.plan(restoreConfig, logger: logger)
            if json { try Context.printJSON(plan) } else { print(plan.text) }
            try plan.requireFeasible()
            return
        }
        let outcome = try await Restore.perform(restoreConfig, start: start ? .init(port: port ?? 5432, connection: config.cluster.connection) : nil,
                                                logger: logger, progress: json ? nil : Context.progressHandler(logger: logger))
        let report = outcome.report, started = outcome.started
        if json {
            try Context.printJSON(RestoreOutput(plan: report.plan, files: report.files, bytes: report.bytes, planSeconds: report.planSeconds,
                                                filesSeconds: report.seconds - report.planSeconds, archiveMode: mode.rawValue, start: started))
            return
        }
        print("restored backup \(report.backup.id) into \(report.targetDirectory): \(report.files) files, \(Format.bytes(report.bytes)) in \(Format.seconds(report.seconds))")
        if let rewritten = report.rewritten {
            print("delta: \(rewritten) file(s) rewritten, \(report.files - rewritten) already identical, \(report.removed ?? 0) removed")
        }
        print("recovery: to \(report.plan.target)\(report.plan.stop.map { ", stopping \($0.position) \($0.record)" } ?? ""), then \(report.plan.action.rawValue); archive_mode \(mode == .off ? "off (this copy does not archive)" : "as configured")")
        if !report.configurationWritten.isEmpty {
            print("note: the backup holds no \(report.configurationWritten.joined(separator: ", ")) (the cluster keeps its configuration outside its data directory, as Debian's do); minimal ones were written so that this copy starts: add your settings before it serves as a primary")
        }
        if let s = started {
            print("started: recovery reached its target and the server is \(s.state) (\(s.stopMessage ?? "end of archived WAL"))")
            print("timings: plan \(Format.seconds(report.planSeconds)), files \(Format.seconds(report.seconds - report.planSeconds)), then from the start: ready for connections after \(s.readySeconds.map(Format.seconds) ?? "-"), target reached after \(Format.seconds(s.recoverySeconds)); total \(Format.seconds(report.seconds + s.recoverySeconds))")
            if s.state != "shut down" { print("connect: psql -h \(s.socketDirectory) -p \(s.port)") }
        } else {
            print("start it with: pg_ctl -D \(report.targetDirectory) start")
        }
    }
}

/// `status --json`: the report's fields, the recoverable window per timeline, and the state of
/// each repository.
struct StatusOutput: Encodable {
    var overview: StatusOverview
    /// What the next `expire` does with `retention:` (each repository's own policy may differ).
    var retention: RetentionPlan
    /// The same for the logical dumps (nil: none).
    var dumpRetention: RetentionPlan?
    /// Free space where Wayback and PostgreSQL write.
    var disks: [DiskWatch.Entry]
    func encode(to encoder: any Encoder) throws {
        try overview.report.encode(to: encoder)
        enum K: String, CodingKey { case recoverable, repositories, checked, retention, dumpRetention, disks, dumps }
        var c = encoder.container(keyedBy: K.self)
        try c.encode(overview.windows, forKey: .recoverable)
        try c.encode(overview.repositories, forKey: .repositories)
        try c.encode(StatusReport.checked, forKey: .checked)
        try c.encode(retention, forKey: .retention)
        try c.encodeIfPresent(dumpRetention, forKey: .dumpRetention)
        try c.encode(disks, forKey: .disks)
        try c.encode(overview.dumps, forKey: .dumps)
    }
}

/// `restore --json`.
struct RestoreOutput: Encodable {
    var plan: RecoveryPlan
    var files: Int
    var bytes: Int64
    var planSeconds: Double
    var filesSeconds: Double
    var archiveMode: String
    var start: RestoredCluster.Report?
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "List backups and the WAL archive range per timeline.",
        discussion: """
            Reads the repositories' listings and status index, not the backup data ('restore --dry-run' and 'verify' read that).

            Examples:
              wayback status
              wayback status --json
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await CommandRun.with(global.configPath, .status) { run in try await self.run(run) }
    }

    func run(_ run: CommandRun) async throws {
        let repository = try run.repository()
        let overview = try await run.statusOverview(repository)
        let catalog = Catalog(repository: repository, cluster: run.config.cluster.name)
        let pins = try await catalog.pins()
        let retention = RetentionPlanner.plan(overview.summaries, policy: run.config.retention, pins: pins, now: Date())
        let dumpRetention = overview.dumps.isEmpty ? nil
            : RetentionPlanner.plan(dumps: overview.dumps, policy: run.config.retention, pins: try await catalog.dumpPins(), now: Date())
        let disks = DiskWatch.check(run.config.diskTargets(overview), thresholds: run.config.diskThresholds,
                                    growthPerDay: DiskWatch.growthPerDay(backups: overview.summaries, now: Date()))
        if json { try Context.printJSON(StatusOutput(overview: overview, retention: retention, dumpRetention: dumpRetention, disks: disks)); return }
        let why = Dictionary(retention.decisions.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let report = overview.report, windows = overview.windows, states = overview.repositories
        print("cluster '\(report.cluster)' (system identifier \(report.systemIdentifier), PostgreSQL \(Format.postgresVersion(report.pgVersion))) in repository '\(report.repository)'")
        if report.backups.isEmpty { print("no backups") }
        for b in report.backups {
            let kind = b.reference.map { "\(b.type) on \($0), \(Format.bytes(b.copiedBytes)) changed" } ?? b.type
            print("  \(b.id)  \(kind)  \(Format.timestamp(b.startTime)) .. \(Format.timestamp(b.stopTime))  LSN \(b.startLSN)..\(b.stopLSN)  TL \(b.timeline)  \(Format.bytes(b.databaseBytes)) -> \(Format.bytes(b.repositoryBytes)) (\(b.compressionRatio)x)")
            if let p = b.problems { print("    DAMAGED: \(p.joined(separator: "; ")); it cannot be restored") }
            if let d = why[b.id] {
                print(d.action == .keep ? "    kept: \(d.reasons.joined(separator: "; "))" : "    expires at the next 'wayback expire' (no bucket, pin or chain keeps it)")
            }
        }
        if report.archive.isEmpty { print("WAL archive: empty") }
        for t in report.archive {
            let gaps = t.gaps.isEmpty ? "" : "  MISSING: \(t.gaps.joined(separator: ", "))"
            // A segment that cannot be decoded is a gap too (found where the window was read).
            let damaged = windows.first { $0.timeline == t.timeline }?.damaged ?? []
            let harm = damaged.isEmpty ? "" : "  DAMAGED: \(damaged.joined(separator: ", "))"
            print("  WAL timeline \(t.timeline): \(t.first) .. \(t.last) (\(t.segments) segments)\(gaps)\(harm)")
        }
        if states.count > 1 || states.contains(where: { $0.error != nil }) {
            print("repositories:")
            for s in states { print("  \(s.text)") }
        }
        if !overview.dumps.isEmpty {
            print("logical dumps ('wayback restore-dump --list' shows one):")
            let dumpWhy = Dictionary((dumpRetention?.decisions ?? []).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            for d in overview.dumps {
                print("  \(d.id)  \(d.databases.joined(separator: ", "))  \(Format.bytes(d.bytes))  in \(d.repositories.joined(separator: ", "))")
                if let why = dumpWhy[d.id.rawValue] {
                    print(why.action == .keep ? "    kept: \(why.reasons.joined(separator: "; "))" : "    expires at the next 'wayback expire' (no bucket or pin keeps it)")
                }
            }
        }
        if !windows.isEmpty { print("recoverable:") }
        for w in windows { print("  \(w.text)") }
        if let anchor = retention.decisions.first(where: { $0.id == retention.pitrAnchor }) {
            print("after retention (retention: in the configuration): every point from \(Format.timestamp(anchor.stopTime)) on (backup \(anchor.id) and the WAL after it); older kept backups restore to their end")
        } else if retention.stale {
            print("after retention: nothing expires while backups are stale (the newest is older than retention.stale_after)")
        }
        print("disk space:")
        for d in disks { print("  \(d.text)") }
        print("checked: \(StatusReport.checked)")
    }
}
