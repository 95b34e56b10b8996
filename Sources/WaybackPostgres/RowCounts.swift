import Foundation
import Logging
import WaybackCore

/// The exact row count of every table, taken right after `pg_backup_stop` in one repeatable-read
/// snapshot per database (`backup.record_row_counts`), so that a drill can compare a restored copy
/// with what the cluster held.
///
/// A snapshot is a set of committed transactions, not a WAL position: a transaction writes its
/// commit record, waits for the flush, and only then becomes visible to new snapshots. So the
/// snapshot (`xmin:xmax:xip`) is kept with the counts, and a drill reads the commit records after
/// the backup's end to find the position whose replay commits exactly the transactions the snapshot
/// saw (`countPoint`), restores to it and compares table by table.
public struct RowCounts: Codable, Sendable, Equatable {
    public struct Database: Codable, Sendable, Equatable {
        public var name: String
        /// `pg_current_snapshot()` of the transaction that counted.
        public var snapshot: String
        /// `schema.table` (as PostgreSQL quotes identifiers) -> rows.
        public var tables: [String: Int64]
        /// Tables the backup's role may not read, which were not counted.
        public var unreadable: Int
        public init(name: String, snapshot: String, tables: [String: Int64], unreadable: Int) {
            self.name = name; self.snapshot = snapshot; self.tables = tables; self.unreadable = unreadable
        }
    }
    /// `pg_current_wal_insert_lsn()` read after every snapshot was taken: every commit the
    /// snapshots saw is before it.
    public var lsn: LSN
    public var takenAt: Date
    public var seconds: Double
    public var databases: [Database]
    public var tableCount: Int { databases.reduce(0) { $0 + $1.tables.count } }
}

/// A parsed `pg_snapshot` (`xmin:xmax:xip,...`, 64-bit transaction ids).
public struct TransactionSnapshot: Sendable, Equatable {
    public var xmin: UInt64
    public var xmax: UInt64
    public var inProgress: Set<UInt64>

    public init(xmin: UInt64, xmax: UInt64, inProgress: Set<UInt64>) {
        self.xmin = xmin; self.xmax = xmax; self.inProgress = inProgress
    }

    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let lo = UInt64(parts[0]), let hi = UInt64(parts[1]), lo <= hi else { return nil }
        var xip = Set<UInt64>()
        for p in parts[2].split(separator: ",") {
            guard let x = UInt64(p), x >= lo, x < hi else { return nil }
            xip.insert(x)
        }
        self.init(xmin: lo, xmax: hi, inProgress: xip)
    }

    /// Whether a transaction (64-bit id) had finished when the snapshot was taken.
    public func sees(_ xid: UInt64) -> Bool { xid < xmax && !inProgress.contains(xid) }

    /// The 64-bit id of a 32-bit one from WAL, taken as the nearest to `xmax` (ids in a snapshot's
    /// neighbourhood are never 2^31 apart).
    public func widen(_ xid: UInt32) -> UInt64 {
        let x = (xmax & ~UInt64(0xFFFF_FFFF)) | UInt64(xid)
        let candidates = [x, x >= 1 << 32 ? x - (1 << 32) : x, x + (1 << 32)]
        return candidates.min { $0.distance(to: xmax).magnitude < $1.distance(to: xmax).magnitude }!
    }

    /// Whether two snapshots see the same transactions as finished.
    public func seesSameAs(_ other: TransactionSnapshot) -> Bool {
        let lo = min(xmin, other.xmin), hi = max(xmax, other.xmax)
        guard hi - lo <= 1_000_000 else { return false }
        for x in lo..<hi where sees(x) != other.sees(x) { return false }
        return true
    }
}

extension RowCounts {
    /// Where a restore must stop so that its commits are exactly those the snapshot saw.
    public enum Point: Sendable, Equatable {
        /// Stop as soon as the backup is consistent: no commit the snapshot saw came after it.
        case backupEnd
        /// Stop just after the commit record at this position (`recovery_target_lsn`, inclusive).
        case after(LSN)
        /// No position fits: these transactions committed in the WAL before the last one the
        /// snapshot saw, yet the snapshot did not see them (their commit was still being flushed).
        case none(straddling: [UInt32])
    }

    /// The point for `snapshot`, from the commit records between the backup's end (`stop`) and
    /// the counts' `lsn` (records past `lsn` cannot matter: every commit the snapshot saw is before).
    public static func countPoint(snapshot: TransactionSnapshot, commits: [WALEvent], stop: LSN, lsn: LSN) -> Point {
        let inRange = commits.filter { $0.kind == .commit && $0.lsn < lsn }
        let last = inRange.filter { $0.lsn >= stop && snapshot.sees(snapshot.widen($0.xid)) }.map(\.lsn).max()
        let bound = last ?? stop
        let straddling = inRange.filter { $0.lsn <= bound && !snapshot.sees(snapshot.widen($0.xid)) }.map(\.xid)
        if !straddling.isEmpty { return .none(straddling: straddling) }
        return last.map { .after($0) } ?? .backupEnd
    }

    /// Differences between recorded counts and a copy's, as lines (`db.schema.table: n recorded, m in the copy`).
    /// The schema of a `quote_ident`ed `schema.table` name, unquoted.
    public static func schema(of table: String) -> String {
        var out = "", quoted = false, chars = Array(table), i = 0
        while i < chars.count {
            let ch = chars[i]
            if ch == "\"" {
                if quoted && i + 1 < chars.count && chars[i + 1] == "\"" { out.append("\""); i += 2; continue }
                quoted.toggle()
            } else if ch == "." && !quoted {
                return out
            } else {
                out.append(ch)
            }
            i += 1
        }
        return out
    }

    public static func differences(recorded: Database, copy: [String: Int64]) -> [String] {
        var out = [String]()
        for (table, n) in recorded.tables.sorted(by: { $0.key < $1.key }) {
            guard let m = copy[table] else { out.append("\(recorded.name).\(table): \(n) recorded, missing in the copy"); continue }
            if m != n { out.append("\(recorded.name).\(table): \(n) recorded, \(m) in the copy") }
        }
        for table in copy.keys.sorted() where recorded.tables[table] == nil {
            out.append("\(recorded.name).\(table): in the copy, not recorded")
        }
        return out
    }
}

// MARK: taking and reading counts

extension RowCounts {
    /// Counts every table of every database that accepts connections, as `settings`' role sees
    /// them. Snapshots are taken in all databases together and retaken (up to `attempts` times)
    /// until they see the same transactions, so that one restore point fits them all.
    public static func take(_ settings: ConnectionSettings, attempts: Int = 20, clock: any WaybackClock = SystemClock(),
                            logger: Logger) async throws -> RowCounts {
        let began = monotonicSeconds(), takenAt = clock.now
        let first = try await PostgresSession.connect(settings, logger: logger)
        var sessions = [first]
        do {
            var counts = try await take(first, settings: settings, attempts: attempts, sessions: &sessions, logger: logger)
            counts.takenAt = takenAt
            counts.seconds = monotonicSeconds() - began
            for s in sessions { await s.close() }
            return counts
        } catch {
            for s in sessions { await s.close() }
            throw error
        }
    }

    static func take(_ first: PostgresSession, settings: ConnectionSettings, attempts: Int, sessions: inout [PostgresSession],
                     logger: Logger) async throws -> RowCounts {
        let names = try await first.rows("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1").compactMap { $0[0] }
        var byName = [settings.database: first]
        for name in names where byName[name] == nil {
            var s = settings
            s.database = name
            let session = try await PostgresSession.connect(s, logger: logger)
            sessions.append(session)
            byName[name] = session
        }
        let ordered = names.compactMap { n in byName[n].map { (n, $0) } }
        var snapshots = [String]()
        let attempts = max(1, attempts)
        for attempt in 1...attempts {
            for (_, s) in ordered { _ = try await s.rows("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") }
            snapshots = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for (i, (_, s)) in ordered.enumerated() {
                    group.addTask { (i, try await s.string("SELECT pg_current_snapshot()::text")) }
                }
                var out = [String](repeating: "", count: ordered.count)
                for try await (i, text) in group { out[i] = text }
                return out
            }
            let parsed = snapshots.compactMap(TransactionSnapshot.init)
            guard parsed.count == snapshots.count else {
                throw WaybackError(.postgres, "PostgreSQL returned a snapshot Wayback cannot read (\(snapshots.first ?? ""))")
            }
            if attempt == attempts || parsed.allSatisfy({ $0.seesSameAs(parsed[0]) }) { break }
            for (_, s) in ordered { _ = try await s.rows("ROLLBACK") }
        }
        let lsnText = try await first.string("SELECT pg_current_wal_insert_lsn()::text")
        guard let lsn = LSN(lsnText) else { throw WaybackError(.postgres, "PostgreSQL returned '\(lsnText)' where a WAL position was expected") }
        let databases = try await withThrowingTaskGroup(of: (Int, Database).self) { group in
            for (i, (name, s)) in ordered.enumerated() {
                let snapshot = snapshots[i]
                group.addTask {
                    let (tables, unreadable) = try await Self.tables(s)
                    var counts = [String: Int64]()
                    for t in tables { counts[t] = try await Self.count(t, session: s) }
                    _ = try await s.rows("COMMIT")
                    return (i, Database(name: name, snapshot: snapshot, tables: counts, unreadable: unreadable))
                }
            }
            var out = [Database?](repeating: nil, count: ordered.count)
            for try await (i, d) in group { out[i] = d }
            return out.compactMap { $0 }
        }
        return RowCounts(lsn: lsn, takenAt: Date(), seconds: 0, databases: databases)
    }

    /// The tables whose rows survive a restore (permanent tables and populated materialized views
    /// outside the system schemas), as `schema.table`, and how many of them the role may not read.
    static func tables(_ session: PostgresSession) async throws -> (readable: [String], unreadable: Int) {
        let rows = try await session.rows("""
            SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), has_table_privilege(c.oid, 'SELECT')::text
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm') AND c.relpersistence = 'p' AND c.relispopulated
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
              AND n.nspname NOT LIKE 'pg\\_temp%'
            ORDER BY 1
            """)
        let readable = rows.filter { $0[1] == "true" }.compactMap { $0[0] }
        return (readable, rows.count - readable.count)
    }

    /// `SELECT count(*) FROM ONLY table` (the name comes quoted from `quote_ident`).
    static func count(_ table: String, session: PostgresSession) async throws -> Int64 {
        let text = try await session.string("SELECT count(*)::text FROM ONLY \(table)")
        guard let n = Int64(text) else { throw WaybackError(.postgres, "PostgreSQL returned '\(text)' where a row count was expected") }
        return n
    }

    /// The counts in the transaction `session` has open (a dump's exported snapshot).
    public static func countHere(_ session: PostgresSession, database: String, snapshot: String) async throws -> Database {
        let (tables, unreadable) = try await tables(session)
        var counts = [String: Int64]()
        for t in tables { counts[t] = try await count(t, session: session) }
        return Database(name: database, snapshot: snapshot, tables: counts, unreadable: unreadable)
    }

    /// A content digest of every table in `tables`, in the transaction `session` has open: the
    /// sum (as numeric) of the first 64 bits of the MD5 of each row's text, so that the order of
    /// the rows does not matter and a changed, missing or extra row changes it (`dump.table_digests`).
    public static func digestsHere(_ session: PostgresSession, tables: [String]) async throws -> [String: String] {
        var out = [String: String]()
        for t in tables { out[t] = try await session.string(digestSQL(t)) }
        return out
    }

    static func digestSQL(_ table: String) -> String {
        "SELECT coalesce(sum(('x' || substr(md5(r::text), 1, 16))::bit(64)::bigint::numeric), 0)::text FROM ONLY \(table) r"
    }

    /// The digests of `tables` in a database (a restored dump), in one snapshot; a table that is
    /// not there is left out (the counts name it).
    public static func currentDigests(_ settings: ConnectionSettings, tables: [String], logger: Logger) async throws -> [String: String] {
        try await inSnapshot(settings, logger: logger) { s in
            let present = Set(try await self.tables(s).readable)
            return try await digestsHere(s, tables: tables.filter { present.contains($0) })
        }
    }

    /// The current counts of the tables of one database (a drill's copy), in one snapshot.
    public static func current(_ settings: ConnectionSettings, logger: Logger) async throws -> [String: Int64] {
        try await inSnapshot(settings, logger: logger) { s in
            var out = [String: Int64]()
            for t in try await tables(s).readable { out[t] = try await count(t, session: s) }
            return out
        }
    }

    /// `body` in one read-only REPEATABLE READ transaction of a session of its own.
    static func inSnapshot<T>(_ settings: ConnectionSettings, logger: Logger, _ body: (PostgresSession) async throws -> T) async throws -> T {
        let s = try await PostgresSession.connect(settings, logger: logger)
        do {
            _ = try await s.rows("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            let out = try await body(s)
            _ = try await s.rows("COMMIT")
            await s.close()
            return out
        } catch {
            await s.close()
            throw error
        }
    }
}
