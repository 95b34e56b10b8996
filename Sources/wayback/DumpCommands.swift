import ArgumentParser
import Foundation
import WaybackBackup
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackRestore
import WaybackStorage

struct DumpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "A logical backup: pg_dump of each database, streamed into the repositories with the row count of every table.",
        discussion: """
            Runs the installed pg_dump (its major version at least the server's) in a snapshot Wayback \
            exports, and counts every table's rows in that same snapshot: with dump.jobs 2 or more in the \
            directory format, each file stored as pg_dump closes it (dump.spool_dir holds only the tables \
            in flight), with dump.jobs 1 the custom format streamed; through the repositories' compression \
            and encryption to every repository. \
            pg_dumpall --roles-only --no-role-passwords adds the roles where the server permits it. \
            restore-dump restores a dump and checks the counts.

            Examples:
              wayback dump                           # every database
              wayback dump --database shop --json
              wayback dump --pin                     # before a migration: kept
            """)
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("database"), help: ArgumentHelp("Dump this database (repeat for more); default: every database that accepts connections.", valueName: "name"))
    var databases: [String] = []
    @Flag(help: "Print the dump's manifest as JSON.") var json = false
    @Flag(help: "Pin the dump: retention never expires it ('wayback unpin' lets it go).") var pin = false

    func run() async throws {
        try await CommandRun.with(global.configPath, .dump) { run in
            let repository = try run.repository()
            var dump = run.dumpConfiguration(repository, databases: databases.isEmpty ? nil : databases)
            dump.pin = pin
            let m = try await LogicalDump.run(dump, logger: run.logger)
            if json { try Context.printJSON(m) } else {
                print(m.id)
                for d in m.databases {
                    print("  \(d.name): \(Format.bytes(d.plainBytes)) dumped, \(Format.bytes(d.storedBytes)) stored\(d.files.map { " in \($0.count + 1) files" } ?? ""), \(d.rowCounts.tables.count) tables counted")
                }
                print("  roles: " + (m.globals.map { "\(Format.bytes($0.plainSize))" } ?? (m.note ?? "not dumped")))
            }
            try Context.requireEveryRepository(repository, what: "dump \(m.id)")
        }
    }
}

extension CommandRun {
    /// What a dump of this configuration does (`databases`: given on the command line, else
    /// `dump.databases`), under the cluster's lock, recorded in `backup_logs`.
    func dumpConfiguration(_ repository: Repository, databases: [String]?) -> DumpConfiguration {
        var dump = DumpConfiguration(repository: repository, cluster: config.cluster.name, connection: config.cluster.connection,
                                     compression: config.compression, databases: databases ?? config.dump.databases,
                                     binDirectory: config.pgBinDirectory, events: events)
        dump.excludeSchemas = config.dump.excludeSchemas
        dump.lockDirectory = config.lockPath
        dump.backupLog = backupLog()
        dump.logicalCluster = config.cluster.type == .logical
        dump.supabase = config.dump.supabase
        dump.tableDigests = config.dump.tableDigests
        dump.jobs = config.dump.jobs
        dump.spoolDirectory = config.dump.spoolDirectory
        return dump
    }
}

struct RestoreDumpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore-dump",
        abstract: "Restore a logical dump into an empty database and check every table's rows against the dump's counts.",
        discussion: """
            The dump is read from the repositories (its SHA-256 checked), decoded into a private folder for \
            pg_restore --jobs, restored into the database of --into (refused when it holds relations, unless \
            --clean), then every table is counted: exit 0 only when each holds the rows the dump counted \
            (22 names each table that differs). The password of --into can come from PGPASSWORD.

            Examples:
              wayback restore-dump --backup 20261206-020000L --list
              wayback restore-dump --backup 20261206-020000L --database shop \\
                  --into 'postgresql://postgres@/shop_copy?host=/var/run/postgresql'
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: ArgumentHelp("The dump to restore (its id ends in L).", valueName: "id")) var backup: String
    @Option(help: ArgumentHelp("The database to restore into, as a postgresql:// URL (not needed with --list or --dry-run).", valueName: "url")) var into: String?
    @Option(help: ArgumentHelp("Which of the dump's databases (needed when it holds several).", valueName: "name")) var database: String?
    @Option(help: "pg_restore's parallel jobs.") var jobs: Int = 2
    @Option(help: ArgumentHelp("Where the dump is decoded for pg_restore (default: dump.spool_dir); it needs room for the plain dump.", valueName: "dir"))
    var spoolDir: String?
    @Flag(help: "Drop what the dump holds from the target before restoring it (pg_restore --clean --if-exists).") var clean = false
    @Flag(help: "Restore without owners and grants (when the target lacks the dump's roles).") var noOwner = false
    @Flag(help: "Show what the dump holds (databases, sizes, tables and their row counts) and restore nothing.") var list = false
    @Flag(help: "Read and check the dump (SHA-256, and pg_restore --list of each archive) and restore nothing.") var dryRun = false
    @Flag(help: "Print the dump's roles (globals.sql, without passwords) as SQL, to create them on the target first.") var globals = false
    @Flag(help: "Print the report as JSON.") var json = false

    func run() async throws {
        guard let id = DumpID(backup) else { throw WaybackError(.usage, "--backup '\(backup)' is not a dump id (e.g. 20261206-020000L); 'wayback status' lists them") }
        try await CommandRun.with(global.configPath, .restore) { run in
            if globals {
                print(try await DumpRestore.globals(repository: try run.repository(), cluster: run.config.cluster.name, id: id, events: run.events), terminator: "")
                return
            }
            if list || dryRun { try await self.inspect(run, id: id); return }
            guard let into else { throw WaybackError(.usage, "say where to restore: --into postgresql://... (or --list, --dry-run)") }
            guard into.hasPrefix("postgresql://") || into.hasPrefix("postgres://") else {
                throw WaybackError(.usage, "--into must be a postgresql:// URL, e.g. postgresql://postgres@localhost:5432/shop_copy")
            }
            // The database is named: a URL without one would mean the production cluster's.
            let path = into.drop { $0 != "/" }.dropFirst(2).drop { $0 != "/" }.dropFirst().prefix { $0 != "?" }
            guard !path.isEmpty else {
                throw WaybackError(.usage, "--into must name the database to restore into, e.g. postgresql://postgres@localhost:5432/shop_copy")
            }
            var defaults = run.config.cluster.connection
            defaults.password = ProcessInfo.processInfo.environment["PGPASSWORD"]
            let target = try ConnectionSettings.parse(url: into, defaults: defaults)
            var c = DumpRestoreConfiguration(repository: try run.repository(), cluster: run.config.cluster.name, id: id, target: target, database: database)
            c.clean = clean; c.noOwner = noOwner; c.jobs = jobs; c.binDirectory = run.config.pgBinDirectory; c.events = run.events
            c.spoolDirectory = spoolDir.map(FileSystem_absolute) ?? run.config.dump.spoolDirectory
            let r = try await DumpRestore.run(c, logger: run.logger)
            if json { try Context.printJSON(r) } else {
                print("dump \(r.dump) (database \(r.database)) restored into \(r.target) in \(Format.seconds(r.restoreSeconds)); \(r.tables) tables counted in \(Format.seconds(r.checkSeconds))")
                for d in r.differences { print("  DIFFERS \(d)") }
                print(r.matches ? "every table holds the rows the dump counted" : "\(r.differences.count) table(s) differ")
            }
            if !r.matches {
                throw WaybackError(.mismatch, "\(r.differences.count) table(s) of the restored dump do not hold the rows it counted: \(r.differences.prefix(3).joined(separator: "; "))")
            }
        }
    }

    /// `--list` and `--dry-run`.
    func inspect(_ run: CommandRun, id: DumpID) async throws {
        let repository = try run.repository()
        if dryRun {
            let checked = try await DumpRestore.dryRun(repository: repository, cluster: run.config.cluster.name, id: id, database: database,
                                                       spoolDirectory: spoolDir.map(FileSystem_absolute) ?? run.config.dump.spoolDirectory,
                                                       binDirectory: run.config.pgBinDirectory, events: run.events)
            for c in checked { print("database \(c.database): \(Format.bytes(c.bytes)) read, SHA-256 as recorded, \(c.entries) archive entries") }
            print("dump \(id) is sound; nothing was restored")
            return
        }
        let m = try await Catalog(repository: repository, cluster: run.config.cluster.name).dumpManifest(id)
        if json { try Context.printJSON(m); return }
        print("dump \(m.id): \(Format.timestamp(m.startTime)) to \(Format.timestamp(m.stopTime)), PostgreSQL \(Format.postgresVersion(m.serverVersionNumber)), \(m.pgDumpVersion), format \(m.format)"
              + (m.isSupabase ? ", Supabase preset" : ""))
        for d in m.databases where database == nil || d.name == database {
            print("database \(d.name): \(Format.bytes(d.plainBytes)) (\(Format.bytes(d.storedBytes)) stored), \(d.rowCounts.tables.count) tables"
                  + (d.platform.map { "; auth and storage data \(Format.bytes($0.plainSize))" } ?? ""))
            for (table, rows) in d.rowCounts.tables.sorted(by: { $0.key < $1.key }) { print("  \(table): \(rows) rows") }
        }
        print("roles: " + (m.globals.map { Format.bytes($0.plainSize) } ?? (m.note ?? "not dumped")))
    }
}
