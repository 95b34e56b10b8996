import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// Client-side encryption against a real cluster: two repositories with their own keys, no
/// plaintext in either, a wrong key and a flipped byte refused with clear errors.
@Suite("encrypted repositories", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct EncryptionTests {
    static let marker = "WAYBACK-PLAINTEXT-MARKER-31337"

    /// A 32-byte key file (raw or hex) that the cluster's OS user can read, and no one else.
    static func keyFile(in dir: String, _ name: String, hex: Bool) throws -> String {
        let path = dir + "/" + name
        let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let bytes = hex ? Array((key.map { String(format: "%02x", $0) }.joined() + "\n").utf8) : key
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        _ = chmod(path, 0o600)
        if getuid() == 0, let pw = getpwnam(TestEnvironment.osUser) { _ = chown(path, pw.pointee.pw_uid, pw.pointee.pw_gid) }
        return path
    }

    /// Every file under `dir` that contains `needle`.
    static func filesContaining(_ needle: String, under dir: String) -> [String] {
        let n = Array(needle.utf8)
        var found = [String]()
        for rel in FileManager.default.subpaths(atPath: dir) ?? [] {
            guard let data = FileManager.default.contents(atPath: dir + "/" + rel), data.count >= n.count else { continue }
            let hit = data.withUnsafeBytes { b -> Bool in
                var i = 0
                while i <= b.count - n.count {
                    if b[i] == n[0] && memcmp(b.baseAddress! + i, n, n.count) == 0 { return true }
                    i += 1
                }
                return false
            }
            if hit { found.append(rel) }
        }
        return found
    }

    @Test("two encrypted repositories (own keys): no plaintext stored, restore works, wrong key and tampering refused")
    func encryptedBackupAndRestore() async throws {
        let keys = try TestEnvironment.makeTemporaryDirectory("keys")
        defer { try? FileSystem.removeTree(keys) }
        _ = chmod(keys, 0o755)
        let keyA = try Self.keyFile(in: keys, "a.key", hex: false), keyB = try Self.keyFile(in: keys, "b.key", hex: true)
        let base = try TestEnvironment.makeTemporaryDirectory("repos")
        defer { try? FileSystem.removeTree(base) }
        _ = chmod(base, 0o777)
        let repoA = base + "/a", repoB = base + "/b"
        let second = """
              - name: second
                type: local
                path: \(repoB)
                wal_push: sync
                encryption:
                  key_file: \(keyB)

            """
        let yaml = """
              - name: local
                type: local
                path: \(repoA)
                encryption:
                  key_file: \(keyA)

            """ + second
        // No compression, so that an unencrypted copy would show the marker as it is.
        let t = try TestCluster(repositoryPath: repoA, repositories: yaml, compression: "none")
        let restored = t.restoredCluster(at: t.root + "/restored")
        defer { t.cleanup(extra: [restored]) }
        try t.waybackOK(["init"])
        try t.psql("CREATE TABLE secrets (id int PRIMARY KEY, note text); INSERT INTO secrets SELECT g, '\(Self.marker)' FROM generate_series(1, 2000) g; CHECKPOINT;")
        // The marker is in the cluster's files (so the check below can fail).
        #expect(!Self.filesContaining(Self.marker, under: t.cluster.dataDirectory + "/base").isEmpty)
        try t.waybackOK(["backup"])
        try t.psql("INSERT INTO secrets VALUES (0, '\(Self.marker) after the backup')")
        try t.switchAndWaitForArchive()
        let expected = try TestCluster.tableDigest(t.cluster, "secrets")

        // Nothing of it in either repository: packs, WAL, manifests.
        for repo in [repoA, repoB] {
            #expect(Self.filesContaining(Self.marker, under: repo).isEmpty, "plaintext in \(repo)")
            // Nor the table's name (in pg_class pages) or a manifest's kind (in sealed JSON).
            #expect(Self.filesContaining("secrets", under: repo).isEmpty && Self.filesContaining("backup-manifest", under: repo).isEmpty)
            #expect(FileManager.default.fileExists(atPath: repo + "/wayback-encryption.json"))
        }
        let settings = try String(contentsOfFile: repoA + "/wayback-encryption.json", encoding: .utf8)
        #expect(settings.contains("keyCheck") && settings.contains("aes-256-gcm"))

        // Restore with the keys: the data, and pg_verifybackup passes.
        try t.waybackOK(["restore", "--target-dir", restored.dataDirectory])
        let verify = try restored.run([restored.binDirectory + "/pg_verifybackup", "-n", restored.dataDirectory], check: false)
        #expect(verify.status == 0, "pg_verifybackup: \(verify.stderr)")
        try t.startRestored(restored)
        #expect(try TestCluster.tableDigest(restored, "secrets") == expected)
        try restored.stop(mode: "fast")
        try FileSystem.removeTree(restored.dataDirectory)

        // A flipped byte in a pack of the first repository: detected, and read from the second.
        let packs = try FileSystem.list(repoA + "/main/backups").flatMap { id in
            try FileSystem.list(repoA + "/main/backups/\(id)/pack").map { repoA + "/main/backups/\(id)/pack/" + $0 }
        }
        let pack = try #require(packs.first)
        let handle = try #require(FileHandle(forUpdatingAtPath: pack))
        try handle.seek(toOffset: 5000)
        let byte = try #require(try handle.read(upToCount: 1))
        try handle.seek(toOffset: 5000)
        try handle.write(contentsOf: Data([byte[0] ^ 0x20]))
        try handle.close()
        let fallback = try t.wayback(["restore", "--target-dir", restored.dataDirectory])
        #expect(fallback.status == 0, "\(fallback.stderr)")
        #expect(fallback.stderr.contains("fails decryption") && fallback.stderr.contains("second"), "\(fallback.stderr)")
        try FileSystem.removeTree(restored.dataDirectory)

        // With the second repository gone (and so out of the configuration: a restore refuses a
        // repository it cannot read), the damage is an error and nothing is left behind.
        try FileSystem.removeTree(repoB)
        let gone = try t.wayback(["restore", "--target-dir", restored.dataDirectory])
        #expect(gone.status == WaybackError.Code.repository.rawValue && gone.stderr.contains("'second'"), "\(gone.stderr)")
        let firstOnly = try t.configVariant("first-only.yaml", replace: [(second, "")])
        let damaged = try t.wayback(["restore", "--target-dir", restored.dataDirectory], config: firstOnly)
        #expect(damaged.status == WaybackError.Code.corrupt.rawValue, "\(damaged.stderr)")
        #expect(damaged.stderr.contains("fails decryption"))
        #expect(!FileManager.default.fileExists(atPath: restored.dataDirectory + "/PG_VERSION"))

        // Another key: refused by its key check, and the key never printed.
        let wrong = try Self.keyFile(in: keys, "a.key", hex: true)
        let refused = try t.wayback(["status"])
        #expect(refused.status == WaybackError.Code.access.rawValue, "\(refused.stderr)")
        #expect(refused.stderr.contains(wrong) && refused.stderr.contains("key check"))
        let hexKey = try String(contentsOfFile: wrong, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!refused.stderr.contains(hexKey))
        // A key file others can read is refused before anything is read.
        _ = chmod(wrong, 0o644)
        let loose = try t.wayback(["status"])
        #expect(loose.status == WaybackError.Code.config.rawValue && loose.stderr.contains("chmod 600"), "\(loose.stderr)")
    }

    @Test("an encrypted repository through a configuration without its key, and a plain repository made encrypted, are refused")
    func mixingIsRefused() async throws {
        let keys = try TestEnvironment.makeTemporaryDirectory("keys")
        defer { try? FileSystem.removeTree(keys) }
        _ = chmod(keys, 0o755)
        let key = try Self.keyFile(in: keys, "k.key", hex: false)
        let t = try TestCluster()
        defer { t.cleanup() }
        // The plain repository exists (init wrote it): the same path with encryption is refused.
        try t.waybackOK(["init"])
        let encryptedYAML = "  - name: local\n    type: local\n    path: \(t.repositoryPath)\n    encryption:\n      key_file: \(key)\n"
        let config = try String(contentsOfFile: t.configPath, encoding: .utf8)
        let plainBlock = "  - name: local\n    type: local\n    path: \(t.repositoryPath)"
        try config.replacingOccurrences(of: plainBlock, with: encryptedYAML.trimmingCharacters(in: .newlines))
            .write(toFile: t.configPath, atomically: true, encoding: .utf8)
        let r = try t.wayback(["init"])
        #expect(r.status == WaybackError.Code.repository.rawValue && r.stderr.contains("unencrypted"), "\(r.stderr)")
        let s = try t.wayback(["status"])
        #expect(s.status == WaybackError.Code.repository.rawValue && s.stderr.contains("not encrypted"), "\(s.stderr)")
        // An encrypted repository read through a plain configuration.
        let encRepo = t.root + "/enc"
        try config.replacingOccurrences(of: plainBlock, with: "  - name: local\n    type: local\n    path: \(encRepo)\n    encryption:\n      key_file: \(key)")
            .write(toFile: t.configPath, atomically: true, encoding: .utf8)
        try t.waybackOK(["init"])
        try config.replacingOccurrences(of: plainBlock, with: "  - name: local\n    type: local\n    path: \(encRepo)")
            .write(toFile: t.configPath, atomically: true, encoding: .utf8)
        let plain = try t.wayback(["status"])
        #expect(plain.status == WaybackError.Code.repository.rawValue && plain.stderr.contains("is encrypted"), "\(plain.stderr)")
        let plainInit = try t.wayback(["init"])
        #expect(plainInit.status == WaybackError.Code.repository.rawValue && plainInit.stderr.contains("is encrypted"), "\(plainInit.stderr)")
    }
}
