import Foundation
import WaybackCore
import WaybackPostgres
import WaybackStorage
import Yams

/// The whole configuration, read once at the edge (file, environment) and passed down as values.
public struct WaybackConfiguration: Sendable {
    public struct RepositorySettings: Sendable, Equatable {
        public var name: String
        public var type: String
        public var path: String
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

    /// The first repository (the one every command uses until several are supported).
    public func primaryRepository() -> Repository {
        let r = repositories[0]
        return Repository(name: r.name, driver: LocalStorage(root: r.path))
    }
}

/// Reads the YAML file, applies `WAYBACK_*` environment overrides and the libpq variables, and
/// validates every key. Errors are `.config` and name the key (and the line, where there is one).
public enum ConfigLoader {
    public static let defaultPath = "/etc/wayback/wayback.yaml"

    enum Kind { case string, int, bool, number }

    /// Every known key: path pattern (`*` = list index) -> type.
    static let schema: [(String, Kind)] = [
        ("cluster.name", .string), ("cluster.pgdata", .string), ("cluster.connection", .string),
        ("repositories.*.name", .string), ("repositories.*.type", .string), ("repositories.*.path", .string),
        ("compression.algorithm", .string), ("compression.level", .int),
        ("parallelism", .int), ("lock_path", .string), ("log_level", .string),
        ("backup.archive_wait_seconds", .number), ("backup.fast_checkpoint", .bool),
        ("restore.prefetch_segments", .int),
    ]
    static let sections: Set<String> = ["cluster", "repositories", "compression", "backup", "restore"]

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
        return try parse(text, path: path, environment: environment)
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
        // Environment overrides.
        let reserved: Set<String> = ["WAYBACK_CONFIG", "WAYBACK_PG_BIN", "WAYBACK_BIN", "WAYBACK_TEST_KEEP"]
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
        for (name, value) in environment where name.hasPrefix("WAYBACK_") && !reserved.contains(name) {
            guard let key = envNames[name] else {
                throw WaybackError(.config, "environment variable \(name) does not name a configuration key; see docs/configuration.md")
            }
            let v = Value(text: value, line: nil)
            try check(v, kind: kindOf(key)!, key: key, file: "environment variable \(name)")
            values[key] = v
        }
        return try build(values, path: path, environment: environment)
    }

    static func yamlReason(_ error: any Error) -> String {
        let s = String(describing: error)
        return s.split(separator: "\n").prefix(2).joined(separator: " ")
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
        if let url = str("cluster.connection"), !url.isEmpty {
            conn = try ConnectionSettings.parse(url: url, defaults: conn)
        }

        var repos = [WaybackConfiguration.RepositorySettings]()
        var i = 0
        while values.keys.contains(where: { $0.hasPrefix("repositories.\(i).") }) {
            let type = str("repositories.\(i).type") ?? "local"
            let rname = str("repositories.\(i).name") ?? (i == 0 ? "local" : "repo\(i + 1)")
            guard type == "local" else {
                throw WaybackError(.config, "\(path): repositories[\(i)].type '\(type)' is not supported by this version; use 'local'")
            }
            let rpath = try required("repositories.\(i).path")
            guard rpath.hasPrefix("/") else { throw WaybackError(.config, "\(path): repositories[\(i)].path must be an absolute path") }
            if repos.contains(where: { $0.name == rname }) {
                throw WaybackError(.config, "\(path): two repositories are named '\(rname)'")
            }
            repos.append(.init(name: rname, type: type, path: rpath))
            i += 1
        }
        guard !repos.isEmpty else {
            throw WaybackError(.config, "\(path): required key 'repositories' is missing: list at least one repository (name, type: local, path)")
        }

        let algName = str("compression.algorithm") ?? "zstd"
        guard let alg = CompressionAlgorithm(name: algName) else {
            throw WaybackError(.config, "\(path): compression.algorithm '\(algName)' is unknown; use zstd or none")
        }
        let level = Int(str("compression.level") ?? "") ?? 1
        guard alg == .none || (1...19).contains(level) else {
            throw WaybackError(.config, "\(path): compression.level must be from 1 to 19 for zstd, not \(level)")
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
        return c
    }
}
