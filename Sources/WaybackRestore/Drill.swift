import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What a restore drill needs: the restore (repository, backup, target), where to put the copy,
/// what to check, and the objectives.
public struct DrillConfiguration: Sendable {
    public struct Assertion: Sendable, Codable, Equatable {
        public var name: String
        public var database: String
        public var sql: String
        public init(name: String, database: String, sql: String) { self.name = name; self.database = database; self.sql = sql }
    }
    /// The restore; its target directory is made under `scratchDirectory`.
    public var restore: RestoreConfiguration
    public var scratchDirectory: String
    /// User and database for the checks (host and port are the copy's private socket).
    public var connection: ConnectionSettings
    public var assertions: [Assertion]
    public var rtoSeconds: Double
    public var rpoSeconds: Double
    /// Leave the copy (stopped) in place, even when the drill passes.
    public var keep: Bool
    public var backupLog: BackupLog?
    public init(restore: RestoreConfiguration, scratchDirectory: String, connection: ConnectionSettings, assertions: [Assertion],
                rtoSeconds: Double, rpoSeconds: Double, keep: Bool, backupLog: BackupLog?) {
        self.restore = restore; self.scratchDirectory = scratchDirectory; self.connection = connection; self.assertions = assertions
        self.rtoSeconds = rtoSeconds; self.rpoSeconds = rpoSeconds; self.keep = keep; self.backupLog = backupLog
    }
}

/// One drill's result: stored in the repository (`drills/`), printed, and in `--json`.
public struct DrillRecord: Codable, Sendable {
    public static let kind = "drill-record"
    public struct Check: Codable, Sendable, Equatable {
        public var name: String
        public var passed: Bool
        public var seconds: Double
        /// What failed (the first lines of the tool's output, or the assertion's result).
        public var detail: String?
    }
    public var id: String
    public var repository: String
    public var backup: String
    public var target: String
    public var startedAt: Date
    /// Phases: plan, files, replay (start to a server accepting queries at the target), checks.
    public var planSeconds: Double
    public var filesSeconds: Double
    public var replaySeconds: Double
    public var checksSeconds: Double
    /// A restore's time to a server that accepts queries at the target: plan, files, replay.
    public var recoverySeconds: Double
    public var rtoSeconds: Double
    /// The time of the last transaction the copy replayed, and how far it is behind the drill's
    /// start (the recovery point a restore now would achieve; only for a drill to the latest point).
    public var recoveryPoint: Date?
    public var recoveryPointSeconds: Double?
    public var rpoSeconds: Double
    public var checks: [Check]
    public var bytes: Int64
    /// Where the copy is (kept), or nil once removed.
    public var keptAt: String?
    public var passed: Bool { checks.allSatisfy(\.passed) }
    public var rtoMet: Bool { recoverySeconds <= rtoSeconds }
    public var rpoMet: Bool { recoveryPointSeconds.map { $0 <= rpoSeconds } ?? true }
}

/// `wayback drill`: a real restore on this machine into a scratch directory, a private server
/// started on it (a unix socket only, archiving off, no replication or background workers that
/// act outside the database), the checks, the timings against the objectives, the record.
public enum Drill {
    /// Settings of the copy's server: nothing of it reaches the outside world (it listens on a
    /// private unix socket only, so no client or standby reaches it either; the settings a
    /// standby must keep at least as high as the primary's, like `max_wal_senders`, stay).
    public static let isolation: [String: String] = [
        "archive_mode": "off",
        // A restored subscription would consume the production publisher's slot.
        "max_logical_replication_workers": "0",
        // pg_cron, pg_net and other preloaded workers act outside the database.
        "shared_preload_libraries": "",
    ]

    public static func run(_ config: DrillConfiguration, clock: any WaybackClock = SystemClock(), logger: Logger,
                           progress: ProgressHandler? = nil) async throws -> DrillRecord {
        guard getuid() != 0 else {
            throw WaybackError(.cluster, "wayback drill must not run as root: PostgreSQL refuses to start a copy owned by root; run it as the PostgreSQL OS user (sudo -u postgres wayback drill)")
        }
        let id = "drill-" + String(Int64(clock.now.timeIntervalSince1970 * 1000)) + "-" + RunID.make()
        let startedAt = clock.now
        try FileSystem.makeDirectories(config.scratchDirectory, mode: 0o700)
        var restore = config.restore
        restore.targetDirectory = FileSystem.absolute(config.scratchDirectory + "/" + id)
        restore.archiveMode = .off
        restore.promoteAfterCheck = true
        let plan = try await Restore.plan(restore, logger: logger)
        let manifest = try await Catalog(repository: restore.repository, cluster: restore.cluster).manifest(plan.backup)
        // Room for it: the data the backup restores and the WAL it replays.
        let need = manifest.sizes.database + manifest.sizes.wal + Int64(plan.wal.segments) * Int64(manifest.walSegmentSize)
        if let usage = try? FileSystemUsage.of(config.scratchDirectory), usage.availableBytes < need {
            throw WaybackError(.noSpace, "the drill needs about \(Format.bytes(need)) in drill.scratch_dir \(config.scratchDirectory), which has \(Format.bytes(usage.availableBytes)) free; free space there or set drill.scratch_dir to a larger file system")
        }
        let report = try await Restore.run(restore, logger: logger, progress: progress)
        let filesDone = monotonicSeconds()
        let dir = report.targetDirectory
        let user = try Restore.osUserName(for: dir)
        let bin = try restore.pgBinDirectory ?? LocalCluster.binDirectory(forDataDirectory: dir)
        var checks = [DrillRecord.Check]()

        // The files as the backup's manifest lists them, before the server touches them.
        checks.append(await check("pg_verifybackup") {
            try await tool(bin + "/pg_verifybackup", ["-n", dir], user: user)
        })
        var options = RestoredCluster.Options(port: 5432, osUser: user, binDirectory: bin, connection: config.connection,
                                              promoteAfterCheck: true, earlyPromotion: true)
        options.settings = isolation
        let started = try await RestoredCluster.start(directory: dir, plan: report.plan, options: options, logger: logger)
        let ready = monotonicSeconds()
        // Its phases feed the estimates of later plans, as a restore's do.
        await Restore.record(report, started: started, catalog: Catalog(repository: restore.repository, cluster: restore.cluster),
                             clock: clock, events: restore.events)
        let copy = LocalCluster(binDirectory: bin, dataDirectory: dir, socketDirectory: started.socketDirectory, port: started.port, osUser: user)
        let checksBegan = monotonicSeconds()
        let role = config.connection.user ?? "postgres"
        let conn = ["-h", started.socketDirectory, "-p", String(started.port), "-U", role]
        checks.append(await check("pg_amcheck") {
            try await tool(bin + "/pg_amcheck", conn + ["--all", "--install-missing", "--no-strict-names"], user: user)
        })
        // Every database read once; a list that cannot be read is a failed check, never "none".
        var databases = [String]()
        checks.append(await check("list databases") {
            let r = try await copy.execute([bin + "/psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"] + conn + ["-d", "postgres", "-c",
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"], check: false)
            guard r.status == 0 else { throw WaybackError(.cluster, "psql: \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))") }
            databases = r.stdout.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
        })
        for db in databases {
            checks.append(await check("pg_dump \(db)") {
                try await tool(bin + "/pg_dump", conn + ["-d", db, "-f", "/dev/null"], user: user)
            })
        }
        for a in config.assertions {
            checks.append(await check("assertion '\(a.name)'") {
                let r = try await copy.execute([bin + "/psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"] + conn + ["-d", a.database, "-c", a.sql],
                                               check: false)
                let out = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                guard r.status == 0 else { throw WaybackError(.cluster, "failed: \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))") }
                guard out == "t" else { throw WaybackError(.cluster, "returned \(out.isEmpty ? "nothing" : out), not true") }
            })
        }
        try await copy.stopAsync(mode: "fast")
        if manifest.dataChecksums {
            checks.append(await check("pg_checksums") {
                try await tool(bin + "/pg_checksums", ["--check", "-D", dir], user: user)
            })
        }
        let done = monotonicSeconds()

        var record = DrillRecord(id: id, repository: restore.repository.name, backup: plan.backup.rawValue, target: plan.target,
                                 startedAt: startedAt, planSeconds: report.planSeconds, filesSeconds: report.seconds - report.planSeconds,
                                 replaySeconds: ready - filesDone, checksSeconds: done - checksBegan,
                                 // Restore (plan and files) and replay; pg_verifybackup ran in between and
                                 // does not count, nor the plan made above for the space check.
                                 recoverySeconds: report.seconds + (ready - filesDone) - (checks.first?.seconds ?? 0),
                                 rtoSeconds: config.rtoSeconds, recoveryPoint: nil, recoveryPointSeconds: nil, rpoSeconds: config.rpoSeconds,
                                 checks: checks, bytes: report.bytes, keptAt: dir)
        if plan.targetKind == .latest, let t = started.lastReplayedTransaction.flatMap({ Format.parseInstant($0) }) {
            let point = Date(timeIntervalSince1970: Double(t) / 1_000_000)
            record.recoveryPoint = point
            record.recoveryPointSeconds = max(0, startedAt.timeIntervalSince(point))
        }
        // A failed drill keeps its copy for inspection.
        if record.passed && !config.keep {
            try? FileSystem.removeTree(dir)
            record.keptAt = nil
        }
        await store(record, manifest: manifest, config: config)
        return record
    }

    /// Runs one check, timing it; a check that throws has failed (with its message).
    static func check(_ name: String, _ body: () async throws -> Void) async -> DrillRecord.Check {
        let t = monotonicSeconds()
        do {
            try await body()
            return .init(name: name, passed: true, seconds: monotonicSeconds() - t, detail: nil)
        } catch {
            let text = (error as? WaybackError)?.message ?? String(describing: error)
            return .init(name: name, passed: false, seconds: monotonicSeconds() - t, detail: String(text.prefix(2000)))
        }
    }

    /// Runs a PostgreSQL tool as the copy's owner; throws with the first lines of its output.
    static func tool(_ path: String, _ args: [String], user: String) async throws {
        let r = try await Command.execute([path] + args, asUser: user, check: false)
        guard r.status == 0 else {
            let out = (r.stderr + "\n" + r.stdout).split(separator: "\n").prefix(10).joined(separator: " | ")
            throw WaybackError(.cluster, "exit \(r.status): \(out)")
        }
    }

    /// The record in the repository (`<cluster>/drills/<id>.json`), and the backup's row.
    static func store(_ record: DrillRecord, manifest: BackupManifest, config: DrillConfiguration) async {
        let key = "\(config.restore.cluster)/drills/\(record.id).json"
        do {
            try await config.restore.repository.driver.writeAll(key, try SealedJSON.encode(record, kind: DrillRecord.kind))
        } catch {
            config.restore.events.emit(.warning, .recordFailed, "the drill's record could not be stored in \(config.restore.repository.description) (\((error as? WaybackError)?.message ?? String(describing: error)))")
        }
        if let log = config.backupLog {
            await log.drilled(manifest, passed: record.passed, at: record.startedAt, recoverySeconds: record.recoverySeconds)
        }
    }

    /// The drills recorded in a repository, oldest first (damaged records are skipped).
    public static func records(_ repository: Repository, cluster: String) async throws -> [DrillRecord] {
        var out = [DrillRecord]()
        for o in try await repository.driver.list(prefix: "\(cluster)/drills/") where o.key.hasSuffix(".json") {
            if let bytes = try? await repository.driver.readAll(o.key, limit: 1 << 20),
               let r = try? SealedJSON.decode(DrillRecord.self, from: bytes, kind: DrillRecord.kind, name: o.key) { out.append(r) }
        }
        return out.sorted { $0.startedAt < $1.startedAt }
    }
}
