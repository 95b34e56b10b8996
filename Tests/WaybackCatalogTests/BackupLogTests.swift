import Foundation
import Logging
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres

/// The mapping from backups to `backup_logs` rows and the plan of `catalog sync` (pure).
@Suite struct BackupLogTests {
    static let log = BackupLog(settings: nil,
                               repositories: [RepositoryAddress(name: "local", isS3: false, base: "/srv/repo"),
                                              RepositoryAddress(name: "offsite", isS3: true, base: "s3://bucket/team/")],
                               cluster: "main", events: .collecting(.catalogSync), logger: Logger(label: "test"))

    static func summary(_ i: Int) -> BackupSummary {
        BackupSummary(StatusOverviewTests.manifest(i, objects: [.init(name: "pack/00-0000.pack", size: 1234, sha256: "")]))
    }

    @Test func aRowSaysWhereTheBackupIsAndWhetherEveryRepositoryHasIt() {
        let s = Self.summary(0)
        let both = Self.log.row(s, holders: ["local", "offsite"])
        #expect(both.status == .complete && both.backupType == "full" && both.backupTimestamp == s.startTime)
        #expect(both.sizeBytes == 1234 && both.md5 == s.digests.md5 && both.sha256 == s.digests.sha256)
        #expect(both.locationLocal == "/srv/repo/main/backups/\(s.id)/")
        #expect(both.locationS3 == "s3://bucket/team/main/backups/\(s.id)/")
        let one = Self.log.row(s, holders: ["offsite"])
        #expect(one.status == .partial && one.locationLocal == nil && one.locationS3 != nil)
    }

    @Test func syncWritesWhatDiffersExpiresWhatIsGoneAndFailsWhatNeverFinished() {
        let kept = Self.summary(0), missing = Self.summary(1), moved = Self.summary(2)
        var keptRow = Self.log.row(kept, holders: ["local", "offsite"])
        keptRow.recoveryTested = true
        var movedRow = Self.log.row(moved, holders: ["local", "offsite"])
        movedRow.status = .partial
        var gone = BackupLogRow(backupID: "20200101-000000F", backupType: "full", backupTimestamp: Date(timeIntervalSince1970: 0), status: .complete)
        gone.sizeBytes = 5
        let killed = BackupLogRow(backupID: "20200102-000000F", backupType: "full", backupTimestamp: Date(timeIntervalSince1970: 0), status: .running)
        let failed = BackupLogRow(backupID: "20200103-000000F", backupType: "full", backupTimestamp: Date(timeIntervalSince1970: 0), status: .failed)
        let now = Date(timeIntervalSince1970: 1_000_000)
        let (rows, result) = CatalogSync.plan(
            table: [keptRow, movedRow, gone, killed, failed], backups: [kept, missing, moved],
            holders: [kept.id: ["local", "offsite"], missing.id: ["offsite"], moved.id: ["local", "offsite"]], log: Self.log, now: now)
        #expect(result.recorded == [missing.id.rawValue, moved.id.rawValue])
        #expect(result.expired == ["20200101-000000F"] && result.interrupted == ["20200102-000000F"])
        let byID = Dictionary(rows.map { ($0.backupID, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(byID[kept.id.rawValue] == nil, "an unchanged row was written again")
        #expect(byID[missing.id.rawValue]?.status == .partial && byID[moved.id.rawValue]?.status == .complete)
        #expect(byID["20200101-000000F"]?.status == .expired && byID["20200101-000000F"]?.purgedAt == now)
        #expect(byID["20200102-000000F"]?.status == .failed && byID["20200102-000000F"]?.errorMessage?.contains("interrupted") == true)
        #expect(byID["20200103-000000F"] == nil)
        // Nothing the sync writes touches the drills' columns.
        #expect(rows.allSatisfy { $0.recoveryTested == nil || $0.backupID == kept.id.rawValue })
    }
}
