import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// `wayback init`: checks the cluster and binds a repository to it.
public enum ClusterSetup {
    public struct Report: Sendable {
        public var facts: ClusterFacts
        public var pgdataOwner: String
        public var alreadyInitialized: Bool
        /// Repositories that got the binding now (the others already had it).
        public var initialized: [String]
        public var archiveCommand: String
        public var restoreCommand: String
        /// Settings the server still needs, with the reason (empty when all is set).
        public var todo: [String]
        /// The catalog's migrations applied now (nil: the catalog is switched off).
        public var catalogMigrations: [Int]?
    }

    /// - Parameters:
    ///   - waybackCommand: how PostgreSQL should call wayback (`/usr/bin/wayback --config F`).
    public static func initialize(repository: Repository, cluster: String, pgdata: String, connection: ConnectionSettings,
                                  waybackCommand: String, lockDirectory: String, catalog: CatalogSettings? = nil,
                                  clock: any WaybackClock = SystemClock(), logger: Logger) async throws -> Report {
        // Run as root, the lock directory is made for the PostgreSQL OS user (who takes backups).
        let pgdataOwner = try FileSystem.status(pgdata, followLinks: true).map { (uid: $0.uid, gid: $0.gid) }
        let session = try await PostgresSession.connect(connection, logger: logger)
        let facts: ClusterFacts
        do { facts = try await session.facts(); await session.close() } catch { await session.close(); throw error }
        let lock = try RepositoryLock.acquire(directory: lockDirectory, cluster: cluster, systemIdentifier: facts.systemIdentifier,
                                              repository: repository, command: "init", owner: pgdataOwner)
        defer { lock.release() }

        guard facts.majorVersion >= 13 else {
            throw WaybackError(.cluster, "PostgreSQL \(facts.majorVersion) is not supported; Wayback needs PostgreSQL 13 or newer")
        }
        guard facts.walLevel != "minimal" else {
            throw WaybackError(.cluster, "wal_level is 'minimal'; set wal_level = replica in postgresql.conf and restart PostgreSQL, then run 'wayback init' again")
        }
        var owner = "unknown"
        if let st = try FileSystem.status(pgdata, followLinks: true) {
            owner = getpwuid(st.uid).map { String(cString: $0.pointee.pw_name) } ?? String(st.uid)
        } else {
            throw WaybackError(.config, "cluster.pgdata \(pgdata) does not exist or is not readable by this user; fix cluster.pgdata")
        }
        try facts.requireDataDirectory(pgdata)

        // Each repository on its own: one added later gets the binding too.
        let binding = ClusterBinding(
            cluster: cluster, systemIdentifier: facts.systemIdentifier, pgMajorVersion: facts.majorVersion,
            pgVersionNumber: facts.versionNumber, walSegmentSize: facts.walSegmentSize, blockSize: facts.blockSize,
            dataChecksums: facts.dataChecksums, created: clock.now)
        let initialized = try await bind(repository, binding: binding) { member, existing in
            guard !existing.isLogical else {
                throw WaybackError(.repository, "\(member.description) holds cluster '\(cluster)' as a logical cluster (dumps only); choose another cluster.name for the physical cluster")
            }
            guard existing.systemID == facts.systemIdentifier else {
                throw WaybackError(.repository, "\(member.description) already holds cluster '\(cluster)' with system identifier \(existing.systemIdentifier), but this server is \(facts.systemIdentifier); choose another cluster.name or repository")
            }
            guard existing.pgMajorVersion == facts.majorVersion else {
                throw WaybackError(.repository, "\(member.description) cluster '\(cluster)' was made for PostgreSQL \(existing.pgMajorVersion), this server is \(facts.majorVersion); use a new cluster.name after a major upgrade")
            }
        }
        let already = initialized.isEmpty
        let archive = "\(waybackCommand) wal-push %p"
        let restore = PrefetchSpool.stoppingOnError("\(waybackCommand) wal-fetch %f %p")
        var todo = [String]()
        if facts.archiveMode != "on" && facts.archiveMode != "always" { todo.append("archive_mode = on (needs a restart)") }
        if !Self.sameCommand(facts.archiveCommand, archive, resolve: FileSystem.realPath) {
            todo.append("archive_command = '\(archive)' (then SELECT pg_reload_conf())")
        }
        let migrations = try await migrate(catalog, logger: logger)
        return Report(facts: facts, pgdataOwner: owner, alreadyInitialized: already, initialized: initialized, archiveCommand: archive,
                      restoreCommand: restore, todo: todo, catalogMigrations: migrations)
    }

    /// Whether the server's `archive_command` is the one Wayback would set: the same words, where
    /// the program and the `--config` file may be named by another path to the same file (a
    /// symbolic link, `.build/release`). Anything else (a wrapper script, quoting) must be
    /// written as `expected` to count. `resolve` is realpath(3) (injected for tests).
    static func sameCommand(_ current: String, _ expected: String, resolve: (String) -> String?) -> Bool {
        if current == expected { return true }
        let have = current.split(separator: " ").map(String.init), want = expected.split(separator: " ").map(String.init)
        guard have.count == want.count, !current.contains("\""), !current.contains("'") else { return false }
        for (i, (a, b)) in zip(have, want).enumerated() where a != b {
            // The program, and the value of --config: the same file by another path.
            guard i == 0 || want[i - 1] == "--config", a.hasPrefix("/"), let ra = resolve(a), let rb = resolve(b), ra == rb else { return false }
        }
        return true
    }

    /// What `init` did for a logical cluster.
    public struct LogicalReport: Sendable {
        public var versionNumber: Int
        public var systemIdentifier: UInt64
        public var initialized: [String]
        public var catalogMigrations: [Int]?
    }

    /// `wayback init` of a logical cluster (`cluster.type: logical`): no data directory and no
    /// archive; the server is reached by its connection alone (a managed PostgreSQL). Checks that
    /// it answers and is not behind a transaction pooler, binds the repositories (type `logical`;
    /// the system identifier where the server shows it, else 0) and sets up the catalog.
    public static func initializeLogical(repository: Repository, cluster: String, connection: ConnectionSettings, lockDirectory: String,
                                         catalog: CatalogSettings? = nil, clock: any WaybackClock = SystemClock(),
                                         logger: Logger) async throws -> LogicalReport {
        let session = try await PostgresSession.connect(connection, logger: logger)
        let version: Int, systemID: UInt64
        do {
            version = Int((try await session.execute("SELECT current_setting('server_version_num')").first?.first ?? nil) ?? "") ?? 0
            // Managed services may hide it (the report shows 0 then).
            systemID = (try? await session.execute("SELECT system_identifier::text FROM pg_control_system()"))?.first?.first?.flatMap { UInt64($0) } ?? 0
            try await TransactionPooler.refuse(connection, session: session, logger: logger)
            await session.close()
        } catch {
            await session.close()
            throw error
        }
        let lock = try RepositoryLock.acquire(directory: lockDirectory, cluster: cluster, systemIdentifier: 0, repository: repository, command: "init")
        defer { lock.release() }
        // Always 0 in the binding: the lock's name must not depend on what the server shows.
        var binding = ClusterBinding(cluster: cluster, systemIdentifier: 0, pgMajorVersion: version / 10000, pgVersionNumber: version,
                                     walSegmentSize: 0, blockSize: 0, dataChecksums: false, created: clock.now)
        binding.type = ClusterBinding.logicalType
        let initialized = try await bind(repository, binding: binding) { member, existing in
            guard existing.isLogical else {
                throw WaybackError(.repository, "\(member.description) holds cluster '\(cluster)' as a physical cluster (system identifier \(existing.systemIdentifier)); a logical cluster needs its own cluster.name")
            }
        }
        return LogicalReport(versionNumber: version, systemIdentifier: systemID, initialized: initialized,
                             catalogMigrations: try await migrate(catalog, logger: logger))
    }

    /// Writes `binding` to each repository that has none (settling its encryption first), after
    /// `compatible` accepted the binding of each that has one. Returns the repositories bound now.
    static func bind(_ repository: Repository, binding: ClusterBinding,
                     compatible: (Repository, ClusterBinding) throws -> Void) async throws -> [String] {
        var initialized = [String]()
        for member in repository.members {
            // Encryption is settled when a repository is created: an encrypted one gets its
            // settings now (or has its key checked); a plain one must not be an encrypted one.
            if let encrypted = member.driver as? EncryptedStorage {
                try await encrypted.initialize()
            } else {
                try await EncryptedStorage.requirePlain(member.driver, name: member.name)
            }
            let catalog = Catalog(repository: member, cluster: binding.cluster)
            if let existing = try await catalog.binding() {
                try compatible(member, existing)
            } else {
                try await catalog.writeBinding(binding)
                initialized.append(member.name)
            }
        }
        return initialized
    }

    /// The catalog's migrations (nil: switched off); the repositories are bound by then.
    static func migrate(_ catalog: CatalogSettings?, logger: Logger) async throws -> [Int]? {
        guard let catalog else { return nil }
        do {
            let store = try await CatalogStore.open(catalog, logger: logger)
            do { let m = try await store.migrate(); await store.close(); return m } catch { await store.close(); throw error }
        } catch {
            let reason = (error as? WaybackError)?.message ?? String(describing: error)
            throw WaybackError(.connection, "the repositories are initialised, but the backup_logs catalog (schema \(catalog.schema) at \(catalog.connection.redacted)) could not be set up: \(reason); fix catalog.connection (or set catalog.enabled: false) and run 'wayback init' again")
        }
    }
}
