import Foundation
import Testing
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// Docs that run: the shell blocks of docs/ marked ```` ```sh runnable ```` are executed in order,
/// in one shell, as the PostgreSQL OS user, on a throwaway machine state, so that a renamed option
/// breaks the build and not a restore at 3 a.m.
///
/// The markers (docs/README of the convention: docs/architecture.md, "Docs that run"):
/// - ```` ```sh runnable ````: the block must succeed (`set -euo pipefail`);
/// - ```` ```sh runnable status=N ````: its last command must exit N (a failure the doc shows);
/// - ```` ```sql runnable ````: run by `psql` with the page's environment (`PGHOST`, ...), which
///   must succeed;
/// - `<!-- runnable-docs: substitute TEXT => REPLACEMENT -->`: TEXT in every block of the page is
///   replaced (`$WORK` in the replacement is the test's own directory), so that a page can show
///   real paths and still run anywhere.
@Suite("docs that run", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct RunnableDocsTests {
    struct Block: Equatable {
        var line: Int
        var body: String
        var status: Int32
        var sql = false
    }

    struct Page {
        var blocks = [Block]()
        var substitutions = [(String, String)]()
    }

    /// The runnable blocks and substitutions of a page; a fence that says `runnable` with an
    /// attribute this parser does not know is an error (a typo must not silently skip a block).
    static func parse(_ text: String, name: String) throws -> Page {
        var page = Page()
        var current: Block?
        // The open fence's backtick count (CommonMark: a fence opens with 3 or more backticks and
        // an info string without one, and closes with a line of at least as many backticks).
        var fence = 0
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw)
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("<!-- runnable-docs: substitute "), trimmed.hasSuffix("-->") {
                let rule = trimmed.dropFirst("<!-- runnable-docs: substitute ".count).dropLast(3).trimmingCharacters(in: .whitespaces)
                let parts = rule.components(separatedBy: " => ")
                guard parts.count == 2, !parts[0].isEmpty else { throw WaybackError(.usage, "\(name):\(i + 1): a substitution is 'TEXT => REPLACEMENT'") }
                page.substitutions.append((parts[0], parts[1]))
                continue
            }
            let ticks = trimmed.prefix { $0 == "`" }.count
            let info = trimmed.dropFirst(ticks)
            if fence > 0 {
                if ticks >= fence && info.allSatisfy(\.isWhitespace) {
                    if let b = current { page.blocks.append(b) }
                    current = nil
                    fence = 0
                } else if current != nil {
                    current!.body += line + "\n"
                }
                continue
            }
            guard ticks >= 3, !info.contains("`") else { continue }
            fence = ticks
            let words = info.split(separator: " ").map(String.init)
            guard words.count > 1, words[1] == "runnable" else { continue }
            guard words[0] == "sh" || words[0] == "sql" else { throw WaybackError(.usage, "\(name):\(i + 1): only sh and sql blocks can be runnable") }
            var block = Block(line: i + 1, body: "", status: 0, sql: words[0] == "sql")
            for w in words.dropFirst(2) {
                guard w.hasPrefix("status="), let s = Int32(w.dropFirst("status=".count)) else {
                    throw WaybackError(.usage, "\(name):\(i + 1): unknown runnable attribute '\(w)' (known: status=N)")
                }
                block.status = s
            }
            current = block
        }
        if fence > 0 { throw WaybackError(.usage, "\(name): a code fence is not closed") }
        return page
    }

    /// The script that runs `page`'s blocks in order; before each block a marker on stderr names
    /// it, so that a failure is reported with its place in the doc.
    static func script(_ page: Page, name: String, work: String, bin: String) -> String {
        var s = """
            set -euo pipefail
            export PATH="\(bin):$PATH"
            cd "\(work)"

            """
        for b in page.blocks {
            var body = b.body
            for (a, r) in page.substitutions { body = body.replacingOccurrences(of: a, with: r.replacingOccurrences(of: "$WORK", with: work)) }
            s += "echo '@@ \(name):\(b.line)' >&2\n"
            if b.sql {
                s += "psql -X -q -v ON_ERROR_STOP=1 <<'WAYBACK_SQL'\n" + body + "WAYBACK_SQL\n"
            } else if b.status == 0 {
                s += body
            } else {
                s += "set +e\n" + body + "__status=$?\nset -e\n"
                s += "if [ \"$__status\" != \(b.status) ]; then echo \"\(name):\(b.line): the block exited $__status; the doc says \(b.status)\" >&2; exit 90; fi\n"
            }
        }
        return s + "echo '@@ end' >&2\n"
    }

    static var docsDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs").path
    }

    struct Outcome {
        var status: Int32
        var output: String
        /// The block that was running when the script stopped (`name:line`), or `end`.
        var lastBlock: String
    }

    /// Runs `page` as the PostgreSQL OS user in a clean environment, `wayback` on its PATH; stops
    /// every server the page left running.
    static func run(_ page: Page, name: String) throws -> Outcome {
        let work = try TestEnvironment.makeTemporaryDirectory("docs")
        defer {
            // A page that failed half-way may leave servers running: stop each one it started.
            if let e = FileManager.default.enumerator(atPath: work) {
                for case let p as String in e where p.hasSuffix("postmaster.pid") && p.split(separator: "/").count <= 3 {
                    let dir = work + "/" + String(p.dropLast("/postmaster.pid".count))
                    _ = try? Command.run([TestEnvironment.pgBin + "/pg_ctl", "-D", dir, "-m", "immediate", "stop"], asUser: TestEnvironment.osUser, check: false)
                }
            }
            if ProcessInfo.processInfo.environment["TEST_WAYBACK_KEEP"] == nil { try? FileSystem.removeTree(work) }
        }
        let bin = work + "/bin"
        try FileSystem.makeDirectories(bin, mode: 0o755)
        guard symlink(TestEnvironment.waybackBinary, bin + "/wayback") == 0 else { throw WaybackError(.io, "cannot link wayback into \(bin)") }
        let scriptPath = work + "/page.sh"
        try script(page, name: name, work: work, bin: bin).write(toFile: scriptPath, atomically: true, encoding: .utf8)
        _ = chmod(scriptPath, 0o644)
        let home = getpwnam(TestEnvironment.osUser).map { String(cString: $0.pointee.pw_dir) } ?? work
        let r = try Command.run(["/usr/bin/env", "-i", "HOME=\(home)", "LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin",
                                 "/usr/bin/timeout", "900", "/bin/bash", scriptPath],
                                asUser: TestEnvironment.osUser, check: false)
        let markers = r.stderr.split(separator: "\n").filter { $0.hasPrefix("@@ ") }
        return Outcome(status: r.status, output: r.stdout + r.stderr, lastBlock: markers.last.map { String($0.dropFirst(3)) } ?? "(none)")
    }

    static func runDoc(_ file: String) throws {
        let text = try String(contentsOfFile: docsDirectory + "/" + file, encoding: .utf8)
        let page = try parse(text, name: "docs/" + file)
        #expect(page.blocks.count > 3, "docs/\(file) has \(page.blocks.count) runnable blocks")
        let outcome = try run(page, name: "docs/" + file)
        let tail = outcome.output.split(separator: "\n").suffix(25).joined(separator: "\n")
        #expect(outcome.status == 0 && outcome.lastBlock == "end",
                "docs/\(file): the block at \(outcome.lastBlock) failed (exit \(outcome.status)):\n\(tail)")
    }

    @Test("every runnable marker in docs/ is well formed, and the pages that promise runnable commands have them")
    func markersAreWellFormed() throws {
        var runnable = [String: Int]()
        for f in try FileManager.default.contentsOfDirectory(atPath: Self.docsDirectory).sorted() where f.hasSuffix(".md") {
            let page = try Self.parse(try String(contentsOfFile: Self.docsDirectory + "/" + f, encoding: .utf8), name: "docs/" + f)
            runnable[f] = page.blocks.count
        }
        #expect((runnable["training.md"] ?? 0) > 10, "\(runnable)")
        #expect((runnable["backup-audit.md"] ?? 0) > 6, "\(runnable)")
    }

    @Test("the harness fails a block that exits otherwise than its doc says, and names its line")
    func harnessCanFail() throws {
        let doc = """
            # A page

            ```sh runnable
            echo fine
            ```

            ```sh runnable status=3
            ( exit 4 )
            ```

            ```sh runnable
            echo never
            ```
            """
        let page = try Self.parse(doc, name: "sample.md")
        #expect(page.blocks.map(\.line) == [3, 7, 11])
        let outcome = try Self.run(page, name: "sample.md")
        #expect(outcome.status == 90)
        #expect(outcome.lastBlock == "sample.md:7")
        #expect(outcome.output.contains("sample.md:7: the block exited 4; the doc says 3"), "\(outcome.output)")
        #expect(!outcome.output.contains("never"))
        #expect(throws: WaybackError.self) { try Self.parse("```sh runnable stauts=1\nls\n```\n", name: "typo.md") }
    }

    @Test("every command's help (and so its man page) has examples, each line short enough not to be wrapped on an 80-column terminal")
    func helpHasExamples() throws {
        let r = try Command.run([TestEnvironment.waybackBinary, "--experimental-dump-help"])
        let tool = try #require((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["command"] as? [String: Any])
        var checked = 0
        func walk(_ c: [String: Any], _ path: [String]) {
            let subs = (c["subcommands"] as? [[String: Any]] ?? []).filter { ($0["shouldDisplay"] as? Bool ?? true) && $0["commandName"] as? String != "help" }
            // A group (repo, catalog) lists its commands; every other command shows how it is used.
            if subs.isEmpty || path.count == 1 {
                let discussion = c["discussion"] as? String ?? ""
                #expect(discussion.contains("Examples:"), "\(path.joined(separator: " ")) --help has no examples")
                let examples = discussion.components(separatedBy: "Examples:").dropFirst().joined()
                for line in examples.split(separator: "\n") where line.count + 2 >= 80 {
                    Issue.record("\(path.joined(separator: " ")): the example line '\(line)' is wrapped on 80 columns")
                }
                checked += 1
            }
            for sub in subs { walk(sub, path + [sub["commandName"] as? String ?? "?"]) }
        }
        walk(tool, ["wayback"])
        #expect(checked > 20)
    }

    @Test("docs/backup-audit.md runs: every auditor's query against a catalog filled by backups, verify, a drill and catalog sync")
    func audit() throws { try Self.runDoc("backup-audit.md") }

    @Test("docs/training.md runs from start to end: the demo, a point-in-time restore, an offsite copy recovered alone, a damaged repository repaired, a lost key, a standby replaying from the offsite copy and promoted, a drill")
    func training() throws { try Self.runDoc("training.md") }
}
