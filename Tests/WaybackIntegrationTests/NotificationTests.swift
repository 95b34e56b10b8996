import Foundation
import Testing
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// Notifications to real local receivers: an HTTP server (Slack and webhook payloads) and an
/// SMTP server with STARTTLS and AUTH (aiosmtpd), from `notify --test` and from the daemon.
@Suite("notifications to real receivers", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct NotificationTests {
    /// A receiver script on 127.0.0.1 (scripts/http, scripts/smtp), killed at the end.
    final class Receiver {
        let process = Process()
        let firstLine: String
        init(_ arguments: [String]) throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3"] + arguments
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            firstLine = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func stop() { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }

    /// The JSON records a receiver saved, oldest first.
    static func saved(_ dir: String, suffix: String) throws -> [String] {
        try FileSystem.list(dir).filter { $0.hasSuffix(suffix) }.sorted().map { try String(contentsOfFile: dir + "/" + $0, encoding: .utf8) }
    }

    static func posts(_ dir: String) throws -> [[String: Any]] {
        try saved(dir, suffix: ".json").compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    static func event(_ post: [String: Any]) -> String? {
        let body = (try? JSONSerialization.jsonObject(with: Data((post["body"] as? String ?? "").utf8))) as? [String: Any]
        if let e = body?["event"] as? String { return e }
        // Slack: the event is in the fallback text's title.
        return (body?["text"] as? String)?.split(separator: ":").dropFirst().first.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    static func mails(_ dir: String) throws -> [String] { try saved(dir, suffix: ".eml") }

    static func mailEvent(_ mail: String) -> String? {
        mail.split(whereSeparator: \.isNewline).first { $0.hasPrefix("X-Wayback-Event: ") }.map { String($0.dropFirst(17)).trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    @Test("notify --test reaches Slack, the webhook (its signature checked) and email (STARTTLS, AUTH) and names the sink that is down; under the daemon a failed backup is sent once to each sink, its repeat after a restart is held back, and the backup that works again sends check.recovered; the sink that never answers holds nothing up; no secret in any output")
    func sinksAndTheDaemon() throws {
        let work = try TestEnvironment.makeTemporaryDirectory("notify")
        defer { try? FileSystem.removeTree(work) }
        let httpOut = work + "/http", smtpOut = work + "/smtp", certs = work + "/certs"
        for d in [httpOut, smtpOut, certs] { try FileSystem.makeDirectories(d, mode: 0o755) }
        _ = try Command.run(["/bin/sh", "-c", """
            cd \(certs) && \
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=Wayback Test CA' -keyout ca.key -out ca.crt \
              -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null && \
            openssl req -newkey rsa:2048 -nodes -subj '/CN=127.0.0.1' -keyout server.key -out server.csr 2>/dev/null && \
            printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext && \
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out server.crt -extfile server.ext 2>/dev/null && \
            chmod 644 ca.crt
            """])
        let password = "mail-pass-789", hookSecret = "hook-secret-456"
        try password.write(toFile: work + "/smtp.password", atomically: true, encoding: .utf8)
        let http = try Receiver([S3TestServer.packageRoot + "/scripts/http/receiver.py", httpOut])
        defer { http.stop() }
        let httpPort = try #require(Int(http.firstLine), "the HTTP receiver did not start: \(http.firstLine)")
        let smtpPort = try MonitorTests.freePort()
        let smtp = try Receiver([S3TestServer.packageRoot + "/scripts/smtp/receiver.py", "--port", String(smtpPort), "--cert", certs + "/server.crt",
                                 "--key", certs + "/server.key", "--user", "wayback", "--password-file", work + "/smtp.password", "--out", smtpOut])
        defer { smtp.stop() }
        if smtp.firstLine != "ready" {
            #expect(!TestEnvironment.isCI, "the SMTP receiver did not start (scripts/setup installs aiosmtpd): \(smtp.firstLine)")
            return
        }
        let silent = try CheckTests.SilentListener()
        defer { silent.stop() }

        let t = try TestCluster(extraConfig: DaemonTests.nightlyFullOnly + """
              retries: 0
            monitor:
              listen: null
            notifications:
              sinks:
                - name: chat
                  type: slack
                  url_file: \(work)/slack.url
                  events: [backup.failed, backup.succeeded, check.recovered]
                - name: hook
                  type: webhook
                  url: http://127.0.0.1:\(httpPort)/hook
                  secret_file: \(work)/hook.secret
                - name: mail
                  type: email
                  host: 127.0.0.1
                  port: \(smtpPort)
                  tls: starttls
                  ca_file: \(certs)/ca.crt
                  username: wayback
                  password_file: \(work)/smtp.password
                  from: wayback@example.org
                  to: [dba@example.org, oncall@example.org]
                - name: down
                  type: webhook
                  url: http://127.0.0.1:\(silent.port)/never
            """)
        defer { t.cleanup() }
        try "http://127.0.0.1:\(httpPort)/slack/T000/SECRETTOKEN\n".write(toFile: work + "/slack.url", atomically: true, encoding: .utf8)
        try hookSecret.write(toFile: work + "/hook.secret", atomically: true, encoding: .utf8)
        for f in ["slack.url", "hook.secret", "smtp.password"] { try TestEnvironment.giveToTestUser(work + "/" + f, mode: 0o600) }
        try t.waybackOK(["init"])

        // notify --test: three sinks reached, the fourth named as failing.
        let test = try t.wayback(["notify", "--test"])
        #expect(test.status == WaybackError.Code.connection.rawValue || test.status == WaybackError.Code.timeout.rawValue, "\(test.status) \(test.stdout) \(test.stderr)")
        for line in ["sink 'chat' (slack): sent", "sink 'hook' (webhook): sent", "sink 'mail' (email): sent", "sink 'down' (webhook): FAILED"] {
            #expect(test.stdout.contains(line), "\(test.stdout)")
        }
        var posts = try Self.posts(httpOut)
        #expect(posts.count == 2, "\(posts)")
        let slack = try #require(posts.first { ($0["path"] as? String ?? "").hasPrefix("/slack/") })
        let slackBody = try JSONSerialization.jsonObject(with: Data((slack["body"] as? String ?? "").utf8)) as? [String: Any] ?? [:]
        #expect((slackBody["text"] as? String ?? "").contains("test") && (slackBody["blocks"] as? [Any] ?? []).count >= 2, "\(slackBody)")
        let hook = try #require(posts.first { $0["path"] as? String == "/hook" })
        let body = hook["body"] as? String ?? ""
        let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] ?? [:]
        for key in ["event", "cluster", "time", "severity", "message"] { #expect(json[key] != nil, "webhook body lacks \(key): \(body)") }
        try body.write(toFile: work + "/body", atomically: true, encoding: .utf8)
        let mac = try Command.run(["/bin/sh", "-c", "openssl dgst -sha256 -hmac '\(hookSecret)' -r < \(work)/body"]).stdout.split(separator: " ").first.map(String.init) ?? ""
        #expect((hook["headers"] as? [String: String])?["x-wayback-signature"] == "sha256=" + mac, "\(hook["headers"] ?? "")")
        var mails = try Self.mails(smtpOut)
        #expect(mails.count == 1 && mails.first.map { Self.mailEvent($0) == "test" } == true, "\(mails)")
        let envelope = try Self.saved(smtpOut, suffix: ".json").first ?? ""
        #expect(envelope.contains("\"tls\": true") && envelope.contains("\"user\": \"wayback\"") && envelope.contains("oncall@example.org"), "\(envelope)")

        // The daemon: a first start writes its state, then the 02:00 full is made overdue each time.
        let first = try DaemonTests.Daemon(t, log: t.root + "/daemon0.log")
        let lockDir = t.root + "/locks"
        try DaemonTests.waitFor("the daemon's state", timeout: 30) { try FileSystem.list(lockDir).contains { $0.hasSuffix(".schedule.json") } }
        #expect(first.stop() == 0)
        let stateFile = lockDir + "/" + (try #require(try FileSystem.list(lockDir).first { $0.hasSuffix(".schedule.json") }))
        func overdue() throws {
            try Data("{\"lastRun\":{\"full\":\(Date().addingTimeInterval(-2 * 86400).timeIntervalSince1970)}}".utf8).write(to: URL(fileURLWithPath: stateFile))
        }
        func count(_ event: String) throws -> (http: Int, mail: Int) {
            (try Self.posts(httpOut).filter { Self.event($0) == event }.count, try Self.mails(smtpOut).filter { Self.mailEvent($0) == event }.count)
        }

        // The database is down: the backup fails; one backup.failed per sink (chat, hook, mail).
        try t.cluster.stop()
        try overdue()
        let failing = try DaemonTests.Daemon(t, log: t.root + "/daemon1.log")
        try DaemonTests.waitFor("backup.failed at every sink", timeout: 60) { try count("backup.failed") == (2, 1) }
        #expect(failing.stop() == 0, "\(failing.output)")

        // Again after a restart: held back (the open problem was kept), nothing new.
        try overdue()
        let again = try DaemonTests.Daemon(t, log: t.root + "/daemon2.log")
        try DaemonTests.waitFor("the second failure", timeout: 60) { again.output.contains("job failed after 1 attempt") }
        usleep(2_000_000)
        #expect(try count("backup.failed") == (2, 1))
        #expect(again.stop() == 0, "\(again.output)")

        // The database is back: the backup works, check.recovered at every sink, backup.succeeded to chat.
        try t.cluster.start()
        try overdue()
        let works = try DaemonTests.Daemon(t, log: t.root + "/daemon3.log")
        try DaemonTests.waitFor("check.recovered at every sink", timeout: 120) { try count("check.recovered") == (2, 1) }
        #expect(try count("backup.succeeded") == (1, 0))
        #expect(try DaemonTests.backups(t).count == 1)
        // The sink that never answers was tried alongside, and held up nothing above.
        try DaemonTests.waitFor("the down sink to be reported", timeout: 60) { works.output.contains("notifications to sink 'down' (webhook) are failing") }
        #expect(works.stop() == 0, "\(works.output)")
        posts = try Self.posts(httpOut)
        mails = try Self.mails(smtpOut)
        for text in [test.stdout, test.stderr, first.output, failing.output, again.output, works.output] {
            for secret in ["SECRETTOKEN", hookSecret, password] { #expect(!text.contains(secret), "a secret in the output: \(text)") }
        }
        #expect(posts.count == 2 + 2 + 2 + 1, "\(posts.map { Self.event($0) ?? "?" })")
    }
}
