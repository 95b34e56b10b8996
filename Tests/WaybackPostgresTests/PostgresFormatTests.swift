import Testing
import WaybackCore
@testable import WaybackPostgres

@Suite struct ConnectionSettingsTests {
    let defaults = ConnectionSettings()

    @Test func urls() throws {
        let a = try ConnectionSettings.parse(url: "postgresql://bob:p%40ss@db.example:6543/app?sslmode=disable", defaults: defaults)
        #expect(a.user == "bob" && a.password == "p@ss" && a.host == "db.example" && a.port == 6543 && a.database == "app" && a.sslMode == .disable)
        #expect(throws: WaybackError.self) { try ConnectionSettings.parse(url: "postgresql://h/x?sslmode=require", defaults: defaults) }
        #expect(a.redacted == "postgresql://bob@db.example:6543/app")
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
