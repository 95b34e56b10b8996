import Foundation
import Testing
import WaybackConfig
import WaybackCore
import WaybackStorage
@testable import WaybackArchive

/// The push-ahead marker and the checks `wal-push` makes before reading its configuration (the
/// end-to-end test with a daemon and PostgreSQL is in DaemonTests).
@Suite struct PushAheadTests {
    func marker() -> PushAhead.Marker {
        PushAhead.Marker(device: 2049, inode: 77, size: 16 << 20, mtimeNanoseconds: 1_796_554_971_123_456_789,
                         headSHA256: String(repeating: "ab", count: 32),
                         configuration: .init(device: 2049, inode: 12, size: 480, mtimeNanoseconds: 5, environment: String(repeating: "cd", count: 32)),
                         stored: ["local": 1_234_567, "second copy": 1_300_000],
                         objects: ["/srv/wayback/main/wal/0000000100000000/000000010000000000000003": 1_234_567])
    }

    @Test func theMarkerReadsBackAsWritten() {
        let m = marker()
        #expect(PushAhead.Marker(text: m.text) == m)
        var bare = m
        bare.configuration = nil; bare.objects = [:]
        #expect(PushAhead.Marker(text: bare.text) == bare)
    }

    @Test("a damaged or foreign marker is no marker", arguments: [
        "", "wayback-ahead 2\nfile 1 2 3 4 ab\n", "wayback-ahead 1\n", "wayback-ahead 1\nfile 1 2 x 4 ab\n",
        "wayback-ahead 1\nfile 1 2 3 4 ab\nstored many local\n", "wayback-ahead 1\nfile 1 2 3 4 ab\nkept 3 local\n",
        "wayback-ahead 1\nfile 1 2 3 4 ab\nconfig 1 2 3\n",
    ])
    func damagedMarkers(_ text: String) {
        #expect(PushAhead.Marker(text: text) == nil)
    }

    @Test func theEnvironmentDigestFollowsSettingsButNeverHoldsASecretsValue() {
        let base = ["PATH": "/usr/bin", "WAYBACK_CONFIG": "/etc/wayback/wayback.yaml"]
        let none = PushAhead.environmentDigest(base)
        // Neither what is not Wayback's nor the configuration's path (its identity is checked) counts.
        #expect(PushAhead.environmentDigest(["PATH": "/bin", "WAYBACK_CONFIG": "/other.yaml"]) == none)
        // A setting does, with its value.
        let level = PushAhead.environmentDigest(base.merging(["WAYBACK_LOG_LEVEL": "debug"]) { $1 })
        #expect(level != none)
        #expect(PushAhead.environmentDigest(base.merging(["WAYBACK_LOG_LEVEL": "info"]) { $1 }) != level)
        // A secret counts by its name only: two values give the same digest.
        for name in ["WAYBACK_REPOSITORIES_1_SECRET_ACCESS_KEY", "WAYBACK_REPOSITORIES_0_SESSION_TOKEN", "WAYBACK_ENCRYPTION_PASSPHRASE"] {
            let a = PushAhead.environmentDigest(base.merging([name: "first-secret"]) { $1 })
            #expect(a != none)
            #expect(PushAhead.environmentDigest(base.merging([name: "second-secret"]) { $1 }) == a, "\(name)'s value reached the digest")
        }
    }

    @Test func everySecretKeysVariableIsKnownAsSecret() {
        var names = ConfigSchema.variables.filter { $0.contains("PASSPHRASE") }
        for key in ConfigSchema.keys where key.secret {
            names.append(ConfigKey.environmentName(key.path.replacingOccurrences(of: "*", with: "3")))
        }
        #expect(names.count >= 3)
        for name in names { #expect(PushAhead.isSecretVariable(name), "\(name) holds a secret, but its value would go into a marker's digest") }
        #expect(!PushAhead.isSecretVariable("WAYBACK_LOG_LEVEL"))
    }

    @Test func withoutADaemonWalPushTakesItsUsualPath() throws {
        let dir = NSTemporaryDirectory() + "wayback-ahead-\(UUID().uuidString)"
        try FileSystem.makeDirectories(dir + "/wayback-ahead", mode: 0o700)
        defer { try? FileSystem.removeTree(dir) }
        let segment = dir + "/000000010000000000000003"
        try Data(repeating: 1, count: 16384).write(to: URL(fileURLWithPath: segment))
        let ahead = PushAhead(pgWAL: dir)
        // A marker that would match, but no daemon holds the directory's lock: ignored, kept.
        let file = try PosixFile.openForReading(segment)
        let id = try PushAhead.identity(file.fd, path: segment)
        let config = dir + "/wayback.yaml"
        try Data("cluster: {}\n".utf8).write(to: URL(fileURLWithPath: config))
        let m = PushAhead.Marker(device: id.device, inode: id.inode, size: id.size, mtimeNanoseconds: id.mtime,
                                 headSHA256: try PushAhead.headDigest(file, size: id.size),
                                 configuration: PushAhead.configurationIdentity(config, environment: [:]),
                                 stored: ["local": 16384], objects: [segment: 16384])
        try Data(m.text.utf8).write(to: URL(fileURLWithPath: dir + "/wayback-ahead/000000010000000000000003"))
        #expect(!ahead.daemonRunning)
        #expect(!PushAhead.takeBeforeConfiguration(walPath: segment, configPath: config, environment: [:]))
        #expect(FileManager.default.fileExists(atPath: dir + "/wayback-ahead/000000010000000000000003"))

        // With the lock held (as the daemon does) the same marker is taken, once.
        let lock = try #require(try ahead.hold())
        defer { close(lock) }
        #expect(!PushAhead.takeBeforeConfiguration(walPath: segment, configPath: config, environment: ["WAYBACK_LOG_LEVEL": "debug"]),
                "taken under another environment")
        #expect(PushAhead.takeBeforeConfiguration(walPath: segment, configPath: config, environment: [:]))
        #expect(!FileManager.default.fileExists(atPath: dir + "/wayback-ahead/000000010000000000000003"))
        #expect(!PushAhead.takeBeforeConfiguration(walPath: segment, configPath: config, environment: [:]), "a marker taken twice")

        // The file changed since the daemon read it: refused.
        try Data(m.text.utf8).write(to: URL(fileURLWithPath: dir + "/wayback-ahead/000000010000000000000003"))
        try Data(repeating: 2, count: 16384).write(to: URL(fileURLWithPath: segment + ".new"))
        try FileSystem.rename(segment + ".new", segment)
        #expect(!PushAhead.takeBeforeConfiguration(walPath: segment, configPath: config, environment: [:]))
    }
}
