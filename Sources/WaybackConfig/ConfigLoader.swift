import Foundation
import Logging
import WaybackCore
import WaybackPostgres
import WaybackS3
import WaybackStorage
import Yams

/// The whole configuration, read once at the edge (file, environment) and passed down as values.
public struct WaybackConfiguration: Sendable {
    public struct RepositorySettings: Sendable {
        public var name: String
        /// `local` or `s3`.
        public var type: String
        /// The directory of a local repository; the `s3://bucket/prefix` address of an S3 one.
        public var path: String
        public var s3: S3Settings?
        /// How `wal-push` feeds this repository when it is not the first: `sync` (before the push
        /// returns) or `async` (through the spool, drained in the background).
        public var walPush: String
        /// Client-side encryption of everything stored in this repository (nil: none).
        public var encryption: EncryptionKeySource? = nil
    }

    public var path: String
    public var clusterName: String
    public var pgdata: String
    public var connection: ConnectionSettings
    public var repositories: [RepositorySettings]
    public var compression: CompressionSettings
    public var parallelism: Int
    public var lockPath: String
    public var archiveWaitSeconds: Double
    public var fastCheckpoint: Bool
    public var logLevel: String
    /// WAL segments `wal-fetch` fetches ahead during recovery (0: none).
    public var prefetchSegments: Int = 8
    /// Pages failing their data checksum during a backup fail it (`fail`) instead of a warning.
    public var failOnPageChecksum = false
    /// backup.max_chain_length: the most backups one restore chain may hold.
    public var maxChainLength = 30
    /// backup.pack_size_mb: a backup worker starts a new pack object after this many bytes.
    public var packSizeBytes: Int64 = 256 << 20
    /// backup.max_rate_mb: read the data directory at most this fast (MB/s; nil: no limit).
    public var maxRateBytes: Int64?
    /// Where `wal-push` queues segments for asynchronous repositories.
    public var spoolPath: String = ""
    /// Bytes queued for one asynchronous repository above which `wal-push` warns and stops queueing
    /// (the drainer then catches up by comparing listings).
    public var spoolLimitBytes: Int64 = 4 << 30
    /// Keys of the file that hold a secret (a password in `cluster.connection`, an S3 secret key).
    public var secretKeysInFile: [String] = []
    /// What the command should warn about before it starts (a readable file with secrets).
    public var warnings: [String] = []

    /// The configured repositories (those named in `only`, when given), in priority order, each
    /// with its own driver; S3 drivers send through `http`, which the caller owns.
    public func repositoryList(logger: Logger, http: HTTPClientPool, only: Set<String>? = nil) throws -> [Repository] {
        try repositories.filter { only?.contains($0.name) ?? true }.map { r in
            let driver: any StorageDriver = try r.s3.map { try S3Storage(settings: $0, clients: http, logger: logger) } ?? LocalStorage(root: r.path)
            guard let key = r.encryption else { return Repository(name: r.name, driver: driver) }
            return Repository(name: r.name, driver: EncryptedStorage(inner: driver, source: key, repositoryName: r.name))
        }
    }

    /// What one job reads and writes: the one repository, or all of them as one
    /// (`ReplicatedStorage`: writes to every repository, reads in priority order with fallback).
    /// Made anew for each job, so that a repository dropped in one job is written in the next.
    public func repository(logger: Logger, http: HTTPClientPool, events: EventLog) throws -> Repository {
        Repository.combined(try repositoryList(logger: logger, http: http), events: events)
    }
}

/// Reads the YAML file, applies `WAYBACK_*` environment overrides and the libpq variables, and
/// validates every key. Errors are `.config` and name the key (and the line, where there is one).
public enum ConfigLoader {
    public static let defaultPath = "/etc/wayback/wayback.yaml"
    public static let defaultPassphraseVariable = "WAYBACK_ENCRYPTION_PASSPHRASE"

    enum Kind { case string, int, bool, number }

    /// Every known key: path pattern (`*` = list index) -> type.
    static let schema: [(String, Kind)] = [
        ("cluster.name", .string), ("cluster.pgdata", .string), ("cluster.connection", .string),
        ("repositories.*.name", .string), ("repositories.*.type", .string), ("repositories.*.path", .string),
        ("repositories.*.wal_push", .string),
        ("repositories.*.encryption.key_file", .string), ("repositories.*.encryption.passphrase_env", .string),
        ("repositories.*.bucket", .string), ("repositories.*.region", .string), ("repositories.*.endpoint", .string),
        ("repositories.*.path_style", .bool), ("repositories.*.prefix", .string), ("repositories.*.ca_file", .string),
        ("repositories.*.access_key_id", .string), ("repositories.*.secret_access_key", .string), ("repositories.*.session_token", .string),
        ("repositories.*.credentials_file", .string), ("repositories.*.profile", .string),
        ("repositories.*.sse", .string), ("repositories.*.sse_kms_key_id", .string), ("repositories.*.storage_class", .string),
        ("repositories.*.part_size_mb", .int), ("repositories.*.upload_concurrency", .int),
        ("repositories.*.request_timeout_seconds", .number), ("repositories.*.deadline_seconds", .number),
        ("archive.spool_path", .string), ("archive.spool_limit_mb", .int),
        ("compression.algorithm", .string), ("compression.level", .int),
        ("parallelism", .int), ("lock_path", .string), ("log_level", .string),
        ("backup.archive_wait_seconds", .number), ("backup.fast_checkpoint", .bool), ("backup.page_checksum_failures", .string),
        ("backup.max_chain_length", .int), ("backup.pack_size_mb", .int), ("backup.max_rate_mb", .int),
        ("restore.prefetch_segments", .int),
    ]
    static let sections: Set<String> = ["cluster", "repositories", "compression", "backup", "restore", "archive"]

    /// The environment variable that overrides a key: `WAYBACK_` + the path in upper case with
    /// `.` as `_` (`repositories.0.path` -> `WAYBACK_REPOSITORIES_0_PATH`).
    public static func environmentName(_ path: String) -> String {
        "WAYBACK_" + String(path.uppercased().map { $0 == "." ? "_" : $0 })
    }

    struct Value { var text: String; var line: Int? }

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

    /// The keys among `values` (read from the file) whose value is a secret.
    static func secretKeys(_ values: [String: Value]) -> [String] {
        var out = [String]()
        if let url = values["cluster.connection"]?.text,
           (try? ConnectionSettings.parse(url: url, defaults: ConnectionSettings(password: nil)))?.password != nil {
            out.append("the password in cluster.connection")
        }
        for key in values.keys.sorted() where key.hasSuffix(".secret_access_key") || key.hasSuffix(".session_token") {
            out.append(key)
        }
        return out
    }

    public static func parse(_ text: String, path: String, environment: [String: String]) throws -> WaybackConfiguration {
        var values = [String: Value]()
        let node: Node?
        // The basic resolver: every scalar stays text, typed by the schema below (the default
        // resolver compiles a dozen regular expressions on every start: milliseconds per wal-push).
        do { node = try Yams.compose(yaml: text, .basic) } catch {
            throw WaybackError(.config, "\(path) is not valid YAML: \(yamlReason(error))")
        }
        if let node {
            guard case .mapping = node else { throw WaybackError(.config, "\(path): the top level must be a mapping of keys (cluster:, repositories:, ...)") }
            try flatten(node, prefix: "", into: &values, file: path)
        }
        // Validate keys and types of the file's values.
        for (key, v) in values {
            guard let kind = kindOf(key) else {
                throw WaybackError(.config, "\(path)\(v.line.map { ":\($0)" } ?? ""): unknown key '\(key)'; see docs/configuration.md for the keys")
            }
            try check(v, kind: kind, key: key, file: path)
        }
        let secrets = secretKeys(values)
        // Environment overrides.
        // Passphrase variables are not configuration keys.
        let passphraseVariables = values.filter { $0.key.hasSuffix(".encryption.passphrase_env") }.map(\.value.text)
        let reserved = Set(["WAYBACK_CONFIG", "WAYBACK_PG_BIN", "WAYBACK_BIN", defaultPassphraseVariable] + passphraseVariables)
        let knownRepoCount = max(1, (values.keys.compactMap { k -> Int? in
            let p = k.split(separator: "."); return p.first == "repositories" && p.count > 1 ? Int(p[1]) : nil
        }.max() ?? 0) + 1)
        var envNames = [String: String]()
        for (pattern, _) in schema {
            if pattern.contains("*") {
                for i in 0..<(knownRepoCount + 4) {
                    let p = pattern.split(separator: "*", omittingEmptySubsequences: false).joined(separator: String(i))
                    envNames[environmentName(p)] = p
                }
            } else {
                envNames[environmentName(pattern)] = pattern
            }
        }
        // WAYBACK_TEST_* belong to the test harness (scripts/test), never to the configuration.
        for (name, value) in environment where name.hasPrefix("WAYBACK_") && !name.hasPrefix("WAYBACK_TEST_") && !reserved.contains(name) {
            guard let key = envNames[name] else {
                throw WaybackError(.config, "environment variable \(name) does not name a configuration key; see docs/configuration.md")
            }
            let v = Value(text: value, line: nil)
            try check(v, kind: kindOf(key)!, key: key, file: "environment variable \(name)")
            values[key] = v
        }
        var c = try build(values, path: path, environment: environment)
        c.secretKeysInFile = secrets
        return c
    }

    /// One line saying what is wrong and where.
    static func yamlReason(_ error: any Error) -> String {
        if let y = error as? YamlError {
            switch y {
            case .duplicatedKeysInMapping(let duplicates, let context):
                let keys = duplicates.sorted().map { "'\($0)'" }.joined(separator: ", ")
                return "the mapping at line \(context.mark.line) has \(keys) more than once; keep one"
            case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
                 .composer(let context, let problem, let mark, _):
                return "line \(mark.line), column \(mark.column): \(problem)" + (context.map { " (\($0.text) at line \($0.mark.line))" } ?? "")
            default:
                break
            }
        }
        let s = String(describing: error)
        return s.split(separator: "\n").first.map(String.init) ?? s
    }

    static func flatten(_ node: Node, prefix: String, into values: inout [String: Value], file: String) throws {
        switch node {
        case .mapping(let m):
            for (k, v) in m {
                guard let name = k.string else { throw WaybackError(.config, "\(file):\(line(k) ?? 0): keys must be strings") }
                let path = prefix.isEmpty ? name : prefix + "." + name
                if prefix.isEmpty, !sections.contains(name), case .mapping = v {
                    throw WaybackError(.config, "\(file):\(line(k) ?? 0): unknown key '\(name)'; see docs/configuration.md for the keys")
                }
                try flatten(v, prefix: path, into: &values, file: file)
            }
        case .sequence(let s):
            guard prefix == "repositories" else {
                throw WaybackError(.config, "\(file):\(line(node) ?? 0): '\(prefix)' must not be a list")
            }
            for (i, item) in s.enumerated() {
                guard case .mapping = item else {
                    throw WaybackError(.config, "\(file):\(line(item) ?? 0): each entry of 'repositories' must be a mapping (name:, type:, path:)")
                }
                try flatten(item, prefix: "\(prefix).\(i)", into: &values, file: file)
            }
        case .scalar(let s):
            if sections.contains(prefix) && s.string.isEmpty == false {
                throw WaybackError(.config, "\(file):\(line(node) ?? 0): '\(prefix)' must be a \(prefix == "repositories" ? "list" : "mapping"), not a value")
            }
            values[prefix] = Value(text: s.string, line: line(node))
        case .alias:
            throw WaybackError(.config, "\(file):\(line(node) ?? 0): YAML aliases are not supported")
        }
    }

    static func line(_ node: Node) -> Int? { node.mark.map { $0.line } }

    static func kindOf(_ key: String) -> Kind? {
        let parts = key.split(separator: ".").map(String.init)
        for (pattern, kind) in schema {
            let pp = pattern.split(separator: ".").map(String.init)
            guard pp.count == parts.count else { continue }
            if zip(pp, parts).allSatisfy({ $0 == $1 || ($0 == "*" && Int($1) != nil) }) { return kind }
        }
        return nil
    }

    static func check(_ v: Value, kind: Kind, key: String, file: String) throws {
        let at = "\(file)\(v.line.map { ":\($0)" } ?? "")"
        switch kind {
        case .string: return
        case .int: if Int(v.text) == nil { throw WaybackError(.config, "\(at): '\(key)' must be a whole number, not '\(v.text)'") }
        case .number: if Double(v.text) == nil { throw WaybackError(.config, "\(at): '\(key)' must be a number, not '\(v.text)'") }
        case .bool: if !["true", "false", "yes", "no", "on", "off"].contains(v.text.lowercased()) {
            throw WaybackError(.config, "\(at): '\(key)' must be true or false, not '\(v.text)'") }
        }
    }

    static func build(_ values: [String: Value], path: String, environment: [String: String]) throws -> WaybackConfiguration {
        func str(_ k: String) -> String? { values[k]?.text }
        func required(_ k: String) throws -> String {
            guard let v = str(k), !v.isEmpty else {
                throw WaybackError(.config, "\(path): required key '\(k)' is missing (or set \(environmentName(k)))")
            }
            return v
        }
        let name = try required("cluster.name")
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }), name.count <= 64 else {
            throw WaybackError(.config, "\(path): cluster.name '\(name)' may use only letters, digits, '-' and '_'")
        }
        let pgdata = try required("cluster.pgdata")
        guard pgdata.hasPrefix("/") else { throw WaybackError(.config, "\(path): cluster.pgdata must be an absolute path") }

        // libpq environment first, then the URL on top.
        var conn = ConnectionSettings(
            host: environment["PGHOST"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/run/postgresql",
            port: Int(environment["PGPORT"] ?? "") ?? 5432,
            user: environment["PGUSER"].flatMap { $0.isEmpty ? nil : $0 } ?? "postgres",
            password: environment["PGPASSWORD"], database: environment["PGDATABASE"], sslMode: .prefer)
        func env(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        if let m = env("PGSSLMODE") {
            guard let mode = ConnectionSettings.SSLMode(rawValue: m) else {
                throw WaybackError(.config, "PGSSLMODE '\(m)' is not an sslmode; use \(ConnectionSettings.SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            conn.sslMode = mode
        }
        conn.sslRootCert = env("PGSSLROOTCERT"); conn.sslCert = env("PGSSLCERT"); conn.sslKey = env("PGSSLKEY")
        if let url = str("cluster.connection"), !url.isEmpty {
            conn = try ConnectionSettings.parse(url: url, defaults: conn)
        }
        // libpq's default CA file for verify-ca and verify-full.
        if conn.sslMode.verifiesCertificate, conn.sslRootCert == nil, let home = env("HOME"),
           FileManager.default.fileExists(atPath: home + "/.postgresql/root.crt") {
            conn.sslRootCert = home + "/.postgresql/root.crt"
        }

        var repos = [WaybackConfiguration.RepositorySettings]()
        var i = 0
        while values.keys.contains(where: { $0.hasPrefix("repositories.\(i).") }) {
            repos.append(try repositorySettings(i, values: values, path: path, environment: environment, existing: repos))
            i += 1
        }
        guard !repos.isEmpty else {
            throw WaybackError(.config, "\(path): required key 'repositories' is missing: list at least one repository (name, type: local, path)")
        }

        let algName = str("compression.algorithm") ?? "zstd"
        guard let alg = CompressionAlgorithm(name: algName) else {
            throw WaybackError(.config, "\(path): compression.algorithm '\(algName)' is unknown; use zstd, lz4, gzip or none")
        }
        let level = Int(str("compression.level") ?? "") ?? (alg == .gzip ? 6 : 1)
        guard alg == .none || alg.levels.contains(level) else {
            throw WaybackError(.config, "\(path): compression.level must be from \(alg.levels.lowerBound) to \(alg.levels.upperBound) for \(alg), not \(level)")
        }
        let parallelism = Int(str("parallelism") ?? "") ?? 2
        guard (1...64).contains(parallelism) else { throw WaybackError(.config, "\(path): parallelism must be from 1 to 64, not \(parallelism)") }
        let wait = Double(str("backup.archive_wait_seconds") ?? "") ?? 120
        guard wait > 0 else { throw WaybackError(.config, "\(path): backup.archive_wait_seconds must be positive") }
        let fast = ["true", "yes", "on"].contains((str("backup.fast_checkpoint") ?? "true").lowercased())
        let logLevel = str("log_level") ?? "info"
        guard ["trace", "debug", "info", "notice", "warning", "error"].contains(logLevel) else {
            throw WaybackError(.config, "\(path): log_level must be one of trace, debug, info, notice, warning, error")
        }
        let prefetch = Int(str("restore.prefetch_segments") ?? "") ?? 8
        guard (0...256).contains(prefetch) else { throw WaybackError(.config, "\(path): restore.prefetch_segments must be from 0 to 256, not \(prefetch)") }
        var c = WaybackConfiguration(path: path, clusterName: name, pgdata: pgdata, connection: conn, repositories: repos,
                                     compression: CompressionSettings(algorithm: alg, level: level), parallelism: parallelism,
                                     lockPath: str("lock_path") ?? "/tmp/wayback", archiveWaitSeconds: wait,
                                     fastCheckpoint: fast, logLevel: logLevel)
        c.prefetchSegments = prefetch
        let pageFailures = str("backup.page_checksum_failures") ?? "warn"
        guard ["warn", "fail"].contains(pageFailures) else {
            throw WaybackError(.config, "\(path): backup.page_checksum_failures must be warn or fail, not '\(pageFailures)'")
        }
        c.failOnPageChecksum = pageFailures == "fail"
        let chain = Int(str("backup.max_chain_length") ?? "") ?? 30
        guard chain >= 1 else { throw WaybackError(.config, "\(path): backup.max_chain_length must be at least 1 (1: every backup is a full), not \(chain)") }
        c.maxChainLength = chain
        let pack = Int(str("backup.pack_size_mb") ?? "") ?? 256
        guard (1...4096).contains(pack) else { throw WaybackError(.config, "\(path): backup.pack_size_mb must be from 1 to 4096, not \(pack)") }
        c.packSizeBytes = Int64(pack) << 20
        let rate = Int(str("backup.max_rate_mb") ?? "") ?? 0
        guard rate >= 0 else { throw WaybackError(.config, "\(path): backup.max_rate_mb must be 0 (no limit) or more, not \(rate)") }
        c.maxRateBytes = rate > 0 ? Int64(rate) << 20 : nil
        c.spoolPath = str("archive.spool_path") ?? pgdata + "/pg_wal/wayback-spool"
        guard c.spoolPath.hasPrefix("/") else { throw WaybackError(.config, "\(path): archive.spool_path must be an absolute path") }
        let limit = Int(str("archive.spool_limit_mb") ?? "") ?? 4096
        guard limit >= 16 else { throw WaybackError(.config, "\(path): archive.spool_limit_mb must be at least 16, not \(limit)") }
        c.spoolLimitBytes = Int64(limit) << 20
        return c
    }

    static func repositorySettings(_ i: Int, values: [String: Value], path: String, environment: [String: String],
                                   existing: [WaybackConfiguration.RepositorySettings]) throws -> WaybackConfiguration.RepositorySettings {
        func str(_ k: String) -> String? { values["repositories.\(i).\(k)"].flatMap { $0.text.isEmpty ? nil : $0.text } }
        func flag(_ k: String, _ d: Bool) -> Bool { str(k).map { ["true", "yes", "on"].contains($0.lowercased()) } ?? d }
        let at = "\(path): repositories[\(i)]"
        let type = str("type") ?? "local"
        let name = str("name") ?? (i == 0 ? "local" : "repo\(i + 1)")
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw WaybackError(.config, "\(at).name '\(name)' may use only letters, digits, '-' and '_'")
        }
        if existing.contains(where: { $0.name == name }) { throw WaybackError(.config, "\(path): two repositories are named '\(name)'") }
        let walPush = str("wal_push") ?? (i == 0 ? "sync" : "async")
        guard ["sync", "async"].contains(walPush) else { throw WaybackError(.config, "\(at).wal_push must be sync or async, not '\(walPush)'") }
        guard i > 0 || walPush == "sync" else {
            throw WaybackError(.config, "\(at).wal_push: the first repository is always written before wal-push returns; remove wal_push: async from it")
        }
        let s3Keys = ["bucket", "region", "endpoint", "path_style", "prefix", "ca_file", "access_key_id", "secret_access_key", "session_token",
                      "credentials_file", "profile", "sse", "sse_kms_key_id", "storage_class", "part_size_mb", "upload_concurrency",
                      "request_timeout_seconds", "deadline_seconds"]
        switch type {
        case "local":
            if let k = s3Keys.first(where: { str($0) != nil }) {
                throw WaybackError(.config, "\(at).\(k) applies to S3 repositories only; this one has type: local")
            }
            guard let p = str("path") else { throw WaybackError(.config, "\(at): required key 'path' is missing (the repository directory)") }
            guard p.hasPrefix("/") else { throw WaybackError(.config, "\(at).path must be an absolute path") }
            return .init(name: name, type: type, path: p, s3: nil, walPush: walPush,
                         encryption: try encryptionKey(str, at: at, environment: environment))
        case "s3":
            if str("path") != nil { throw WaybackError(.config, "\(at).path is for local repositories; an S3 repository has bucket and prefix") }
            guard let bucket = str("bucket") else { throw WaybackError(.config, "\(at): required key 'bucket' is missing") }
            let region = str("region") ?? environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] ?? "us-east-1"
            if let e = str("endpoint"), !(e.hasPrefix("https://") || e.hasPrefix("http://")) {
                throw WaybackError(.config, "\(at).endpoint must start with https:// or http://, not '\(e)'")
            }
            let credentials = try s3Credentials(str, at: at, environment: environment)
            var encryption: S3Settings.Encryption?
            switch str("sse")?.lowercased() {
            case nil, "none": encryption = nil
            case "aes256", "sse-s3": encryption = .s3
            case "aws:kms", "sse-kms", "kms": encryption = .kms(keyID: str("sse_kms_key_id"))
            default: throw WaybackError(.config, "\(at).sse must be none, AES256 or aws:kms, not '\(str("sse")!)'")
            }
            if str("sse_kms_key_id") != nil, encryption != .kms(keyID: str("sse_kms_key_id")) {
                throw WaybackError(.config, "\(at).sse_kms_key_id needs sse: aws:kms")
            }
            let part = Int(str("part_size_mb") ?? "") ?? 16
            guard (5...5120).contains(part) else { throw WaybackError(.config, "\(at).part_size_mb must be from 5 to 5120, not \(part)") }
            let width = Int(str("upload_concurrency") ?? "") ?? 4
            guard (1...64).contains(width) else { throw WaybackError(.config, "\(at).upload_concurrency must be from 1 to 64, not \(width)") }
            let timeout = Double(str("request_timeout_seconds") ?? "") ?? 120
            let deadline = Double(str("deadline_seconds") ?? "") ?? 900
            guard timeout > 0, deadline >= timeout else {
                throw WaybackError(.config, "\(at): request_timeout_seconds must be positive and deadline_seconds at least as long")
            }
            if let ca = str("ca_file") {
                guard ca.hasPrefix("/") else { throw WaybackError(.config, "\(at).ca_file must be an absolute path") }
            }
            let s3 = S3Settings(endpoint: str("endpoint"), bucket: bucket, region: region, prefix: str("prefix") ?? "",
                                pathStyle: flag("path_style", false), credentials: credentials, caFile: str("ca_file"),
                                encryption: encryption, storageClass: str("storage_class"), partSize: part << 20,
                                uploadConcurrency: width, requestTimeout: timeout, deadline: deadline)
            return .init(name: name, type: type, path: "s3://\(bucket)/\(s3.prefix)", s3: s3, walPush: walPush,
                         encryption: try encryptionKey(str, at: at, environment: environment))
        default:
            throw WaybackError(.config, "\(at).type '\(type)' is unknown; use local or s3")
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
