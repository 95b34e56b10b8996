import Foundation

/// `dump.supabase: true`: what a dump of a Supabase project leaves out and keeps, after the
/// Supabase CLI's own `supabase db dump` (its lists of internal schemas and reserved roles).
/// A Supabase project (or a plain PostgreSQL) restores it; the platform's own parts are the
/// target project's.
public enum SupabasePreset {
    /// Schemas the platform and its extensions create and manage: neither structure nor data is
    /// dumped (a new project has its own). Patterns end in `*`.
    public static let platformSchemas = [
        "_analytics", "_realtime", "_supavisor", "extensions", "pgbouncer", "realtime", "supabase_functions", "supabase_migrations",
        "cron", "dbdev", "graphql", "graphql_public", "net", "pgsodium", "pgsodium_masks", "pgtle", "repack", "tiger", "tiger_data",
        "topology", "vault", "timescaledb_*", "_timescaledb_*",
    ]
    /// Schemas whose data is the project's (its users, its files' records) but whose structure
    /// the platform owns: dumped on their own, restored data-only into a Supabase project (under
    /// `session_replication_role = replica`) or whole into a plain PostgreSQL.
    public static let dataSchemas = ["auth", "storage"]
    /// Tables of those schemas whose rows the target's platform writes itself.
    public static let platformTables = ["auth.schema_migrations", "storage.migrations"]
    /// Roles the platform creates (and `supautils` reserves): not created or altered by the
    /// dump's roles, nor granted to.
    public static let reservedRoles: Set<String> = [
        "anon", "authenticated", "authenticator", "dashboard_user", "pgbouncer", "postgres", "service_role",
        "pgsodium_keyholder", "pgsodium_keyiduser", "pgsodium_keymaker", "pgtle_admin",
    ]

    public static func isReserved(_ role: String) -> Bool { reservedRoles.contains(role) || role.hasPrefix("supabase_") }

    /// Whether `schema` is one of the platform's (a pattern's `*` matches any rest).
    public static func isPlatform(_ schema: String) -> Bool {
        platformSchemas.contains { p in p.hasSuffix("*") ? schema.hasPrefix(String(p.dropLast())) : schema == p }
    }

    /// `pg_dumpall --roles-only --quote-all-identifiers` output with the reserved roles' CREATE
    /// and ALTER ROLE statements and the grants to them commented out, and a reserved grantor's
    /// `GRANTED BY` clause removed (the target has those roles, or must not get them).
    public static func filterRoles(_ sql: String) -> String {
        sql.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            let l = String(line)
            for prefix in ["CREATE ROLE ", "ALTER ROLE "] where l.hasPrefix(prefix) {
                if let role = quotedName(l.dropFirst(prefix.count)), isReserved(role) { return "-- " + l }
            }
            guard l.hasPrefix("GRANT ") else { return l }
            if let to = l.range(of: " TO "), let grantee = quotedName(l[to.upperBound...]), isReserved(grantee) { return "-- " + l }
            if let by = l.range(of: " GRANTED BY "), let grantor = quotedName(l[by.upperBound...]), isReserved(grantor) {
                return String(l[..<by.lowerBound]) + ";"
            }
            return l
        }.joined(separator: "\n")
    }

    /// The name at the start of `text` when it is a quoted identifier (`"a""b"` is `a"b`).
    static func quotedName(_ text: Substring) -> String? {
        guard text.first == "\"" else { return nil }
        var out = "", i = text.index(after: text.startIndex)
        while i < text.endIndex {
            if text[i] == "\"" {
                let next = text.index(after: i)
                if next < text.endIndex, text[next] == "\"" { out.append("\""); i = text.index(after: next); continue }
                return out
            }
            out.append(text[i])
            i = text.index(after: i)
        }
        return nil
    }
}
