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
        return first.count > 1 ? "a transaction pooler (one connection's statements ran in server processes \(first.sorted().joined(separator: ", ")))" : nil
    }

    /// Throws `.config` naming the pooler and the fix when `detect` finds one.
    public static func refuse(_ settings: ConnectionSettings, session: PostgresSession, logger: Logger) async throws {
        guard let why = try await detect(settings, session: session, logger: logger) else { return }
        throw WaybackError(.config, "cluster.connection goes through \(why); pg_dump needs one server session for the whole dump: use a direct connection (Supabase: Project Settings > Database > Direct connection, port 5432) or a session pooler")
    }
}
