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
        // A Supabase project's own schemas do not make it "not empty".
        let present = try await requireEmpty(c.target, clean: c.clean, ignoring: manifest.isSupabase ? platformSchema : { _ in false }, logger: logger)

        let began = monotonicSeconds()
        let spool = try makeSpool(c.spoolDirectory, bytes: db.plainBytes + (db.platform?.plainSize ?? 0))
        defer { try? FileSystem.removeTree(spool) }
        let file = try await decodeDatabase(db, id: c.id, catalog: catalog, spool: spool, events: c.events)

        let bin = c.binDirectory ?? LocalCluster.defaultBinDirectory()
        var args = [bin + "/pg_restore", "--no-password", "--exit-on-error", "--jobs=\(max(1, c.jobs))", "--dbname=" + ConnectionSettings.dbnameArgument(c.target.database)]
        if c.noOwner { args += ["--no-owner", "--no-privileges"] }
        if let platform = db.platform {
            // First, so that the project's tables find the users they refer to: data-only into a
            // Supabase project (its platform owns the structure; triggers and foreign keys off
            // while loading), whole into a plain PostgreSQL.
            let platformFile = spool + "/" + db.name + ".platform.dump"
            try await decode(platform, id: c.id, catalog: catalog, to: platformFile, events: c.events)
            let project = SupabasePreset.dataSchemas.contains { present.contains($0) }
            var env = c.target.libpqEnvironment()
            if project { env["PGOPTIONS"] = "-c session_replication_role=replica" }
            let r = try await Command.execute(args + (project ? ["--data-only"] : []) + [platformFile], environment: env, check: false)
            guard r.status == 0 else { throw restoreFailure(r.stderr) }
            try? FileSystem.remove(platformFile)
        }
        if manifest.isSupabase && !present.contains("extensions") {
            // The project's extensions live in the platform's schema `extensions` (a project has
            // it; a plain PostgreSQL gets it empty, and the dump's CREATE EXTENSION fills it).
            let session = try await PostgresSession.connect(c.target, logger: logger)
            do { _ = try await session.execute("CREATE SCHEMA IF NOT EXISTS extensions"); await session.close() } catch { await session.close(); throw error }
        }
        if c.clean { args += ["--clean", "--if-exists"] }
        let r = try await Command.execute(args + [file], environment: c.target.libpqEnvironment(), check: false)
        guard r.status == 0 else { throw restoreFailure(r.stderr) }
        let restored = monotonicSeconds()

        var copy = try await RowCounts.current(c.target, logger: logger)
        if manifest.isSupabase {
            // The target project's own tables are not the dump's.
            copy = copy.filter { table, _ in !SupabasePreset.isPlatform(RowCounts.schema(of: table)) && !SupabasePreset.platformTables.contains(table) }
        }
        var differences = RowCounts.differences(recorded: db.rowCounts, copy: copy)
        if let recorded = db.tableDigests {
            let now = try await RowCounts.currentDigests(c.target, tables: recorded.keys.sorted(), logger: logger)
            for (table, digest) in recorded.sorted(by: { $0.key < $1.key }) where now[table] != nil && now[table] != digest {
                differences.append("\(db.name).\(table): content differs from the dump's snapshot (digest \(digest) recorded, \(now[table]!) in the copy)")
            }
        }
        return DumpRestoreReport(dump: c.id.rawValue, database: db.name, target: c.target.redacted, bytes: db.plainBytes,
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
        let spool = try makeSpool(spoolDirectory, bytes: chosen.map { $0.plainBytes + ($0.platform?.plainSize ?? 0) }.max() ?? 0)
        defer { try? FileSystem.removeTree(spool) }
        let bin = binDirectory ?? LocalCluster.defaultBinDirectory()
        var out = [(database: String, entries: Int, bytes: Int64)]()
        for db in chosen {
            var entries = 0
            var archives = [try await decodeDatabase(db, id: id, catalog: catalog, spool: spool, events: events)]
            if let platform = db.platform {
                archives.append(spool + "/" + db.name + ".platform.dump")
                try await decode(platform, id: id, catalog: catalog, to: archives[1], events: events)
            }
            for archive in archives {
                let r = try await Command.execute([bin + "/pg_restore", "--list", archive], check: false)
                guard r.status == 0 else {
                    throw WaybackError(.corrupt, "pg_restore cannot read the archive of database '\(db.name)' in dump \(id): \(r.stderr.prefix(300))")
                }
                entries += r.stdout.split(separator: "\n").filter { !$0.hasPrefix(";") && !$0.isEmpty }.count
                try? FileSystem.removeTree(archive)
            }
            out.append((db.name, entries, db.plainBytes + (db.platform?.plainSize ?? 0)))
        }
        return out
    }

    /// The database's archive decoded into `spool`: the custom format's file, or the directory
    /// format's folder (every file checked). Returns the path for pg_restore.
    static func decodeDatabase(_ db: DumpManifest.Database, id: DumpID, catalog: Catalog, spool: String, events: EventLog?) async throws -> String {
        guard let files = db.files else {
            let file = spool + "/" + db.name + ".dump"
            try await decode(db.object, id: id, catalog: catalog, to: file, events: events)
            return file
        }
        let folder = spool + "/" + db.name + ".d"
        try FileSystem.makeDirectories(folder, mode: 0o700)
        let prefix = DumpManifest.directoryPrefix(database: db.name)
        for o in [db.object] + files {
            let name = String(o.name.dropFirst(prefix.count))
            // Names pg_dump gives (toc.dat, 1234.dat, blobs.toc): never a path of their own.
            guard o.name.hasPrefix(prefix), !name.isEmpty, !name.contains("/"), name != "..", name != "." else {
                throw WaybackError(.corrupt, "dump \(id) lists an object '\(o.name)' outside database '\(db.name)''s folder; the manifest is not what Wayback writes")
            }
            try await decode(o, id: id, catalog: catalog, to: folder + "/" + name, events: events)
        }
        return folder
    }

    /// A private folder for `bytes` of decoded dump in `directory`, refused (exit 18) when the
    /// file system has less room than that.
    static func makeSpool(_ directory: String, bytes: Int64 = 0) throws -> String {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        if bytes > 0, let usage = try? FileSystemUsage.of(directory), usage.availableBytes < bytes {
            throw WaybackError(.noSpace, "the dump needs \(Format.bytes(bytes)) decoded in \(directory) for pg_restore, which has \(Format.bytes(usage.availableBytes)) free; free space there or choose another folder (--spool-dir, or dump.spool_dir)")
        }
        var template = Array((directory + "/wayback-restore-dump-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw WaybackError.system(.io, "cannot make a private folder in \(directory) for the dump", call: "mkdtemp", errno: errno)
        }
        return String(cString: made)
    }

    /// The Supabase preset's schemas: the platform's, and those whose data the dump restores.
    static let platformSchema: @Sendable (String) -> Bool = { SupabasePreset.isPlatform($0) || SupabasePreset.dataSchemas.contains($0) }

    /// A database with relations of its own (outside the schemas `ignoring` accepts) is refused:
    /// pg_restore would mix two databases. Returns the target's schemas.
    static func requireEmpty(_ target: ConnectionSettings, clean: Bool, ignoring: (String) -> Bool, logger: Logger) async throws -> Set<String> {
        let session = try await PostgresSession.connect(target, logger: logger)
        let rows: [[String?]]
        do {
            rows = try await session.execute("""
            SELECT n.nspname::text, count(c.oid)::text FROM pg_namespace n
              LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
            WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
            GROUP BY 1
            """)
        } catch {
            // Never "empty" without having looked.
            await session.close()
            throw error
        }
        await session.close()
        var n = 0, schemas = Set<String>()
        for r in rows {
            guard r.count == 2, let schema = r[0], let count = r[1].flatMap({ Int($0) }) else {
                throw WaybackError(.postgres, "PostgreSQL did not say how many relations database '\(target.database)' holds; restore-dump does not restore into a database it could not look at")
            }
            schemas.insert(schema)
            if !ignoring(schema) { n += count }
        }
        if n > 0 && !clean {
            throw WaybackError(.conflict, "database '\(target.database)' at \(target.redacted) is not empty (\(n) relations); restore into an empty database (createdb), or replace what the dump holds with --clean")
        }
        return schemas
    }

    /// The dump's roles (`globals.sql`, without passwords), as SQL to run on the target server.
    public static func globals(repository: Repository, cluster: String, id: DumpID, spoolDirectory: String = "/var/tmp",
                               events: EventLog? = nil) async throws -> String {
        let catalog = Catalog(repository: repository, cluster: cluster)
        let manifest = try await catalog.dumpManifest(id)
        guard let g = manifest.globals else {
            throw WaybackError(.notFound, "dump \(id) holds no roles: \(manifest.note ?? "pg_dumpall --roles-only was not permitted")")
        }
        let spool = try makeSpool(spoolDirectory)
        defer { try? FileSystem.removeTree(spool) }
        try await decode(g, id: id, catalog: catalog, to: spool + "/globals.sql", events: events)
        return String(decoding: try Data(contentsOf: URL(fileURLWithPath: spool + "/globals.sql")), as: UTF8.self)
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
