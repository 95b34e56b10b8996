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
        /// The check could not apply to this drill (the detail says why); it neither passes nor fails it.
        public var skipped: Bool? = nil
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
        let id = newID(clock)
        let startedAt = clock.now
        try FileSystem.makeDirectories(config.scratchDirectory, mode: 0o700)
        var restore = config.restore
        restore.targetDirectory = FileSystem.absolute(config.scratchDirectory + "/" + id)
        restore.archiveMode = .off
        restore.promoteAfterCheck = true
        // A drill to a backup's end stops where the backup's row counts were taken, when it has them.
        let catalog = Catalog(repository: restore.repository, cluster: restore.cluster)
        var counts: (compare: [RowCounts.Database], skipped: String?)?
        if restore.request.target == .backupEnd, let id = restore.request.backupID,
           let recorded = try await catalog.manifest(id).rowCounts {
            let found = await countPoint(recorded, manifest: try await catalog.manifest(id), catalog: catalog, parallelism: restore.parallelism)
            counts = (found.compare, found.skipped)
            if let lsn = found.stopAfter { restore.request.target = .lsn(lsn); restore.request.exclusive = false }
        }
        let plan = try await Restore.plan(restore, logger: logger)
        let manifest = try await catalog.manifest(plan.backup)
        if counts == nil, manifest.rowCounts != nil {
            counts = ([], "the drill's target is not where the backup's row counts were taken; a drill of one backup (--backup or --age, without --to-time) compares them")
        }
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
        let started: RestoredCluster.Report
        do {
            started = try await RestoredCluster.start(directory: dir, plan: report.plan, options: options, logger: logger)
        } catch let e as WaybackError {
            // The copy stays for inspection, as after any failed drill; the error says where.
            throw WaybackError(e.code, e.message + "; the drill's copy is kept in \(dir) (remove it when done)", cause: e.cause)
        }
        let ready = monotonicSeconds()
        // Its phases feed the estimates of later plans, as a restore's do.
        await Restore.record(report, started: started, catalog: Catalog(repository: restore.repository, cluster: restore.cluster),
                             clock: clock, events: restore.events)
        let copy = LocalCluster(binDirectory: bin, dataDirectory: dir, socketDirectory: started.socketDirectory, port: started.port, osUser: user)
        let checksBegan = monotonicSeconds()
        let role = config.connection.user
        let conn = ["-h", started.socketDirectory, "-p", String(started.port), "-U", role]
        checks.append(await check("pg_amcheck") {
            try await tool(bin + "/pg_amcheck", conn + ["--all", "--install-missing", "--no-strict-names"], user: user)
        })
        // Every database read once; a list that cannot be read is a failed check, never "none".
        if let counts {
            checks.append(await compareCounts(counts.compare, skipped: counts.skipped, socket: started.socketDirectory, port: started.port,
                                               role: role, connection: config.connection, logger: logger))
        }
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

    /// Where to stop for the backup's row counts: after the last commit the counting snapshot saw,
    /// found in the WAL from the backup's end to the counts' position. The databases whose
    /// snapshots saw the same transactions are compared; nil `stopAfter` with no `skipped` means
    /// the backup's end itself.
    static func countPoint(_ counts: RowCounts, manifest: BackupManifest, catalog: Catalog, parallelism: Int) async
        -> (stopAfter: LSN?, compare: [RowCounts.Database], skipped: String?) {
        guard let main = counts.databases.max(by: { $0.tables.count < $1.tables.count }),
              let snapshot = TransactionSnapshot(main.snapshot) else { return (nil, [], "the backup's row counts hold no table") }
        let compare = counts.databases.filter { TransactionSnapshot($0.snapshot).map { $0.seesSameAs(snapshot) } ?? false }
        let size = manifest.walSegmentSize
        guard counts.lsn >= manifest.stopLSN else { return (nil, [], "the backup's row counts are recorded before its end (\(counts.lsn)); they cannot be compared") }
        let segments = (manifest.stopLSN.segmentNumber(segmentSize: size)...counts.lsn.segmentNumber(segmentSize: size))
            .map { SegmentOnPath(timeline: manifest.timeline, number: $0) }
        var commits = [WALEvent](), problem: String?
        do {
            try await catalog.scanSegments(segments, segmentSize: size, parallelism: parallelism) { seg, result in
                switch result {
                case .success(let scan): commits += scan.events.filter { $0.kind == .commit }; return true
                case .failure(let e):
                    problem = e.code == .notFound
                        ? "the WAL up to where the row counts were taken (segment \(seg.name(segmentSize: size))) is not archived yet"
                        : "the WAL up to where the row counts were taken cannot be read (\(e.message))"
                    return false
                }
            }
        } catch {
            problem = "the WAL up to where the row counts were taken cannot be read (\((error as? WaybackError)?.message ?? String(describing: error)))"
        }
        if let problem { return (nil, [], problem) }
        switch RowCounts.countPoint(snapshot: snapshot, commits: commits, stop: manifest.stopLSN, lsn: counts.lsn) {
        case .backupEnd: return (nil, compare, nil)
        case .after(let lsn): return (lsn, compare, nil)
        case .none(let xids):
            return (nil, [], "no point in the WAL matches the counting snapshot: transactions \(xids.prefix(5).map(String.init).joined(separator: ", ")) committed before the last one it saw, but it did not see them")
        }
    }

    /// The copy's rows against the backup's counts, database by database.
    static func compareCounts(_ databases: [RowCounts.Database], skipped: String?, socket: String, port: Int, role: String,
                              connection: ConnectionSettings, logger: Logger) async -> DrillRecord.Check {
        if let skipped { return .init(name: "row counts", passed: true, seconds: 0, detail: "not compared: " + skipped, skipped: true) }
        var result = await check("row counts") {
            var differences = [String]()
            for db in databases {
                var s = connection
                s.host = socket; s.port = port; s.user = role; s.database = db.name; s.password = nil; s.sslMode = .disable
                differences += RowCounts.differences(recorded: db, copy: try await RowCounts.current(s, logger: logger))
            }
            guard differences.isEmpty else {
                throw WaybackError(.cluster, "\(differences.count) table(s) differ: " + differences.prefix(10).joined(separator: "; "))
            }
        }
        if result.passed {
            result.detail = "\(databases.reduce(0) { $0 + $1.tables.count }) tables in \(databases.count) database(s) match"
        }
        return result
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
        await store(record, repository: config.restore.repository, cluster: config.restore.cluster, events: config.restore.events)
        if let log = config.backupLog {
            await log.drilled(manifest, passed: record.passed, at: record.startedAt, recoverySeconds: record.recoverySeconds)
        }
    }

    /// The record alone; a repository that cannot take it is a warning (the drill ran).
    static func store(_ record: DrillRecord, repository: Repository, cluster: String, events: EventLog) async {
        let key = "\(cluster)/drills/\(record.id).json"
        do {
            try await repository.driver.writeAll(key, try SealedJSON.encode(record, kind: DrillRecord.kind))
        } catch {
            events.emit(.warning, .recordFailed, "the drill's record could not be stored in \(repository.description) (\((error as? WaybackError)?.message ?? String(describing: error)))")
        }
    }

    /// A new drill's id: its start in milliseconds and a random part.
    static func newID(_ clock: any WaybackClock) -> String { "drill-" + String(Int64(clock.now.timeIntervalSince1970 * 1000)) + "-" + RunID.make() }

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
