import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// A backup killed with SIGKILL half-way is continued by the next one, which restores correctly.
@Suite("resuming interrupted backups", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct ResumeTests {
    /// Starts `backup` (held to 8 MB/s, small packs), waits until `packs` pack indexes are in
    /// the repository, and kills it with SIGKILL. Returns the folder it left. (The backup runs as
    /// its own process and this thread polls: no task of the shared pool waits on another.)
    static func killMidway(_ t: TestCluster, type: String, packs: Int) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: getuid() == 0 ? "/usr/sbin/runuser" : TestEnvironment.waybackBinary)
        let args = [TestEnvironment.waybackBinary, "--config", t.configPath, "backup", "--type", type]
        process.arguments = getuid() == 0 ? ["-u", t.cluster.osUser, "--"] + args : Array(args.dropFirst())
        var env = ProcessInfo.processInfo.environment
        env["WAYBACK_BACKUP_MAX_RATE_MB"] = "8"
        env["WAYBACK_BACKUP_PACK_SIZE_MB"] = "1"
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let backups = t.repositoryPath + "/main/backups"
        let began = monotonicSeconds()
        var folder: String?
        while folder == nil && process.isRunning && monotonicSeconds() < began + 120 {
            for id in (try? FileSystem.list(backups)) ?? [] where FileManager.default.fileExists(atPath: "\(backups)/\(id)/pack")
                && !FileManager.default.fileExists(atPath: "\(backups)/\(id)/manifest.json") {
                let indexes = (try? FileSystem.list("\(backups)/\(id)/pack"))?.filter { $0.hasSuffix(".index") } ?? []
                if indexes.count >= packs { folder = id }
            }
            usleep(20_000)
        }
        _ = try Command.run(["/usr/bin/pkill", "-KILL", "-f", "\(t.configPath) backup"], check: false)
        process.waitUntilExit()
        let seen = ((try? FileSystem.list(backups)) ?? []).map { id in "\(id): \((try? FileSystem.list("\(backups)/\(id)/pack")) ?? [])" }
        #expect(process.terminationStatus != 0, "the \(type) backup was to be killed before it finished (\(Int(monotonicSeconds() - began)) s; \(seen))")
        return try #require(folder, "no pack index of the \(type) backup appeared: \(seen)")
    }

    @Test("kill -9 during a full and an incr backup: the next backup resumes, reuses the stored files, and restores")
    func killAndResume() async throws {
        let t = try TestCluster()
        let restoredDir = t.root + "/restored"
        let restored = t.restoredCluster(at: restoredDir)
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-q", "-s", "4"])
        // Data that compresses little, so that every backup here fills several 1 MB packs.
        try t.psql("CREATE TABLE noise AS SELECT g, md5(g::text) || md5((g * 7)::text) AS h FROM generate_series(1, 100000) g")
        try t.psql("VACUUM ANALYZE; CHECKPOINT;")
        try await Task.sleep(nanoseconds: 1_500_000_000)

        let killed = try Self.killMidway(t, type: "full", packs: 2)
        let out = try t.waybackOK(["backup", "--json"])
        let summary = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
        #expect(summary["id"] as? String == killed, "the resumed backup keeps the interrupted one's id")
        let resumed = try #require(summary["resumed"] as? [String: Any])
        #expect((resumed["files"] as? Int ?? 0) > 0 && (resumed["bytes"] as? Int ?? 0) > 2_000_000)
        // Nothing of the interrupted run is left beside what the manifest lists.
        let packDir = t.repositoryPath + "/main/backups/\(killed)/pack"
        #expect(try FileSystem.list(packDir).allSatisfy { $0.hasSuffix(".pack") })
        let catalog = Catalog(repository: Repository(name: "local", driver: LocalStorage(root: t.repositoryPath)), cluster: "main")
        let manifest = try await catalog.manifest(BackupID(killed)!)
        #expect(Set(try FileSystem.list(packDir).map { "pack/" + $0 }) == Set(manifest.objects.map(\.name).filter { $0.hasPrefix("pack/") }))

        // An incr interrupted the same way resumes too.
        try t.cluster.pgbench(["-n", "-c", "2", "-t", "400"])
        try t.psql("UPDATE noise SET h = md5(h) || md5(h || 'x'); CHECKPOINT")
        try await Task.sleep(nanoseconds: 1_500_000_000)
        let killedIncr = try Self.killMidway(t, type: "incr", packs: 1)
        let incr = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["backup", "--type", "incr", "--json"]).utf8)) as! [String: Any]
        #expect(incr["id"] as? String == killedIncr && incr["reference"] as? String == killed)
        #expect(incr["resumed"] != nil)

        // --no-resume starts over and removes the leftover.
        try t.psql("CREATE TABLE after_incr AS SELECT g FROM generate_series(1, 1000) g; CHECKPOINT;")
        try await Task.sleep(nanoseconds: 1_500_000_000)
        let abandoned = try Self.killMidway(t, type: "full", packs: 1)
        let fresh = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["backup", "--no-resume", "--json"]).utf8)) as! [String: Any]
        #expect(fresh["id"] as? String != abandoned && fresh["resumed"] == nil)
        #expect(!FileManager.default.fileExists(atPath: t.repositoryPath + "/main/backups/\(abandoned)"))

        try t.psql("INSERT INTO after_incr VALUES (0)")
        let expected = try ["pgbench_accounts", "pgbench_history", "after_incr", "noise"].map { try TestCluster.tableDigest(t.cluster, $0) }
        try t.switchAndWaitForArchive()
        // Restore the resumed incr (on the resumed full), then replay to the end.
        try t.waybackOK(["restore", "--backup", killedIncr, "--target-dir", restoredDir])
        let verify = try restored.run([restored.binDirectory + "/pg_verifybackup", "-n", restoredDir], check: false)
        #expect(verify.status == 0, "pg_verifybackup: \(verify.stderr)")
        try t.startRestored(restored)
        #expect(try ["pgbench_accounts", "pgbench_history", "after_incr", "noise"].map { try TestCluster.tableDigest(restored, $0) } == expected)
    }
}
