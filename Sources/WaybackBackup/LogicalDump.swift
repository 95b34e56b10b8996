import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What `wayback dump` needs.
public struct DumpConfiguration: Sendable {
    public var repository: Repository
    public var cluster: String
    public var connection: ConnectionSettings
    public var compression: CompressionSettings
    /// The databases to dump (nil: every database that accepts connections, templates aside).
    public var databases: [String]?
    /// Schemas left out of every database's dump (and of its row counts).
    public var excludeSchemas: [String] = []
    /// Where `pg_dump` and `pg_dumpall` are (nil: the newest installed PostgreSQL's).
    public var binDirectory: String?
    public var events: EventLog
    /// Where the cluster's lock is taken (the lock `backup` and `expire` take: an expiry never
    /// sees a dump being written). Nil: no lock (tests of the pure parts).
    public var lockDirectory: String?
    /// Where the dump's row goes (`backup_logs`, type `logical`).
    public var backupLog: BackupLog?
    /// The configuration's cluster is logical (its repositories must be bound as one).
    public var logicalCluster = false
    /// The Supabase preset (`dump.supabase`): see `SupabasePreset`.
    public var supabase = false
    /// A content digest of every counted table, in the dump's snapshot (`dump.table_digests`).
    public var tableDigests = false
    /// pg_dump's workers (`dump.jobs`): 2 or more dump in the directory format, file by file
    /// through `spoolDirectory`; 1 streams the custom format with no spool.
    public var jobs = 1
    public var spoolDirectory = "/var/tmp"
    /// Pin the dump once it is complete (`dump --pin`): retention never expires it.
    public var pin = false
    public init(repository: Repository, cluster: String, connection: ConnectionSettings, compression: CompressionSettings,
                databases: [String]?, binDirectory: String?, events: EventLog) {
        self.repository = repository; self.cluster = cluster; self.connection = connection; self.compression = compression
        self.databases = databases; self.binDirectory = binDirectory; self.events = events
    }
}

/// `wayback dump`: `pg_dump` of each database in a snapshot the dump exports, with the exact row
/// count of every table taken in that same snapshot; the output goes in frames through the
/// repository's writers (compressed, encrypted, to every repository): the custom format streamed
/// (`jobs` 1), or the directory format file by file through a spool that holds only the files in
/// flight (`DirectoryDump`). The manifest, written last, makes the dump count.
public enum LogicalDump {
    public static func run(_ c: DumpConfiguration, clock: any WaybackClock = SystemClock(), logger: Logger) async throws -> DumpManifest {
        let catalog = Catalog(repository: c.repository, cluster: c.cluster)
        let binding = try await catalog.requireBinding()
        guard binding.isLogical == c.logicalCluster else {
            throw WaybackError(.repository, binding.isLogical
                ? "\(c.repository.description) holds cluster '\(c.cluster)' as a logical cluster, but the configuration says cluster.type: physical; set cluster.type: logical (and remove cluster.pgdata)"
                : "\(c.repository.description) holds cluster '\(c.cluster)' as a physical cluster, but the configuration says cluster.type: logical; use another cluster.name for the logical one")
        }
        let lock = try c.lockDirectory.map {
            try RepositoryLock.acquire(directory: $0, cluster: c.cluster, systemIdentifier: binding.systemID, repository: c.repository, command: "dump")
        }
        defer { lock?.release() }
        try await removeIncomplete(catalog, logger: logger)
        let startTime = clock.now
        let id = DumpID(startTime: startTime)
        let first = try await PostgresSession.connect(c.connection, logger: logger)
        let server: Int, names: [String]
        do {
            // Readable by any role (a managed service's included); facts() needs more.
            server = Int((try await first.execute("SELECT current_setting('server_version_num')").first?.first ?? nil) ?? "") ?? 0
            try await TransactionPooler.refuse(c.connection, session: first, logger: logger)
            if let given = c.databases { names = given } else {
                names = try await first.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
                    .compactMap { $0.first ?? nil }
            }
            await first.close()
        } catch {
            await first.close()
            throw error
        }
        let bin = c.binDirectory ?? LocalCluster.defaultBinDirectory()
        let version = try await pgDumpVersion(bin: bin, serverVersion: server)
        logger.info("dump starting", metadata: ["wayback.dump": "\(id)", "databases": "\(names.count)"])

        // Ids are to the second: a dump already writing (or written) under this one is not overwritten.
        guard try await c.repository.driver.list(prefix: catalog.layout.dumpPrefix(id)).isEmpty else {
            throw WaybackError(.conflict, "a dump with the id \(id) already exists or is being written; start the dump again in a second")
        }
        await c.backupLog?.dumpStarted(id)
        let m: DumpManifest
        do {
            m = try await dumpAll(names, id: id, startTime: startTime, server: server, version: version, config: c, catalog: catalog, bin: bin,
                                  clock: clock, logger: logger)
            let failed = Set((c.repository.driver as? ReplicatedStorage)?.failures.map(\.repository) ?? [])
            await c.backupLog?.dumpFinished(m, holders: c.repository.members.map(\.name).filter { !failed.contains($0) })
        } catch {
            // Without its manifest the dump does not count: its objects are removed, not left behind.
            if let objects = try? await c.repository.driver.list(prefix: catalog.layout.dumpPrefix(id)) {
                try? await c.repository.driver.remove(keys: objects.map(\.key))
            }
            if let log = c.backupLog {
                let message = error is CancellationError ? "stopped before it finished (the daemon was shut down)"
                                                         : (error as? WaybackError)?.message ?? String(describing: error)
                await Task.detached { await log.dumpFailed(id, error: message) }.value
            }
            throw error
        }
        // Complete from here on: a pin that cannot be written is an error, the dump stays.
        if c.pin { try await catalog.pin(m.id, until: nil, now: clock.now) }
        return m
    }

    /// Objects of dumps without a manifest (a dump that was killed, an expiry interrupted): under
    /// the lock no dump is being written, so they are removed.
    static func removeIncomplete(_ catalog: Catalog, logger: Logger) async throws {
        var complete = Set<DumpID>(), objects = [DumpID: [String]]()
        for o in try await catalog.repository.driver.list(prefix: catalog.layout.dumpsPrefix) {
            guard case .dump(let id, let name)? = catalog.layout.parse(o.key) else { continue }
            // As the listings count it: the manifest itself (its copy is written first, and is all
            // an interrupted expiry leaves).
            if name == "manifest.json" { complete.insert(id) }
            objects[id, default: []].append(o.key)
        }
        for (id, keys) in objects where !complete.contains(id) {
            try await catalog.repository.driver.remove(keys: keys)
            logger.notice("removed the objects of dump \(id), which never finished")
        }
    }

    static func dumpAll(_ names: [String], id: DumpID, startTime: Date, server: Int, version: String, config c: DumpConfiguration,
                        catalog: Catalog, bin: String, clock: any WaybackClock, logger: Logger) async throws -> DumpManifest {
        var databases = [DumpManifest.Database]()
        for name in names {
            databases.append(try await dumpDatabase(name, id: id, config: c, catalog: catalog, bin: bin, logger: logger))
        }
        var globals: DumpManifest.Object?, note: String?
        do {
            let arguments = [bin + "/pg_dumpall", "--roles-only", "--no-role-passwords", "--no-password", "--quote-all-identifiers"]
            if c.supabase {
                // Small: read whole, the platform's roles commented out, then stored.
                let r = try await Command.execute(arguments, environment: c.connection.libpqEnvironment(), check: false)
                guard r.status == 0 else { throw WaybackError(.postgres, r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)) }
                globals = try await store(id: id, name: "globals.sql", catalog: catalog, compression: c.compression,
                                          bytes: Array(SupabasePreset.filterRoles(r.stdout).utf8))
            } else {
                globals = try await store(id: id, name: "globals.sql", catalog: catalog, compression: c.compression, arguments: arguments,
                                          environment: c.connection.libpqEnvironment())
            }
        } catch {
            note = "the roles were not dumped (pg_dumpall --roles-only: \((error as? WaybackError)?.message ?? String(describing: error)))"
            c.events.emit(.warning, .backupDecision, note!)
        }
        var manifest = DumpManifest(id: id, cluster: c.cluster, startTime: startTime, stopTime: clock.now, serverVersionNumber: server,
                                    pgDumpVersion: version, format: c.jobs > 1 ? "directory" : "custom", compression: c.compression, databases: databases,
                                    globals: globals, note: note)
        manifest.preset = c.supabase ? "supabase" : nil
        try await catalog.writeDumpManifest(manifest)
        logger.info("dump complete", metadata: ["wayback.dump": "\(id)", "bytes": "\(manifest.repositoryBytes)"])
        return manifest
    }

    /// One database: a transaction that exports its snapshot and counts every table in it, held
    /// open while `pg_dump --snapshot` reads the same snapshot.
    static func dumpDatabase(_ name: String, id: DumpID, config c: DumpConfiguration, catalog: Catalog, bin: String,
                             logger: Logger) async throws -> DumpManifest.Database {
        var settings = c.connection
        settings.database = name
        let session = try await PostgresSession.connect(settings, logger: logger)
        do {
            _ = try await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            guard let row = try await session.execute("SELECT pg_export_snapshot(), pg_current_snapshot()::text").first,
                  let exported = row[0], let snapshot = row[1] else {
                throw WaybackError(.postgres, "PostgreSQL exported no snapshot for database '\(name)'")
            }
            var counts = try await RowCounts.countHere(session, database: name, snapshot: snapshot)
            counts.tables = counts.tables.filter { table, _ in
                let schema = RowCounts.schema(of: table)
                return !c.excludeSchemas.contains(schema)
                    && !(c.supabase && (SupabasePreset.isPlatform(schema) || SupabasePreset.platformTables.contains(table)))
            }
            let digests = c.tableDigests ? try await RowCounts.digestsHere(session, tables: counts.tables.keys.sorted()) : nil
            let base = [bin + "/pg_dump", "--format=custom", "--compress=0", "--no-password", "--snapshot=\(exported)", "--dbname=" + ConnectionSettings.dbnameArgument(name)]
            var excluded = c.excludeSchemas.map { "--exclude-schema=\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
            if c.supabase { excluded += (SupabasePreset.platformSchemas + SupabasePreset.dataSchemas).map { "--exclude-schema=" + $0 } }
            let object: DumpManifest.Object, files: [DumpManifest.Object]?
            if c.jobs > 1 {
                let all = try await DirectoryDump.run(base.filter { $0 != "--format=custom" } + excluded, jobs: c.jobs,
                                                      spoolDirectory: c.spoolDirectory, database: name, id: id, catalog: catalog,
                                                      compression: c.compression, environment: settings.libpqEnvironment(database: name))
                let toc = DumpManifest.directoryPrefix(database: name) + "toc.dat"
                object = all.first { $0.name == toc }!
                files = all.filter { $0.name != toc }.sorted { $0.name < $1.name }
            } else {
                object = try await store(id: id, name: DumpManifest.objectName(database: name), catalog: catalog, compression: c.compression,
                                         arguments: base + excluded, environment: settings.libpqEnvironment(database: name))
                files = nil
            }
            var platform: DumpManifest.Object?
            if c.supabase {
                // auth and storage in the same snapshot, without the rows the target's platform writes.
                let present = try await session.execute("SELECT nspname FROM pg_namespace WHERE nspname IN ('auth', 'storage') ORDER BY 1").compactMap { $0.first ?? nil }
                if !present.isEmpty {
                    platform = try await store(id: id, name: DumpManifest.platformObjectName(database: name), catalog: catalog, compression: c.compression,
                                               arguments: base + present.map { "--schema=" + $0 } + SupabasePreset.platformTables.map { "--exclude-table-data=" + $0 },
                                               environment: settings.libpqEnvironment(database: name))
                }
            }
            _ = try await session.execute("COMMIT")
            await session.close()
            var db = DumpManifest.Database(name: name, object: object, rowCounts: counts, platform: platform)
            db.tableDigests = digests
            db.files = files
            return db
        } catch {
            await session.close()
            throw error
        }
    }

    /// A program's standard output, framed and stored as one object of the dump.
    static func store(id: DumpID, name: String, catalog: Catalog, compression: CompressionSettings, arguments: [String],
                      environment: [String: String]) async throws -> DumpManifest.Object {
        try await storeObject(id: id, name: name, catalog: catalog, compression: compression) { emit in
            _ = try await Command.stream(arguments, environment: environment, chunkSize: FrameFormat.rawChunk) { try await emit($0) }
        }
    }

    /// Bytes already in memory (the filtered roles), framed and stored as one object.
    static func store(id: DumpID, name: String, catalog: Catalog, compression: CompressionSettings, bytes: [UInt8]) async throws -> DumpManifest.Object {
        try await storeObject(id: id, name: name, catalog: catalog, compression: compression) { emit in
            for start in stride(from: 0, to: bytes.count, by: FrameFormat.rawChunk) {
                try await emit(Array(bytes[start..<min(bytes.count, start + FrameFormat.rawChunk)]))
            }
        }
    }

    /// The one writer of a dump's objects: the chunks `produce` emits (at most a frame's worth
    /// each) framed, compressed and written through the repository set, with the size and SHA-256
    /// of the stored and of the plain bytes.
    static func storeObject(id: DumpID, name: String, catalog: Catalog, compression: CompressionSettings,
                            _ produce: (_ emit: ([UInt8]) async throws -> Void) async throws -> Void) async throws -> DumpManifest.Object {
        let compressor = Compressor(compression)
        var plain = SHA256Hasher(), plainSize: Int64 = 0
        let (size, sha) = try await catalog.repository.driver.withWriter(catalog.layout.dumpObjectKey(id, name), options: WriteOptions()) { writer in
            let frames = FrameWriter(writer: writer)
            try await produce { chunk in
                plain.update(chunk)
                plainSize += Int64(chunk.count)
                try await frames.append(frame: try chunk.withUnsafeBytes { try FrameFormat.encode($0, compressor: compressor) })
            }
            return (frames.offset, frames.finalizeSHA256())
        }
        return DumpManifest.Object(name: name, size: size, sha256: sha, plainSize: plainSize, plainSHA256: plain.finalizeHex())
    }

    /// `pg_dump --version`; its major version must be at least the server's.
    static func pgDumpVersion(bin: String, serverVersion: Int) async throws -> String {
        let path = bin + "/pg_dump"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw WaybackError(.cluster, "pg_dump is not in \(bin); install the PostgreSQL client of the server's version (apt install postgresql-client-\(serverVersion / 10000)) or set WAYBACK_PG_BIN")
        }
        let out = try await Command.execute([path, "--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let major = out.split(separator: " ").last.flatMap { Int($0.split(separator: ".").first ?? "") } ?? 0
        guard major >= serverVersion / 10000 else {
            throw WaybackError(.cluster, "\(out) cannot dump a PostgreSQL \(serverVersion / 10000) server: pg_dump \(serverVersion / 10000) or newer is needed (apt install postgresql-client-\(serverVersion / 10000), then set WAYBACK_PG_BIN to its bin directory)")
        }
        return out
    }
}
