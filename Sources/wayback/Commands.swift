import ArgumentParser
import Foundation
import WaybackArchive
import WaybackBackup
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackRestore
import WaybackStorage

struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Check the cluster, bind the repository to it, and print the archive settings to use.",
        discussion: "Running it again is harmless: an existing binding to the same cluster is kept.")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let config = try global.load()
        let logger = Context.logger(config.logLevel)
        let r = try await ClusterSetup.initialize(
            repository: config.primaryRepository(), cluster: config.clusterName, pgdata: config.pgdata,
            connection: config.connection, waybackCommand: Context.waybackCommand(configPath: config.path),
            lockDirectory: config.lockPath, logger: logger)
        print("cluster '\(config.clusterName)': PostgreSQL \(r.facts.versionNumber), system identifier \(r.facts.systemIdentifier)")
        print("  data directory \(r.facts.dataDirectory) (owner \(r.pgdataOwner)), wal_level \(r.facts.walLevel), data checksums \(r.facts.dataChecksums ? "on" : "off")")
        print(r.alreadyInitialized ? "repository '\(config.repositories[0].name)' was already initialised for this cluster"
                                   : "repository '\(config.repositories[0].name)' initialised at \(config.repositories[0].path)")
        print("")
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

struct WalPushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-push",
        abstract: "Archive one WAL file (archive_command = 'wayback wal-push %p').",
        discussion: "Exit 0 when the file is stored (or the same content already was); non-zero otherwise, and PostgreSQL keeps the file and retries.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Path of the WAL file (%p).") var path: String

    func run() async throws {
        try await Self.push(path: path, configPath: global.configPath)
    }

    /// Shared with the fast path in `CLI.run`, which skips the argument parser for this command.
    static func push(path: String, configPath: String) async throws {
        let config = try GlobalOptions.load(configPath)
        let logger = Context.logger(config.logLevel)
        let outcome = try await WALArchive.push(path: path, configuration: archiveConfiguration(config), logger: logger)
        if case .alreadyArchived = outcome {
            logger.info("WAL file already archived with the same content", metadata: ["wayback.segment": "\(FileSystem.lastComponent(path))"])
        }
    }
}

struct WalFetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-fetch",
        abstract: "Fetch one WAL file from the archive (restore_command = 'wayback wal-fetch %f %p').",
        discussion: "Exit 1 when the file is not in the archive (the normal end of recovery); other non-zero statuses are real errors.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "WAL file name (%f).") var name: String
    @Argument(help: "Destination path (%p).") var destination: String

    func run() async throws {
        try await Self.fetch(name: name, destination: destination, configPath: global.configPath)
    }

    static func fetch(name: String, destination: String, configPath: String) async throws {
        let config = try GlobalOptions.load(configPath)
        let logger = Context.logger(config.logLevel)
        _ = try await WALArchive.fetch(name: name, destination: destination, configuration: archiveConfiguration(config), logger: logger)
    }
}

func archiveConfiguration(_ c: WaybackConfiguration) -> ArchiveConfiguration {
    ArchiveConfiguration(repository: c.primaryRepository(), cluster: c.clusterName, compression: c.compression, parallelism: c.parallelism)
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Take an online base backup of the cluster.",
        discussion: "Run as the PostgreSQL OS user. Prints the backup id (or a JSON summary with --json).")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Backup type (full).") var type: String = "full"
    @Flag(help: "Print a JSON summary.") var json = false

    func validate() throws {
        guard type == "full" else { throw ValidationError("--type \(type) is not supported yet; use --type full") }
    }

    func run() async throws {
        let config = try global.load()
        let logger = Context.logger(config.logLevel)
        let started = monotonicSeconds()
        let m = try await FullBackup.run(
            BackupConfiguration(repository: config.primaryRepository(), cluster: config.clusterName, pgdata: config.pgdata,
                                connection: config.connection, compression: config.compression, parallelism: config.parallelism,
                                lockDirectory: config.lockPath, archiveWaitSeconds: config.archiveWaitSeconds,
                                fastCheckpoint: config.fastCheckpoint),
            logger: logger, progress: json ? nil : Context.progressHandler(logger: logger))
        let seconds = monotonicSeconds() - started
        if json {
            try Context.printJSON(BackupSummary(m, seconds: seconds))
        } else {
            print(m.id)
        }
    }
}

/// The stable `--json` output of `backup`.
struct BackupSummary: Encodable {
    var id: String, type: String, startTime: Date, stopTime: Date, startLSN: String, stopLSN: String, timeline: UInt32
    var startWAL: String, stopWAL: String, databaseBytes: Int64, repositoryBytes: Int64, files: Int, compressionRatio: Double
    var sha256: String, md5: String, seconds: Double
    init(_ m: BackupManifest, seconds: Double) {
        id = m.id.rawValue; type = m.type.rawValue; startTime = m.startTime; stopTime = m.stopTime
        startLSN = m.startLSN.description; stopLSN = m.stopLSN.description; timeline = m.timeline
        startWAL = m.startWAL; stopWAL = m.stopWAL; databaseBytes = m.sizes.database; repositoryBytes = m.sizes.repository
        files = m.sizes.files; compressionRatio = (m.compressionRatio * 100).rounded() / 100
        sha256 = m.digests.sha256; md5 = m.digests.md5; self.seconds = (seconds * 1000).rounded() / 1000
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a backup into an empty directory and set up recovery.",
        discussion: "By default the newest backup is restored and recovery replays all archived WAL (--to-latest). Start the result with pg_ctl start.")
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("target-dir"), help: "Empty (or new) directory to restore into.") var targetDir: String
    @Option(help: "Backup id to restore (default: the newest).") var backup: String?
    @Flag(name: .customLong("to-latest"), help: "Replay all archived WAL (default).") var toLatest = false
    @Flag(name: .customLong("to-backup-end"), help: "Stop recovery as soon as the backup is consistent.") var toBackupEnd = false
    @Option(help: "Owner of the restored files when run as root (default: owner of the target's parent).") var owner: String?
    @Option(name: .customLong("tablespace-map"), help: "Restore tablespace OID to DIR (OID=DIR); repeatable.") var tablespaceMap: [String] = []

    func validate() throws {
        if toLatest && toBackupEnd { throw ValidationError("choose one of --to-latest and --to-backup-end") }
        if let backup, BackupID(backup) == nil { throw ValidationError("'\(backup)' is not a backup id (like 20261129-004100F); 'wayback status' lists them") }
        for m in tablespaceMap {
            let p = m.split(separator: "=", maxSplits: 1)
            if p.count != 2 || UInt32(p[0]) == nil || !p[1].hasPrefix("/") { throw ValidationError("--tablespace-map takes OID=/absolute/dir, not '\(m)'") }
        }
    }

    func run() async throws {
        let config = try global.load()
        let logger = Context.logger(config.logLevel)
        var ownerIDs: (uid: UInt32, gid: UInt32)?
        if let owner {
            guard let pw = getpwnam(owner) else { throw WaybackError(.usage, "--owner \(owner): no such user") }
            ownerIDs = (pw.pointee.pw_uid, pw.pointee.pw_gid)
        }
        var map = [UInt32: String]()
        for m in tablespaceMap {
            let p = m.split(separator: "=", maxSplits: 1)
            map[UInt32(p[0])!] = String(p[1])
        }
        let report = try await Restore.run(
            RestoreConfiguration(repository: config.primaryRepository(), cluster: config.clusterName, targetDirectory: targetDir,
                                 backupID: backup.flatMap { BackupID($0) }, target: toBackupEnd ? .backupEnd : .latest,
                                 parallelism: config.parallelism,
                                 restoreCommand: Context.waybackCommand(configPath: config.path) + " wal-fetch %f %p",
                                 owner: ownerIDs, tablespaceMap: map),
            logger: logger, progress: Context.progressHandler(logger: logger))
        print("restored backup \(report.backup.id) into \(report.targetDirectory): \(report.files) files, \(Format.bytes(report.bytes)) in \(Format.seconds(report.seconds))")
        print("recovery: \(toBackupEnd ? "stops at the end of the backup (\(report.backup.stopLSN))" : "replays all archived WAL"), then promotes; start it with: pg_ctl -D \(report.targetDirectory) start")
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "List backups and the WAL archive range per timeline.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let config = try global.load()
        let report = try await StatusReport.gather(Catalog(repository: config.primaryRepository(), cluster: config.clusterName))
        if json { try Context.printJSON(report); return }
        print("cluster '\(report.cluster)' (system identifier \(report.systemIdentifier), PostgreSQL \(report.pgVersion)) in repository '\(report.repository)'")
        if report.backups.isEmpty { print("no backups") }
        for b in report.backups {
            print("  \(b.id)  \(b.type)  \(Format.timestamp(b.startTime)) .. \(Format.timestamp(b.stopTime))  LSN \(b.startLSN)..\(b.stopLSN)  TL \(b.timeline)  \(Format.bytes(b.databaseBytes)) -> \(Format.bytes(b.repositoryBytes)) (\(b.compressionRatio)x)")
        }
        if report.archive.isEmpty { print("WAL archive: empty") }
        for t in report.archive {
            let gaps = t.gaps.isEmpty ? "" : "  MISSING: \(t.gaps.joined(separator: ", "))"
            print("  WAL timeline \(t.timeline): \(t.first) .. \(t.last) (\(t.segments) segments)\(gaps)")
        }
    }
}
