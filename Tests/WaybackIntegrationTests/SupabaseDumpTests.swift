import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// A logical cluster (`cluster.type: logical`, no data directory) dumped with the Supabase
/// preset from a database shaped like a Supabase project, restored into plain PostgreSQL and
/// into a project-shaped database.
@Suite("logical clusters and the Supabase preset against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct SupabaseDumpTests {
    /// The platform's roles, as a Supabase project has them.
    static let platformRoles = """
        CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN BYPASSRLS;
        CREATE ROLE authenticator LOGIN NOINHERIT; GRANT anon, authenticated, service_role TO authenticator;
        CREATE ROLE supabase_admin SUPERUSER NOLOGIN; CREATE ROLE supabase_auth_admin NOLOGIN; CREATE ROLE supabase_storage_admin NOLOGIN;
        """
    /// The structure of the platform's auth and storage schemas (a new project has it, empty
    /// but for the platform's migration records).
    static let platformSchemas = """
        CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
        CREATE TABLE auth.users (id uuid PRIMARY KEY, email text UNIQUE, raw_user_meta_data jsonb, created_at timestamptz DEFAULT now());
        CREATE TABLE auth.schema_migrations (version text PRIMARY KEY);
        CREATE SCHEMA storage AUTHORIZATION supabase_storage_admin;
        CREATE TABLE storage.buckets (id text PRIMARY KEY, name text, public boolean DEFAULT false);
        CREATE TABLE storage.objects (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), bucket_id text REFERENCES storage.buckets, name text, owner uuid);
        CREATE TABLE storage.migrations (id int PRIMARY KEY, name text);
        CREATE SCHEMA realtime; CREATE TABLE realtime.messages (id bigserial PRIMARY KEY, payload jsonb);
        INSERT INTO auth.schema_migrations SELECT g::text FROM generate_series(1, 40) g;
        INSERT INTO storage.migrations SELECT g, 'm' || g FROM generate_series(1, 12) g;
        """
    /// The project's own data, and the platform's tables in use.
    static let project = """
        CREATE ROLE app_owner NOLOGIN;
        CREATE SCHEMA supabase_migrations; CREATE TABLE supabase_migrations.schema_migrations (version text PRIMARY KEY);
        INSERT INTO supabase_migrations.schema_migrations VALUES ('20260101000000');
        CREATE SCHEMA extensions; CREATE EXTENSION "uuid-ossp" SCHEMA extensions;
        INSERT INTO realtime.messages (payload) SELECT '{}' FROM generate_series(1, 30);
        INSERT INTO auth.users (id, email, raw_user_meta_data) SELECT gen_random_uuid(), 'user' || g || '@example.com', jsonb_build_object('n', g)
          FROM generate_series(1, 250) g;
        INSERT INTO storage.buckets VALUES ('avatars', 'avatars', true);
        INSERT INTO storage.objects (bucket_id, name, owner) SELECT 'avatars', 'a/' || email, id FROM auth.users;
        CREATE TABLE public.profiles (id uuid PRIMARY KEY REFERENCES auth.users ON DELETE CASCADE, username text);
        ALTER TABLE public.profiles OWNER TO app_owner;
        INSERT INTO public.profiles SELECT id, split_part(email, '@', 1) FROM auth.users;
        ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
        CREATE POLICY "own profile" ON public.profiles FOR SELECT TO authenticated USING (true);
        GRANT SELECT ON public.profiles TO anon, authenticated; GRANT ALL ON public.profiles TO service_role;
        CREATE TABLE public.todos (id bigserial PRIMARY KEY, user_id uuid REFERENCES auth.users, task text);
        INSERT INTO public.todos (user_id, task) SELECT id, 'task ' || g FROM auth.users, generate_series(1, 4) g;
        """

    static func digest(_ t: TestCluster, database: String) throws -> String {
        try t.psql("""
            SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
              SELECT 'u' || u::text AS x FROM auth.users u UNION ALL SELECT 'o' || o::text FROM storage.objects o
              UNION ALL SELECT 'p' || p::text FROM public.profiles p UNION ALL SELECT 't' || d::text FROM public.todos d) all_rows
            """, database: database)
    }

    @Test("a Supabase-shaped database in a logical cluster: dumped with the preset (platform schemas and roles out, auth and storage data kept), restored into plain PostgreSQL that has the roles, refused with the role named where they lack, and restored data-only into a project")
    func supabasePreset() async throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        _ = try t.psql(Self.platformRoles)
        _ = try t.psql("CREATE DATABASE app")
        _ = try t.psql(Self.platformSchemas + Self.project, database: "app")
        let logical = try t.configVariant("hosted.yaml", replace: [
            ("  pgdata: \(t.cluster.dataDirectory)\n", "  type: logical\n"), ("path: \(t.repositoryPath)", "path: \(t.root)/hosted-repo"),
            ("log_level: warning", "log_level: warning\ndump:\n  supabase: true\n  databases: [app]")])
        func run(_ args: [String]) throws -> Command.Result { try t.wayback(args, config: logical) }

        let initialized = try run(["init"])
        #expect(initialized.status == 0 && initialized.stdout.contains("cluster 'main' (logical): PostgreSQL 15"), "\(initialized.stdout) \(initialized.stderr)")
        // Physical commands do not apply, and say why.
        let backup = try run(["backup"])
        #expect(backup.status == WaybackError.Code.config.rawValue && backup.stderr.contains("logical cluster"), "\(backup.stderr)")
        // A physical configuration on the logical cluster's repository: refused.
        let physical = try t.configVariant("physical.yaml", replace: [("path: \(t.repositoryPath)", "path: \(t.root)/hosted-repo")])
        let mixed = try t.wayback(["dump"], config: physical)
        #expect(mixed.status != 0 && mixed.stderr.contains("as a logical cluster"), "\(mixed.stderr)")

        let dumped = try run(["dump"])
        try #require(dumped.status == 0, "\(dumped.stderr)")
        let id = try #require(DumpID(dumped.stdout.split(separator: "\n").first.map(String.init) ?? ""), "\(dumped.stdout)")
        let manifest = try await Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.root + "/hosted-repo")), cluster: "main").dumpManifest(id)
        #expect(manifest.isSupabase && manifest.databases.map(\.name) == ["app"])
        let counts = manifest.databases[0].rowCounts.tables
        #expect(counts["auth.users"] == 250 && counts["storage.objects"] == 250 && counts["public.profiles"] == 250 && counts["public.todos"] == 1000, "\(counts)")
        #expect(counts.keys.allSatisfy { !$0.hasPrefix("realtime.") && !$0.hasPrefix("supabase_migrations.") && $0 != "auth.schema_migrations" }, "\(counts.keys.sorted())")
        #expect(manifest.databases[0].platform != nil)

        // The roles: the platform's commented out, the project's kept.
        let globals = try run(["restore-dump", "--backup", manifest.id.rawValue, "--globals"])
        #expect(globals.stdout.contains("-- CREATE ROLE \"anon\";") && globals.stdout.contains("-- CREATE ROLE \"supabase_admin\";")
                && globals.stdout.contains("\nCREATE ROLE \"app_owner\";") && globals.stdout.contains("-- GRANT \"anon\" TO \"authenticator\""), "\(globals.stdout)")

        // A plain PostgreSQL without the roles: the role is named, with the fix.
        let plain = try TestCluster()
        defer { plain.cleanup() }
        func url(_ db: String) -> String { "postgresql://postgres@/\(db)?host=\(plain.root)&port=\(plain.cluster.port)" }
        _ = try plain.psql("CREATE DATABASE app_copy")
        let lacking = try run(["restore-dump", "--backup", manifest.id.rawValue, "--into", url("app_copy")])
        #expect(lacking.status == WaybackError.Code.cluster.rawValue && lacking.stderr.contains("needs the role '"), "\(lacking.status) \(lacking.stderr)")

        // With the platform's roles and the dump's own: auth, storage and the project restored whole.
        _ = try plain.psql(Self.platformRoles)
        let rolesFile = plain.root + "/globals.sql"
        try globals.stdout.write(toFile: rolesFile, atomically: true, encoding: .utf8)
        try TestEnvironment.giveToTestUser(rolesFile, mode: 0o644)
        _ = try plain.psql("\\i \(rolesFile)")
        _ = try plain.psql("CREATE DATABASE app_copy2")
        let restored = try run(["restore-dump", "--backup", manifest.id.rawValue, "--into", url("app_copy2")])
        #expect(restored.status == 0 && restored.stdout.contains("every table holds the rows the dump counted"), "\(restored.stdout) \(restored.stderr)")
        #expect(try Self.digest(plain, database: "app_copy2") == Self.digest(t, database: "app"))
        #expect(try plain.psql("SELECT count(*) FROM pg_namespace WHERE nspname IN ('realtime', 'supabase_migrations')", database: "app_copy2") == "0")
        #expect(try plain.psql("SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'uuid-ossp'", database: "app_copy2") == "extensions")
        #expect(try plain.psql("SELECT count(*) FROM auth.schema_migrations", database: "app_copy2") == "0")
        #expect(try plain.psql("SELECT relowner::regrole FROM pg_class WHERE oid = 'public.profiles'::regclass", database: "app_copy2") == "app_owner")

        // A project (auth and storage there, with the platform's own migration rows): data-only.
        _ = try plain.psql("CREATE DATABASE project")
        _ = try plain.psql(Self.platformSchemas, database: "project")
        let intoProject = try run(["restore-dump", "--backup", manifest.id.rawValue, "--into", url("project")])
        #expect(intoProject.status == 0 && intoProject.stdout.contains("every table holds the rows the dump counted"), "\(intoProject.stdout) \(intoProject.stderr)")
        #expect(try Self.digest(plain, database: "project") == Self.digest(t, database: "app"))
        #expect(try plain.psql("SELECT count(*) FROM auth.schema_migrations", database: "project") == "40")
        // A changed row fails the check.
        _ = try plain.psql("DELETE FROM public.todos WHERE id IN (SELECT id FROM public.todos LIMIT 3)", database: "app_copy2")
        #expect(try Self.digest(plain, database: "app_copy2") != Self.digest(t, database: "app"))

        // A drill of the newest dump: a scratch server with the platform's roles and the dump's, every table counted.
        let drill = try run(["drill"])
        #expect(drill.status == 0 && drill.stdout.contains("backup \(manifest.id) from 'local' to dump") && drill.stdout.contains("ok   restore app")
                && drill.stdout.contains("drill passed"), "\(drill.stdout) \(drill.stderr)")
        #expect(try t.psql("SELECT recovery_tested, recovery_time_seconds IS NOT NULL FROM wayback.backup_logs WHERE backup_id = '\(manifest.id)'") == "t|t")

        // status and check of a logical cluster: the dump, and no complaint about backups or WAL.
        let status = try run(["status"])
        #expect(status.stdout.contains(manifest.id.rawValue), "\(status.stdout)")
        let check = try run(["check"])
        #expect(check.status == 0 && check.stdout.contains("dump age") && check.stdout.contains("OK: drill: last drill")
                && !check.stdout.contains("wal age") && !check.stdout.contains("backup age"), "\(check.status) \(check.stdout)")
    }

    /// PgBouncer in transaction mode in front of `t`'s server, as the test OS user (it refuses
    /// root), with up to three server connections.
    final class Bouncer {
        let process = Process()
        let port: Int
        let pidFile: String
        init(_ t: TestCluster) throws {
            port = try MonitorTests.freePort()
            let dir = t.root + "/pgbouncer"
            pidFile = dir + "/pgbouncer.pid"
            try FileSystem.makeDirectories(dir, mode: 0o700)
            try TestEnvironment.giveToTestUser(dir, mode: 0o700)
            let ini = """
                [databases]
                * = host=\(t.root) port=\(t.cluster.port) user=postgres
                [pgbouncer]
                listen_addr = 127.0.0.1
                listen_port = \(port)
                unix_socket_dir =
                auth_type = any
                pool_mode = transaction
                default_pool_size = 3
                min_pool_size = 3
                ignore_startup_parameters = extra_float_digits,options,application_name
                logfile = \(dir)/pgbouncer.log
                pidfile = \(dir)/pgbouncer.pid
                """
            try ini.write(toFile: dir + "/pgbouncer.ini", atomically: true, encoding: .utf8)
            try TestEnvironment.giveToTestUser(dir + "/pgbouncer.ini", mode: 0o600)
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
            process.arguments = ["-u", TestEnvironment.osUser, "--", "/usr/sbin/pgbouncer", dir + "/pgbouncer.ini"]
            try process.run()
            // Ready when it accepts a connection and has its three server connections.
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline {
                if (try? Command.run([TestEnvironment.pgBin + "/psql", "-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "-Atc", "SELECT 1", "postgres"],
                                     asUser: TestEnvironment.osUser, check: true)) != nil { usleep(1_500_000); return }
                usleep(200_000)
            }
            stop()
            throw WaybackError(.connection, "pgbouncer did not start: \((try? String(contentsOfFile: dir + "/pgbouncer.log", encoding: .utf8)) ?? "")")
        }
        /// pgbouncer itself (runuser does not pass a signal on), then runuser.
        func stop() {
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                kill(pid, SIGKILL)
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    @Test("a logical cluster behind a transaction pooler (PgBouncer, transaction mode) is refused by init and dump, naming the pooler and the fix; the direct connection works")
    func transactionPoolerIsRefused() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        let bouncer = try Bouncer(t)
        defer { bouncer.stop() }
        let direct = "postgresql://postgres@/postgres?host=\(t.root)&port=\(t.cluster.port)"
        let pooled = try t.configVariant("pooled.yaml", replace: [
            ("  pgdata: \(t.cluster.dataDirectory)\n", "  type: logical\n"), ("path: \(t.repositoryPath)", "path: \(t.root)/hosted-repo"),
            (direct, "postgresql://postgres@127.0.0.1:\(bouncer.port)/postgres?sslmode=disable")])
        let refused = try t.wayback(["init"], config: pooled)
        #expect(refused.status == WaybackError.Code.config.rawValue && refused.stderr.contains("transaction pooler")
                && refused.stderr.contains("direct connection"), "\(refused.status) \(refused.stderr)")
        let logical = try t.configVariant("direct.yaml", replace: [
            ("  pgdata: \(t.cluster.dataDirectory)\n", "  type: logical\n"), ("path: \(t.repositoryPath)", "path: \(t.root)/hosted-repo")])
        #expect(try t.wayback(["init"], config: logical).status == 0)
        let dump = try t.wayback(["dump"], config: pooled)
        #expect(dump.status == WaybackError.Code.config.rawValue && dump.stderr.contains("transaction pooler"), "\(dump.status) \(dump.stderr)")
        #expect(try t.wayback(["dump"], config: logical).status == 0)
    }

    @Test("the daemon of a logical cluster: schedule.dump by default (overdue at its start), no physical jobs, the expiry after the dump; its metrics and status page (in Chromium) show the dump as the recovery point")
    func daemonOfALogicalCluster() throws {
        let browser = ReportTests.chromium
        if browser == nil && TestEnvironment.isCI { Issue.record("chromium is not installed (scripts/setup installs it)"); return }
        let t = try TestCluster()
        defer { t.cleanup() }
        _ = try t.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 500) g")
        let port = try MonitorTests.freePort()
        let logical = try t.configVariant("hosted.yaml", replace: [
            ("  pgdata: \(t.cluster.dataDirectory)\n", "  type: logical\n"), ("path: \(t.repositoryPath)", "path: \(t.root)/hosted-repo"),
            ("log_level: warning", "log_level: warning\nschedule:\n  verify: null\n  drill: null\n  drill_offsite: null\n  report: null\nmonitor:\n  listen: 127.0.0.1:\(port)\n  refresh: 2s")])
        #expect(try t.wayback(["init"], config: logical).status == 0)
        let schedule = try t.wayback(["schedule"], config: logical)
        #expect(schedule.stdout.contains("dump") && schedule.stdout.contains("0 2 * * *") && !schedule.stdout.contains("full") && !schedule.stdout.contains("incr"),
                "\(schedule.stdout)")
        let lockDir = t.root + "/locks"
        let first = try DaemonTests.Daemon(t, config: logical, log: t.root + "/daemon0.log")
        try DaemonTests.waitFor("the daemon's state", timeout: 30) { try FileSystem.list(lockDir).contains { $0.hasSuffix(".schedule.json") } }
        #expect(first.stop() == 0, "\(first.output)")
        let stateFile = lockDir + "/" + (try #require(try FileSystem.list(lockDir).first { $0.hasSuffix(".schedule.json") }))
        try Data("{\"lastRun\":{\"dump\":\(Date().addingTimeInterval(-2 * 86400).timeIntervalSince1970)}}".utf8).write(to: URL(fileURLWithPath: stateFile))
        let daemon = try DaemonTests.Daemon(t, config: logical, log: t.root + "/daemon1.log")
        try DaemonTests.waitFor("the scheduled dump", timeout: 60) { try t.wayback(["status"], config: logical).stdout.contains("logical dumps") }
        // The expiry runs after the dump, as after a backup: its state records it.
        try DaemonTests.waitFor("the expiry after the dump", timeout: 30) {
            ((try? String(contentsOfFile: stateFile, encoding: .utf8)) ?? "").contains("\"expire\"")
        }
        // /metrics and the page: the dump is the recovery point; nothing about physical backups.
        let status = try JSONSerialization.jsonObject(with: Data(try t.wayback(["status", "--json"], config: logical).stdout.utf8)) as? [String: Any] ?? [:]
        let dump = try #require((status["dumps"] as? [[String: Any]])?.first)
        let id = try #require(dump["id"] as? String)
        var metrics = ""
        try DaemonTests.waitFor("the dump's metrics", timeout: 30) {
            metrics = try MonitorTests.get(port, "/metrics").body
            return MonitorTests.metric(metrics, "wayback_dump_last_size_bytes", "repository=\"local\"") != nil
        }
        #expect(MonitorTests.metric(metrics, "wayback_dump_last_size_bytes", "repository=\"local\"") == Double(dump["bytes"] as? Int ?? -1), "\(metrics)")
        #expect(MonitorTests.metric(metrics, "wayback_backup_failures_total", "type=\"logical\"") == 0, "\(metrics)")
        #expect(MonitorTests.metric(metrics, "wayback_check_status", "cluster=\"main\"") == 0, "\(metrics)")
        let page = t.root + "/status.html"
        try MonitorTests.get(port, "/").body.write(toFile: page, atomically: true, encoding: .utf8)
        if let browser {
            let dom = try Command.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "file://" + page], check: false).stdout
            #expect(dom.contains("Protected") && dom.contains("Recovery points") && dom.contains("1 logical dump(s)") && dom.contains(id)
                    && !dom.contains("No complete backup") && !dom.contains("No recoverable window"), "\(dom.prefix(3000))")
        }
        #expect(daemon.stop() == 0, "\(daemon.output)")
        #expect(!daemon.output.contains("error"), "\(daemon.output)")
    }
}
