import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// `wayback dump` and `restore-dump` against real PostgreSQL 15: pg_dump streamed into the
/// repository, restored with pg_restore, every table counted against the dump's snapshot.
@Suite("logical dumps against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct LogicalDumpTests {
    static let shop = """
        CREATE EXTENSION pgcrypto; CREATE EXTENSION "uuid-ossp";
        CREATE ROLE shop_reader; CREATE ROLE shop_writer;
        CREATE SCHEMA sales; CREATE SCHEMA "Audit Log";
        CREATE SEQUENCE sales.order_no START 1000;
        CREATE TABLE sales.orders (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), no bigint DEFAULT nextval('sales.order_no'),
                                   doc jsonb, blob bytea, owner text DEFAULT current_user);
        INSERT INTO sales.orders (doc, blob) SELECT jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g)), gen_random_bytes(64)
          FROM generate_series(1, 5000) g;
        CREATE TABLE sales.big AS SELECT g AS id, md5(g::text) AS h, repeat('x', 200) AS pad FROM generate_series(1, 100000) g;
        CREATE TABLE "Audit Log"."Events" (id serial PRIMARY KEY, what text);
        INSERT INTO "Audit Log"."Events" (what) SELECT 'event ' || g FROM generate_series(1, 321) g;
        ALTER TABLE sales.orders ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_rows ON sales.orders FOR SELECT TO shop_reader USING (owner = current_user);
        GRANT SELECT ON sales.orders TO shop_reader; GRANT INSERT ON sales.orders TO shop_writer;
        CREATE VIEW sales.recent AS SELECT id, no FROM sales.orders WHERE no > 5000;
        CREATE FUNCTION sales.total() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM sales.orders';
        """

    /// A digest of every row of every user table (the content, not only the counts).
    static func digests(_ t: TestCluster, database: String) throws -> String {
        try t.psql("""
            SELECT string_agg(format('%s %s', r.tab, r.d), ' ' ORDER BY r.tab) FROM (
              SELECT 'sales.orders' AS tab, md5(string_agg(o::text, ',' ORDER BY o.no)) AS d FROM sales.orders o
              UNION ALL SELECT 'sales.big', md5(string_agg(b::text, ',' ORDER BY b.id)) FROM sales.big b
              UNION ALL SELECT 'audit', md5(string_agg(e::text, ',' ORDER BY e.id)) FROM "Audit Log"."Events" e) r
            """, database: database)
    }

    /// The largest file in `dir` (a dump's biggest table, in the directory format).
    static func largestFile(_ dir: String) throws -> String {
        let names = try FileSystem.list(dir)
        let sized = try names.map { ($0, try FileSystem.status(dir + "/" + $0)?.size ?? 0) }
        return dir + "/" + (sized.max { $0.1 < $1.1 }?.0 ?? "")
    }

    @Test("a dump of two databases under pgbench load (directory format, two pg_dump workers, files streamed through a spool that ends empty) restores into empty databases with every table's rows and content as at the snapshot; a non-empty target, a damaged object and counts that differ are refused with their own status")
    func dumpAndRestore() async throws {
        let t = try TestCluster(extraConfig: "dump:\n  spool_dir: /var/tmp/wayback-dump-spool-test\n")
        defer { t.cleanup(); try? FileSystem.removeTree("/var/tmp/wayback-dump-spool-test") }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "2"])
        _ = try t.psql("CREATE DATABASE shop")
        _ = try t.psql(Self.shop, database: "shop")
        let load = try t.startPgbench(["-T", "8", "-c", "2"])
        usleep(1_000_000)
        let out = try t.waybackOK(["dump"])
        try load.wait()
        let id = try #require(DumpID(out.split(separator: "\n").first.map(String.init) ?? ""), "\(out)")
        #expect(out.contains("shop:") && out.contains("postgres:") && out.contains("roles:"), "\(out)")

        // status lists it (from the listings), as text and JSON.
        let status = try t.waybackOK(["status"])
        #expect(status.contains("logical dumps") && status.contains(id.rawValue + "  postgres, shop"), "\(status)")
        let statusJSON = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["status", "--json"]).utf8)) as? [String: Any] ?? [:]
        #expect((statusJSON["dumps"] as? [[String: Any]])?.first?["id"] as? String == id.rawValue, "\(statusJSON["dumps"] ?? "")")

        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        var manifest = try await catalog.dumpManifest(id)
        #expect(Set(manifest.databases.map(\.name)) == ["postgres", "shop"])
        #expect(manifest.globals != nil, "\(manifest.note ?? "")")
        let shopCounts = try #require(manifest.databases.first { $0.name == "shop" }).rowCounts
        #expect(shopCounts.tables["sales.big"] == 100_000 && shopCounts.tables["\"Audit Log\".\"Events\""] == 321, "\(shopCounts.tables)")
        // The directory format: a table of contents and a file per table, each framed and compressed
        // (sales.big's file far smaller than what pg_dump wrote); the spool is empty again.
        let shop = try #require(manifest.databases.first { $0.name == "shop" })
        #expect(manifest.format == "directory" && shop.object.name == "db/shop/toc.dat" && (shop.files?.count ?? 0) >= 3, "\(shop.files ?? [])")
        let biggest = try Self.largestFile(t.repositoryPath + "/main/dumps/\(id)/db/shop")
        let plainBiggest = try #require(shop.files?.max { $0.plainSize < $1.plainSize })
        let storedBiggest = try FileSystem.status(biggest)?.size ?? 0
        #expect(biggest.hasSuffix(plainBiggest.name) && storedBiggest * 4 < plainBiggest.plainSize, "\(biggest) \(plainBiggest)")
        #expect(try FileSystem.list("/var/tmp/wayback-dump-spool-test").isEmpty)

        func url(_ db: String) -> String { "postgresql://postgres@/\(db)?host=\(t.root)&port=\(t.cluster.port)" }
        _ = try t.psql("CREATE DATABASE shop_copy")
        let restored = try t.wayback(["restore-dump", "--backup", id.rawValue, "--database", "shop", "--into", url("shop_copy")])
        #expect(restored.status == 0, "\(restored.stdout) \(restored.stderr)")
        #expect(restored.stdout.contains("every table holds the rows the dump counted"), "\(restored.stdout)")
        #expect(try Self.digests(t, database: "shop_copy") == Self.digests(t, database: "shop"))
        #expect(try t.psql("SELECT sales.total()", database: "shop_copy") == "5000")
        #expect(try t.psql("SELECT count(*) FROM pg_policies WHERE policyname = 'own_rows'", database: "shop_copy") == "1")

        // The database written to by pgbench during the dump: its counts are those of the snapshot.
        _ = try t.psql("CREATE DATABASE bench_copy")
        let bench = try t.wayback(["restore-dump", "--backup", id.rawValue, "--database", "postgres", "--into", url("bench_copy"), "--json"])
        #expect(bench.status == 0, "\(bench.stdout) \(bench.stderr)")
        #expect(try t.psql("SELECT count(*) FROM pgbench_history", database: "bench_copy")
                == String(manifest.databases.first { $0.name == "postgres" }!.rowCounts.tables["public.pgbench_history"] ?? -1))

        // --list and --dry-run restore nothing.
        let listed = try t.waybackOK(["restore-dump", "--backup", id.rawValue, "--list", "--database", "shop"])
        #expect(listed.contains("database shop:") && listed.contains("sales.big: 100000 rows") && !listed.contains("pgbench"), "\(listed)")
        let dry = try t.waybackOK(["restore-dump", "--backup", id.rawValue, "--dry-run"])
        #expect(dry.contains("database shop:") && dry.contains("database postgres:") && dry.contains("is sound"), "\(dry)")

        // A spool folder without room for the decoded dump: refused before anything is written (exit 18).
        let small = try TestEnvironment.makeTemporaryDirectory("small-spool")
        let m = try Command.run(["/bin/mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", small], check: false)
        try #require(m.status == 0, "mount: \(m.stderr)")
        defer { _ = try? Command.run(["/bin/umount", "-l", small], check: false); try? FileSystem.removeTree(small) }
        try TestEnvironment.giveToTestUser(small, mode: 0o700)
        _ = try t.psql("CREATE DATABASE shop_nospace")
        let noSpace = try t.wayback(["restore-dump", "--backup", id.rawValue, "--database", "shop", "--spool-dir", small, "--into", url("shop_nospace")])
        #expect(noSpace.status == WaybackError.Code.noSpace.rawValue && noSpace.stderr.contains("--spool-dir"), "\(noSpace.status) \(noSpace.stderr)")
        #expect(try t.psql("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace", database: "shop_nospace") == "0")

        // A target that is not empty: refused.
        let again = try t.wayback(["restore-dump", "--backup", id.rawValue, "--database", "shop", "--into", url("shop_copy")])
        #expect(again.status == WaybackError.Code.conflict.rawValue && again.stderr.contains("is not empty"), "\(again.stderr)")

        // Counts that the restored copy does not have: exit 22, the table named with both numbers.
        manifest.databases = manifest.databases.map { d in
            var d = d
            if d.name == "shop" { d.rowCounts.tables["sales.big"] = 99_999 }
            return d
        }
        try await catalog.writeDumpManifest(manifest)
        _ = try t.psql("CREATE DATABASE shop_copy2")
        let differs = try t.wayback(["restore-dump", "--backup", id.rawValue, "--database", "shop", "--into", url("shop_copy2")])
        #expect(differs.status == WaybackError.Code.mismatch.rawValue, "\(differs.status) \(differs.stderr)")
        #expect(differs.stdout.contains("shop.sales.big: 99999 recorded, 100000 in the copy"), "\(differs.stdout)")

        // A damaged object: refused, named.
        let objectPath = try Self.largestFile(t.repositoryPath + "/main/dumps/\(id)/db/shop")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: objectPath))
        bytes[bytes.count / 2] ^= 0x5A
        try bytes.write(to: URL(fileURLWithPath: objectPath))
        _ = try t.psql("CREATE DATABASE shop_copy3")
        let damaged = try t.wayback(["restore-dump", "--backup", id.rawValue, "--database", "shop", "--into", url("shop_copy3")])
        #expect(damaged.status == WaybackError.Code.corrupt.rawValue && damaged.stderr.contains("db/shop/" + FileSystem.lastComponent(objectPath)), "\(damaged.status) \(damaged.stderr)")
        let dryDamaged = try t.wayback(["restore-dump", "--backup", id.rawValue, "--dry-run", "--database", "shop"])
        #expect(dryDamaged.status == WaybackError.Code.corrupt.rawValue, "\(dryDamaged.status) \(dryDamaged.stderr)")
    }

    @Test("a dump to an encrypted local repository and an encrypted S3 repository (moto) stores no plaintext and restores from the S3 copy alone")
    func encryptedToLocalAndS3() async throws {
        let s3 = try S3TestServer()
        defer { s3.stop() }
        let keys = try TestEnvironment.makeTemporaryDirectory("keys")
        defer { try? FileSystem.removeTree(keys) }
        _ = chmod(keys, 0o755)
        let keyA = try EncryptionTests.keyFile(in: keys, "a.key", hex: false), keyB = try EncryptionTests.keyFile(in: keys, "b.key", hex: true)
        let repoDir = try TestEnvironment.makeTemporaryDirectory("repo")
        defer { try? FileSystem.removeTree(repoDir) }
        let local = S3RepositoryTests.localYAML(repoDir) + "    encryption:\n      key_file: \(keyA)\n"
        let t = try TestCluster(repositoryPath: repoDir, repositories: local + s3.repositoryYAML(prefix: "dumps/", extra: "    encryption:\n      key_file: \(keyB)"),
                                compression: "none")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        _ = try t.psql("CREATE DATABASE shop")
        _ = try t.psql("CREATE TABLE secrets (id int PRIMARY KEY, note text); INSERT INTO secrets SELECT g, '\(EncryptionTests.marker)' FROM generate_series(1, 2000) g",
                       database: "shop")
        let out = try t.waybackOK(["dump", "--database", "shop"])
        let id = try #require(DumpID(out.split(separator: "\n").first.map(String.init) ?? ""), "\(out)")
        // Compression off, so that an unencrypted copy would show the marker as it is.
        #expect(EncryptionTests.filesContaining(EncryptionTests.marker, under: repoDir).isEmpty)

        let offsite = try S3RepositoryTests.offsiteOnly(t, local: local)
        _ = try t.psql("CREATE DATABASE shop_copy")
        let r = try t.wayback(["restore-dump", "--backup", id.rawValue, "--into", "postgresql://postgres@/shop_copy?host=\(t.root)&port=\(t.cluster.port)"],
                              config: offsite)
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        #expect(try t.psql("SELECT count(*) FROM secrets WHERE note = '\(EncryptionTests.marker)'", database: "shop_copy") == "2000")

        // verify reads the dump in both repositories.
        let verified = try t.waybackOK(["verify", "--all"])
        #expect(verified.components(separatedBy: "dump \(id): sound").count == 3, "\(verified)")
        #expect(try CatalogTests.rows(t, where: "backup_id = '\(id)'").first?[8] == "complete")
        #expect(try t.psql("SELECT verified_at IS NOT NULL FROM wayback.backup_logs WHERE backup_id = '\(id)'") == "t")

        // The local copy damaged: verify names it (exit 7, the dump partial in backup_logs), and
        // restore-dump reads the S3 copy instead, saying so.
        let objectPath = try Self.largestFile(repoDir + "/main/dumps/\(id)/db/shop")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: objectPath))
        bytes[bytes.count / 2] ^= 0x5A
        try bytes.write(to: URL(fileURLWithPath: objectPath))
        let damaged = try t.wayback(["verify", "--all"])
        #expect(damaged.status == WaybackError.Code.corrupt.rawValue, "\(damaged.status) \(damaged.stderr)")
        #expect(damaged.stdout.contains("dump \(id): NOT SOUND") && damaged.stdout.contains("main/dumps/\(id)/db/shop/")
                && damaged.stdout.contains("breaks dump \(id)"), "\(damaged.stdout)")
        let row = try #require(try CatalogTests.rows(t, where: "backup_id = '\(id)'").first)
        #expect(row[8] == "partial" && row[11].hasPrefix("verify: repository 'local'"), "\(row)")
        _ = try t.psql("CREATE DATABASE shop_copy2")
        let fallback = try t.wayback(["restore-dump", "--backup", id.rawValue, "--into", "postgresql://postgres@/shop_copy2?host=\(t.root)&port=\(t.cluster.port)"])
        #expect(fallback.status == 0, "\(fallback.stdout) \(fallback.stderr)")
        #expect(fallback.stderr.contains("was read from repository 'offsite'") && fallback.stderr.contains("repository 'local'"), "\(fallback.stderr)")
        #expect(try t.psql("SELECT count(*) FROM secrets", database: "shop_copy2") == "2000")

        // The local copy lost: repo sync copies the dump from S3 (manifest last), and both are sound again.
        _ = try Command.run(["/bin/rm", "-rf", repoDir + "/main/dumps/\(id)"])
        let synced = try t.waybackOK(["repo", "sync", "--json"])
        #expect(synced.contains(id.rawValue), "\(synced)")
        #expect(FileManager.default.fileExists(atPath: repoDir + "/main/dumps/\(id)/manifest.json"))
        let again = try t.waybackOK(["verify", "--all"])
        #expect(again.components(separatedBy: "dump \(id): sound").count == 3 && again.contains("verify: all sound"), "\(again)")
    }

    @Test("a pg_dump older than the server is refused, naming the version needed and the package; a dump that fails part-way leaves no object behind")
    func oldPgDumpIsRefused() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        let bin = try TestEnvironment.makeTemporaryDirectory("oldbin")
        defer { try? FileSystem.removeTree(bin) }
        _ = chmod(bin, 0o755)
        try TestEnvironment.writeExecutable("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.11'\n", to: bin + "/pg_dump")
        let r = try t.wayback(["dump"], environment: ["WAYBACK_PG_BIN": bin])
        #expect(r.status == WaybackError.Code.cluster.rawValue, "\(r.status) \(r.stderr)")
        #expect(r.stderr.contains("pg_dump 15 or newer is needed") && r.stderr.contains("postgresql-client-15"), "\(r.stderr)")
        #expect(try FileSystem.list(t.repositoryPath + "/main").contains("dumps") == false, "nothing written")

        // A dump that fails after its first database: the objects already stored are removed.
        let failed = try t.wayback(["dump", "--database", "postgres", "--database", "no_such_database"])
        #expect(failed.status != 0 && failed.stderr.contains("no_such_database"), "\(failed.status) \(failed.stderr)")
        let left = FileManager.default.subpaths(atPath: t.repositoryPath + "/main/dumps")?.filter { $0.hasSuffix(".dump") || $0.hasSuffix(".dat") || $0.hasSuffix(".json") } ?? []
        #expect(left.isEmpty, "\(left)")
    }

    @Test("the daemon runs schedule.dump (overdue at its start) and the dump is listed by status")
    func daemonDumps() throws {
        let t = try TestCluster(extraConfig: DaemonTests.nightlyFullOnly.replacingOccurrences(of: "full: \"0 2 * * *\"", with: "full: null\n  dump: \"0 2 * * *\"")
                                + "monitor:\n  listen: null\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        _ = try t.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        let schedule = try t.waybackOK(["schedule"])
        #expect(schedule.contains("dump") && schedule.contains("0 2 * * *"), "\(schedule)")
        let first = try DaemonTests.Daemon(t, log: t.root + "/daemon0.log")
        let lockDir = t.root + "/locks"
        try DaemonTests.waitFor("the daemon's state", timeout: 30) { try FileSystem.list(lockDir).contains { $0.hasSuffix(".schedule.json") } }
        #expect(first.stop() == 0)
        let stateFile = lockDir + "/" + (try #require(try FileSystem.list(lockDir).first { $0.hasSuffix(".schedule.json") }))
        try Data("{\"lastRun\":{\"dump\":\(Date().addingTimeInterval(-2 * 86400).timeIntervalSince1970)}}".utf8).write(to: URL(fileURLWithPath: stateFile))
        let daemon = try DaemonTests.Daemon(t, log: t.root + "/daemon1.log")
        try DaemonTests.waitFor("the scheduled dump", timeout: 60) { try t.waybackOK(["status"]).contains("logical dumps") }
        #expect(daemon.stop() == 0, "\(daemon.output)")
    }

    @Test("dumps are backups in the catalog: backup_logs rows (complete, failed), catalog sync rebuilds them, expire removes them by the calendar policy (manifest first) and marks them expired; a killed dump's objects are removed by the next")
    func catalogAndRetention() async throws {
        let t = try TestCluster(extraConfig: "retention:\n  hourly: 0\n  daily: 1\n  weekly: 0\n  monthly: 0\n  quarterly: 0\n  min_full: 1\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        _ = try t.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        // A dump that was killed: objects without a manifest.
        let killed = "20260101-000000L"
        try FileSystem.makeDirectories(t.repositoryPath + "/main/dumps/\(killed)/db", mode: 0o700)
        try Data("partial".utf8).write(to: URL(fileURLWithPath: t.repositoryPath + "/main/dumps/\(killed)/db/postgres.dump"))
        for p in ["main/dumps", "main/dumps/\(killed)", "main/dumps/\(killed)/db"] { try TestEnvironment.giveToTestUser(t.repositoryPath + "/" + p, mode: 0o700) }
        try TestEnvironment.giveToTestUser(t.repositoryPath + "/main/dumps/\(killed)/db/postgres.dump", mode: 0o600)
        // Its manifest's copy too (written first; and all an interrupted expiry leaves): still not a dump.
        try Data("{}".utf8).write(to: URL(fileURLWithPath: t.repositoryPath + "/main/dumps/\(killed)/manifest.copy.json"))
        try TestEnvironment.giveToTestUser(t.repositoryPath + "/main/dumps/\(killed)/manifest.copy.json", mode: 0o600)
        var ids = [DumpID]()
        for _ in 0..<3 {
            ids.append(try #require(DumpID(try t.waybackOK(["dump", "--database", "postgres"]).split(separator: "\n").first.map(String.init) ?? "")))
            usleep(1_100_000)
        }
        #expect(!FileManager.default.fileExists(atPath: t.repositoryPath + "/main/dumps/\(killed)"), "the killed dump's objects are still there")
        let failed = try t.wayback(["dump", "--database", "no_such_database"])
        #expect(failed.status != 0)

        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        func expected(_ id: DumpID) async throws -> [String] {
            let m = try await catalog.dumpManifest(id)
            return [id.rawValue, "logical", "\(Int64(id.time.timeIntervalSince1970))", "\(m.repositoryBytes)", m.digests.md5, m.digests.sha256,
                    t.repositoryPath + "/main/dumps/\(id)/", "<null>", "complete", "f", "t", "<null>", "f"]
        }
        var want = [[String]]()
        for id in ids { want.append(try await expected(id)) }
        let rows = try CatalogTests.rows(t, where: "backup_type = 'logical'")
        #expect(Array(rows.prefix(3)) == want)
        #expect(rows.count == 4 && rows[3][8] == "failed" && rows[3][11].contains("no_such_database"), "\(rows)")

        // The table lost: catalog sync writes the same rows again, and a second sync writes none.
        _ = try t.psql("DELETE FROM wayback.backup_logs")
        let synced = try t.waybackOK(["catalog", "sync"])
        #expect(synced.contains("3 row(s) written"), "\(synced)")
        #expect(try CatalogTests.rows(t, where: "backup_type = 'logical'") == want)
        #expect(try t.waybackOK(["catalog", "sync"]).contains("0 row(s) written"))
        // A dump whose manifests are both damaged: its row is written without checksums, named,
        // and the others are written; once the manifest is sound again, the checksums come back.
        _ = try t.psql("DELETE FROM wayback.backup_logs")
        let manifests = ["manifest.json", "manifest.copy.json"].map { t.repositoryPath + "/main/dumps/\(ids[0])/" + $0 }
        let sound = try manifests.map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
        for path in manifests { try VerifyTests.flipByte(path, at: 100) }
        let damaged = try t.wayback(["catalog", "sync"])
        #expect(damaged.status == 0 && damaged.stdout.contains("3 row(s) written"), "\(damaged.stdout) \(damaged.stderr)")
        #expect(damaged.stderr.contains("logical dump \(ids[0]) is recorded without checksums"), "\(damaged.stderr)")
        var partial = want
        partial[0][4] = ""; partial[0][5] = ""
        #expect(try CatalogTests.rows(t, where: "backup_type = 'logical'").prefix(3) == partial[...])
        #expect(try t.psql("SELECT checksum_md5 IS NULL AND checksum_sha256 IS NULL FROM wayback.backup_logs WHERE backup_id = '\(ids[0])'") == "t")
        for (path, bytes) in zip(manifests, sound) { try bytes.write(to: URL(fileURLWithPath: path)) }
        #expect(try t.waybackOK(["catalog", "sync"]).contains("1 row(s) written"))
        #expect(try CatalogTests.rows(t, where: "backup_type = 'logical'").prefix(3) == want[...])

        // daily: 1, min_full: 1: the newest of today stays, the two older ones go; that is more than half, so --force.
        let dry = try t.waybackOK(["expire", "--dry-run"])
        #expect(dry.contains("EXPIRE  \(ids[0])  logical") && dry.contains("EXPIRE  \(ids[1])  logical")
                && dry.contains("keep    \(ids[2])  logical") && dry.contains("NEEDS --force"), "\(dry)")
        let refused = try t.wayback(["expire"])
        #expect(refused.status == WaybackError.Code.expiryRefused.rawValue, "\(refused.status) \(refused.stderr)")
        #expect(try await catalog.dumpIDs() == ids)
        let json = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["expire", "--force", "--json"]).utf8)) as? [String: Any] ?? [:]
        let decisions = (json["backups"] as? [[String: Any]] ?? []).map { "\($0["id"] ?? "") \($0["action"] ?? "")" }
        #expect(decisions == ["\(ids[0]) expire", "\(ids[1]) expire", "\(ids[2]) keep"], "\(json)")
        #expect(try await catalog.dumpIDs() == [ids[2]])
        for id in ids.prefix(2) { #expect(!FileManager.default.fileExists(atPath: t.repositoryPath + "/main/dumps/\(id)")) }
        let after = try CatalogTests.rows(t, where: "backup_type = 'logical'")
        #expect(after.map { "\($0[0]) \($0[8]) \($0[12])" } == ["\(ids[0]) expired t", "\(ids[1]) expired t", "\(ids[2]) complete f"], "\(after)")
        // What is left restores, and drills (in a physical cluster, with --backup and the dump's id).
        #expect(try t.wayback(["restore-dump", "--backup", ids[2].rawValue, "--dry-run"]).status == 0)
        let drill = try t.wayback(["drill", "--backup", ids[2].rawValue, "--json"])
        #expect(drill.status == 0, "\(drill.stdout) \(drill.stderr)")
        // Counts the copy does not have: the drill fails (exit 19), names the table and keeps the copy.
        var m = try await catalog.dumpManifest(ids[2])
        m.databases[0].rowCounts.tables["public.t"] = 999
        try await catalog.writeDumpManifest(m)
        let failedDrill = try t.wayback(["drill", "--backup", ids[2].rawValue])
        #expect(failedDrill.status == WaybackError.Code.drillFailed.rawValue && failedDrill.stdout.contains("FAIL restore postgres")
                && failedDrill.stdout.contains("postgres.public.t: 999 recorded, 1000 in the copy"), "\(failedDrill.status) \(failedDrill.stdout) \(failedDrill.stderr)")
        let kept = failedDrill.stdout.split(separator: "\n").first { $0.contains("the copy is in ") }.map { String($0.split(separator: " ").last!) }
        #expect(kept.map { FileManager.default.fileExists(atPath: $0 + "/pgdata/PG_VERSION") } == true, "\(kept ?? "no copy named")")
        if let kept { _ = try? Command.run(["/bin/rm", "-rf", kept], check: false) }
        #expect(try t.psql("SELECT recovery_tested FROM wayback.backup_logs WHERE backup_id = '\(ids[2])'") == "f")
    }

    @Test("a pinned logical dump is kept by expire (and shown so by status); a pin whose time has passed lets it go, and goes with it; unpin of an unpinned dump is a clear error; dump --pin pins it")
    func pinnedDump() async throws {
        let t = try TestCluster(extraConfig: "retention:\n  hourly: 0\n  daily: 1\n  weekly: 0\n  monthly: 0\n  quarterly: 0\n  min_full: 1\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        var ids = [DumpID]()
        for _ in 0..<3 {
            ids.append(try #require(DumpID(try t.waybackOK(["dump", "--database", "postgres"]).split(separator: "\n").first.map(String.init) ?? "")))
            usleep(1_100_000)
        }
        #expect(try t.waybackOK(["pin", ids[0].rawValue]).contains("pinned \(ids[0])"))
        let status = try t.waybackOK(["status"])
        let lines = status.split(separator: "\n").map(String.init)
        let at = try #require(lines.firstIndex { $0.hasPrefix("  \(ids[0])") }, "\(status)")
        #expect(lines[at + 1] == "    kept: pinned", "\(status)")
        let json = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["expire", "--json"]).utf8)) as? [String: Any] ?? [:]
        let decisions = (json["backups"] as? [[String: Any]] ?? []).map { "\($0["id"] ?? "") \($0["action"] ?? "")" }
        #expect(decisions == ["\(ids[0]) keep", "\(ids[1]) expire", "\(ids[2]) keep"], "\(json)")
        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        #expect(try await catalog.dumpIDs() == [ids[0], ids[2]])

        // Pinned until a time that has passed: the policy decides again, and the pin goes with the dump.
        #expect(try t.waybackOK(["pin", ids[0].rawValue, "--until", "2000-01-01"]).contains("until"))
        try t.waybackOK(["expire"])
        #expect(try await catalog.dumpIDs() == [ids[2]])
        #expect(try await catalog.dumpPins().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: t.repositoryPath + "/main/pins/\(ids[0]).json"))
        let unpinned = try t.wayback(["unpin", ids[2].rawValue])
        #expect(unpinned.status == WaybackError.Code.notFound.rawValue && unpinned.stderr.contains("dump \(ids[2]) is not pinned"), "\(unpinned.stderr)")
        let gone = try t.wayback(["pin", ids[1].rawValue])
        #expect(gone.status == WaybackError.Code.notFound.rawValue, "\(gone.stderr)")
        let neither = try t.wayback(["pin", "20261206-030000X"])
        #expect(neither.status == WaybackError.Code.usage.rawValue && neither.stderr.contains("logical dump id"), "\(neither.stderr)")
        // dump --pin: pinned as it completes.
        let pinned = try #require(DumpID(try t.waybackOK(["dump", "--database", "postgres", "--pin"]).split(separator: "\n").first.map(String.init) ?? ""))
        #expect(try await catalog.dumpPins().keys.sorted() == [pinned])
    }

    @Test("a database whose name has '=' and quotes in it is dumped (parallel) and restored by name, not read as a connection string")
    func awkwardDatabaseName() async throws {
        let t = try TestCluster(extraConfig: "dump:\n  databases: [\"odd=name 'q' \\\\x\"]\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        func conninfo(_ name: String) -> String { ConnectionSettings.dbnameArgument(name) }
        let name = "odd=name 'q' \\x", copy = "odd=copy 'q' \\x"
        for db in [name, copy] { _ = try t.psql("CREATE DATABASE \"\(db)\"") }
        _ = try t.psql("CREATE TABLE a AS SELECT g AS x FROM generate_series(1, 500) g", database: conninfo(name))
        let id = try #require(DumpID(try t.waybackOK(["dump"]).split(separator: "\n").first.map(String.init) ?? ""))
        let listed = try t.waybackOK(["restore-dump", "--backup", id.rawValue, "--list"])
        #expect(listed.contains("database \(name):") && listed.contains("public.a: 500 rows"), "\(listed)")
        let encoded = try #require(copy.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        let r = try t.wayback(["restore-dump", "--backup", id.rawValue, "--into", "postgresql://postgres@/\(encoded)?host=\(t.root)&port=\(t.cluster.port)"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        #expect(try t.psql("SELECT sum(x) FROM a", database: conninfo(copy)) == "125250")
    }

    @Test("dump.exclude_schemas leaves a schema (and its row counts) out; dump.databases chooses the databases; dump.table_digests: the content of every table checked, a changed row fails the restore; dump.jobs: 1 streams the custom format")
    func excludedSchema() async throws {
        let t = try TestCluster(extraConfig: "dump:\n  databases: [shop]\n  exclude_schemas: [\"Scratch Pad\"]\n  table_digests: true\n  jobs: 1\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        _ = try t.psql("CREATE DATABASE shop")
        _ = try t.psql("CREATE SCHEMA keep; CREATE TABLE keep.a AS SELECT 1 AS x; CREATE SCHEMA \"Scratch Pad\"; CREATE TABLE \"Scratch Pad\".b AS SELECT 2 AS y",
                       database: "shop")
        let id = try #require(DumpID(try t.waybackOK(["dump"]).split(separator: "\n").first.map(String.init) ?? ""))
        let check = try t.wayback(["check"])
        #expect(check.stdout.contains("OK: dump age: newest logical dump \(id) started"), "\(check.stdout)")
        let listed = try t.waybackOK(["restore-dump", "--backup", id.rawValue, "--list"])
        #expect(listed.contains("database shop:") && !listed.contains("database postgres") && listed.contains("keep.a: 1 rows")
                && !listed.contains("Scratch Pad"), "\(listed)")
        _ = try t.psql("CREATE DATABASE shop_copy")
        let r = try t.wayback(["restore-dump", "--backup", id.rawValue, "--into", "postgresql://postgres@/shop_copy?host=\(t.root)&port=\(t.cluster.port)"])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        #expect(try t.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'Scratch Pad'", database: "shop_copy") == "0")
        #expect(try t.psql("SELECT x FROM keep.a", database: "shop_copy") == "1")

        // The digests were taken in the dump's snapshot and match the copy; one row's content
        // changed (the count unchanged) is named.
        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        var m = try await catalog.dumpManifest(id)
        let digests = try #require(m.databases[0].tableDigests)
        let source = try t.psql("SELECT coalesce(sum(('x' || substr(md5(r::text), 1, 16))::bit(64)::bigint::numeric), 0)::text FROM ONLY keep.a r", database: "shop")
        #expect(Set(digests.keys) == ["keep.a"] && digests["keep.a"] == source)
        _ = try t.psql("UPDATE keep.a SET x = 2", database: "shop")
        m.databases[0].tableDigests?["keep.a"] = try t.psql("SELECT coalesce(sum(('x' || substr(md5(r::text), 1, 16))::bit(64)::bigint::numeric), 0)::text FROM ONLY keep.a r", database: "shop")
        try await catalog.writeDumpManifest(m)
        _ = try t.psql("CREATE DATABASE shop_copy2")
        let changed = try t.wayback(["restore-dump", "--backup", id.rawValue, "--into", "postgresql://postgres@/shop_copy2?host=\(t.root)&port=\(t.cluster.port)"])
        #expect(changed.status == WaybackError.Code.mismatch.rawValue && changed.stdout.contains("shop.keep.a: content differs"), "\(changed.status) \(changed.stdout)")
    }
}
