import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What a drill of a logical dump needs.
public struct DumpDrillConfiguration: Sendable {
    /// Where the dump is read (one repository for a drill of the offsite copy).
    public var repository: Repository
    public var cluster: String
    /// The dump (nil: the newest).
    public var id: DumpID?
    /// The scratch server and the spool go under it, in a folder of the drill's own.
    public var scratchDirectory: String
    public var rtoSeconds: Double
    public var rpoSeconds: Double
    public var keep: Bool
    public var jobs = 2
    /// PostgreSQL's programs (nil: the newest installed).
    public var binDirectory: String?
    public var backupLog: BackupLog?
    public var events: EventLog
    public init(repository: Repository, cluster: String, id: DumpID?, scratchDirectory: String, rtoSeconds: Double, rpoSeconds: Double,
                keep: Bool, events: EventLog) {
        self.repository = repository; self.cluster = cluster; self.id = id; self.scratchDirectory = scratchDirectory
        self.rtoSeconds = rtoSeconds; self.rpoSeconds = rpoSeconds; self.keep = keep; self.events = events
    }
}

/// `wayback drill` of a logical dump: a new scratch server (initdb, a private socket, the
/// drill's isolation settings), the dump's roles, then each database restored by `restore-dump`
/// with its row counts compared. The recovery time is the server's start, the roles and the
/// restores (the count checks apart); the record goes where a physical drill's goes.
public enum DumpDrill {
    /// The roles of the platform a Supabase dump refers to and does not create.
    static let supabaseRoles = ["anon", "authenticated", "authenticator", "service_role", "dashboard_user", "supabase_admin",
                                "supabase_auth_admin", "supabase_storage_admin", "supabase_functions_admin", "supabase_read_only_user",
                                "supabase_realtime_admin", "supabase_replication_admin", "pgbouncer"]

    public static func run(_ c: DumpDrillConfiguration, clock: any WaybackClock = SystemClock(), logger: Logger) async throws -> DrillRecord {
        guard getuid() != 0 else {
            throw WaybackError(.cluster, "wayback drill must not run as root: PostgreSQL refuses to start a server owned by root; run it as the PostgreSQL OS user (sudo -u postgres wayback drill)")
        }
        let catalog = Catalog(repository: c.repository, cluster: c.cluster)
        var newest: DumpID?
        if c.id == nil { newest = try await catalog.dumpIDs().last }
        guard let id = c.id ?? newest else {
            throw WaybackError(.notFound, "\(c.repository.description) holds no logical dump to drill; take one with 'wayback dump'")
        }
        let manifest = try await catalog.dumpManifest(id)
        let drillID = Drill.newID(clock)
        let startedAt = clock.now
        try FileSystem.makeDirectories(c.scratchDirectory, mode: 0o700)
        let dir = FileSystem.absolute(c.scratchDirectory + "/" + drillID)
        try FileSystem.makeDirectories(dir, mode: 0o700)
        // The copy's space: about what pg_dump wrote, twice (the spool and the tables).
        if let usage = try? FileSystemUsage.of(dir), usage.availableBytes < manifest.plainBytes * 2 {
            throw WaybackError(.noSpace, "the drill needs about \(Format.bytes(manifest.plainBytes * 2)) in drill.scratch_dir \(c.scratchDirectory), which has \(Format.bytes(usage.availableBytes)) free; free space there or set drill.scratch_dir to a larger file system")
        }
        let bin = c.binDirectory ?? LocalCluster.defaultBinDirectory()
        let user = getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "postgres"
        let server = LocalCluster(binDirectory: bin, dataDirectory: dir + "/pgdata", socketDirectory: dir, port: 5432, osUser: user)
        let began = monotonicSeconds()
        do {
            try server.initdb(checksums: true)
            try server.configure(Drill.isolation)
            try server.start()
        } catch let e as WaybackError {
            throw WaybackError(e.code, e.message + "; the drill's server is kept in \(dir) (remove it when done)", cause: e.cause)
        }
        var checks = [DrillRecord.Check]()
        checks.append(await Drill.check("roles") {
            var sql = ""
            if manifest.isSupabase {
                for r in supabaseRoles { sql += "DO $$ BEGIN CREATE ROLE \(r) NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n" }
            }
            if manifest.globals != nil {
                sql += try await DumpRestore.globals(repository: c.repository, cluster: c.cluster, id: id, spoolDirectory: dir, events: c.events)
            }
            // Without ON_ERROR_STOP: a role the server has already (postgres) is an error psql goes past.
            let r = try await server.execute([bin + "/psql", "-X", "-q", "-h", dir, "-p", "5432", "-U", "postgres", "-d", "postgres", "-f", "-"],
                                             check: false, input: sql)
            guard r.status == 0 else { throw WaybackError(.cluster, "psql: \(r.stderr.prefix(500))") }
        })
        let rolesDone = monotonicSeconds()
        var restoreSeconds = 0.0, countSeconds = 0.0, bytes: Int64 = 0
        for db in manifest.databases {
            checks.append(await Drill.check("restore \(db.name)") {
                // initdb made `postgres` (empty); every other database is made here.
                let quoted = "\"" + db.name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
                if db.name != "postgres" {
                    try await server.execute([bin + "/psql", "-X", "-q", "-h", dir, "-p", "5432", "-U", "postgres", "-d", "postgres",
                                              "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE \(quoted)"])
                }
                var rc = DumpRestoreConfiguration(repository: c.repository, cluster: c.cluster, id: id,
                                                  target: ConnectionSettings(host: dir, port: 5432, user: "postgres", password: nil, database: db.name,
                                                                             sslMode: .disable),
                                                  database: db.name)
                rc.jobs = c.jobs; rc.spoolDirectory = dir; rc.binDirectory = bin; rc.events = c.events
                let r = try await DumpRestore.run(rc, logger: logger)
                restoreSeconds += r.restoreSeconds; countSeconds += r.checkSeconds; bytes += r.bytes
                guard r.matches else {
                    throw WaybackError(.mismatch, "\(r.differences.count) table(s) differ: \(r.differences.prefix(5).joined(separator: "; "))")
                }
            })
        }
        try? await server.stopAsync(mode: "fast")
        let record0 = DrillRecord(id: drillID, repository: c.repository.name, backup: id.rawValue, target: "dump", startedAt: startedAt,
                                  planSeconds: 0, filesSeconds: restoreSeconds, replaySeconds: 0, checksSeconds: countSeconds,
                                  // A new server, the roles, and every database restored (the counts apart).
                                  recoverySeconds: (rolesDone - began) + restoreSeconds, rtoSeconds: c.rtoSeconds,
                                  // A dump restores to its own moment; how far behind that is, is the schedule's doing.
                                  recoveryPoint: manifest.startTime, recoveryPointSeconds: nil, rpoSeconds: c.rpoSeconds,
                                  checks: checks, bytes: bytes, keptAt: dir)
        var record = record0
        if record.passed && !c.keep {
            try? FileSystem.removeTree(dir)
            record.keptAt = nil
        }
        await Drill.store(record, repository: c.repository, cluster: c.cluster, events: c.events)
        await c.backupLog?.drilled(dump: id, passed: record.passed, at: startedAt, recoverySeconds: record.recoverySeconds)
        return record
    }
}
