import Foundation
import Testing
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// `wayback report` on a repository with a failed backup, a drill and a damaged object: the
/// problems first, in all three formats; the HTML rendered by a real browser.
@Suite("report against real PostgreSQL", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct ReportTests {
    static var chromium: String? {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test("problems first (the failed backup, the damaged one) in md, json and html; the HTML renders in headless Chromium with the backup ids and the drill's result")
    func reportPutsProblemsFirst() throws {
        let browser = Self.chromium
        if browser == nil && TestEnvironment.isCI { Issue.record("chromium is not installed (scripts/setup installs it)"); return }
        let scratch = try TestEnvironment.makeTemporaryDirectory("scratch")
        defer { try? FileSystem.removeTree(scratch) }
        let t = try TestCluster(extraConfig: "drill:\n  scratch_dir: \(scratch)\n")
        defer { t.cleanup() }
        try t.waybackOK(["init"])
        try t.cluster.pgbench(["-i", "-s", "1"])
        let full = try t.waybackOK(["backup"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try t.switchAndWaitForArchive()
        let drilled = try t.wayback(["drill"])
        #expect(drilled.status == 0, "\(drilled.stderr)")
        // A backup that fails after its id was chosen: its WAL is never archived.
        _ = try t.psql("ALTER SYSTEM SET archive_command = 'false'")
        _ = try t.psql("SELECT pg_reload_conf()")
        let quick = try t.configVariant("quick.yaml", replace: [("archive_wait_seconds: 60", "archive_wait_seconds: 2")])
        let failedRun = try t.wayback(["backup", "--type", "full"], config: quick)
        #expect(failedRun.status != 0)
        _ = try t.psql("ALTER SYSTEM RESET archive_command")
        _ = try t.psql("SELECT pg_reload_conf()")
        let failedID = try t.psql("SELECT backup_id FROM wayback.backup_logs WHERE status = 'failed'")
        #expect(!failedID.isEmpty)
        // A damaged object, found by verify.
        let packDir = t.repositoryPath + "/main/backups/\(full)/pack/"
        let pack = packDir + (try #require(try FileSystem.list(packDir).first { $0.hasSuffix(".pack") }))
        var bytes = try Data(contentsOf: URL(fileURLWithPath: pack))
        bytes[bytes.count / 2] ^= 0x55
        try bytes.write(to: URL(fileURLWithPath: pack))
        #expect(try t.wayback(["verify"]).status == WaybackError.Code.corrupt.rawValue)

        let md = try t.waybackOK(["report"])
        let problems = try #require(md.range(of: "## Problems"))
        let backups = try #require(md.range(of: "## Backups taken"))
        #expect(problems.lowerBound < backups.lowerBound)
        let problemText = String(md[problems.upperBound..<backups.lowerBound])
        #expect(problemText.contains("backup \(full) was found damaged") && problemText.contains("backup failed: \(failedID)"), "\(problemText)")

        let json = try JSONSerialization.jsonObject(with: Data(try t.waybackOK(["report", "--format", "json"]).utf8)) as? [String: Any]
        let list = json?["problems"] as? [String] ?? []
        #expect(list.contains { $0.contains(full) } && list.contains { $0.contains(failedID) }, "\(list)")
        let drills = json?["drills"] as? [[String: Any]] ?? []
        #expect(drills.count == 1 && drills.first?["passed"] as? Bool == true, "\(drills)")

        let html = t.root + "/report.html"
        try t.waybackOK(["report", "--format", "html", "--output", html])
        #expect(try FileSystem.status(html)?.mode == 0o600)
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"), "the HTML must be self-contained")
        guard let browser else { return }
        let dom = try Command.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "file://" + html], check: false)
        #expect(dom.status == 0, "\(dom.stderr)")
        for text in [full, failedID, "Restore drills", "passed", "DAMAGED", "data-status=\"CRITICAL\"", "<svg class=\"window\""] { #expect(dom.stdout.contains(text), "rendered page lacks \(text)") }
    }
}
