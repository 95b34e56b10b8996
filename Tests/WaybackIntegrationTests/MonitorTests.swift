import Foundation
import Testing
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// The daemon's listener against a real cluster and a real backup: `/metrics` (checked by
/// Prometheus' own promtool), `/status.json`, and the status page rendered in headless Chromium.
@Suite("monitor: metrics and the status page from a real daemon", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct MonitorTests {
    static var promtool: String? { ["/usr/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) } }

    /// A port free on 127.0.0.1 now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// GET with curl: (status, body).
    static func get(_ port: Int, _ path: String, token: String? = nil) throws -> (status: Int, body: String) {
        var args = ["/usr/bin/curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"]
        if let token { args += ["-H", "Authorization: Bearer \(token)"] }
        let r = try Command.run(args, check: false)
        var lines = r.stdout.components(separatedBy: "\n")
        let code = Int(lines.popLast() ?? "") ?? 0
        return (code, lines.joined(separator: "\n"))
    }

    static func metric(_ text: String, _ name: String, _ labels: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") && line.contains(labels) {
            return Double(line.split(separator: " ").last ?? "")
        }
        return nil
    }

    @Test("a bearer token guards the listener; /metrics during a scheduled backup shows the job running and promtool accepts it; after it, the backup's metrics match status --json; /status.json and the status page (in Chromium: the state, the window, the backup id; red once the newest full is too old)")
    func metricsAndStatusPage() throws {
        let browser = ReportTests.chromium
        if browser == nil && TestEnvironment.isCI { Issue.record("chromium is not installed (scripts/setup installs it)"); return }
        if Self.promtool == nil && TestEnvironment.isCI { Issue.record("promtool is not installed (scripts/setup installs prometheus)"); return }
        let port = try Self.freePort()
        let t = try TestCluster(extraConfig: DaemonTests.nightlyFullOnly + """
            monitor:
              listen: 127.0.0.1:\(port)
              refresh: 2s
            """)
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "2"])

        // With a token: nothing without it.
        let tokenFile = t.root + "/monitor.token"
        try "s3cret-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        try TestEnvironment.giveToTestUser(tokenFile, mode: 0o600)
        let guarded = try t.configVariant("token.yaml", replace: [("refresh: 2s", "refresh: 2s\n  token_file: \(tokenFile)")])
        let first = try DaemonTests.Daemon(t, config: guarded, log: t.root + "/daemon1.log")
        try DaemonTests.waitFor("the first gathering", timeout: 30) { try Self.get(port, "/metrics", token: "s3cret-token").status == 200 }
        #expect(try Self.get(port, "/metrics").status == 401)
        #expect(try Self.get(port, "/metrics", token: "wrong").status == 401)
        #expect(first.stop() == 0, "\(first.output)")
        #expect(!first.output.contains("s3cret-token"))

        // The daemon was down when the 02:00 full was due: it runs at start, slowed down to be seen running.
        let lockDir = t.root + "/locks"
        let stateFile = try #require(try FileSystem.list(lockDir).first { $0.hasSuffix(".schedule.json") })
        let twoDaysAgo = Date().addingTimeInterval(-2 * 86400).timeIntervalSince1970
        try Data("{\"lastRun\":{\"full\":\(twoDaysAgo)}}".utf8).write(to: URL(fileURLWithPath: lockDir + "/" + stateFile))
        let slow = try t.configVariant("slow.yaml", replace: [("archive_wait_seconds: 60", "archive_wait_seconds: 60\n  max_rate_mb: 4")])
        let daemon = try DaemonTests.Daemon(t, config: slow, log: t.root + "/daemon2.log")
        var during = ""
        try DaemonTests.waitFor("the backup to show as running", timeout: 60) {
            let m = try Self.get(port, "/metrics")
            during = m.body
            return m.status == 200 && Self.metric(m.body, "wayback_job_running", "job=\"full\"") == 1
        }
        if let promtool = Self.promtool {
            let r = try Command.run([promtool, "check", "metrics"], input: during, check: false)
            #expect(r.status == 0, "promtool: \(r.stdout) \(r.stderr)\n\(during)")
        }
        try DaemonTests.waitFor("the backup", timeout: 120) { try !DaemonTests.backups(t).isEmpty }
        var after = ""
        try DaemonTests.waitFor("the backup's metrics", timeout: 30) {
            after = try Self.get(port, "/metrics").body
            return Self.metric(after, "wayback_backup_last_success_timestamp_seconds", "type=\"full\"") != nil
                && Self.metric(after, "wayback_job_running", "job=\"full\"") == 0
        }
        if let promtool = Self.promtool {
            let r = try Command.run([promtool, "check", "metrics"], input: after, check: false)
            #expect(r.status == 0, "promtool: \(r.stdout) \(r.stderr)\n\(after)")
        }
        // The same values as status --json.
        let status = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["status", "--json"]).utf8)) as? [String: Any] ?? [:]
        let backup = try #require((status["backups"] as? [[String: Any]])?.first)
        let id = try #require(backup["id"] as? String)
        let stop = try #require(Format.parseTimestamp(backup["stopTime"] as? String ?? ""))
        let ended = try #require(Self.metric(after, "wayback_backup_last_success_timestamp_seconds", "type=\"full\""))
        #expect(abs(ended - stop.timeIntervalSince1970) < 0.01, "\(ended) vs \(stop.timeIntervalSince1970)")
        #expect(Self.metric(after, "wayback_backup_last_size_bytes", "type=\"full\",repository=\"local\"") == Double(backup["repositoryBytes"] as? Int ?? -1), "\(after)")
        #expect(Self.metric(after, "wayback_repository_reachable", "repository=\"local\"") == 1)
        #expect(Self.metric(after, "wayback_backup_failures_total", "type=\"full\"") == 0)
        #expect(after.contains("wayback_pitr_window_start_timestamp_seconds{cluster=\"main\",timeline=\"1\"}"), "\(after)")

        // /status.json and the page.
        let doc = try JSONSerialization.jsonObject(with: Data(try Self.get(port, "/status.json").body.utf8)) as? [String: Any] ?? [:]
        #expect((doc["health"] as? [String: Any])?["status"] as? String == "OK", "\(doc["health"] ?? "")")
        let page = t.root + "/status.html"
        try Self.get(port, "/").body.write(toFile: page, atomically: true, encoding: .utf8)
        if let browser {
            let dom = try Command.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "file://" + page], check: false).stdout
            #expect(dom.contains("data-status=\"OK\"") && dom.contains("Protected") && dom.contains(id) && dom.contains("<svg class=\"window\""), "\(dom.prefix(3000))")
            let shot = (ProcessInfo.processInfo.environment["TEST_WAYBACK_ARTIFACTS"] ?? t.root) + "/status-page.png"
            _ = try Command.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,1400",
                                 "--screenshot=" + shot, "file://" + page], check: false)
            #expect(FileManager.default.fileExists(atPath: shot), "the screenshot \(shot)")
        }

        // The newest full too old for the thresholds (reloaded with SIGHUP): red.
        let original = try String(contentsOfFile: slow, encoding: .utf8)
        try (original + "\ncheck:\n  full_age_warning: 1s\n  full_age_critical: 2s\n").write(toFile: slow, atomically: false, encoding: .utf8)
        kill(daemon.process.processIdentifier, SIGHUP)
        try DaemonTests.waitFor("the page to turn red", timeout: 30) {
            try Self.get(port, "/").body.contains("data-status=\"CRITICAL\"")
        }
        try Self.get(port, "/").body.write(toFile: page, atomically: true, encoding: .utf8)
        if let browser {
            let dom = try Command.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "file://" + page], check: false).stdout
            #expect(dom.contains("At risk") && dom.contains("full age"), "\(dom.prefix(3000))")
        }
        #expect(Self.metric(try Self.get(port, "/metrics").body, "wayback_check_status", "cluster=\"main\"") == 2)
        #expect(daemon.stop() == 0, "\(daemon.output)")
    }

    @Test("docs/prometheus-rules.yml passes promtool check rules and uses only metrics the daemon serves")
    func exampleRulesAreValid() throws {
        guard let promtool = Self.promtool else {
            #expect(!TestEnvironment.isCI, "promtool is not installed (scripts/setup installs prometheus)")
            return
        }
        let path = S3TestServer.packageRoot + "/docs/prometheus-rules.yml"
        let r = try Command.run([promtool, "check", "rules", path], check: false)
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        let rules = try String(contentsOfFile: path, encoding: .utf8)
        let names = Set(rules.matches(of: /wayback_[a-z_]+/).map { String($0.output) })
        let served = try String(contentsOfFile: S3TestServer.packageRoot + "/Sources/WaybackMonitor/Metrics.swift", encoding: .utf8)
        for n in names { #expect(served.contains("\"\(n)\""), "\(n) is not a metric the daemon serves") }
    }
}
