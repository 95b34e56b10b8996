import Foundation
import Logging
import PostgresNIO
import WaybackCore

/// Facts about a running cluster that `init` checks and `backup` records.
public struct ClusterFacts: Sendable {
    public var versionNumber: Int          // e.g. 150018
    public var systemIdentifier: UInt64
    public var dataDirectory: String
    public var walLevel: String
    public var dataChecksums: Bool
    public var archiveMode: String
    public var archiveCommand: String
    public var walSegmentSize: UInt64
    public var blockSize: Int
    public var timeline: UInt32
    public var isInRecovery: Bool
    public var walLogHints: Bool

    /// Every change to a page gives it a new LSN, hint bits included (data checksums or
    /// wal_log_hints make the first hint-bit change after a checkpoint write a full page image).
    public var hintsLogged: Bool { dataChecksums || walLogHints }

    public var majorVersion: Int { versionNumber / 10000 }
}

/// One tablespace as the catalog reports it.
public struct TablespaceInfo: Sendable, Codable, Equatable {
    public var oid: UInt32
    public var name: String
    public var location: String
    public init(oid: UInt32, name: String, location: String) { self.oid = oid; self.name = name; self.location = location }
}

/// The archiver's view, for error messages when WAL does not arrive.
public struct ArchiverState: Sendable, CustomStringConvertible {
    public var archivedCount: Int
    public var lastArchivedWAL: String
    public var failedCount: Int
    public var lastFailedWAL: String
    public var lastArchivedTime: Date?
    public var lastFailedTime: Date?
    public var description: String {
        "pg_stat_archiver: archived \(archivedCount) (last \(lastArchivedWAL.isEmpty ? "none" : lastArchivedWAL)), failed \(failedCount) (last \(lastFailedWAL.isEmpty ? "none" : lastFailedWAL))"
    }
}

/// What `pg_backup_stop` returned.
public struct BackupStopResult: Sendable {
    public var stopLSN: LSN
    public var backupLabel: String
    public var tablespaceMap: String
}

/// One open connection to PostgreSQL with the operations Wayback needs.
///
/// `pg_backup_start` and `pg_backup_stop` must run on the same session, so a backup holds one
/// `PostgresSession` from start to stop.
public final class PostgresSession: @unchecked Sendable {
    let connection: PostgresConnection
    let logger: Logger
    public let settings: ConnectionSettings
    private var serverVersion = 0

    private init(connection: PostgresConnection, settings: ConnectionSettings, logger: Logger) {
        self.connection = connection
        self.settings = settings
        self.logger = logger
    }

    /// Connects; throws `.connection` with a message naming the (redacted) target and the fix.
    public static func connect(_ settings: ConnectionSettings, logger: Logger) async throws -> PostgresSession {
        var config: PostgresConnection.Configuration
        if settings.isUnixSocket {
            config = .init(unixSocketPath: settings.socketPath, username: settings.user, password: settings.password, database: settings.database)
        } else {
            config = PostgresConnection.Configuration(host: settings.host, port: settings.port, username: settings.user,
                                                      password: settings.password, database: settings.database, tls: try ConnectionTLS.make(settings))
        }
        config.options.connectTimeout = .seconds(Int64(settings.connectTimeoutSeconds == 0 ? 86400 : settings.connectTimeoutSeconds))
        config.options.additionalStartupParameters = [("application_name", settings.applicationName)]
        do {
            let conn = try await PostgresConnection.connect(configuration: config, id: 1, logger: logger)
            let session = PostgresSession(connection: conn, settings: settings, logger: logger)
            do {
                session.serverVersion = try await session.int("SELECT current_setting('server_version_num')")
            } catch {
                await session.close()
                throw error
            }
            return session
        } catch {
            throw WaybackError(.connection, "cannot connect to PostgreSQL at \(settings.redacted): \(Self.reason(error, settings: settings)); \(Self.fix(error))",
                               cause: nil)
        }
    }

    /// What to check after a failed connection: a server that answered and refused needs another
    /// name or credentials, not to be started.
    static func fix(_ error: any Error) -> String {
        switch (error as? PSQLError)?.serverInfo?[.sqlState] {
        case "3D000"?:  // invalid_catalog_name
            return "the server is up: name a database that exists (in cluster.connection, dump.databases or --database)"
        case "28P01"?, "28000"?:  // invalid_password, invalid_authorization_specification
            return "the server is up and refused the login: check the user and password in cluster.connection (or PGUSER/PGPASSWORD) and the server's pg_hba.conf"
        default:
            return "check that the server is running and cluster.connection (or PGHOST/PGPORT/PGUSER/PGPASSWORD) is right"
        }
    }

    /// A short, secret-free reason from a postgres-nio error, in words of the cause rather than
    /// of the library.
    static func reason(_ error: any Error, settings: ConnectionSettings? = nil) -> String {
        if let e = error as? PSQLError {
            if let msg = e.serverInfo?[.message] { return msg }
            if let settings, let tls = ConnectionTLS.reason(e.underlying ?? e, settings: settings) { return tls }
            let under = e.underlying.map { systemReason($0) }
            switch e.code {
            case .authMechanismRequiresPassword:
                return "the server asks for a password and none was given: set PGPASSWORD or the password in the URL"
            case .connectionError:
                let at = settings.map { $0.isUnixSocket ? "on the socket \($0.socketPath)" : "at \($0.host):\($0.port)" } ?? ""
                return "no server answers \(at)\(under.map { " (\($0))" } ?? "")"
            case .unsupportedAuthMechanism:
                return "the server asks for an authentication method Wayback does not support (use scram-sha-256, md5, password or trust in pg_hba.conf)"
            case .saslError:
                return "password authentication failed"
            case .sslUnsupported:
                return "the server does not accept TLS (ssl = off), but sslmode=\(settings?.sslMode.rawValue ?? "require") asks for it"
            case .serverClosedConnection, .uncleanShutdown:
                return "the server closed the connection\(under.map { " (\($0))" } ?? "")"
            default:
                return "\(e.code)\(under.map { ": \($0)" } ?? "")"
            }
        }
        return systemReason(error)
    }

    /// The words of a system error (`connect(...): Connection refused (errno: 111)` becomes
    /// `Connection refused`), at most 200 characters.
    static func systemReason(_ error: any Error) -> String {
        var text = String(describing: error)
        if let r = text.range(of: "): ") { text = String(text[r.upperBound...]) }
        if let r = text.range(of: " (errno:") { text = String(text[..<r.lowerBound]) }
        if text.contains("connectTimeout") || text.contains("ConnectTimeout") { text = "no answer within connect_timeout" }
        return text.count > 200 ? String(text.prefix(200)) : text
    }

    public func close() async {
        try? await connection.close()
    }

    // MARK: queries

    func rows(_ sql: String) async throws -> [[String?]] {
        do {
            var out = [[String?]]()
            let result = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
            for try await row in result {
                var cols = [String?]()
                for cell in row { cols.append(Self.text(cell)) }
                out.append(cols)
            }
            return out
        } catch let e as WaybackError {
            throw e
        } catch {
            throw WaybackError(.postgres, "PostgreSQL rejected a query: \(Self.reason(error))", cause: .query(Self.statementName(sql)))
        }
    }

    /// A statement with bound values (never spliced into its text); `name` stands for it in errors.
    func query(_ query: PostgresQuery, name: String) async throws -> [[String?]] {
        do {
            var out = [[String?]]()
            for try await row in try await connection.query(query, logger: logger) {
                out.append(row.map { Self.text($0) })
            }
            return out
        } catch {
            throw WaybackError(.postgres, "PostgreSQL rejected a query: \(Self.reason(error))", cause: .query(name))
        }
    }

    /// A cell as text: Wayback's own queries cast to text; other types are decoded as the
    /// common scalar types.
    static func text(_ cell: PostgresCell) -> String? {
        guard cell.bytes != nil else { return nil }
        if let s = try? cell.decode(String.self) { return s }
        if let i = try? cell.decode(Int64.self) { return String(i) }
        if let b = try? cell.decode(Bool.self) { return b ? "t" : "f" }
        if let d = try? cell.decode(Double.self) { return String(d) }
        return "<\(cell.dataType)>"
    }

    func string(_ sql: String) async throws -> String {
        guard let v = try await rows(sql).first?.first ?? nil else {
            throw WaybackError(.postgres, "PostgreSQL returned no value", cause: .query(Self.statementName(sql)))
        }
        return v
    }

    func int(_ sql: String) async throws -> Int {
        let s = try await string(sql)
        guard let v = Int(s) else { throw WaybackError(.postgres, "PostgreSQL returned '\(s)' where a number was expected", cause: .query(Self.statementName(sql))) }
        return v
    }

    /// What a statement does, for an error's cause: the first function it calls, else its first
    /// two words (`SELECT pg_backup_start(...)` -> `pg_backup_start`). Never literals or values.
    static func statementName(_ sql: String) -> String {
        let scalars = Array(sql.unicodeScalars)
        var i = 0
        while i < scalars.count {
            // An identifier directly followed by '(' outside a quoted literal.
            if scalars[i] == "'" {
                i += 1
                while i < scalars.count && scalars[i] != "'" { i += 1 }
                i += 1
                continue
            }
            if scalars[i].properties.isAlphabetic || scalars[i] == "_" {
                var j = i
                while j < scalars.count && (scalars[j].properties.isAlphabetic || scalars[j] == "_" || ("0"..."9").contains(scalars[j])) { j += 1 }
                if j < scalars.count && scalars[j] == "(" { return String(String.UnicodeScalarView(scalars[i..<j])) }
                i = j
                continue
            }
            i += 1
        }
        let words = sql.split(whereSeparator: { $0 == " " || $0 == "\n" }).prefix(2)
            .map { String($0.prefix(while: { $0.isLetter || $0 == "_" })) }
        return words.joined(separator: " ").uppercased()
    }

    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }

    // MARK: operations

    public func facts() async throws -> ClusterFacts {
        let r = try await rows("""
            SELECT current_setting('server_version_num'), (SELECT system_identifier::text FROM pg_control_system()),
                   current_setting('data_directory'), current_setting('wal_level'), current_setting('data_checksums'),
                   current_setting('archive_mode'), current_setting('archive_command'),
                   (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
                   current_setting('block_size'),
                   (SELECT timeline_id::text FROM pg_control_checkpoint()), pg_is_in_recovery()::text,
                   current_setting('wal_log_hints')
            """)
        guard let c = r.first, c.count == 12 else { throw WaybackError(.postgres, "unexpected answer reading cluster settings") }
        func v(_ i: Int) -> String { c[i] ?? "" }
        return ClusterFacts(versionNumber: Int(v(0)) ?? 0, systemIdentifier: UInt64(v(1)) ?? 0, dataDirectory: v(2),
                            walLevel: v(3), dataChecksums: v(4) == "on", archiveMode: v(5), archiveCommand: v(6),
                            walSegmentSize: UInt64(v(7)) ?? WALFileName.defaultSegmentSize, blockSize: Int(v(8)) ?? 8192,
                            timeline: UInt32(v(9)) ?? 1, isInRecovery: v(10) == "true", walLogHints: v(11) == "on")
    }

    public func tablespaces() async throws -> [TablespaceInfo] {
        try await rows("SELECT oid::text, spcname::text, pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid")
            .map { TablespaceInfo(oid: UInt32($0[0] ?? "") ?? 0, name: $0[1] ?? "", location: $0[2] ?? "") }
    }

    /// Starts a non-exclusive backup (PostgreSQL 15+: pg_backup_start; 13/14: pg_start_backup).
    public func backupStart(label: String, fast: Bool) async throws -> LSN {
        let fn = serverVersion >= 150000 ? "pg_backup_start(\(Self.quote(label)), \(fast))" : "pg_start_backup(\(Self.quote(label)), \(fast), false)"
        let text = try await string("SELECT \(fn)::text")
        guard let lsn = LSN(text) else { throw WaybackError(.postgres, "pg_backup_start returned '\(text)'") }
        return lsn
    }

    /// Stops the backup started on this session without waiting for archiving (Wayback waits for
    /// the WAL itself, with a timeout and a clear message).
    public func backupStop() async throws -> BackupStopResult {
        let fn = serverVersion >= 150000 ? "pg_backup_stop(false)" : "pg_stop_backup(false, false)"
        let r = try await rows("SELECT lsn::text, labelfile, spcmapfile FROM \(fn)")
        guard let c = r.first, let l = c[0], let lsn = LSN(l) else { throw WaybackError(.postgres, "pg_backup_stop returned no LSN") }
        return BackupStopResult(stopLSN: lsn, backupLabel: c[1] ?? "", tablespaceMap: c[2] ?? "")
    }

    public func switchWAL() async throws -> LSN {
        let t = try await string("SELECT pg_switch_wal()::text")
        return LSN(t) ?? LSN(0)
    }

    /// How far the server has flushed its WAL to disk.
    public func flushedWALLSN() async throws -> LSN {
        LSN(try await string("SELECT pg_current_wal_flush_lsn()::text")) ?? LSN(0)
    }

    public func currentWALLSN() async throws -> LSN {
        LSN(try await string("SELECT pg_current_wal_lsn()::text")) ?? LSN(0)
    }

    public func archiverState() async throws -> ArchiverState {
        let r = try await rows("SELECT archived_count::text, coalesce(last_archived_wal, ''), failed_count::text, coalesce(last_failed_wal, ''), extract(epoch FROM last_archived_time)::text, extract(epoch FROM last_failed_time)::text FROM pg_stat_archiver")
        let c = r.first ?? []
        func time(_ i: Int) -> Date? { c.count > i ? c[i].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) } : nil }
        return ArchiverState(archivedCount: Int(c.first.flatMap { $0 } ?? "") ?? 0, lastArchivedWAL: c.count > 1 ? (c[1] ?? "") : "",
                             failedCount: c.count > 2 ? Int(c[2] ?? "") ?? 0 : 0, lastFailedWAL: c.count > 3 ? (c[3] ?? "") : "",
                             lastArchivedTime: time(4), lastFailedTime: time(5))
    }

    /// Runs a statement (for demo and tests); returns the rows as text.
    public func execute(_ sql: String) async throws -> [[String?]] { try await rows(sql) }
}
