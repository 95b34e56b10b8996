import WaybackCore
import WaybackMonitor

/// One configuration key: where it is (`*` for a list index), its type, its default, and whether
/// its value is a secret. The table below is the only place that says so: the loader validates and
/// reads through it, the environment names come from it, and docs/configuration.md ("Every key")
/// is checked against it by a test.
public struct ConfigKey: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case string
        /// An absolute path.
        case path
        /// A whole number, within the range when there is one.
        case int(ClosedRange<Int>?)
        /// A number, at least the bound when there is one.
        case number(atLeast: Double?)
        case bool
        /// One of these words (in any case).
        case choice([String])
    }

    public enum Default: Sendable, Equatable {
        /// The file (or the environment) must give it.
        case required
        /// Absent means not set (no default).
        case none
        /// This value, as it would be written in the file.
        case value(String)
        /// Computed from other settings; the text says how (for the docs).
        case derived(String)
    }

    public var path: String
    public var kind: Kind
    public var defaultValue: Default
    public var secret: Bool

    init(_ path: String, _ kind: Kind, _ defaultValue: Default = .none, secret: Bool = false) {
        self.path = path
        self.kind = kind
        self.defaultValue = defaultValue
        self.secret = secret
    }

    /// The environment variable that overrides the key: `WAYBACK_` + the path in upper case with
    /// `.` as `_` (list indexes included: `repositories.0.path` -> `WAYBACK_REPOSITORIES_0_PATH`).
    public static func environmentName(_ path: String) -> String {
        "WAYBACK_" + String(path.uppercased().map { $0 == "." ? "_" : $0 })
    }

    /// Whether `key` (with list indexes) is this key.
    func matches(_ key: String) -> Bool {
        let pp = path.split(separator: "."), parts = key.split(separator: ".")
        return pp.count == parts.count && zip(pp, parts).allSatisfy { $0 == $1 || ($0 == "*" && Int($1) != nil) }
    }

    // MARK: the docs' words

    var typeText: String {
        switch kind {
        case .string: return "text"
        case .path: return "absolute path"
        case .int(let r):
            guard let r else { return "whole number" }
            return r.upperBound == Int.max ? "whole number, at least \(r.lowerBound)" : "whole number, \(r.lowerBound)-\(r.upperBound)"
        case .number(let min): return min.map { "number, at least \(Self.plain($0))" } ?? "number"
        case .bool: return "true or false"
        case .choice(let words): return words.joined(separator: ", ")
        }
    }

    var defaultText: String {
        switch defaultValue {
        case .required: return "required"
        case .none: return "none"
        case .value(let v): return v
        case .derived(let how): return how
        }
    }

    static func plain(_ d: Double) -> String { d == d.rounded() ? String(Int(d)) : String(d) }

    /// The row of the docs' table: key, type, default, secret.
    public var docRow: [String] { ["`\(path)`", typeText, defaultText, secret ? "yes" : ""] }
}

/// The keys of the configuration file, section by section.
public enum ConfigSchema {
    public static let keys: [ConfigKey] = [
        ConfigKey("cluster.name", .string, .required),
        ConfigKey("cluster.type", .choice(ClusterType.allCases.map(\.rawValue)), .value("physical")),
        ConfigKey("cluster.pgdata", .path, .derived("required when cluster.type is physical; not set for logical")),
        ConfigKey("cluster.connection", .string, .derived("libpq's variables, else postgresql://postgres@/postgres?host=/var/run/postgresql")),

        ConfigKey("repositories.*.name", .string, .derived("local for the first, then repo2, repo3 ...")),
        ConfigKey("repositories.*.type", .choice(RepositoryType.allCases.map(\.rawValue)), .value("local")),
        ConfigKey("repositories.*.path", .path, .derived("required for type local")),
        ConfigKey("repositories.*.wal_push", .choice(WALPushMode.allCases.map(\.rawValue)), .derived("sync for the first, async for the others")),
        ConfigKey("repositories.*.encryption.key_file", .path),
        ConfigKey("repositories.*.encryption.passphrase_env", .string),
        ConfigKey("repositories.*.bucket", .string, .derived("required for type s3")),
        ConfigKey("repositories.*.region", .string, .derived("AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1")),
        ConfigKey("repositories.*.endpoint", .string, .derived("AWS's endpoint of the region")),
        ConfigKey("repositories.*.path_style", .bool, .value("false")),
        ConfigKey("repositories.*.prefix", .string, .value("\"\"")),
        ConfigKey("repositories.*.ca_file", .path),
        ConfigKey("repositories.*.access_key_id", .string, .derived("see docs/s3.md")),
        ConfigKey("repositories.*.secret_access_key", .string, .derived("see docs/s3.md"), secret: true),
        ConfigKey("repositories.*.session_token", .string, secret: true),
        ConfigKey("repositories.*.credentials_file", .path),
        ConfigKey("repositories.*.profile", .string, .derived("AWS_PROFILE, else default")),
        ConfigKey("repositories.*.sse", .choice(["none", "AES256", "sse-s3", "aws:kms", "sse-kms", "kms"]), .value("none")),
        ConfigKey("repositories.*.sse_kms_key_id", .string),
        ConfigKey("repositories.*.storage_class", .string),
        ConfigKey("repositories.*.part_size_mb", .int(5...5120), .value("16")),
        ConfigKey("repositories.*.upload_concurrency", .int(1...64), .value("4")),
        ConfigKey("repositories.*.request_timeout_seconds", .number(atLeast: nil), .value("120")),
        ConfigKey("repositories.*.deadline_seconds", .number(atLeast: nil), .value("900")),
        ConfigKey("repositories.*.quota_gb", .number(atLeast: 0), .derived("none: no quota (S3 repositories)")),
    ] + retention.map { ConfigKey("repositories.*.retention.\($0.name)", $0.kind, .derived("retention.\($0.name)")) } + [

        ConfigKey("compression.algorithm", .choice(["zstd", "lz4", "gzip", "none"]), .value("zstd")),
        ConfigKey("compression.level", .int(nil), .derived("1 (gzip: 6); zstd 1-19, lz4 1-12, gzip 1-9")),
        ConfigKey("compression.incremental", .choice(["lz4", "same"]), .value("lz4")),
        ConfigKey("parallelism", .int(1...64), .value("2")),
        ConfigKey("lock_path", .path, .value("/tmp/wayback")),
        ConfigKey("log_level", .choice(LogLevel.allCases.map(\.rawValue)), .value("info")),

        ConfigKey("backup.archive_wait_seconds", .number(atLeast: nil), .value("120")),
        ConfigKey("backup.fast_checkpoint", .bool, .value("true")),
        ConfigKey("backup.page_checksum_failures", .choice(PageChecksumPolicy.allCases.map(\.rawValue)), .value("warn")),
        ConfigKey("backup.max_chain_length", .int(1...Int.max), .value("30")),
        ConfigKey("backup.pack_size_mb", .int(1...4096), .value("256")),
        ConfigKey("backup.max_rate_mb", .int(0...Int.max), .value("0")),
        ConfigKey("backup.record_row_counts", .bool, .value("false")),
        ConfigKey("backup.incr_method", .choice(IncrementalMethod.allCases.map(\.rawValue)), .value("wal")),

        ConfigKey("restore.prefetch_segments", .int(0...256), .value("8")),

        ConfigKey("archive.spool_path", .path, .derived("<cluster.pgdata>/pg_wal/wayback-spool")),
        ConfigKey("archive.spool_limit_mb", .int(16...Int.max), .value("4096")),
        ConfigKey("archive.push_ahead", .bool, .value("true")),

    ] + retention.map { ConfigKey("retention.\($0.name)", $0.kind, .value($0.value)) } + [

        ConfigKey("schedule.timezone", .string, .value("UTC")),
        ConfigKey("schedule.full", .string, .derived("0 2 * * * (null for a logical cluster)")),
        ConfigKey("schedule.incr", .string, .derived("0 * * * * (null for a logical cluster)")),
        ConfigKey("schedule.diff", .string, .value("null")),
        ConfigKey("schedule.expire", .string, .value("after-backup")),
        ConfigKey("schedule.verify", .string, .value("30 3 * * *")),
        ConfigKey("schedule.drill", .string, .value("0 4 * * 0")),
        ConfigKey("schedule.drill_aged", .string, .value("null")),
        ConfigKey("schedule.drill_offsite", .string, .value("0 5 1 */3 *")),
        ConfigKey("schedule.report", .string, .value("0 6 * * *")),
        ConfigKey("schedule.dump", .string, .derived("0 2 * * * for a logical cluster, else null")),
        ConfigKey("schedule.sync", .string, .value("40 * * * *")),
        ConfigKey("schedule.retries", .int(0...10), .value("2")),
        ConfigKey("schedule.stop_timeout", .string, .value("60s")),

        ConfigKey("check.backup_age_warning", .string, .value("2h")),
        ConfigKey("check.backup_age_critical", .string, .value("26h")),
        ConfigKey("check.full_age_warning", .string, .value("26h")),
        ConfigKey("check.full_age_critical", .string, .value("50h")),
        ConfigKey("check.wal_age_warning", .string, .value("90m")),
        ConfigKey("check.wal_age_critical", .string, .value("6h")),
        ConfigKey("check.queue_warning", .int(0...Int.max), .value("100")),
        ConfigKey("check.queue_critical", .int(0...Int.max), .value("1000")),
        ConfigKey("check.verify_age_warning", .string, .value("50h")),
        ConfigKey("check.drill_age_warning", .string, .value("8d")),
        ConfigKey("check.dump_age_warning", .string, .value("26h")),
        ConfigKey("check.timeout", .string, .value("5s")),

        ConfigKey("monitor.disk_warn_percent", .number(atLeast: 1), .value("80")),
        ConfigKey("monitor.disk_critical_percent", .number(atLeast: 1), .value("90")),
        ConfigKey("monitor.listen", .string, .value("127.0.0.1:9187")),
        ConfigKey("monitor.token_file", .path),
        ConfigKey("monitor.refresh", .string, .value("60s")),

        ConfigKey("notifications.repeat", .string, .value("6h")),
        ConfigKey("notifications.sinks.*.name", .string, .derived("required for each sink")),
        ConfigKey("notifications.sinks.*.type", .choice(SinkSettings.Kind.allCases.map(\.rawValue)), .derived("required for each sink")),
        ConfigKey("notifications.sinks.*.events.*", .choice(AlertEvent.allCases.filter { $0 != .test }.map(\.rawValue)),
                  .derived("the problems and recoveries (see docs/monitoring.md)")),
        ConfigKey("notifications.sinks.*.url", .string, .derived("webhook: required unless url_file or url_env")),
        ConfigKey("notifications.sinks.*.url_file", .path),
        ConfigKey("notifications.sinks.*.url_env", .string),
        ConfigKey("notifications.sinks.*.secret_file", .path),
        ConfigKey("notifications.sinks.*.host", .string, .derived("email: required")),
        ConfigKey("notifications.sinks.*.port", .int(1...65535), .derived("587 (starttls), 465 (tls), 25 (none)")),
        ConfigKey("notifications.sinks.*.tls", .choice(SMTPSettings.Security.allCases.map(\.rawValue)), .value("starttls")),
        ConfigKey("notifications.sinks.*.username", .string),
        ConfigKey("notifications.sinks.*.password_file", .path),
        ConfigKey("notifications.sinks.*.password_env", .string),
        ConfigKey("notifications.sinks.*.from", .string, .derived("email: required")),
        ConfigKey("notifications.sinks.*.to.*", .string, .derived("email: at least one")),
        ConfigKey("notifications.sinks.*.ca_file", .path),

        ConfigKey("catalog.enabled", .bool, .value("true")),
        ConfigKey("catalog.connection", .string, .derived("cluster.connection")),
        ConfigKey("catalog.schema", .string, .value("wayback")),

        ConfigKey("verify.resample_percent", .int(0...100), .value("10")),

        ConfigKey("drill.scratch_dir", .path, .value("/var/tmp/wayback-drill")),
        ConfigKey("drill.rto_seconds", .number(atLeast: 0.001), .value("900")),
        ConfigKey("drill.rpo_seconds", .number(atLeast: 1), .value("3600")),
        ConfigKey("drill.aged", .string, .value("7d")),
        ConfigKey("drill.assertions.*.name", .string, .derived("required for each assertion")),
        ConfigKey("drill.assertions.*.database", .string, .value("postgres")),
        ConfigKey("drill.assertions.*.sql", .string, .derived("required for each assertion")),

        ConfigKey("dump.databases.*", .string, .derived("every database that accepts connections")),
        ConfigKey("dump.exclude_schemas.*", .string, .derived("none")),
        ConfigKey("dump.supabase", .bool, .value("false")),
        ConfigKey("dump.table_digests", .bool, .value("false")),
        ConfigKey("dump.jobs", .int(1...32), .value("2")),
        ConfigKey("dump.spool_dir", .path, .value("/var/tmp")),

        ConfigKey("report.dir", .path, .derived("<lock_path>/reports")),
        ConfigKey("report.keep", .int(1...3650), .value("30")),
    ]

    /// The keys of a retention policy (`retention:`, and each repository's own), with their defaults.
    static let retention: [(name: String, kind: ConfigKey.Kind, value: String)] = [
        ("hourly", .int(0...Int.max), "24"), ("daily", .int(0...Int.max), "30"), ("weekly", .int(0...Int.max), "12"),
        ("monthly", .int(0...Int.max), "12"), ("quarterly", .int(0...Int.max), "28"), ("min_full", .int(0...Int.max), "2"),
        ("pitr_window", .string, "7d"), ("timezone", .string, "UTC"), ("stale_after", .string, "3d"),
    ]

    /// Environment variables that start with `WAYBACK_` but are not keys (besides those named by
    /// `encryption.passphrase_env`).
    public static let variables = ["WAYBACK_CONFIG", "WAYBACK_PG_BIN", "WAYBACK_ENCRYPTION_PASSPHRASE"]

    /// The key `key` (with list indexes) is, if any.
    public static func key(_ key: String) -> ConfigKey? {
        // Every key of the file and of the environment is looked up (wal-push reads the file for
        // every segment): a dictionary of the paths with list indexes as `*`.
        byPath[key.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) != nil ? "*" : String($0) }.joined(separator: ".")]
    }

    static let byPath: [String: ConfigKey] = Dictionary(keys.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })

    /// Paths (with `*` for indexes) that hold a list: every key under `P.*`.
    static let lists: Set<String> = Set(keys.flatMap { k -> [String] in
        let parts = k.path.split(separator: ".").map(String.init)
        return parts.indices.filter { parts[$0] == "*" }.map { parts[..<$0].joined(separator: ".") }
    })

    /// Top-level names that hold a mapping or a list.
    static let sections: Set<String> = Set(keys.compactMap { k -> String? in
        let parts = k.path.split(separator: ".")
        return parts.count > 1 ? String(parts[0]) : nil
    })

    /// Whether `path` (with indexes) is a list of the schema.
    static func isList(_ path: String) -> Bool {
        lists.contains(path.split(separator: ".").map { Int($0) != nil ? "*" : String($0) }.joined(separator: "."))
    }
}

/// How a repository is reached.
public enum RepositoryType: String, Sendable, CaseIterable {
    case local, s3
}

/// How `wal-push` feeds a repository: before it returns, or through the spool afterwards.
public enum WALPushMode: String, Sendable, CaseIterable {
    case sync, async
}

/// `log_level`.
public enum LogLevel: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error
}

/// `backup.page_checksum_failures`: a backup that finds damaged pages is kept (`warn`, exit 16)
/// or not (`fail`).
public enum PageChecksumPolicy: String, Sendable, CaseIterable {
    case warn, fail
}
