import Foundation
import Testing
import WaybackCore
import WaybackStorage
import WaybackTesting

/// `wayback check` against a real cluster: the Nagios line and status, thresholds, a failing
/// archive_command, and a repository that never answers.
@Suite("check against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct CheckTests {
    /// A TCP listener on 127.0.0.1 that accepts connections and never answers (a hung endpoint).
    final class SilentListener {
        let process: Process
        let port: Int
        init() throws {
            process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", """
                from socket import socket
                s = socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
                print(s.getsockname()[1], flush=True)
                held = []
                while True:
                    c, _ = s.accept(); held.append(c)
                """]
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            let line = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
            guard let p = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                process.terminate()
                throw WaybackError(.internal, "the silent listener did not start: '\(line)'")
            }
            port = p
        }
        /// SIGKILL: the test runner's children inherit an ignored SIGTERM.
        func stop() { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }

    static func check(_ t: TestCluster, config: String? = nil, json: Bool = false) throws -> (status: Int32, out: String, seconds: Double) {
        let began = monotonicSeconds()
        let r = try t.wayback(["check"] + (json ? ["--json"] : []), config: config)
        return (r.status, r.stdout, monotonicSeconds() - began)
    }

    @Test("OK after a backup, with perfdata and one line per check; WARNING and CRITICAL past tiny thresholds; --json says the same; a failing archive_command is a WARNING that names it")
    func thresholdsAndArchiver() throws {
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.waybackOK(["backup"])
        let ok = try Self.check(t)
        #expect(ok.status == 0, "\(ok.out)")
        let first = ok.out.split(separator: "\n").first.map(String.init) ?? ""
        #expect(first.hasPrefix("WAYBACK OK - cluster main, newest backup"), "\(first)")
        #expect(first.contains(" | backup_age=") && first.contains("wal_age=") && first.contains("reachable_local=1"), "\(first)")
        #expect(ok.out.contains("OK: drill: no restore drill yet"), "\(ok.out)")

        let warning = try t.configVariant("warn.yaml", replace: [("archive_wait_seconds: 60", "archive_wait_seconds: 60\ncheck:\n  backup_age_warning: 1s\n  backup_age_critical: 1h")])
        let critical = try t.configVariant("crit.yaml", replace: [("archive_wait_seconds: 60", "archive_wait_seconds: 60\ncheck:\n  full_age_warning: 1s\n  full_age_critical: 2s")])
        usleep(2_500_000)
        let w = try Self.check(t, config: warning)
        #expect(w.status == 1, "\(w.out)")
        #expect(w.out.hasPrefix("WAYBACK WARNING - cluster main: backup age: newest backup"), "\(w.out)")
        let c = try Self.check(t, config: critical)
        #expect(c.status == 2, "\(c.out)")
        #expect(c.out.hasPrefix("WAYBACK CRITICAL - cluster main: full age"), "\(c.out)")
        let j = try Self.check(t, config: critical, json: true)
        #expect(j.status == 2)
        let json = (try? JSONSerialization.jsonObject(with: Data(j.out.utf8))) as? [String: Any] ?? [:]
        #expect(json["status"] as? String == "CRITICAL", "\(j.out)")
        let items = json["items"] as? [[String: Any]] ?? []
        #expect(items.contains { $0["name"] as? String == "full age" && $0["status"] as? String == "CRITICAL" }, "\(items)")

        // archive_command fails: the archiver's failures are named, at least a WARNING.
        _ = try t.psql("ALTER SYSTEM SET archive_command = '/bin/false'; SELECT pg_reload_conf();")
        _ = try t.psql("CREATE TABLE filler AS SELECT g FROM generate_series(1, 1000) g; SELECT pg_switch_wal();")
        let deadline = monotonicSeconds() + 30
        while monotonicSeconds() < deadline, try t.psql("SELECT failed_count FROM pg_stat_archiver") == "0" { usleep(200_000) }
        let failing = try Self.check(t)
        #expect(failing.status == 1, "\(failing.out)")
        #expect(failing.out.contains("archive_command is failing"), "\(failing.out)")
        _ = try t.psql("ALTER SYSTEM RESET archive_command; SELECT pg_reload_conf();")
    }

    @Test("a repository that accepts connections and never answers: CRITICAL for it, named, within 10 s; the other repository is still read")
    func hungRepository() throws {
        let silent = try SilentListener()
        defer { silent.stop() }
        let t = try TestCluster()
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.waybackOK(["backup"])
        let hung = """
              - name: hung
                type: s3
                bucket: never
                region: us-east-1
                endpoint: http://127.0.0.1:\(silent.port)
                path_style: true
                access_key_id: wayback
                secret_access_key: not-a-secret
            check:
              timeout: 3s
            """
        let config = try t.configVariant("hung.yaml", replace: [("compression:", hung + "\ncompression:")])
        let r = try Self.check(t, config: config)
        #expect(r.seconds < 10, "took \(r.seconds) s")
        #expect(r.status == 2, "\(r.out)")
        #expect(r.out.contains("CRITICAL: repository hung: cannot be read: repository 'hung' did not answer within 3"), "\(r.out)")
        #expect(r.out.contains("OK: repository local: reachable"), "\(r.out)")
        #expect(r.out.contains("OK: backup age"), "the backups are read from the other repository: \(r.out)")
        #expect(!r.out.contains("not-a-secret"))
    }
}
