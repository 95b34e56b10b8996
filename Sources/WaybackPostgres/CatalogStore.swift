import Foundation
import Logging
import PostgresNIO
import WaybackCore

/// A versioned change of the catalog's schema: one file of `migrations/`, embedded here (a test
/// keeps the two equal). Versions only grow; a shipped migration is never changed.
public struct CatalogMigration: Sendable, Equatable {
    public var version: Int
    /// The file's name in `migrations/`.
    public var file: String
    public var sql: String

    /// The statements: the file without its comment lines, split at each `;` that ends a line
    /// (the files hold no function bodies or literals with one).
    public var statements: [String] {
        let text = sql.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }.joined(separator: "\n")
        return text.components(separatedBy: ";\n").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .map { $0.hasSuffix(";") ? String($0.dropLast()) : $0 }.filter { !$0.isEmpty }
    }

    public static let all: [CatalogMigration] = [
        CatalogMigration(version: 1, file: "001_create_schema_migrations.sql", sql: """
            -- Wayback's record of the migrations applied to this schema (one row per file of migrations/).
            CREATE TABLE IF NOT EXISTS schema_migrations (
              version INTEGER PRIMARY KEY,
              name VARCHAR(255) NOT NULL,
              applied_at TIMESTAMP NOT NULL DEFAULT NOW()
            );

            """),
        CatalogMigration(version: 2, file: "002_create_backup_logs.sql", sql: """
            -- One row per backup: what Wayback stored, where, and what became of it (docs/schema.md).
            CREATE TABLE IF NOT EXISTS backup_logs (
              id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
              backup_id VARCHAR(255) NOT NULL UNIQUE,
              backup_type VARCHAR(50) NOT NULL,
              backup_timestamp TIMESTAMP NOT NULL,
              backup_size_bytes BIGINT,
              checksum_md5 VARCHAR(32),
              checksum_sha256 VARCHAR(64),
              location_local VARCHAR(512),
              location_s3 VARCHAR(512),
              status VARCHAR(50) NOT NULL,
              recovery_tested BOOLEAN DEFAULT FALSE,
              test_timestamp TIMESTAMP,
              recovery_time_seconds INTEGER,
              created_at TIMESTAMP DEFAULT NOW(),
              verified_at TIMESTAMP,
              purged_at TIMESTAMP,
              error_message TEXT
            );
            CREATE INDEX IF NOT EXISTS idx_backup_logs_timestamp ON backup_logs(backup_timestamp DESC);
            CREATE INDEX IF NOT EXISTS idx_backup_logs_status ON backup_logs(status);
            CREATE INDEX IF NOT EXISTS idx_backup_logs_type ON backup_logs(backup_type);

            """),
    ]
}

/// Where the `backup_logs` table lives: a database (the cluster's own by default) and a schema.
public struct CatalogSettings: Sendable {
    public var connection: ConnectionSettings
    public var schema: String
    public init(connection: ConnectionSettings, schema: String) { self.connection = connection; self.schema = schema }
}

/// One row of `backup_logs` (docs/schema.md). Timestamps are UTC. A field left nil keeps what
/// the row holds (see `CatalogStore.record`); `status` and `errorMessage` always go together.
public struct BackupLogRow: Sendable, Equatable {
    public enum Status: String, Sendable, CaseIterable {
        case running, complete, failed, partial, expired
    }

    public var backupID: String
    public var backupType: String
    /// The backup's start time.
    public var backupTimestamp: Date
    public var status: Status
    public var sizeBytes: Int64?
    public var md5: String?
    public var sha256: String?
    public var locationLocal: String?
    public var locationS3: String?
    public var errorMessage: String?
    public var purgedAt: Date?
    public var verifiedAt: Date?
    public var recoveryTested: Bool?
    public var testTimestamp: Date?
    public var recoveryTimeSeconds: Int?
    /// Read only: when the row was made.
    public var createdAt: Date?
    /// Update the other columns of an existing row but leave its `status` and `error_message`
    /// (a drill's result says nothing of where the backup is stored).
    public var keepsStatus = false

    public init(backupID: String, backupType: String, backupTimestamp: Date, status: Status) {
        self.backupID = backupID; self.backupType = backupType; self.backupTimestamp = backupTimestamp; self.status = status
    }
}

/// The catalog database: its migrations and the `backup_logs` rows, over one session whose time
/// zone is UTC and whose `search_path` is the catalog's schema. Only this type writes SQL for it.
public final class CatalogStore: Sendable {
    let session: PostgresSession
    public let schema: String

    private init(session: PostgresSession, schema: String) { self.session = session; self.schema = schema }

    /// Whether `name` can be a catalog schema: a plain lower-case identifier.
    public static func validSchema(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= 63, first == "_" || ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }

    /// Connects (at most `connectTimeout` seconds, so an unreachable catalog never holds a
    /// backup long) and sets the session's time zone and search path.
    public static func open(_ catalog: CatalogSettings, connectTimeout: Int = 10, logger: Logger) async throws -> CatalogStore {
        let schema = catalog.schema
        guard validSchema(schema) else {
            throw WaybackError(.config, "catalog.schema '\(schema)' is not a plain lower-case identifier (letters a-z, digits, '_'); choose another")
        }
        var s = catalog.connection
        if s.connectTimeoutSeconds == 0 || s.connectTimeoutSeconds > connectTimeout { s.connectTimeoutSeconds = connectTimeout }
        let session = try await PostgresSession.connect(s, logger: logger)
        do {
            _ = try await session.rows("SET TIME ZONE 'UTC'")
            _ = try await session.rows("SET search_path TO \"\(schema)\"")
        } catch {
            await session.close()
            throw error
        }
        return CatalogStore(session: session, schema: schema)
    }

    public func close() async { await session.close() }

    /// Creates the schema and applies the migrations it lacks, in order, in one transaction under
    /// an advisory lock (two `init`s at once wait for each other). Harmless to repeat. Returns
    /// the versions applied now.
    @discardableResult
    public func migrate() async throws -> [Int] {
        _ = try await session.rows("BEGIN")
        do {
            _ = try await session.rows("SELECT pg_advisory_xact_lock(hashtext('wayback catalog migrations'))")
            _ = try await session.rows("CREATE SCHEMA IF NOT EXISTS \"\(schema)\"")
            guard let first = CatalogMigration.all.first else { throw WaybackError(.internal, "no catalog migrations") }
            for statement in first.statements { _ = try await session.rows(statement) }
            let done = Set(try await session.rows("SELECT version::text FROM schema_migrations").compactMap { $0.first.flatMap { $0 }.flatMap(Int.init) })
            var applied = [Int]()
            for m in CatalogMigration.all where !done.contains(m.version) {
                if m.version != first.version { for statement in m.statements { _ = try await session.rows(statement) } }
                _ = try await session.query("INSERT INTO schema_migrations (version, name) VALUES (\(m.version), \(m.file))", name: "record migration")
                applied.append(m.version)
            }
            _ = try await session.rows("COMMIT")
            return applied
        } catch {
            _ = try? await session.rows("ROLLBACK")
            throw error
        }
    }

    /// Inserts the row of `row.backupID`, or updates it: `status` and `error_message` always,
    /// every other column only where `row` has a value.
    public func record(_ row: BackupLogRow) async throws {
        _ = try await session.query("""
            INSERT INTO backup_logs (backup_id, backup_type, backup_timestamp, backup_size_bytes, checksum_md5, checksum_sha256,
                                     location_local, location_s3, status, recovery_tested, test_timestamp, recovery_time_seconds,
                                     verified_at, purged_at, error_message)
            VALUES (\(row.backupID), \(row.backupType), \(row.backupTimestamp), \(row.sizeBytes), \(row.md5), \(row.sha256),
                    \(row.locationLocal), \(row.locationS3), \(row.status.rawValue), COALESCE(\(row.recoveryTested), FALSE),
                    \(row.testTimestamp), \(row.recoveryTimeSeconds), \(row.verifiedAt), \(row.purgedAt), \(row.errorMessage))
            ON CONFLICT (backup_id) DO UPDATE SET
                backup_type = EXCLUDED.backup_type, backup_timestamp = EXCLUDED.backup_timestamp,
                backup_size_bytes = COALESCE(EXCLUDED.backup_size_bytes, backup_logs.backup_size_bytes),
                checksum_md5 = COALESCE(EXCLUDED.checksum_md5, backup_logs.checksum_md5),
                checksum_sha256 = COALESCE(EXCLUDED.checksum_sha256, backup_logs.checksum_sha256),
                location_local = COALESCE(EXCLUDED.location_local, backup_logs.location_local),
                location_s3 = COALESCE(EXCLUDED.location_s3, backup_logs.location_s3),
                status = CASE WHEN \(row.keepsStatus) THEN backup_logs.status ELSE EXCLUDED.status END,
                recovery_tested = COALESCE(\(row.recoveryTested), backup_logs.recovery_tested),
                test_timestamp = COALESCE(EXCLUDED.test_timestamp, backup_logs.test_timestamp),
                recovery_time_seconds = COALESCE(EXCLUDED.recovery_time_seconds, backup_logs.recovery_time_seconds),
                verified_at = COALESCE(EXCLUDED.verified_at, backup_logs.verified_at),
                purged_at = COALESCE(EXCLUDED.purged_at, backup_logs.purged_at),
                error_message = CASE WHEN \(row.keepsStatus) THEN backup_logs.error_message ELSE EXCLUDED.error_message END
            """, name: "record backup_logs row")
    }

    /// Every row, oldest backup first.
    public func rows() async throws -> [BackupLogRow] {
        func time(_ s: String?) -> Date? { s.flatMap(Double.init).map { Date(timeIntervalSince1970: $0) } }
        let rows = try await session.rows("""
            SELECT backup_id, backup_type, extract(epoch FROM backup_timestamp)::text, status, backup_size_bytes::text, checksum_md5,
                   checksum_sha256, location_local, location_s3, error_message, extract(epoch FROM purged_at)::text,
                   extract(epoch FROM verified_at)::text, recovery_tested::text, extract(epoch FROM test_timestamp)::text,
                   recovery_time_seconds::text, extract(epoch FROM created_at)::text
            FROM backup_logs ORDER BY backup_timestamp, backup_id
            """)
        return try rows.map { c in
            guard c.count == 16, let id = c[0], let type = c[1], let at = time(c[2]), let status = c[3].flatMap(BackupLogRow.Status.init) else {
                throw WaybackError(.postgres, "backup_logs holds a row Wayback cannot read (\(c.first.flatMap { $0 } ?? "no backup_id")); fix or delete it, then run 'wayback catalog sync'")
            }
            var r = BackupLogRow(backupID: id, backupType: type, backupTimestamp: at, status: status)
            r.sizeBytes = c[4].flatMap { Int64($0) }; r.md5 = c[5]; r.sha256 = c[6]; r.locationLocal = c[7]; r.locationS3 = c[8]
            r.errorMessage = c[9]; r.purgedAt = time(c[10]); r.verifiedAt = time(c[11]); r.recoveryTested = c[12].map { $0 == "true" }
            r.testTimestamp = time(c[13]); r.recoveryTimeSeconds = c[14].flatMap { Int($0) }; r.createdAt = time(c[15])
            return r
        }
    }

    /// The catalog's tables and indexes (for `init`'s report and the tests).
    public func objects() async throws -> [String] {
        try await session.rows("""
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i') ORDER BY 1
            """).compactMap { $0.first ?? nil }
    }
}
