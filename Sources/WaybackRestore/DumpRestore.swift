import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What `wayback restore-dump` needs.
public struct DumpRestoreConfiguration: Sendable {
    public var repository: Repository
    public var cluster: String
    public var id: DumpID
    /// The database to restore into (it must be empty unless `clean`).
    public var target: ConnectionSettings
    /// Which of the dump's databases (nil: its only one).
    public var database: String?
    public var clean = false
    public var noOwner = false
    public var jobs = 2
    /// Where the dump is decoded for `pg_restore -j` (a private folder, removed afterwards).
    public var spoolDirectory = "/var/tmp"
    public var binDirectory: String?
    /// Where a fallback to another repository is reported.
    public var events: EventLog?
    public init(repository: Repository, cluster: String, id: DumpID, target: ConnectionSettings, database: String?) {
        self.repository = repository; self.cluster = cluster; self.id = id; self.target = target; self.database = database
    }
}

/// What a restore of a dump did, and whether every table holds the rows the dump recorded.
public struct DumpRestoreReport: Codable, Sendable {
    public var dump: String
    public var database: String
    public var target: String
    public var bytes: Int64
    public var restoreSeconds: Double
    public var checkSeconds: Double
    public var tables: Int
    /// `db.schema.table: n recorded, m in the copy`, one per table that differs.
    public var differences: [String]
    public var matches: Bool { differences.isEmpty }
}

/// `wayback restore-dump`: the dump's object read and checked (SHA-256 of its plain bytes),
/// decoded into a private spool for `pg_restore -j`, restored into an empty database, then every
/// table counted and compared with the counts taken in the dump's snapshot.
public enum DumpRestore {
    public static func run(_ c: DumpRestoreConfiguration, logger: Logger) async throws -> DumpRestoreReport {
        let catalog = Catalog(repository: c.repository, cluster: c.cluster)
        let manifest = try await catalog.dumpManifest(c.id)
        let db: DumpManifest.Database
        if let name = c.database {
            guard let found = manifest.databases.first(where: { $0.name == name }) else {
                throw WaybackError(.notFound, "dump \(c.id) has no database '\(name)'; it holds \(manifest.databases.map { "'\($0.name)'" }.joined(separator: ", "))")
            }
            db = found
        } else {
            guard manifest.databases.count == 1 else {
                throw WaybackError(.usage, "dump \(c.id) holds \(manifest.databases.count) databases (\(manifest.databases.map(\.name).joined(separator: ", "))); choose one with --database")
            }
            db = manifest.databases[0]
        }
        try await requireEmpty(c.target, clean: c.clean, logger: logger)

        let began = monotonicSeconds()
        let spool = try makeSpool(c.spoolDirectory)
        defer { try? FileSystem.removeTree(spool) }
        let file = spool + "/" + db.name + ".dump"
        try await decode(db.object, id: c.id, catalog: catalog, to: file, events: c.events)

        let bin = c.binDirectory ?? LocalCluster.defaultBinDirectory()
        var args = [bin + "/pg_restore", "--no-password", "--exit-on-error", "--jobs=\(max(1, c.jobs))", "--dbname=\(c.target.database)"]
        if c.clean { args += ["--clean", "--if-exists"] }
        if c.noOwner { args += ["--no-owner", "--no-privileges"] }
        let r = try await Command.execute(args + [file], environment: c.target.libpqEnvironment(), check: false)
        guard r.status == 0 else { throw restoreFailure(r.stderr) }
        let restored = monotonicSeconds()

        let copy = try await RowCounts.current(c.target, logger: logger)
        let differences = RowCounts.differences(recorded: db.rowCounts, copy: copy)
        return DumpRestoreReport(dump: c.id.rawValue, database: db.name, target: c.target.redacted, bytes: db.object.plainSize,
                                 restoreSeconds: restored - began, checkSeconds: monotonicSeconds() - restored, tables: db.rowCounts.tables.count,
                                 differences: differences)
    }

    /// `--dry-run`: every chosen database's object read whole and checked (SHA-256 of the plain
    /// bytes), and its archive read by `pg_restore --list`; nothing is written anywhere but the
    /// private spool, which is removed. Returns each database with the entries of its archive.
    public static func dryRun(repository: Repository, cluster: String, id: DumpID, database: String?, spoolDirectory: String = "/var/tmp",
                              binDirectory: String?, events: EventLog? = nil) async throws -> [(database: String, entries: Int, bytes: Int64)] {
        let catalog = Catalog(repository: repository, cluster: cluster)
        let manifest = try await catalog.dumpManifest(id)
        let chosen = database.map { n in manifest.databases.filter { $0.name == n } } ?? manifest.databases
        guard !chosen.isEmpty else {
            throw WaybackError(.notFound, "dump \(id) has no database '\(database ?? "")'; it holds \(manifest.databases.map { "'\($0.name)'" }.joined(separator: ", "))")
        }
        let spool = try makeSpool(spoolDirectory)
        defer { try? FileSystem.removeTree(spool) }
        let bin = binDirectory ?? LocalCluster.defaultBinDirectory()
        var out = [(database: String, entries: Int, bytes: Int64)]()
        for db in chosen {
            let file = spool + "/" + db.name + ".dump"
            try await decode(db.object, id: id, catalog: catalog, to: file, events: events)
            let r = try await Command.execute([bin + "/pg_restore", "--list", file], check: false)
            guard r.status == 0 else {
                throw WaybackError(.corrupt, "pg_restore cannot read the archive of database '\(db.name)' in dump \(id): \(r.stderr.prefix(300))")
            }
            out.append((db.name, r.stdout.split(separator: "\n").filter { !$0.hasPrefix(";") && !$0.isEmpty }.count, db.object.plainSize))
            try? FileSystem.remove(file)
        }
        return out
    }

    static func makeSpool(_ directory: String) throws -> String {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        var template = Array((directory + "/wayback-restore-dump-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw WaybackError.system(.io, "cannot make a private folder in \(directory) for the dump", call: "mkdtemp", errno: errno)
        }
        return String(cString: made)
    }

    /// A database with relations of its own is refused (pg_restore would mix two databases).
    static func requireEmpty(_ target: ConnectionSettings, clean: Bool, logger: Logger) async throws {
        let session = try await PostgresSession.connect(target, logger: logger)
        let rows: [[String?]]
        do {
            rows = try await session.execute("""
            SELECT count(*)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
            """)
        } catch {
            // Never "empty" without having looked.
            await session.close()
            throw error
        }
        await session.close()
        guard let n = rows.first?.first.flatMap({ $0 }).flatMap({ Int($0) }) else {
            throw WaybackError(.postgres, "PostgreSQL did not say how many relations database '\(target.database)' holds; restore-dump does not restore into a database it could not look at")
        }
        if n > 0 && !clean {
            throw WaybackError(.conflict, "database '\(target.database)' at \(target.redacted) is not empty (\(n) relations); restore into an empty database (createdb), or replace what the dump holds with --clean")
        }
    }

    /// The object's frames into `file`, checked against the plain bytes' recorded SHA-256, from
    /// the first repository whose copy is sound: a damaged or missing copy is a warning naming it,
    /// and the next repository is read; every copy bad is an error naming each.
    static func decode(_ o: DumpManifest.Object, id: DumpID, catalog: Catalog, to file: String, events: EventLog? = nil) async throws {
        var failures = [String]()
        for member in catalog.repository.members {
            do {
                try await decode(o, id: id, driver: member.driver, key: catalog.layout.dumpObjectKey(id, o.name), to: file)
                if !failures.isEmpty {
                    events?.emit(.warning, .repositoryFallback, "\(o.name) of dump \(id) was read from repository '\(member.name)': \(failures.joined(separator: "; ")); run 'wayback verify' and 'wayback repo sync'")
                }
                return
            } catch where !(error is CancellationError) {
                failures.append("repository '\(member.name)': \((error as? WaybackError)?.message ?? String(describing: error))")
                try? FileSystem.remove(file)
            }
        }
        throw WaybackError(.corrupt, "no repository holds a sound copy of \(o.name) of dump \(id): \(failures.joined(separator: "; "))")
    }

    static func decode(_ o: DumpManifest.Object, id: DumpID, driver: any StorageDriver, key: String, to file: String) async throws {
        let out = try PosixFile.create(file, mode: 0o600)
        var hasher = SHA256Hasher(), size: Int64 = 0
        do {
            try await driver.withReader(key, range: nil) { reader in
                let frames = FrameReader(reader: reader, name: "\(o.name) of dump \(id)")
                while !(try await frames.atEnd()) {
                    try await frames.nextFrame { plain in
                        hasher.update(plain)
                        try out.pwrite(plain, offset: size)
                        size += Int64(plain.count)
                    }
                }
            }
            try out.close()
        } catch {
            try? out.close()
            throw error
        }
        guard size == o.plainSize, hasher.finalizeHex() == o.plainSHA256 else {
            throw WaybackError(.corrupt, "\(o.name) of dump \(id) fails its SHA-256 check: the object is damaged ('wayback verify' names what else is)")
        }
    }

    /// pg_restore's failure in words of its cause: a role the target lacks is the common one.
    static func restoreFailure(_ stderr: String) -> WaybackError {
        let lines = stderr.split(separator: "\n").map(String.init)
        if let missing = lines.first(where: { $0.contains("role \"") && $0.contains("does not exist") }),
           let role = missing.split(separator: "\"").dropFirst().first {
            return WaybackError(.cluster, "the dump needs the role '\(role)', which the target server lacks: create it first (the dump's globals.sql holds the roles, without passwords), or restore without owners and grants (--no-owner)")
        }
        return WaybackError(.postgres, "pg_restore failed: \(lines.filter { $0.contains("error") }.prefix(3).joined(separator: " | ").prefix(600))")
    }
}
