import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackStorage
import WaybackTesting

/// `wayback verify` against a real repository of a real cluster: sound, then each kind of damage
/// the issue names, found, named, and mapped to the backups and the window it breaks.
@Suite("verify against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct VerifyTests {
    struct Run {
        let status: Int32
        let json: [String: Any]
        let stderr: String
        var repositories: [[String: Any]] { json["repositories"] as? [[String: Any]] ?? [] }
        var problems: [[String: Any]] { repositories.flatMap { $0["problems"] as? [[String: Any]] ?? [] } }
        var objectsRead: Int { repositories.reduce(0) { $0 + ($1["objectsRead"] as? Int ?? 0) } }
        func problem(_ kind: String) -> [String: Any]? { problems.first { $0["kind"] as? String == kind } }
    }

    static func verify(_ t: TestCluster, _ args: [String] = [], config: String? = nil) throws -> Run {
        let r = try t.wayback(["verify", "--json"] + args, config: config)
        let json = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any] ?? [:]
        return Run(status: r.status, json: json, stderr: r.stderr)
    }

    /// A cluster with a full and an incr (pgbench load between), WAL archived past both.
    static func cluster() throws -> (TestCluster, full: String, incr: String) {
        let t = try TestCluster()
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "2"])
        let full = try t.waybackOK(["backup", "--type", "full"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try t.cluster.pgbench(["-t", "300", "-c", "2"])
        try t.switchAndWaitForArchive()
        let incr = try t.waybackOK(["backup", "--type", "incr"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try t.cluster.pgbench(["-t", "100"])
        try t.switchAndWaitForArchive()
        return (t, full, incr)
    }

    static func flipByte(_ path: String, at offset: off_t) throws {
        let fd = open(path, O_RDWR)
        guard fd >= 0 else { throw WaybackError(.io, "cannot open \(path)") }
        defer { close(fd) }
        var b: UInt8 = 0
        guard pread(fd, &b, 1, offset) == 1 else { throw WaybackError(.io, "cannot read \(path)") }
        b ^= 0x5A
        guard pwrite(fd, &b, 1, offset) == 1 else { throw WaybackError(.io, "cannot write \(path)") }
    }

    @Test("a sound repository of a full, an incr and WAL verifies (exit 0, verified_at written); then a flipped byte, a deleted WAL segment, a truncated object and a chain member's lost manifest are each found, named, mapped to the backups and window they break, exit 7")
    func soundThenEachDamage() throws {
        let (t, full, incr) = try Self.cluster()
        defer { t.cleanup() }
        let backups = t.repositoryPath + "/main/backups/"

        let sound = try Self.verify(t, ["--all"])
        #expect(sound.status == 0, "\(sound.stderr) \(sound.problems)")
        #expect(sound.problems.isEmpty)
        let results = sound.repositories.first?["backups"] as? [[String: Any]] ?? []
        #expect(Set(results.compactMap { $0["id"] as? String }) == [full, incr])
        #expect(results.allSatisfy { $0["sound"] as? Bool == true })
        #expect(try t.psql("SELECT count(*) FROM wayback.backup_logs WHERE verified_at IS NOT NULL AND status = 'complete'") == "2")

        // A flipped byte in the full's pack: the full and the incr built on it are broken.
        let pack = backups + full + "/pack/" + (try #require(try FileSystem.list(backups + full + "/pack").first { $0.hasSuffix(".pack") }))
        let packSize = try #require(try FileSystem.status(pack)).size
        try Self.flipByte(pack, at: off_t(packSize / 2))
        let flipped = try Self.verify(t, ["--all"])
        #expect(flipped.status == WaybackError.Code.corrupt.rawValue, "\(flipped.stderr)")
        let damaged = try #require(flipped.problem("damaged"), "\(flipped.problems)")
        #expect((damaged["object"] as? String)?.hasSuffix(pack.dropFirst(t.repositoryPath.count + 1)) == true, "\(damaged)")
        #expect(Set(damaged["breaks"] as? [String] ?? []) == [full, incr], "\(damaged)")
        #expect(try t.psql("SELECT status FROM wayback.backup_logs WHERE backup_id = '\(full)'") == "failed")
        #expect(try t.psql("SELECT error_message FROM wayback.backup_logs WHERE backup_id = '\(full)'").contains("verify"))
        try Self.flipByte(pack, at: off_t(packSize / 2))

        // A WAL segment between the two backups deleted: recovery cannot pass it.
        let walDir = t.repositoryPath + "/main/wal/0000000100000000/"
        let segments = try FileSystem.list(walDir).filter { $0.count == 24 }.sorted()
        let victim = try #require(segments.dropLast(2).last)
        let saved = try Data(contentsOf: URL(fileURLWithPath: walDir + victim))
        try FileSystem.remove(walDir + victim)
        let gap = try Self.verify(t, ["--all"])
        #expect(gap.status == WaybackError.Code.corrupt.rawValue)
        let hole = try #require(gap.problems.first { $0["kind"] as? String == "wal-gap" && $0["segment"] as? String == victim }, "\(gap.problems)")
        // It lies between the two backups: the points from the full's end to the incr's are lost here.
        #expect((hole["window"] as? String)?.contains("no point from the end of backup \(full)") == true, "\(hole)")
        try saved.write(to: URL(fileURLWithPath: walDir + victim))

        // The incr's pack truncated: the size says so without reading it.
        let incrPack = backups + incr + "/pack/" + (try #require(try FileSystem.list(backups + incr + "/pack").first { $0.hasSuffix(".pack") }))
        let original = try Data(contentsOf: URL(fileURLWithPath: incrPack))
        try original.prefix(original.count / 2).write(to: URL(fileURLWithPath: incrPack))
        let truncated = try Self.verify(t, ["--all"])
        #expect(truncated.status == WaybackError.Code.corrupt.rawValue)
        let short = try #require(truncated.problem("size"), "\(truncated.problems)")
        #expect(short["breaks"] as? [String] == [incr], "\(short)")
        try original.write(to: URL(fileURLWithPath: incrPack))

        // The full's manifests lost: the incr's chain is broken.
        for name in ["manifest.json", "manifest.copy.json"] { try FileSystem.rename(backups + full + "/" + name, t.root + "/" + name) }
        let lost = try Self.verify(t, ["--all"])
        #expect(lost.status == WaybackError.Code.corrupt.rawValue)
        let chain = try #require(lost.problem("chain"), "\(lost.problems)")
        #expect((chain["message"] as? String)?.contains(full) == true && chain["breaks"] as? [String] == [incr], "\(chain)")
        for name in ["manifest.json", "manifest.copy.json"] { try FileSystem.rename(t.root + "/" + name, backups + full + "/" + name) }
        #expect(try Self.verify(t, ["--all"]).status == 0)
        // Sound again, in the only repository: the row that said failed says complete again.
        #expect(try t.psql("SELECT status || ' ' || coalesce(error_message, '-') FROM wayback.backup_logs WHERE backup_id = '\(full)'") == "complete -")
    }

    @Test("incremental verify: a run after a full one reads only the resampled share; a new backup's objects are read; with resample_percent 50 two runs re-read everything")
    func incrementalReadsOnlyWhatIsDue() throws {
        let (t, _, _) = try Self.cluster()
        defer { t.cleanup() }
        let half = try t.configVariant("half.yaml", replace: [("log_level: warning", "log_level: warning\nverify:\n  resample_percent: 50")])
        let first = try Self.verify(t, ["--all"], config: half)
        #expect(first.status == 0)
        let candidates = first.objectsRead
        #expect(candidates > 10)
        let afterAll = Date()
        // Nothing new: the half of the bytes read longest ago (whole objects), not everything.
        let second = try Self.verify(t, [], config: half)
        let bytes = { (r: Run) in r.repositories.reduce(0) { $0 + ($1["bytesRead"] as? Int ?? 0) } }
        #expect(second.objectsRead < candidates && bytes(second) * 2 >= bytes(first), "\(second.objectsRead) of \(candidates), \(bytes(second)) of \(bytes(first)) bytes")
        // A new incr: its objects (and its new WAL) are read, plus half of the rest.
        try t.cluster.pgbench(["-t", "100"])
        let newest = try t.waybackOK(["backup", "--type", "incr"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let third = try Self.verify(t, [], config: half)
        let results = third.repositories.first?["backups"] as? [[String: Any]] ?? []
        let mine = try #require(results.first { $0["id"] as? String == newest })
        #expect(mine["objectsRead"] as? Int == mine["objects"] as? Int, "\(mine)")
        // Over the cycle every record was renewed after the full run.
        let records = try FileSystem.list(t.repositoryPath + "/main/verify/backups") + ["../wal/" + (try FileSystem.list(t.repositoryPath + "/main/verify/wal").first ?? "")]
        var stale = 0
        for name in records {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: t.repositoryPath + "/main/verify/backups/" + name)))
            let file = try SealedJSON.decode(RecordFile.self, from: bytes, kind: "verify-records", name: name)
            stale += file.records.values.filter { $0.verifiedAt < afterAll }.count
        }
        #expect(stale == 0, "\(stale) object(s) not read again within the cycle")
    }

    @Test("repo sync repairs what verify found damaged (one problem per damaged pack, the fix named), never copies a damaged object to another repository, and copies the sound backups past a damaged one")
    func repoSyncRepairsAndNeverSpreadsDamage() throws {
        let dir = try TestEnvironment.makeTemporaryDirectory("sync")
        let offsite = "  - name: offsite\n    type: local\n    path: \(dir)/offsite\n"
        let t = try TestCluster(repositoryPath: dir + "/local", repositories: "  - name: local\n    type: local\n    path: \(dir)/local\n" + offsite)
        defer { t.cleanup(); try? FileSystem.removeTree(dir) }
        let config = t.configPath
        let localOnly = try t.configVariant("local-only.yaml", replace: [(offsite, "")])
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "2"])
        let full = try t.waybackOK(["backup", "--type", "full"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try t.switchAndWaitForArchive()
        func pack(_ repository: String, _ id: String) throws -> String {
            let dir = repository + "/main/backups/" + id + "/pack/"
            return dir + (try #require(try FileSystem.list(dir).first { $0.hasSuffix(".pack") }))
        }

        // Damaged in local: verify names it once, with the fix; repo sync replaces it; verify is clean.
        let damaged = try pack(t.repositoryPath, full)
        try Self.flipByte(damaged, at: 4096)
        let found = try Self.verify(t, ["--all"], config: config)
        #expect(found.status == WaybackError.Code.corrupt.rawValue, "\(found.stderr)")
        #expect(found.problems.count == 1, "\(found.problems)")
        #expect(found.stderr.contains("wayback repo sync --to local"), "\(found.stderr)")
        let repaired = try t.wayback(["repo", "sync", "--to", "local"], config: config)
        #expect(repaired.status == 0, "\(repaired.stderr)")
        #expect(repaired.stdout.contains("replaced 1 object(s) verify had found damaged"), "\(repaired.stdout)")
        // The repair is recorded: check no longer reports the damage, and a second sync replaces nothing.
        let checked = try t.wayback(["check"], config: config)
        #expect(!checked.stdout.contains("found damaged"), "\(checked.stdout)")
        let again = try t.wayback(["repo", "sync", "--to", "local"], config: config)
        #expect(again.status == 0 && !again.stdout.contains("replaced"), "\(again.stdout) \(again.stderr)")
        let clean = try Self.verify(t, ["--all"], config: config)
        #expect(clean.status == 0, "\(clean.stderr) \(clean.problems)")
        #expect((try FileSystem.status(damaged)?.mode ?? 0) & 0o777 == 0o600)

        // Backups only local has. A damaged one, the incr that depends on it, and one whose manifests
        // are both damaged are left out and named (exit 15); the sound one between them is copied.
        func localBackup(_ type: String) throws -> String {
            try t.cluster.pgbench(["-t", "200"])
            return try #require(try t.wayback(["backup", "--type", type], config: localOnly).stdout.split(separator: "\n").last.map(String.init))
        }
        let second = try localBackup("full")
        try Self.flipByte(try pack(t.repositoryPath, second), at: 4096)
        let third = try localBackup("incr"), fourth = try localBackup("full"), fifth = try localBackup("full")
        for name in ["manifest.json", "manifest.copy.json"] { try Self.flipByte(t.repositoryPath + "/main/backups/" + fifth + "/" + name, at: 200) }
        let refused = try t.wayback(["repo", "sync", "--to", "offsite"], config: config)
        #expect(refused.status == WaybackError.Code.replica.rawValue, "\(refused.stdout) \(refused.stderr)")
        #expect(refused.stdout.contains("NOT COPIED: \(second): ") && refused.stdout.contains("fails its SHA-256 check"), "\(refused.stdout)")
        #expect(refused.stdout.contains("NOT COPIED: \(third): the backup it depends on, \(second), was not copied"), "\(refused.stdout)")
        #expect(refused.stdout.contains("NOT COPIED: \(fifth): its manifest cannot be read"), "\(refused.stdout)")
        #expect(refused.stdout.contains("backups now complete there: \(fourth)"), "\(refused.stdout)")
        #expect(refused.stderr.contains("was not copied into 'offsite'") && refused.stderr.contains("wayback verify --all --repository local"), "\(refused.stderr)")
        for id in [second, third, fifth] {
            #expect(!FileManager.default.fileExists(atPath: dir + "/offsite/main/backups/" + id + "/manifest.json"), "\(id)")
        }
        #expect(FileManager.default.fileExists(atPath: dir + "/offsite/main/backups/" + fourth + "/manifest.json"))
        // What was copied is sound in offsite.
        let offsiteCheck = try t.wayback(["verify", "--backup", fourth, "--repository", "offsite"], config: config)
        #expect(offsiteCheck.status == 0, "\(offsiteCheck.stdout) \(offsiteCheck.stderr)")
    }

    struct RecordFile: Decodable {
        struct Record: Decodable { var verifiedAt: Date }
        var records: [String: Record]
    }
}
