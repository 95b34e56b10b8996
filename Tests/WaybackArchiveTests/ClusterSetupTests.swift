import Testing
@testable import WaybackArchive

/// `init`'s judgement of the server's archive_command (the end-to-end `init` runs in the
/// integration tests).
@Suite struct ClusterSetupTests {
    /// A file system of links: each path to the file it stands for.
    static let files = ["/usr/bin/wayback": "/usr/bin/wayback", "/opt/wb/release/wayback": "/opt/wb/x86_64/release/wayback",
                        "/opt/wb/x86_64/release/wayback": "/opt/wb/x86_64/release/wayback",
                        "/etc/wayback/wayback.yaml": "/etc/wayback/wayback.yaml", "/etc/wb.yaml": "/etc/wayback/wayback.yaml",
                        "/etc/other.yaml": "/etc/other.yaml"]

    static func same(_ current: String, _ expected: String) -> Bool {
        ClusterSetup.sameCommand(current, expected, resolve: { files[$0] })
    }

    @Test("the same program and configuration by another path count; another file, verb or argument does not")
    func archiveCommandEquivalence() {
        let expected = "/opt/wb/x86_64/release/wayback --config /etc/wayback/wayback.yaml wal-push %p"
        #expect(Self.same(expected, expected))
        #expect(Self.same("/opt/wb/release/wayback --config /etc/wayback/wayback.yaml wal-push %p", expected))
        #expect(Self.same("/opt/wb/release/wayback --config /etc/wb.yaml wal-push %p", expected))
        #expect(!Self.same("/usr/bin/wayback --config /etc/wayback/wayback.yaml wal-push %p", expected), "another program")
        #expect(!Self.same("/opt/wb/release/wayback --config /etc/other.yaml wal-push %p", expected), "another configuration")
        #expect(!Self.same("/opt/wb/release/wayback --config /etc/wb.yaml wal-fetch %p", expected), "another verb")
        #expect(!Self.same("/opt/wb/release/wayback --config /etc/wb.yaml wal-push %f", expected), "another argument")
        #expect(!Self.same("/opt/wb/release/wayback --config /etc/wb.yaml wal-push %p || true", expected), "more words")
        #expect(!Self.same("'/opt/wb/release/wayback' --config /etc/wb.yaml wal-push %p", expected), "quoting is compared as written")
        #expect(!Self.same("/missing/wayback --config /etc/wb.yaml wal-push %p", expected), "a path that does not resolve")
        #expect(!Self.same("wayback --config /etc/wb.yaml wal-push %p", expected), "a relative program is not resolved")
        #expect(!Self.same("", expected))
    }
}
