import Foundation
import WaybackCore

/// How to reach the database: a TCP host or a unix-socket directory, libpq style.
public struct ConnectionSettings: Sendable, Equatable {
    /// libpq's `sslmode` over TCP (a unix socket never uses TLS, as in libpq):
    /// - `disable`: no TLS;
    /// - `allow`, `prefer`: TLS when the server offers it (Wayback tries TLS first for both);
    /// - `require`: TLS or no connection; the certificate is not checked (encryption only);
    /// - `verify-ca`: TLS with a certificate signed by `sslrootcert`;
    /// - `verify-full`: that, and issued for the host connected to.
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"

        /// The server's certificate is checked against a CA.
        public var verifiesCertificate: Bool { self == .verifyCA || self == .verifyFull }
    }

    /// A host name, an IP address, or (starting with `/`) a unix-socket directory.
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    /// `connect_timeout` (seconds; 0 waits as long as it takes), as libpq reads it.
    public var connectTimeoutSeconds = 10
    /// `application_name`, shown in `pg_stat_activity` and the server log.
    public var applicationName = "wayback"
    /// `sslrootcert`: the PEM file of the CA(s) the server's certificate must be signed by
    /// (`verify-ca`, `verify-full`), or `system` for the system's trusted CAs.
    public var sslRootCert: String?
    /// `sslcert` and `sslkey`: a client certificate and its key (PEM), for `cert` authentication.
    public var sslCert: String?
    public var sslKey: String?

    public init(host: String = "/var/run/postgresql", port: Int = 5432, user: String = "postgres",
                password: String? = nil, database: String? = nil, sslMode: SSLMode = .prefer) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database ?? user
        self.sslMode = sslMode
    }

    public var isUnixSocket: Bool { host.hasPrefix("/") }
    public var socketPath: String { host + "/.s.PGSQL.\(port)" }

    /// The connection without the password, safe for messages and logs.
    public var redacted: String {
        let h = isUnixSocket ? "" : host
        let q = isUnixSocket ? "?host=\(host)" : (sslMode == .prefer ? "" : "?sslmode=\(sslMode.rawValue)")
        return "postgresql://\(user)@\(h):\(port)/\(database)\(q)"
    }

    /// Parses a `postgresql://` (or `postgres://`) URL on top of `defaults` (which come from the
    /// libpq environment). Throws `.config` naming the problem, never echoing the password.
    public static func parse(url text: String, defaults: ConnectionSettings) throws -> ConnectionSettings {
        var s = defaults
        let scheme: String
        if text.hasPrefix("postgresql://") { scheme = "postgresql://" } else if text.hasPrefix("postgres://") { scheme = "postgres://" } else {
            throw WaybackError(.config, "cluster.connection must be a postgresql:// URL (got something else); e.g. postgresql://postgres@localhost:5432/postgres")
        }
        var rest = Substring(text.dropFirst(scheme.count))
        var query = Substring("")
        if let q = rest.firstIndex(of: "?") { query = rest[rest.index(after: q)...]; rest = rest[..<q] }
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") { path = rest[rest.index(after: slash)...]; rest = rest[..<slash] }
        var hostPort = rest
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            hostPort = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                s.user = decode(userInfo[..<colon])
                s.password = decode(userInfo[userInfo.index(after: colon)...])
            } else if !userInfo.isEmpty {
                s.user = decode(userInfo)
            }
        }
        if !hostPort.isEmpty {
            if hostPort.hasPrefix("[") , let close = hostPort.firstIndex(of: "]") {
                s.host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
                let after = hostPort[hostPort.index(after: close)...]
                if after.hasPrefix(":") { s.port = try port(after.dropFirst()) }
            } else if let colon = hostPort.lastIndex(of: ":") {
                if colon != hostPort.startIndex { s.host = decode(hostPort[..<colon]) }
                s.port = try port(hostPort[hostPort.index(after: colon)...])
            } else {
                s.host = decode(hostPort)
            }
        }
        var databaseSet = false
        if !path.isEmpty { s.database = decode(path); databaseSet = true }
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            let key = String(kv[0]), value = kv.count > 1 ? decode(kv[1]) : ""
            switch key {
            case "host": s.host = value
            case "port": s.port = try port(Substring(value))
            case "user": s.user = value
            case "password": s.password = value
            case "dbname": s.database = value; databaseSet = true
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw WaybackError(.config, "cluster.connection: unknown sslmode '\(value)'; use \(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                s.sslMode = mode
            case "sslrootcert": s.sslRootCert = value.isEmpty ? nil : value
            case "sslcert": s.sslCert = value.isEmpty ? nil : value
            case "sslkey": s.sslKey = value.isEmpty ? nil : value
            case "connect_timeout":
                guard let t = Int(value), t >= 0 else {
                    throw WaybackError(.config, "cluster.connection: connect_timeout '\(value)' is not a whole number of seconds (0: no limit)")
                }
                // libpq: 0 waits indefinitely, and anything below 2 is taken as 2.
                s.connectTimeoutSeconds = t == 0 ? 0 : max(2, t)
            case "application_name":
                guard value.utf8.count < 64, value.allSatisfy({ $0.isASCII && !$0.isNewline }) else {
                    throw WaybackError(.config, "cluster.connection: application_name must be printable ASCII of at most 63 bytes")
                }
                s.applicationName = value
            default: throw WaybackError(.config, "cluster.connection: unsupported URL parameter '\(key)'; supported: host, port, user, password, dbname, sslmode, sslrootcert, sslcert, sslkey, connect_timeout, application_name")
            }
        }
        if !databaseSet && defaults.database == defaults.user { s.database = s.user }
        if (s.sslCert == nil) != (s.sslKey == nil) {
            throw WaybackError(.config, "cluster.connection: sslcert and sslkey go together (a client certificate and its key)")
        }
        return s
    }

    private static func decode(_ s: Substring) -> String { String(s).removingPercentEncoding ?? String(s) }

    private static func port(_ s: Substring) throws -> Int {
        guard let p = Int(s), (1...65535).contains(p) else {
            throw WaybackError(.config, "cluster.connection: port '\(s)' is not a number from 1 to 65535")
        }
        return p
    }
}

/// Every way Swift prints a value (`\(x)`, `String(reflecting:)`, `dump`, the description of a
/// value that holds it) shows the redacted form: the password never reaches a log or a message.
extension ConnectionSettings: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { redacted + (password == nil ? "" : " (password set)") }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["connection": description], displayStyle: .struct) }

    /// A database name as the value of a libpq tool's `--dbname`: a connection string that holds
    /// only it (`dbname='...'`), because a plain name with `=` in it (or starting with
    /// `postgresql://`) would be read as a connection string of its own. The rest of the settings
    /// come from `libpqEnvironment`.
    public static func dbnameArgument(_ database: String) -> String {
        "dbname='" + database.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    /// The settings as libpq's environment, for `pg_dump`, `pg_dumpall` and `pg_restore`: the
    /// password travels in `PGPASSWORD`, never in a process's arguments (which anyone can read).
    public func libpqEnvironment(database: String? = nil) -> [String: String] {
        var env = ["PGHOST": host, "PGPORT": String(port), "PGUSER": user, "PGDATABASE": database ?? self.database,
                   "PGSSLMODE": sslMode.rawValue, "PGCONNECT_TIMEOUT": String(connectTimeoutSeconds), "PGAPPNAME": applicationName]
        if let password { env["PGPASSWORD"] = password }
        if let sslRootCert { env["PGSSLROOTCERT"] = sslRootCert }
        if let sslCert { env["PGSSLCERT"] = sslCert }
        if let sslKey { env["PGSSLKEY"] = sslKey }
        return env
    }
}
