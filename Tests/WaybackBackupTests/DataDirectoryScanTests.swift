import Foundation
import Testing
import WaybackStorage
@testable import WaybackBackup

@Suite struct DataDirectoryScanTests {
    @Test func skipsWhatPgBasebackupSkips() throws {
        let root = NSTemporaryDirectory() + "wayback-scan-\(UUID().uuidString)"
        defer { try? FileSystem.removeTree(root) }
        let files = ["PG_VERSION", "postmaster.pid", "postmaster.opts", "postgresql.conf", "pg_wal/000000010000000000000001",
                     "pg_wal/archive_status/000000010000000000000001.done", "pg_stat_tmp/global.stat", "pg_replslot/s/state",
                     "base/1/1234", "base/1/1234_fsm", "base/1/5000", "base/1/5000_init", "base/1/5000_fsm", "base/1/t3_9999",
                     "base/1/pgsql_tmp/pgsql_tmp1.0", "global/pg_internal.init", "global/pg_control", "pg_subtrans/0000",
                     "backup_label", "tablespace_map", "pg_notify/0000"]
        for f in files {
            let p = root + "/" + f
            try FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data("x".utf8).write(to: URL(fileURLWithPath: p))
        }
        let scan = try DataDirectoryScan.scan(pgdata: root)
        let copied = Set(scan.files.map(\.path))
        #expect(copied == ["PG_VERSION", "postgresql.conf", "base/1/1234", "base/1/1234_fsm", "base/1/5000_init", "global/pg_control"])
        let dirs = Set(scan.directories.map(\.path))
        for d in ["pg_wal", "pg_wal/archive_status", "pg_stat_tmp", "pg_replslot", "pg_subtrans", "pg_notify", "base/1"] {
            #expect(dirs.contains(d), "\(d) is kept as an empty directory")
        }
        #expect(!dirs.contains("pg_replslot/s"))
    }
}
