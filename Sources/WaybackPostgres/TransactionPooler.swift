import WaybackCore

/// A transaction pooler (PgBouncer or Supavisor in transaction mode) gives each transaction to
/// whichever server connection is free. `pg_dump` needs one server session for its whole run
/// (its snapshot, its session settings, its parallel workers' snapshot import), so a dump goes
/// through a direct connection or a session pooler, never a transaction pooler.
public enum TransactionPooler {
    /// Why this connection looks like a transaction pooler, or nil: Supabase's pooler host on
    /// port 6543 (its transaction mode), or the server process changing between statements of
    /// one client connection (`pg_backend_pid()` read three times outside a transaction).
    public static func detect(_ settings: ConnectionSettings, session: PostgresSession) async throws -> String? {
        if settings.host.hasSuffix(".pooler.supabase.com") && settings.port == 6543 {
            return "Supavisor's transaction mode (\(settings.host), port 6543)"
        }
        var pids = Set<String>()
        for _ in 0..<3 { pids.insert(try await session.string("SELECT pg_backend_pid()::text")) }
        return pids.count > 1 ? "a transaction pooler (each statement ran in another server process: \(pids.sorted().joined(separator: ", ")))" : nil
    }

    /// Throws `.config` naming the pooler and the fix when `detect` finds one.
    public static func refuse(_ settings: ConnectionSettings, session: PostgresSession) async throws {
        guard let why = try await detect(settings, session: session) else { return }
        throw WaybackError(.config, "cluster.connection goes through \(why); pg_dump needs one server session for the whole dump: use a direct connection (Supabase: Project Settings > Database > Direct connection, port 5432) or a session pooler")
    }
}
