import Foundation
import Logging
import WaybackCore
import WaybackMonitor
import WaybackPostgres
import WaybackS3
import WaybackStorage

/// Reads the YAML file, applies `WAYBACK_*` environment overrides and the libpq variables, and
/// builds the configuration through `ConfigSchema`. Errors are `.config` and name the key (and the
/// line, or the variable).
public enum ConfigLoader {
    public static let defaultPath = "/etc/wayback/wayback.yaml"
    public static let defaultPassphraseVariable = "WAYBACK_ENCRYPTION_PASSPHRASE"

    public static func load(path: String, environment: [String: String]) throws -> WaybackConfiguration {
        guard FileManager.default.fileExists(atPath: path) else {
            throw WaybackError(.config, "configuration file \(path) does not exist; create it (see docs/configuration.md) or pass --config PATH")
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw WaybackError(.config, "cannot read configuration file \(path); check its permissions")
        }
        var c = try parse(text, path: path, environment: environment)
        if let w = secretsWarning(path: path, keys: c.secretKeysInFile) { c.warnings.append(w) }
        return c
    }

    /// A warning when a file that holds secrets can be read by its group or everyone (a warning,
    /// not a refusal: refusing would stop `wal-push`, and with it archiving, on an upgrade).
    static func secretsWarning(path: String, keys: [String]) -> String? {
        guard !keys.isEmpty, let st = try? FileSystem.status(path, followLinks: true), st.mode & 0o044 != 0 else { return nil }
        return "configuration file \(path) holds secrets (\(keys.joined(separator: ", "))) and can be read by other users (mode \(String(st.mode & 0o777, radix: 8))); run 'chmod 600 \(path)' (it must stay readable by the PostgreSQL OS user), or move the secrets to the environment (PGPASSWORD, AWS_SECRET_ACCESS_KEY) or a credentials file"
    }

    public static func parse(_ text: String, path: String, environment: [String: String]) throws -> WaybackConfiguration {
        var values = ConfigValues(file: path)
        try values.read(yaml: text)
        let withPassword = ["cluster.connection", "catalog.connection"].filter { key in
            values.string(key).map { (try? ConnectionSettings.parse(url: $0, defaults: ConnectionSettings(password: nil)))?.password != nil } ?? false
        }
        let secrets = values.secretKeys(connectionsWithPassword: withPassword)
        // The variables named by passphrase_env hold passphrases, not keys.
        let passphrases = Set(values.keys.filter { $0.hasSuffix(".encryption.passphrase_env") }.compactMap { values.string($0) })
        try values.overlay(environment: environment, also: passphrases)
        var c = try build(values, environment: environment)
        c.schedule = try scheduleSettings(values)
        c.verifyResamplePercent = try values.defaulted("verify.resample_percent", ConfigValues.int)
        c.drill = try drillSettings(values)
        c.check = try checkSettings(values)
        c.monitor = try monitorSettings(values)
        c.notifications = try notificationSettings(values)
        var dbs = [String](), schemas = [String]()
        // By the keys given: an index past the list has no value (and no default).
        while values.keys.contains("dump.databases.\(dbs.count)"), let d = values.string("dump.databases.\(dbs.count)") { dbs.append(d) }
        while values.keys.contains("dump.exclude_schemas.\(schemas.count)"), let s = values.string("dump.exclude_schemas.\(schemas.count)") {
            schemas.append(s)
        }
        c.dump = WaybackConfiguration.DumpSettings(databases: dbs.isEmpty ? nil : dbs, excludeSchemas: schemas,
                                                   supabase: try values.defaulted("dump.supabase", ConfigValues.bool),
                                                   tableDigests: try values.defaulted("dump.table_digests", ConfigValues.bool),
                                                   jobs: try values.defaulted("dump.jobs", ConfigValues.int),
                                                   spoolDirectory: try values.defaulted("dump.spool_dir", ConfigValues.string))
        c.reportDirectory = values.string("report.dir") ?? c.lockPath + "/reports"
        c.reportKeepDays = try values.defaulted("report.keep", ConfigValues.int)
        c.diskWarnPercent = try values.defaulted("monitor.disk_warn_percent", ConfigValues.number)
        c.diskCriticalPercent = try values.defaulted("monitor.disk_critical_percent", ConfigValues.number)
        guard c.diskWarnPercent < c.diskCriticalPercent, c.diskCriticalPercent <= 100 else {
            throw WaybackError(.config, "\(values.origin("monitor.disk_critical_percent")): monitor.disk_warn_percent (\(c.diskWarnPercent)) must be below monitor.disk_critical_percent (\(c.diskCriticalPercent)), which is at most 100")
        }
        c.secretKeysInFile = secrets
        c.pgBinDirectory = environment["WAYBACK_PG_BIN"].flatMap { $0.isEmpty ? nil : $0 }
        return c
    }

    static func build(_ v: ConfigValues, environment: [String: String]) throws -> WaybackConfiguration {
        let path = v.file
        let name = try v.required("cluster.name")
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }), name.count <= 64 else {
            throw WaybackError(.config, "\(v.origin("cluster.name")): cluster.name '\(name)' may use only letters, digits, '-' and '_'")
        }
        let type = v.choice("cluster.type", as: ClusterType.self) ?? .physical
        let pgdata: String
        if type == .physical {
            pgdata = try v.required("cluster.pgdata")
        } else {
            guard v.string("cluster.pgdata") == nil else {
                throw WaybackError(.config, "\(v.origin("cluster.pgdata")): a logical cluster (cluster.type: logical) has no data directory Wayback reads; remove cluster.pgdata, or set cluster.type: physical")
            }
            for key in ["archive.spool_path", "schedule.full", "schedule.incr", "schedule.diff", "schedule.drill_aged"] where v.keys.contains(key) {
                guard ["null", "~", "off", "none", ""].contains((v.string(key) ?? "").lowercased()) else {
                    throw WaybackError(.config, "\(v.origin(key)): \(key) is for physical clusters; a logical cluster (cluster.type: logical) takes dumps (schedule.dump): remove \(key)")
                }
            }
            pgdata = ""
        }
        let cluster = WaybackConfiguration.ClusterSettings(name: name, type: type, pgdata: pgdata, connection: try connection(v, environment: environment))
        var catalog: CatalogSettings?
        if try v.defaulted("catalog.enabled", ConfigValues.bool) {
            let schema = try v.defaulted("catalog.schema", ConfigValues.string)
            guard CatalogStore.validSchema(schema) else {
                throw WaybackError(.config, "\(v.origin("catalog.schema")): catalog.schema '\(schema)' must be a plain lower-case identifier (a-z, 0-9, '_', at most 63 bytes), e.g. wayback")
            }
            catalog = CatalogSettings(connection: try connection(v, environment: environment, key: "catalog.connection") ?? cluster.connection,
                                      schema: schema)
        }

        let retention = try retentionPolicy(v, prefix: "retention", base: .default)
        var repos = [WaybackConfiguration.RepositorySettings]()
        var i = 0
        while v.keys.contains(where: { $0.hasPrefix("repositories.\(i).") }) {
            var r = try repositorySettings(i, values: v, environment: environment, existing: repos)
            r.retention = try retentionPolicy(v, prefix: "repositories.\(i).retention", base: retention)
            if let gb = v.number("repositories.\(i).quota_gb") {
                guard r.type == .s3 else { throw WaybackError(.config, "\(v.origin("repositories.\(i).quota_gb")): repositories[\(i)].quota_gb applies to S3 repositories; a local one is watched by its file system's free space") }
                r.quotaBytes = Int64(gb * 1_000_000_000)
            }
            repos.append(r)
            i += 1
        }
        guard !repos.isEmpty else {
            throw WaybackError(.config, "\(path): required key 'repositories' is missing: list at least one repository (name, type: local, path)")
        }

        let algName = try v.defaulted("compression.algorithm", ConfigValues.string)
        guard let alg = CompressionAlgorithm(name: algName.lowercased()) else {
            throw WaybackError(.internal, "compression.algorithm '\(algName)' passed the schema but is unknown")
        }
        let level = v.int("compression.level") ?? (alg == .gzip ? 6 : 1)
        guard alg == .none || alg.levels.contains(level) else {
            throw WaybackError(.config, "\(v.origin("compression.level")): compression.level must be from \(alg.levels.lowerBound) to \(alg.levels.upperBound) for \(alg), not \(level)")
        }
        let compression = CompressionSettings(algorithm: alg, level: level)
        // The changed pages of incr and diff backups: LZ4 level 1 unless told `same` (or nothing is
        // compressed at all), because a restore through a chain decodes every one of their frames.
        let fast = try v.defaulted("compression.incremental", ConfigValues.string) == "lz4" && alg != .none
        let pageCompression = fast ? CompressionSettings(algorithm: .lz4, level: 1) : compression
        let wait = try v.defaulted("backup.archive_wait_seconds", ConfigValues.number)
        guard wait > 0 else { throw WaybackError(.config, "\(v.origin("backup.archive_wait_seconds")): backup.archive_wait_seconds must be positive") }
        let rate = try v.defaulted("backup.max_rate_mb", ConfigValues.int)
        let backup = WaybackConfiguration.BackupSettings(
            archiveWaitSeconds: wait, fastCheckpoint: try v.defaulted("backup.fast_checkpoint", ConfigValues.bool),
            pageChecksumFailures: try v.defaulted("backup.page_checksum_failures", as: PageChecksumPolicy.self),
            maxChainLength: try v.defaulted("backup.max_chain_length", ConfigValues.int),
            packSizeBytes: Int64(try v.defaulted("backup.pack_size_mb", ConfigValues.int)) << 20,
            maxRateBytes: rate > 0 ? Int64(rate) << 20 : nil,
            recordRowCounts: try v.defaulted("backup.record_row_counts", ConfigValues.bool),
            incrMethod: try v.defaulted("backup.incr_method", as: IncrementalMethod.self))
        let archive = WaybackConfiguration.ArchiveSettings(
            spoolPath: v.string("archive.spool_path") ?? (pgdata.isEmpty ? "" : pgdata + "/pg_wal/wayback-spool"),
            spoolLimitBytes: Int64(try v.defaulted("archive.spool_limit_mb", ConfigValues.int)) << 20,
            pushAhead: try v.defaulted("archive.push_ahead", ConfigValues.bool))
        return WaybackConfiguration(
            path: path, cluster: cluster, repositories: repos, compression: compression, pageCompression: pageCompression,
            parallelism: try v.defaulted("parallelism", ConfigValues.int), lockPath: try v.defaulted("lock_path", ConfigValues.string),
            logLevel: try v.defaulted("log_level", as: LogLevel.self),
            backup: backup, restore: .init(prefetchSegments: try v.defaulted("restore.prefetch_segments", ConfigValues.int)), archive: archive,
            retention: retention, catalog: catalog)
    }

    /// `schedule:`: cron expressions checked now (a malformed field is named), `null`/`off`
    /// switches a job off, the zone must be an IANA name.
    static func scheduleSettings(_ v: ConfigValues) throws -> WaybackConfiguration.ScheduleSettings {
        let zone = try v.defaulted("schedule.timezone", ConfigValues.string)
        guard TimeZone(identifier: zone) != nil else {
            throw WaybackError(.config, "\(v.origin("schedule.timezone")): schedule.timezone '\(zone)' is not an IANA time zone name (e.g. UTC, Europe/Berlin)")
        }
        let logical = v.choice("cluster.type", as: ClusterType.self) == .logical
        func cron(_ job: String) throws -> CronExpression? {
            let key = "schedule.\(job)"
            var text = v.string(key) ?? ""
            if !v.keys.contains(key) {
                // The defaults of the physical jobs, and of the dump job, follow the cluster's type.
                switch job {
                case "full": text = logical ? "null" : "0 2 * * *"
                case "incr": text = logical ? "null" : "0 * * * *"
                case "dump": text = logical ? "0 2 * * *" : "null"
                default: text = try v.defaulted(key, ConfigValues.string)
                }
            }
            if ["null", "~", "off", "none", ""].contains(text.lowercased()) { return nil }
            return try CronExpression(text, origin: "\(v.origin(key)): \(key)")
        }
        var expire: WaybackConfiguration.ScheduleSettings.Expire?
        let e = try v.defaulted("schedule.expire", ConfigValues.string)
        if e.lowercased() == "after-backup" { expire = .afterBackup } else if let c = try cron("expire") { expire = .cron(c) }
        let stop = try v.defaulted("schedule.stop_timeout", ConfigValues.string)
        guard let stopSeconds = RetentionPolicy.parseDuration(stop), stopSeconds > 0 else {
            throw WaybackError(.config, "\(v.origin("schedule.stop_timeout")): schedule.stop_timeout '\(stop)' is not a duration; write e.g. 60s or 5m")
        }
        var s = WaybackConfiguration.ScheduleSettings(timeZone: zone, full: try cron("full"), incr: try cron("incr"), diff: try cron("diff"),
                                                      expire: expire, retries: try v.defaulted("schedule.retries", ConfigValues.int),
                                                      stopTimeoutSeconds: stopSeconds)
        s.verify = try cron("verify")
        s.drill = try cron("drill")
        s.drillAged = try cron("drill_aged")
        s.drillOffsite = try cron("drill_offsite")
        s.report = try cron("report")
        s.dump = try cron("dump")
        s.sync = try cron("sync")
        return s
    }

    /// `monitor:`: the listener as `host:port` (`[::1]:9187` for IPv6; null: none), its token
    /// file, how often it gathers.
    static func monitorSettings(_ v: ConfigValues) throws -> WaybackConfiguration.MonitorSettings {
        var m = WaybackConfiguration.MonitorSettings()
        let listen = try v.defaulted("monitor.listen", ConfigValues.string)
        if listen == "null" || listen.isEmpty {
            m.host = nil
        } else {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
                throw WaybackError(.config, "\(v.origin("monitor.listen")): monitor.listen '\(listen)' is not host:port; write e.g. 127.0.0.1:9187, [::1]:9187, or null for no listener")
            }
            var host = String(listen[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { throw WaybackError(.config, "\(v.origin("monitor.listen")): monitor.listen '\(listen)' has no host; write e.g. 127.0.0.1:\(port)") }
            m.host = host
            m.port = port
        }
        m.tokenFile = v.string("monitor.token_file")
        let refresh = try v.defaulted("monitor.refresh", ConfigValues.string)
        guard let seconds = RetentionPolicy.parseDuration(refresh), seconds >= 1 else {
            throw WaybackError(.config, "\(v.origin("monitor.refresh")): monitor.refresh '\(refresh)' is not a duration of a second or more; write e.g. 60s")
        }
        m.refreshSeconds = seconds
        return m
    }

    /// The events a sink gets when its `events` is not given: every problem and its recovery.
    static let defaultEvents: Set<AlertEvent> = [.backupFailed, .walArchiveFailing, .repositoryUnreachable, .diskWarning, .diskCritical,
                                                 .verifyFailed, .drillFailed, .copiesMissing, .checkRecovered]

    /// `notifications:`: the sinks, each checked for what its type needs.
    static func notificationSettings(_ v: ConfigValues) throws -> WaybackConfiguration.NotificationSettings {
        var n = WaybackConfiguration.NotificationSettings()
        let repeatText = try v.defaulted("notifications.repeat", ConfigValues.string)
        guard let r = RetentionPolicy.parseDuration(repeatText), r > 0 else {
            throw WaybackError(.config, "\(v.origin("notifications.repeat")): notifications.repeat '\(repeatText)' is not a duration; write e.g. 6h")
        }
        n.repeatSeconds = r
        var i = 0
        while v.keys.contains(where: { $0.hasPrefix("notifications.sinks.\(i).") }) {
            let p = "notifications.sinks.\(i)."
            let at = "\(v.file): notifications.sinks[\(i)]"
            func s(_ k: String) -> String? { v.string(p + k).flatMap { $0.isEmpty ? nil : $0 } }
            guard let name = s("name") else { throw WaybackError(.config, "\(at) has no name; give each sink a name") }
            guard !n.sinks.contains(where: { $0.name == name }) else { throw WaybackError(.config, "\(at): two sinks are named '\(name)'; names must differ") }
            guard let kind = s("type").flatMap(SinkSettings.Kind.init) else {
                throw WaybackError(.config, "\(at) ('\(name)') needs a type: slack, webhook or email")
            }
            var events = Set<AlertEvent>()
            var j = 0
            while let e = s("events.\(j)") {
                guard let ev = AlertEvent(rawValue: e), ev != .test else {
                    throw WaybackError(.config, "\(at) ('\(name)'): unknown event '\(e)'; the events are \(AlertEvent.allCases.filter { $0 != .test }.map(\.rawValue).joined(separator: ", "))")
                }
                events.insert(ev)
                j += 1
            }
            var sink = SinkSettings(name: name, kind: kind, events: j == 0 ? defaultEvents : events)
            sink.url = s("url"); sink.urlFile = s("url_file"); sink.urlEnv = s("url_env"); sink.secretFile = s("secret_file")
            sink.passwordFile = s("password_file"); sink.passwordEnv = s("password_env")
            switch kind {
            case .slack:
                guard sink.url == nil else {
                    throw WaybackError(.config, "\(at) ('\(name)'): a Slack webhook URL is a secret: put it in a file (url_file) or an environment variable (url_env), not in the configuration")
                }
                guard sink.urlFile != nil || sink.urlEnv != nil else { throw WaybackError(.config, "\(at) ('\(name)') needs url_file or url_env") }
            case .webhook:
                guard sink.url != nil || sink.urlFile != nil || sink.urlEnv != nil else { throw WaybackError(.config, "\(at) ('\(name)') needs url, url_file or url_env") }
                if let u = sink.url, !(u.hasPrefix("https://") || u.hasPrefix("http://")) {
                    throw WaybackError(.config, "\(at) ('\(name)'): url '\(u)' must start with https:// or http://")
                }
            case .email:
                guard let host = s("host"), let from = s("from") else { throw WaybackError(.config, "\(at) ('\(name)') needs host and from") }
                var to = [String]()
                while let t = s("to.\(to.count)") { to.append(t) }
                guard !to.isEmpty else { throw WaybackError(.config, "\(at) ('\(name)') needs at least one address in to") }
                let security = s("tls").flatMap(SMTPSettings.Security.init) ?? .starttls
                let port = v.int(p + "port") ?? (security == .tls ? 465 : security == .starttls ? 587 : 25)
                if s("username") != nil && sink.passwordFile == nil && sink.passwordEnv == nil {
                    throw WaybackError(.config, "\(at) ('\(name)') has a username but no password_file or password_env")
                }
                sink.smtp = SMTPSettings(host: host, port: port, security: security, username: s("username"), password: nil, from: from, to: to,
                                         caFile: s("ca_file"))
            }
            n.sinks.append(sink)
            i += 1
        }
        return n
    }

    /// `check:`: durations (`90s`, `26h`, `8d`), each critical threshold above its warning.
    static func checkSettings(_ v: ConfigValues) throws -> HealthThresholds {
        func duration(_ key: String) throws -> Double {
            let text = try v.defaulted("check." + key, ConfigValues.string)
            guard let s = RetentionPolicy.parseDuration(text), s > 0 else {
                throw WaybackError(.config, "\(v.origin("check." + key)): check.\(key) '\(text)' is not a duration; write e.g. 90s, 26h or 8d")
            }
            return s
        }
        var c = HealthThresholds()
        c.backupAgeWarning = try duration("backup_age_warning"); c.backupAgeCritical = try duration("backup_age_critical")
        c.fullAgeWarning = try duration("full_age_warning"); c.fullAgeCritical = try duration("full_age_critical")
        c.walAgeWarning = try duration("wal_age_warning"); c.walAgeCritical = try duration("wal_age_critical")
        c.queueWarning = try v.defaulted("check.queue_warning", ConfigValues.int)
        c.queueCritical = try v.defaulted("check.queue_critical", ConfigValues.int)
        c.verifyAgeWarning = try duration("verify_age_warning"); c.drillAgeWarning = try duration("drill_age_warning")
        c.dumpAgeWarning = try duration("dump_age_warning")
        c.timeoutSeconds = try duration("timeout")
        for (w, cr, name) in [(c.backupAgeWarning, c.backupAgeCritical, "backup_age"), (c.fullAgeWarning, c.fullAgeCritical, "full_age"),
                              (c.walAgeWarning, c.walAgeCritical, "wal_age"), (Double(c.queueWarning), Double(c.queueCritical), "queue")] where w > cr {
            throw WaybackError(.config, "\(v.origin("check.\(name)_critical")): check.\(name)_warning must not be above check.\(name)_critical")
        }
        guard c.timeoutSeconds <= 9 else {
            throw WaybackError(.config, "\(v.origin("check.timeout")): check.timeout must be at most 9s: a Nagios check answers within 10 s")
        }
        return c
    }

    /// `drill:`: the scratch directory, the objectives, the age of the aged drill, the assertions.
    static func drillSettings(_ v: ConfigValues) throws -> WaybackConfiguration.DrillSettings {
        var d = WaybackConfiguration.DrillSettings()
        d.scratchDirectory = try v.defaulted("drill.scratch_dir", ConfigValues.string)
        d.rtoSeconds = try v.defaulted("drill.rto_seconds", ConfigValues.number)
        d.rpoSeconds = try v.defaulted("drill.rpo_seconds", ConfigValues.number)
        let aged = try v.defaulted("drill.aged", ConfigValues.string)
        guard let agedSeconds = RetentionPolicy.parseDuration(aged), agedSeconds > 0 else {
            throw WaybackError(.config, "\(v.origin("drill.aged")): drill.aged '\(aged)' is not a duration; write e.g. 7d")
        }
        d.agedSeconds = agedSeconds
        var i = 0
        while v.keys.contains(where: { $0.hasPrefix("drill.assertions.\(i).") }) {
            let at = "\(v.file): drill.assertions[\(i)]"
            guard let name = v.string("drill.assertions.\(i).name"), !name.isEmpty else { throw WaybackError(.config, "\(at) has no name; give each assertion a name") }
            guard let sql = v.string("drill.assertions.\(i).sql"), !sql.isEmpty else {
                throw WaybackError(.config, "\(at) ('\(name)') has no sql; write a query that returns one boolean, e.g. select count(*) > 0 from orders")
            }
            d.assertions.append(.init(name: name, database: v.string("drill.assertions.\(i).database") ?? "postgres", sql: sql))
            i += 1
        }
        return d
    }

    /// A retention policy from `<prefix>.*` keys over `base` (the defaults, or `retention:` for a
    /// repository's own), checked: durations, the zone, and that it keeps something.
    static func retentionPolicy(_ v: ConfigValues, prefix: String, base: RetentionPolicy) throws -> RetentionPolicy {
        var p = base
        func int(_ k: String) -> Int? { v.int("\(prefix).\(k)") }
        p.hourly = int("hourly") ?? p.hourly
        p.daily = int("daily") ?? p.daily
        p.weekly = int("weekly") ?? p.weekly
        p.monthly = int("monthly") ?? p.monthly
        p.quarterly = int("quarterly") ?? p.quarterly
        p.minFull = int("min_full") ?? p.minFull
        for (k, path) in [("pitr_window", \RetentionPolicy.pitrWindow), ("stale_after", \RetentionPolicy.staleAfter)] {
            guard let text = v.string("\(prefix).\(k)") else { continue }
            guard let seconds = RetentionPolicy.parseDuration(text) else {
                throw WaybackError(.config, "\(v.origin("\(prefix).\(k)")): \(prefix).\(k) '\(text)' is not a duration; write a number and a unit (s, m, h, d, w), e.g. 7d")
            }
            p[keyPath: path] = seconds
        }
        p.timeZone = v.string("\(prefix).timezone") ?? p.timeZone
        let touched = v.keys.contains { $0.hasPrefix(prefix + ".") }
        if touched || prefix == "retention" { try p.validate(origin: "\(v.origin(prefix + ".timezone")): \(prefix)") }
        return p
    }

    /// The connection of another key than `cluster.connection` (`catalog.connection`), built the
    /// same way; nil when the key is not set.
    static func connection(_ v: ConfigValues, environment: [String: String], key: String) throws -> ConnectionSettings? {
        guard let url = v.string(key) else { return nil }
        var base = try connection(v, environment: environment, url: nil)
        base = try ConnectionSettings.parse(url: url, defaults: base)
        return base
    }

    /// libpq's environment first, then the URL on top; libpq's default CA file for the verifying modes.
    static func connection(_ v: ConfigValues, environment: [String: String]) throws -> ConnectionSettings {
        try connection(v, environment: environment, url: v.string("cluster.connection"))
    }

    static func connection(_ v: ConfigValues, environment: [String: String], url: String?) throws -> ConnectionSettings {
        func env(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        var conn = ConnectionSettings(host: env("PGHOST") ?? "/var/run/postgresql", port: Int(environment["PGPORT"] ?? "") ?? 5432,
                                      user: env("PGUSER") ?? "postgres", password: environment["PGPASSWORD"],
                                      database: environment["PGDATABASE"], sslMode: .prefer)
        if let m = env("PGSSLMODE") {
            guard let mode = ConnectionSettings.SSLMode(rawValue: m) else {
                throw WaybackError(.config, "PGSSLMODE '\(m)' is not an sslmode; use \(ConnectionSettings.SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            conn.sslMode = mode
        }
        conn.sslRootCert = env("PGSSLROOTCERT"); conn.sslCert = env("PGSSLCERT"); conn.sslKey = env("PGSSLKEY")
        if let url {
            conn = try ConnectionSettings.parse(url: url, defaults: conn)
        }
        if conn.sslMode.verifiesCertificate, conn.sslRootCert == nil, let home = env("HOME"),
           FileManager.default.fileExists(atPath: home + "/.postgresql/root.crt") {
            conn.sslRootCert = home + "/.postgresql/root.crt"
        }
        return conn
    }

    static func repositorySettings(_ i: Int, values v: ConfigValues, environment: [String: String],
                                   existing: [WaybackConfiguration.RepositorySettings]) throws -> WaybackConfiguration.RepositorySettings {
        func key(_ k: String) -> String { "repositories.\(i).\(k)" }
        func str(_ k: String) -> String? { v.string(key(k)) }
        let at = "\(v.file): repositories[\(i)]"
        let type = try v.defaulted(key("type"), as: RepositoryType.self)
        let name = str("name") ?? (i == 0 ? "local" : "repo\(i + 1)")
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw WaybackError(.config, "\(at).name '\(name)' may use only letters, digits, '-' and '_'")
        }
        if existing.contains(where: { $0.name == name }) { throw WaybackError(.config, "\(v.file): two repositories are named '\(name)'") }
        let walPush = v.choice(key("wal_push"), as: WALPushMode.self) ?? (i == 0 ? .sync : .async)
        guard i > 0 || walPush == .sync else {
            throw WaybackError(.config, "\(at).wal_push: the first repository is always written before wal-push returns; remove wal_push: async from it")
        }
        let encryption = try encryptionKey(str, at: at, environment: environment)
        switch type {
        case .local:
            // Keys of S3 repositories (every repository key but these) do not apply.
            let localKeys: Set<String> = ["name", "type", "path", "wal_push", "encryption.key_file", "encryption.passphrase_env"]
            if let k = v.keys.first(where: { k in
                let rest = String(k.dropFirst(key("").count))
                return k.hasPrefix(key("")) && !localKeys.contains(rest) && !rest.hasPrefix("retention.")
            }) {
                throw WaybackError(.config, "\(at).\(k.dropFirst(key("").count)) applies to S3 repositories only; this one has type: local")
            }
            guard let p = str("path") else { throw WaybackError(.config, "\(at): required key 'path' is missing (the repository directory)") }
            return .init(name: name, type: type, path: p, s3: nil, walPush: walPush, encryption: encryption)
        case .s3:
            if str("path") != nil { throw WaybackError(.config, "\(at).path is for local repositories; an S3 repository has bucket and prefix") }
            guard let bucket = str("bucket") else { throw WaybackError(.config, "\(at): required key 'bucket' is missing") }
            let region = str("region") ?? environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] ?? "us-east-1"
            if let e = str("endpoint"), !(e.hasPrefix("https://") || e.hasPrefix("http://")) {
                throw WaybackError(.config, "\(at).endpoint must start with https:// or http://, not '\(e)'")
            }
            let sse: S3Settings.Encryption?
            switch try v.defaulted(key("sse"), ConfigValues.string).lowercased() {
            case "none": sse = nil
            case "aes256", "sse-s3": sse = .s3
            default: sse = .kms(keyID: str("sse_kms_key_id"))
            }
            if str("sse_kms_key_id") != nil, sse != .kms(keyID: str("sse_kms_key_id")) {
                throw WaybackError(.config, "\(at).sse_kms_key_id needs sse: aws:kms")
            }
            let timeout = try v.defaulted(key("request_timeout_seconds"), ConfigValues.number)
            let deadline = try v.defaulted(key("deadline_seconds"), ConfigValues.number)
            guard timeout > 0, deadline >= timeout else {
                throw WaybackError(.config, "\(at): request_timeout_seconds must be positive and deadline_seconds at least as long")
            }
            let s3 = S3Settings(endpoint: str("endpoint"), bucket: bucket, region: region, prefix: str("prefix") ?? "",
                                pathStyle: try v.defaulted(key("path_style"), ConfigValues.bool), credentials: try s3Credentials(str, at: at, environment: environment),
                                caFile: str("ca_file"), encryption: sse, storageClass: str("storage_class"),
                                partSize: try v.defaulted(key("part_size_mb"), ConfigValues.int) << 20,
                                uploadConcurrency: try v.defaulted(key("upload_concurrency"), ConfigValues.int),
                                requestTimeout: timeout, deadline: deadline)
            return .init(name: name, type: type, path: "s3://\(bucket)/\(s3.prefix)", s3: s3, walPush: walPush, encryption: encryption)
        }
    }

/// `encryption.key_file` (32 bytes: raw, 64 hex digits or base64; readable by its owner only)
    /// or `encryption.passphrase_env` (the environment variable holding a passphrase).
    static func encryptionKey(_ str: (String) -> String?, at: String, environment: [String: String]) throws -> EncryptionKeySource? {
        let file = str("encryption.key_file"), variable = str("encryption.passphrase_env")
        if file != nil && variable != nil {
            throw WaybackError(.config, "\(at).encryption has both key_file and passphrase_env; keep one")
        }
        if let variable {
            guard let text = environment[variable], !text.isEmpty else {
                throw WaybackError(.config, "\(at).encryption.passphrase_env names \(variable), which is not set; export the repository's passphrase in it")
            }
            guard text.count >= 12 else { throw WaybackError(.config, "the passphrase in \(variable) is shorter than 12 characters; use a longer one") }
            return .passphrase(text, variable: variable)
        }
        guard let file else { return nil }
        guard file.hasPrefix("/") else { throw WaybackError(.config, "\(at).encryption.key_file must be an absolute path") }
        guard let st = try? FileSystem.status(file, followLinks: true), st.isRegular else {
            throw WaybackError(.config, "\(at).encryption.key_file \(file) does not exist or is not a file; create it with 'head -c 32 /dev/urandom > \(file) && chmod 600 \(file)'")
        }
        guard st.mode & 0o077 == 0 else {
            throw WaybackError(.config, "\(at).encryption.key_file \(file) can be read by others (mode \(String(st.mode & 0o777, radix: 8))); run 'chmod 600 \(file)'")
        }
        guard let bytes = FileManager.default.contents(atPath: file).map({ [UInt8]($0) }) else {
            throw WaybackError(.config, "\(at).encryption.key_file \(file) cannot be read; check that this OS user owns it")
        }
        if bytes.count == 32 { return .keyFile(path: file, key: bytes) }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.count == 64, let hex = bytesFromHex(text) { return .keyFile(path: file, key: hex) }
        if let b64 = Data(base64Encoded: text), b64.count == 32 { return .keyFile(path: file, key: [UInt8](b64)) }
        throw WaybackError(.config, "\(at).encryption.key_file \(file) does not hold a 32-byte key (32 raw bytes, 64 hex digits or base64); create one with 'head -c 32 /dev/urandom > \(file)'")
    }

    /// Keys in the configuration, else a credentials file named there, else AWS_ACCESS_KEY_ID /
    /// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else the default shared credentials file.
    static func s3Credentials(_ str: (String) -> String?, at: String, environment: [String: String]) throws -> S3Credentials {
        if let id = str("access_key_id") {
            guard let secret = str("secret_access_key") else { throw WaybackError(.config, "\(at): access_key_id is set but secret_access_key is not") }
            return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: str("session_token"), source: "the configuration")
        }
        if str("secret_access_key") != nil { throw WaybackError(.config, "\(at): secret_access_key is set but access_key_id is not") }
        func fromFile(_ file: String, _ profile: String) throws -> S3Credentials {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw WaybackError(.config, "\(at): cannot read the credentials file \(file); check the path and its permissions")
            }
            guard let c = S3Credentials.parseSharedFile(text, profile: profile, source: "profile '\(profile)' of \(file)") else {
                throw WaybackError(.config, "\(at): the credentials file \(file) has no profile '\(profile)' with aws_access_key_id and aws_secret_access_key")
            }
            return c
        }
        if let file = str("credentials_file") { return try fromFile(file, str("profile") ?? "default") }
        if let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty, let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty {
            return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 },
                                 source: "AWS_ACCESS_KEY_ID")
        }
        let shared = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? (environment["HOME"].map { $0 + "/.aws/credentials" } ?? "")
        if !shared.isEmpty, FileManager.default.fileExists(atPath: shared) {
            return try fromFile(shared, str("profile") ?? environment["AWS_PROFILE"] ?? "default")
        }
        throw WaybackError(.config, "\(at) has no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or access_key_id and secret_access_key, or credentials_file (see docs/s3.md)")
    }
}
