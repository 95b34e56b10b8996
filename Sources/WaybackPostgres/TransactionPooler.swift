import Logging
import WaybackCore

/// A transaction pooler (PgBouncer or Supavisor in transaction mode) gives each transaction to
/// whichever server connection is free. `pg_dump` needs one server session for its whole run
/// (its snapshot, its session settings, its parallel workers' snapshot import), so a dump goes
/// through a direct connection or a session pooler, never a transaction pooler.
public enum TransactionPooler {
    /// Why this connection looks like a transaction pooler, or nil: Supabase's pooler host on
    /// port 6543 (its transaction mode), or server processes shared or changing: a second client
    /// connection, opened while `session` stays open, is served by the same server process (a
    /// direct connection never shares one), or `session`'s statements ran in several.
    public static func detect(_ settings: ConnectionSettings, session: PostgresSession, logger: Logger) async throws -> String? {
        if settings.host.hasSuffix(".pooler.supabase.com") && settings.port == 6543 {
            return "Supavisor's transaction mode (\(settings.host), port 6543)"
        }
        var first = Set<String>()
        for _ in 0..<3 { first.insert(try await session.string("SELECT pg_backend_pid()::text")) }
        let other = try await PostgresSession.connect(settings, logger: logger)
        let second: String
        do { second = try await other.string("SELECT pg_backend_pid()::text"); await other.close() } catch { await other.close(); throw error }
        if first.contains(second) {
            return "a transaction pooler (two client connections were served by one server process, \(second))"
        }
        if first.count > 1 {
            return "a transaction pooler (one connection's statements ran in server processes \(first.sorted().joined(separator: ", ")))"
        }
        return try await pinned(settings, session: session, pid: first.first ?? "", logger: logger)
    }

    /// The second look, which does not depend on which idle server process a pooler hands out:
    /// another client holds a transaction open (its server process cannot serve anyone else)
    /// while `session` runs a statement, then `session` holds one while the other runs one. On a
    /// direct connection each keeps its own process throughout; through a transaction pooler one
    /// of them moves, takes the other's process, or waits for a free one (5 s at most).
    static func pinned(_ settings: ConnectionSettings, session: PostgresSession, pid: String, logger: Logger) async throws -> String? {
        let other = try await PostgresSession.connect(settings, logger: logger)
        do {
            _ = try await other.rows("BEGIN")
            let held = try await other.string("SELECT pg_backend_pid()::text")
            let answer = try await withThrowingTaskGroup(of: String?.self) { group -> String? in
                group.addTask { try await session.string("SELECT pg_backend_pid()::text") }
                group.addTask { try await Task.sleep(nanoseconds: 5_000_000_000); return nil }
                let first = try await group.next() ?? nil
                if first == nil {
                    // No server process for `session` while the other held one: let it go, and
                    // take the answer that then comes.
                    await other.close()
                    while let r = try await group.next() { if r != nil { return nil } }
                }
                group.cancelAll()
                return first
            }
            guard let mine = answer else {
                return "a transaction pooler (a statement waited for a server process while another client held one)"
            }
            _ = try await other.rows("COMMIT")
            if mine != pid || mine == held {
                return "a transaction pooler (one connection's statements ran in server processes \(pid) and \(mine))"
            }
            _ = try await session.rows("BEGIN")
            let mineHeld = try await session.string("SELECT pg_backend_pid()::text")
            let theirs = try await other.string("SELECT pg_backend_pid()::text")
            _ = try await session.rows("COMMIT")
            await other.close()
            if mineHeld != pid || theirs != held {
                return "a transaction pooler (server processes changed between transactions: \(pid) to \(mineHeld), \(held) to \(theirs))"
            }
            return nil
        } catch {
            await other.close()
            throw error
        }
    }

    /// Throws `.config` naming the pooler and the fix when `detect` finds one.
    public static func refuse(_ settings: ConnectionSettings, session: PostgresSession, logger: Logger) async throws {
        guard let why = try await detect(settings, session: session, logger: logger) else { return }
        throw WaybackError(.config, "cluster.connection goes through \(why); pg_dump needs one server session for the whole dump: use a direct connection (Supabase: Project Settings > Database > Direct connection, port 5432) or a session pooler")
    }
}
