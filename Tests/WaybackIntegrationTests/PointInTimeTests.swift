import Foundation
import Testing
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// Point-in-time recovery under load, across a timeline switch, checked against markers: a writer
/// commits one marker row at a time (its xid, the WAL insert position inside the transaction, and
/// with track_commit_timestamp its exact commit time), so for every target the set of markers a
/// correct recovery must contain is known exactly.
@Suite("point-in-time recovery against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct PointInTimeTests {
    struct Marker: Equatable {
        var id: Int
        var xid: UInt32
        var lsn: LSN
        var commitMicros: Int64
    }

    /// Commits markers `from...to` one transaction each, with a restore point `rp_<id>` after every 100th.
    static func writerSQL(from: Int, to: Int) -> String {
        """
        DO $$
        BEGIN
          FOR i IN \(from)..\(to) LOOP
            INSERT INTO markers VALUES (i, pg_current_xact_id()::text::bigint, pg_current_wal_insert_lsn());
            COMMIT;
            IF i % 100 = 0 THEN PERFORM pg_create_restore_point('rp_' || i); END IF;
            PERFORM pg_sleep(0.002);
          END LOOP;
        END $$;
        """
    }

    static func markers(_ c: LocalCluster) throws -> [Marker] {
        let out = try c.psql("SELECT id, xid, lsn, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint FROM markers ORDER BY id")
        return out.split(separator: "\n").map { line in
            let f = line.split(separator: "|")
            return Marker(id: Int(f[0])!, xid: UInt32(f[1])!, lsn: LSN(f[2])!, commitMicros: Int64(f[3])!)
        }
    }

    static func presentIDs(_ c: LocalCluster) throws -> [Int] {
        try c.psql("SELECT id FROM markers ORDER BY id").split(separator: "\n").map { Int($0)! }
    }

    struct Case: CustomStringConvertible {
        var args: [String]
        var expected: [Int]?
        var description: String { args.joined(separator: " ") }
    }

    @Test("20+ random targets of every type, two backups, a timeline switch: exactly the markers up to each target")
    func randomTargetsAcrossTimelines() async throws {
        let t = try TestCluster(settings: ["track_commit_timestamp": "on"])
        var started = [LocalCluster]()
        defer { t.cleanup(extra: started) }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "1"])
        try t.psql("CREATE TABLE markers (id int PRIMARY KEY, xid bigint, lsn pg_lsn)")

        // Timeline 1: markers and pgbench load; the first backup after marker 300, the second
        // while markers 301-600 are written.
        // On threads of their own: tasks could wait for a cooperative thread until the backups end.
        let load = BackgroundLoad { [cluster = t.cluster] in try cluster.pgbench(["-n", "-c", "1", "-t", "2500"]) }
        try t.psql(Self.writerSQL(from: 1, to: 300))
        try t.waybackOK(["backup", "--type", "full"])
        let writer = BackgroundLoad { [cluster = t.cluster] in _ = try cluster.psql(Self.writerSQL(from: 301, to: 600)) }
        try await Task.sleep(nanoseconds: 300_000_000)
        try t.waybackOK(["backup", "--type", "full"])
        try writer.wait()
        try t.psql(Self.writerSQL(from: 601, to: 900))
        try load.wait()
        try t.switchAndWaitForArchive()
        let status = try JSONSerialization.jsonObject(with: Data(t.waybackOK(["status", "--json"]).utf8)) as! [String: Any]
        let backups = status["backups"] as! [[String: Any]]
        #expect(backups.count == 2)
        let firstStop = LSN(backups[0]["stopLSN"] as! String)!
        let tl1 = try Self.markers(t.cluster)
        #expect(tl1.count == 900)

        // The fork: recover to a restore point and promote into a new timeline that archives into
        // the same repository, then keep writing there.
        let forkDir = t.root + "/fork"
        let forkPort = 25432 + Int(getpid() % 1000)
        let fork = LocalCluster(dataDirectory: forkDir, socketDirectory: forkDir, port: forkPort, osUser: t.cluster.osUser)
        started.append(fork)
        try t.cluster.stop()
        try t.waybackOK(["restore", "--target-dir", forkDir, "--to-name", "rp_700", "--target-action", "promote",
                         "--archive-mode", "preserve", "--start", "--port", "\(forkPort)"])
        #expect(try Self.presentIDs(fork) == Array(1...700))
        #expect(try fork.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000002")
        try fork.psql(Self.writerSQL(from: 1001, to: 1300))
        try fork.pgbench(["-n", "-c", "1", "-t", "300"])
        let seg = try fork.psql("SELECT pg_walfile_name(pg_switch_wal())")
        let deadline = monotonicSeconds() + 60
        while try fork.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < seg {
            guard monotonicSeconds() < deadline else { throw WaybackError(.archiveTimeout, "timeline 2 was not archived") }
            usleep(100_000)
        }
        let tl2 = try Self.markers(fork)
        #expect(tl2.map(\.id) == Array(1...700) + Array(1001...1300))

        // Random targets on both branches (timeline 1 with --timeline 1; the default follows 2).
        var rng = SeededGenerator.fromEnvironment(label: "point-in-time targets")
        var cases = [Case]()
        for i in 0..<22 {
            let onOne = i % 4 == 3
            let list = onOne ? tl1 : tl2
            let tlArgs = onOne ? ["--timeline", "1"] : []
            // Targets after the first backup's end (the recoverable window starts there).
            let candidates = list.indices.filter { $0 > 0 && list[$0 - 1].lsn > firstStop }
            let k = candidates.randomElement(using: &rng)!
            let ids = list.map(\.id)
            let exclusive = Bool.random(using: &rng)
            let ex = exclusive ? ["--exclusive"] : []
            switch i % 6 {
            case 0:
                cases.append(Case(args: ["--to-xid", "\(list[k].xid)"] + ex + tlArgs, expected: Array(ids[...(exclusive ? k - 1 : k)])))
            case 1:
                // Exactly a commit time: --exclusive decides whether that commit is in.
                let ts = Format.postgresTimestamp(micros: list[k].commitMicros)
                cases.append(Case(args: ["--to-time", ts] + ex + tlArgs, expected: Array(ids[...(exclusive ? k - 1 : k)])))
            case 2:
                // Between two commits, written as RFC 3339 UTC.
                let mid = (list[k - 1].commitMicros + list[k].commitMicros) / 2
                let text = Format.postgresTimestamp(micros: mid).replacingOccurrences(of: " ", with: "T").replacingOccurrences(of: "+00", with: "Z")
                cases.append(Case(args: ["--to-time", text] + tlArgs, expected: Array(ids[..<k])))
            case 3:
                // The WAL position inside transaction k: its commit comes later.
                cases.append(Case(args: ["--to-lsn", "\(list[k].lsn)"] + ex + tlArgs, expected: Array(ids[..<k])))
            case 4:
                let names = list.filter { $0.id % 100 == 0 && $0.lsn > firstStop && (onOne || $0.id != 700) }
                let n = names.randomElement(using: &rng)!.id
                cases.append(Case(args: ["--to-name", "rp_\(n)"] + tlArgs, expected: ids.filter { $0 <= n }))
            default:
                cases.append(Case(args: ["--to-latest"] + tlArgs, expected: ids))
            }
        }
        cases.append(Case(args: ["--to-backup-end", "--backup", backups[1]["id"] as! String], expected: nil))
        // The backup's own timeline to its end: all of timeline 1.
        cases.append(Case(args: ["--to-latest", "--timeline", "current", "--backup", backups[1]["id"] as! String], expected: tl1.map(\.id)))
        cases.append(Case(args: ["--to-time", "2026-11-29 00:00:00+00"], expected: nil))  // before the first backup: refused

        var checked = 0
        for (n, c) in cases.enumerated() {
            let dir = t.root + "/pitr\(n)"
            let port = forkPort + 1 + n
            let restored = LocalCluster(dataDirectory: dir, socketDirectory: dir, port: port, osUser: t.cluster.osUser)
            // Every third point-in-time case promotes (requested while replaying: see RestoredCluster).
            let promote = n % 3 == 2 && c.expected != nil && !c.args.contains("--to-latest")
            let r = try t.wayback(["restore", "--target-dir", dir, "--start", "--port", "\(port)"] + c.args + (promote ? ["--target-action", "promote"] : []))
            if c.args.contains("2026-11-29 00:00:00+00") {
                #expect(r.status == WaybackError.Code.restoreTarget.rawValue, "\(c): \(r.stderr)")
                #expect(r.stderr.contains("earliest recoverable"), "\(c): \(r.stderr)")
                #expect(!FileManager.default.fileExists(atPath: dir), "a refused restore wrote \(dir)")
                continue
            }
            #expect(r.status == 0, "\(c) (seed \(rng.seed)): \(r.stderr)")
            guard r.status == 0 else { continue }
            let present = try Self.presentIDs(restored)
            if promote { #expect(try restored.psql("SELECT pg_is_in_recovery()") == "f", "\(c) was not promoted") }
            if let expected = c.expected {
                #expect(present == expected, "\(c) (seed \(rng.seed)): got \(present.count) markers (\(present.first ?? 0)...\(present.last ?? 0)), expected \(expected.count) (...\(expected.last ?? 0))")
            } else {
                // The end of a backup: a prefix of timeline 1's markers, reaching past the first backup.
                #expect(present == Array(tl1.map(\.id).prefix(present.count)), "\(c)")
            }
            checked += 1
            try restored.stop(mode: "immediate")
            try FileSystem.removeTree(dir)
        }
        #expect(checked >= 23)
    }
}

@Suite("point-in-time recovery refuses what it cannot do, before writing", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct PointInTimeBadInputTests {
    @Test("dry run; unknown name, target after the archive, missing and corrupt segments are refused up front; kill -9 leaves nothing startable")
    func refusals() async throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "1"])
        // Enough data that a restore takes a moment (for the kill -9 below).
        try t.psql("CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 1500000) g")
        try t.waybackOK(["backup", "--type", "full"])
        for round in 0..<4 {
            try t.cluster.pgbench(["-n", "-c", "1", "-t", "700"])
            if round == 1 { try t.psql("SELECT pg_create_restore_point('before_drop')") }
            try t.psql("SELECT pg_switch_wal()")
        }
        try t.switchAndWaitForArchive()
        let dir = t.root + "/target"

        // The dry run: plan, exit 0, nothing written.
        let dry = try t.wayback(["restore", "--target-dir", dir, "--to-name", "before_drop", "--dry-run"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("the restore would succeed"), "\(dry.stdout)")
        #expect(dry.stdout.contains("restore point \"before_drop\""), "\(dry.stdout)")
        let json = try JSONSerialization.jsonObject(with: Data(t.waybackOK(["restore", "--target-dir", dir, "--dry-run", "--json"]).utf8)) as! [String: Any]
        #expect(((json["wal"] as? [String: Any])?["segments"] as? Int ?? 0) >= 3)
        #expect((json["problems"] as? [Any])?.isEmpty == true)
        #expect(!FileManager.default.fileExists(atPath: dir))

        func refused(_ args: [String], status: WaybackError.Code, _ text: String) throws {
            for extra in [[], ["--dry-run"]] {
                let r = try t.wayback(["restore", "--target-dir", dir] + args + extra)
                #expect(r.status == status.rawValue, "\(args + extra): exit \(r.status) \(r.stderr)")
                #expect(r.stderr.contains(text), "\(args + extra): \(r.stderr)")
                #expect(!FileManager.default.fileExists(atPath: dir), "\(args + extra) wrote \(dir)")
            }
        }
        try refused(["--to-name", "no_such_point"], status: .restoreTarget, "no restore point named \"no_such_point\"")
        try refused(["--to-time", "2100-01-01 00:00:00"], status: .restoreTarget, "after the latest recoverable time")

        // A segment in the middle of the range: damaged, then missing.
        let walRoot = t.repositoryPath + "/main/wal/0000000100000000"
        let segments = try FileSystem.list(walRoot).filter { WALFileName($0)?.kind == .segment }.sorted()
        // After the backup's own WAL (the backup keeps a copy of that), before the end.
        let name = segments[segments.count - 2]
        let victim = walRoot + "/" + name
        let original = try Data(contentsOf: URL(fileURLWithPath: victim))
        var damaged = original
        damaged[damaged.count - 10] ^= 0xFF
        try damaged.write(to: URL(fileURLWithPath: victim))
        try refused(["--to-latest"], status: .corrupt, name)
        try FileManager.default.removeItem(atPath: victim)
        try refused(["--to-latest"], status: .restoreTarget, "\(name) is missing")
        try original.write(to: URL(fileURLWithPath: victim))

        // kill -9 in the middle of writing files: no target directory appears, and the next
        // restore clears the leftover.
        let script = """
            \(TestEnvironment.waybackBinary) --config \(t.configPath) restore --target-dir \(dir) --to-backup-end >/dev/null 2>&1 &
            pid=$!
            for i in $(seq 2000); do ls -a \(t.root) | grep -q '^\\.target\\.wayback-restore-' && break; sleep 0.002; done
            kill -9 $pid; wait $pid 2>/dev/null
            ls -a \(t.root) | grep -c '^\\.target\\.wayback-restore-' || true
            """
        let killed = try Command.run(["/bin/bash", "-c", script], asUser: t.cluster.osUser)
        #expect(killed.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "the restore was not caught mid-way: \(killed.stdout)")
        #expect(!FileManager.default.fileExists(atPath: dir), "a killed restore left \(dir)")
        try t.waybackOK(["restore", "--target-dir", dir, "--to-backup-end"])
        #expect(try FileSystem.list(t.root).filter { $0.hasPrefix(".target.wayback-restore-") }.isEmpty)
        #expect(FileManager.default.fileExists(atPath: dir + "/PG_VERSION"))

        // Iterative recovery: paused at the restore point, then advanced to the end of the archive.
        let adv = t.root + "/advance"
        let port = 27432 + Int(getpid() % 1000)
        let advanced = LocalCluster(dataDirectory: adv, socketDirectory: adv, port: port, osUser: t.cluster.osUser)
        defer { try? advanced.stop(mode: "immediate") }
        let history = try t.psql("SELECT count(*) FROM pgbench_history")
        try t.waybackOK(["restore", "--target-dir", adv, "--to-name", "before_drop", "--start", "--port", "\(port)"])
        let atPoint = try advanced.psql("SELECT count(*) FROM pgbench_history")
        #expect(Int(atPoint)! < Int(history)!)
        #expect(try advanced.psql("SELECT pg_get_wal_replay_pause_state()") == "paused")
        // Recovery fetched ahead into the spool; it stays while the cluster is paused.
        #expect(FileManager.default.fileExists(atPath: PrefetchSpool.path(dataDirectory: adv)))
        let back = try t.wayback(["restore", "--target-dir", adv, "--to-lsn", "0/1000000", "--advance"])
        #expect(back.status == WaybackError.Code.restoreTarget.rawValue, "\(back.stderr)")
        try t.waybackOK(["restore", "--target-dir", adv, "--to-latest", "--advance"])
        #expect(try advanced.psql("SELECT count(*) FROM pgbench_history") == history)
        #expect(try advanced.psql("SELECT pg_is_in_recovery()") == "f")
        #expect(!FileManager.default.fileExists(atPath: PrefetchSpool.path(dataDirectory: adv)), "the prefetch spool outlived recovery")
        let again = try t.wayback(["restore", "--target-dir", adv, "--to-latest", "--advance"])
        #expect(again.status == WaybackError.Code.conflict.rawValue, "\(again.stderr)")
    }
}

@Suite("delta restore onto an existing data directory", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct DeltaRestoreTests {
    @Test("--delta rewrites only what differs, removes extra files, and gives the same data as a fresh restore")
    func delta() async throws {
        let t = try TestCluster()
        let dir = t.root + "/copy"
        let copy = t.restoredCluster(at: dir)
        defer { t.cleanup(extra: [copy]) }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "2"])
        try t.waybackOK(["backup", "--type", "full"])
        let tables = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
        let atBackup = try tables.map { try TestCluster.tableDigest(t.cluster, $0) }
        try t.switchAndWaitForArchive()

        // A copy at the end of the backup, then changed: new table, updated rows, a stray file.
        try t.waybackOK(["restore", "--target-dir", dir, "--to-backup-end"])
        try t.startRestored(copy)
        try copy.psql("CREATE TABLE junk AS SELECT g FROM generate_series(1, 10000) g; UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid < 1000; CHECKPOINT;")
        try copy.stop()
        try "stray".write(toFile: dir + "/base/stray-file", atomically: true, encoding: .utf8)

        let running = try t.wayback(["restore", "--target-dir", t.cluster.dataDirectory, "--delta", "--to-backup-end"])
        #expect(running.status == WaybackError.Code.conflict.rawValue, "a delta onto a running cluster: \(running.stderr)")

        let out = try t.waybackOK(["restore", "--target-dir", dir, "--delta", "--to-backup-end"])
        let line = try #require(out.split(separator: "\n").first { $0.hasPrefix("delta:") }, "\(out)")
        let rewritten = Int(line.split(separator: " ")[1])!
        #expect(rewritten > 0 && rewritten < 200, "\(line)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/base/stray-file"))
        try t.startRestored(copy)
        #expect(try tables.map { try TestCluster.tableDigest(copy, $0) } == atBackup)
        #expect(try copy.psql("SELECT count(*) FROM pg_class WHERE relname = 'junk'") == "0")
    }
}
