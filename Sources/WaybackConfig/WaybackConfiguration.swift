import WaybackCore
import WaybackMonitor
import WaybackPostgres
import WaybackS3
import WaybackStorage

/// What a cluster entry protects (`cluster.type`).
public enum ClusterType: String, Sendable, CaseIterable { case physical, logical }

/// The whole configuration, read once at the edge (file, environment) and passed down as values:
/// one plain value per domain, with enums where a key takes one of a few words.
public struct WaybackConfiguration: Sendable {
    public struct ClusterSettings: Sendable {
        public var name: String
        /// Physical: a data directory Wayback backs up and archives; logical: a server reached
        /// only by its connection (hosted Supabase, managed PostgreSQL), protected by dumps.
        public var type: ClusterType = .physical
        /// The data directory (empty for a logical cluster).
        public var pgdata: String
        public var connection: ConnectionSettings
        public init(name: String, type: ClusterType = .physical, pgdata: String, connection: ConnectionSettings) {
            self.name = name; self.type = type; self.pgdata = pgdata; self.connection = connection
        }

        /// Throws for a command that needs a data directory when the cluster is logical.
        public func requirePhysical(_ command: String) throws {
            guard type == .physical else {
                throw WaybackError(.config, "cluster '\(name)' is a logical cluster (cluster.type: logical): it has no data directory, so '\(command)' does not apply; it is protected by 'wayback dump' (restore with 'wayback restore-dump')")
            }
        }
    }

    public struct RepositorySettings: Sendable {
        public var name: String
        public var type: RepositoryType
        /// The directory of a local repository; the `s3://bucket/prefix` address of an S3 one.
        public var path: String
        public var s3: S3Settings?
        /// How `wal-push` feeds this repository (the first one: always `sync`).
        public var walPush: WALPushMode
        /// Client-side encryption of everything stored in this repository (nil: none).
        public var encryption: EncryptionKeySource? = nil
        /// The space an S3 repository may use (`quota_gb`; nil: no quota).
        public var quotaBytes: Int64? = nil
        /// What `expire` keeps here (`retention:`, with this repository's own keys on top).
        public var retention = RetentionPolicy.default
    }

    public struct BackupSettings: Sendable {
        /// How long a backup waits for its WAL in the archive.
        public var archiveWaitSeconds: Double
        public var fastCheckpoint: Bool
        public var pageChecksumFailures: PageChecksumPolicy
        /// The most backups one restore chain may hold.
        public var maxChainLength: Int
        /// A backup worker starts a new pack object after this many bytes.
        public var packSizeBytes: Int64
        /// Read the data directory at most this fast (bytes/s; nil: no limit).
        public var maxRateBytes: Int64?
        /// Count every table's rows right after the backup (a drill compares them).
        public var recordRowCounts = false
        /// How a diff/incr finds the changed pages.
        public var incrMethod = IncrementalMethod.wal
    }

    public struct RestoreSettings: Sendable {
        /// WAL segments `wal-fetch` fetches ahead during recovery (0: none).
        public var prefetchSegments: Int
    }

    public struct ArchiveSettings: Sendable {
        /// Where `wal-push` queues segments for asynchronous repositories.
        public var spoolPath: String
        /// Bytes queued for one asynchronous repository above which `wal-push` warns and stops
        /// queueing (the drainer then catches up by comparing listings).
        public var spoolLimitBytes: Int64
        /// Whether the daemon stores WAL segments before PostgreSQL asks (`PushAhead`).
        public var pushAhead: Bool
    }

    public var path: String
    public var cluster: ClusterSettings
    public var repositories: [RepositorySettings]
    public var compression: CompressionSettings
    /// How the changed pages of incr and diff backups are compressed (`compression.incremental`:
    /// LZ4 level 1 by default, else `compression` itself).
    public var pageCompression: CompressionSettings
    public var parallelism: Int
    public var lockPath: String
    public var logLevel: LogLevel
    public var backup: BackupSettings
    public var restore: RestoreSettings
    public var archive: ArchiveSettings
    /// Disk-space thresholds (`monitor:`), in percent used.
    public var diskWarnPercent: Double = 80
    public var diskCriticalPercent: Double = 90

    /// When the daemon runs each job (`schedule:`).
    public struct ScheduleSettings: Sendable, Equatable {
        public enum Expire: Sendable, Equatable { case afterBackup, cron(CronExpression) }
        public var timeZone: String
        public var full: CronExpression?
        public var incr: CronExpression?
        public var diff: CronExpression?
        /// nil: the daemon never expires.
        public var expire: Expire?
        public var retries: Int
        public var stopTimeoutSeconds: Double
        /// nil: the daemon never verifies.
        public var verify: CronExpression?
        /// Restore drills: of the newest backup, of the newest at least `drill.aged` old, and from
        /// the last repository alone (nil: off).
        public var drill: CronExpression?
        public var drillAged: CronExpression?
        public var drillOffsite: CronExpression?
        /// The daily integrity report (nil: off).
        public var report: CronExpression?
        /// Logical dumps of every database (`wayback dump`; nil: off).
        public var dump: CronExpression?
        /// `wayback repo sync` into every repository from the others (only with two or more
        /// repositories): a backup or WAL a repository missed (an outage) is copied there.
        public var sync: CronExpression?
    }

    public struct DrillSettings: Sendable, Equatable {
        public struct Assertion: Sendable, Equatable {
            public var name: String
            public var database: String
            public var sql: String
        }
        public var scratchDirectory = "/var/tmp/wayback-drill"
        public var rtoSeconds: Double = 900
        public var rpoSeconds: Double = 3600
        /// The age of the backup `schedule.drill_aged` drills.
        public var agedSeconds: Double = 7 * 86400
        public var assertions: [Assertion] = []
    }

    /// `monitor:`: the daemon's HTTP listener (`/metrics`, `/`, `/status.json`).
    public struct MonitorSettings: Sendable, Equatable {
        /// nil: no listener (`monitor.listen: null`).
        public var host: String? = "127.0.0.1"
        public var port = 9187
        /// A file holding the bearer token every request must carry (nil: none).
        public var tokenFile: String?
        /// How often the daemon gathers what it serves (and after each job).
        public var refreshSeconds: Double = 60
    }
    public var monitor = MonitorSettings()

    /// `notifications:`: where the daemon sends what happens, and how often it repeats a problem.
    public struct NotificationSettings: Sendable, Equatable {
        public var repeatSeconds: Double = 6 * 3600
        public var sinks: [SinkSettings] = []
    }
    public var notifications = NotificationSettings()

    /// `check:`: the thresholds of `wayback check`.
    public var check = HealthThresholds()

    /// `dump:`: what `wayback dump` (and `schedule.dump`) takes.
    public struct DumpSettings: Sendable, Equatable {
        /// nil: every database that accepts connections.
        public var databases: [String]?
        public var excludeSchemas: [String] = []
        /// The preset for Supabase projects (docs/logical-backups.md).
        public var supabase = false
        /// A content digest of every table in the dump's snapshot, checked by restore-dump.
        public var tableDigests = false
        /// pg_dump's workers: 2 or more use the directory format, 1 the custom format.
        public var jobs = 2
        /// Where the directory format's files wait to be stored.
        public var spoolDirectory = "/var/tmp"
    }
    public var dump = DumpSettings()

    public var schedule = ScheduleSettings(timeZone: "UTC", full: nil, incr: nil, diff: nil, expire: nil, retries: 2, stopTimeoutSeconds: 60)
    /// What `expire` keeps (`retention:`; each repository may override it).
    public var retention = RetentionPolicy.default
    /// The share of verified objects `verify` reads again each run.
    public var verifyResamplePercent = 10
    /// `drill:`.
    public var drill = DrillSettings()
    /// Where the daemon writes the daily report, and for how many days it keeps them.
    public var reportDirectory = "/tmp/wayback/reports"
    public var reportKeepDays = 30
    /// Where `backup_logs` is written (nil: `catalog.enabled: false`).
    public var catalog: CatalogSettings?
    /// `WAYBACK_PG_BIN`: the PostgreSQL bin directory for the clusters Wayback starts (nil: the
    /// one of each data directory's version).
    public var pgBinDirectory: String?
    /// Keys of the file that hold a secret (a password in `cluster.connection`, an S3 secret key).
    public var secretKeysInFile: [String] = []
    /// What the command should warn about before it starts (a readable file with secrets).
    public var warnings: [String] = []

    /// Names of the repositories `wal-push` writes before it returns, and of those it queues for.
    public func repositoryNames(walPush mode: WALPushMode) -> [String] { repositories.filter { $0.walPush == mode }.map(\.name) }
}

