import Testing
import WaybackCore
@testable import WaybackPostgres

@Suite struct ConnectionSettingsTests {
    let defaults = ConnectionSettings()

    @Test func urls() throws {
        let a = try ConnectionSettings.parse(url: "postgresql://bob:p%40ss@db.example:6543/app?sslmode=disable", defaults: defaults)
        #expect(a.user == "bob" && a.password == "p@ss" && a.host == "db.example" && a.port == 6543 && a.database == "app" && a.sslMode == .disable)
        let tls = try ConnectionSettings.parse(url: "postgresql://h/x?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/c.pem&sslkey=/c.key", defaults: defaults)
        #expect(tls.sslMode == .verifyFull && tls.sslRootCert == "/ca.pem" && tls.sslCert == "/c.pem" && tls.sslKey == "/c.key")
        #expect(tls.redacted == "postgresql://postgres@h:5432/x?sslmode=verify-full")
        for mode in ConnectionSettings.SSLMode.allCases {
            #expect(try ConnectionSettings.parse(url: "postgresql://h/x?sslmode=\(mode.rawValue)", defaults: defaults).sslMode == mode)
        }
        #expect(throws: WaybackError.self) { try ConnectionSettings.parse(url: "postgresql://h/x?sslmode=always", defaults: defaults) }
        #expect(throws: WaybackError.self, "sslcert without sslkey") { try ConnectionSettings.parse(url: "postgresql://h/x?sslcert=/c.pem", defaults: defaults) }
        #expect(a.redacted == "postgresql://bob@db.example:6543/app?sslmode=disable")
        let b = try ConnectionSettings.parse(url: "postgres:///postgres?host=/tmp/sock&port=5499", defaults: defaults)
        #expect(b.isUnixSocket && b.socketPath == "/tmp/sock/.s.PGSQL.5499")
        let c = try ConnectionSettings.parse(url: "postgresql://[::1]:7000/x", defaults: defaults)
        #expect(c.host == "::1" && c.port == 7000)
        #expect(throws: WaybackError.self) { try ConnectionSettings.parse(url: "mysql://x", defaults: defaults) }
        #expect(throws: WaybackError.self) { try ConnectionSettings.parse(url: "postgresql://h:99999/x", defaults: defaults) }
        #expect(throws: WaybackError.self) { try ConnectionSettings.parse(url: "postgresql://h/x?colour=red", defaults: defaults) }
        do {
            _ = try ConnectionSettings.parse(url: "postgresql://u:secret@h:bad/x", defaults: defaults)
        } catch let e as WaybackError {
            #expect(!e.message.contains("secret"))
        }
    }
}

@Suite struct WALHeaderTests {
    @Test func longPageHeader() throws {
        var b = [UInt8](repeating: 0, count: 40)
        b[0] = 0x10; b[1] = 0xD1          // magic 0xD110
        b[2] = 0x02                        // XLP_LONG_HEADER
        b[4] = 1                           // timeline 1
        let sysid: UInt64 = 7_713_401_072_725_555_113
        for i in 0..<8 { b[24 + i] = UInt8(truncatingIfNeeded: sysid >> (8 * UInt64(i))) }
        b[32 + 3] = 0x01                   // 16 MiB
        b[36 + 1] = 0x20                   // 8192
        let h = try #require(b.withUnsafeBytes { WALSegmentHeader.parse($0) })
        #expect(h.systemIdentifier == sysid && h.timeline == 1 && h.segmentSize == 16 << 20 && h.blockSize == 8192 && h.magic == 0xD110)
        b[2] = 0
        #expect(b.withUnsafeBytes { WALSegmentHeader.parse($0) } == nil)
    }

    @Test func backupLabel() throws {
        let text = """
            START WAL LOCATION: 0/6000028 (file 000000010000000000000006)
            CHECKPOINT LOCATION: 0/6000060
            BACKUP METHOD: streamed
            BACKUP FROM: primary
            START TIME: 2026-11-29 01:35:38 UTC
            LABEL: wayback 20261129-013537F
            START TIMELINE: 1
            """
        let l = try BackupLabel.parse(text)
        #expect(l.startLSN == LSN("0/6000028") && l.startSegment == "000000010000000000000006" && l.timeline == 1)
        #expect(l.checkpointLSN == LSN("0/6000060") && l.label == "wayback 20261129-013537F")
        #expect(throws: WaybackError.self) { try BackupLabel.parse("nonsense") }
    }
}

@Suite struct ArchivedFileAndControlFileTests {
    @Test func historyFilesAreCheckedBeforeTheyAreStored() throws {
        let ok = Array("1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n".utf8)
        try ArchivedTextFile.validateHistory(ok, timeline: 3)
        for (text, tli) in [("junk\n", 2), ("", 2), ("# only a comment\n", 2), ("3\t0/1000000\tx\n", 3), ("1\t0/1000000\tx\n", 1),
                            ("2\t0/5000000\tx\n1\t0/6000000\ty\n", 3)] as [(String, UInt32)] {
            #expect(throws: WaybackError.self, "\(text.debugDescription) for timeline \(tli)") {
                try ArchivedTextFile.validateHistory(Array(text.utf8), timeline: tli)
            }
        }
        #expect(throws: WaybackError.self) { try ArchivedTextFile.validateHistory([0xFF, 0xFE, 0x0A], timeline: 2) }
    }

    @Test func backupHistoryFilesMatchTheirName() throws {
        let name = try #require(WALFileName("000000010000000A000000FF.00000028.backup"))
        let good = "START WAL LOCATION: A/FF000028 (file 000000010000000A000000FF)\nSTOP WAL LOCATION: A/FF000100 (file 000000010000000A000000FF)\n"
        try ArchivedTextFile.validateBackupHistory(Array(good.utf8), name: name, segmentSize: 16 << 20)
        let other = good.replacingOccurrences(of: "A/FF000028", with: "A/FF000030")
        let noStop = "START WAL LOCATION: A/FF000028 (file 000000010000000A000000FF)\n"
        for text in ["", "hello\n", other, noStop] {
            #expect(throws: WaybackError.self, "\(text.debugDescription)") {
                try ArchivedTextFile.validateBackupHistory(Array(text.utf8), name: name, segmentSize: 16 << 20)
            }
        }
    }

    @Test func controlFileFields() throws {
        var bytes = [UInt8](repeating: 0, count: 64)
        func put(_ v: UInt64, at: Int, width: Int) { for i in 0..<width { bytes[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        put(7_441_001_234_567_890_123, at: 0, width: 8)
        put(0x1_2345_6789, at: 32, width: 8)
        put(0x1_2345_0000, at: 40, width: 8)
        put(3, at: 48, width: 4)
        let c = try #require(ControlFile.parse(bytes))
        #expect(c.systemIdentifier == 7_441_001_234_567_890_123 && c.checkpointLSN == LSN(0x1_2345_6789) && c.redoLSN == LSN(0x1_2345_0000) && c.timeline == 3)
        #expect(ControlFile.parse(Array(bytes.prefix(20))) == nil)
    }

    @Test func postmasterFileFields() throws {
        let ready = "4242\n/var/lib/postgresql/15/main\n1733300000\n5433\n/var/run/postgresql\n*\n  1234567    98304\nready   \n"
        #expect(PostmasterFile.parse(ready) == PostmasterFile(pid: 4242, port: 5433, socketDirectory: "/var/run/postgresql", status: "ready"))
        let starting = "4242\n/d\n1733300000\n5433\n\n"
        #expect(PostmasterFile.parse(starting) == PostmasterFile(pid: 4242, port: 5433, socketDirectory: nil, status: nil))
        #expect(PostmasterFile.parse("") == nil && PostmasterFile.parse("x\n") == nil && PostmasterFile.parse("-1\n") == nil)
    }

    @Test func connectionParametersAreHonouredNotIgnored() throws {
        let d = ConnectionSettings()
        #expect(d.connectTimeoutSeconds == 10 && d.applicationName == "wayback")
        let a = try ConnectionSettings.parse(url: "postgresql://h/x?connect_timeout=1&application_name=nightly", defaults: d)
        #expect(a.connectTimeoutSeconds == 2 && a.applicationName == "nightly", "libpq: below 2 counts as 2")
        #expect(try ConnectionSettings.parse(url: "postgresql://h/x?connect_timeout=0", defaults: d).connectTimeoutSeconds == 0)
        #expect(throws: WaybackError.self) { try ConnectionSettings.parse(url: "postgresql://h/x?connect_timeout=soon", defaults: d) }
        #expect(throws: WaybackError.self) { try ConnectionSettings.parse(url: "postgresql://h/x?application_name=a%0Ab", defaults: d) }
    }
}

