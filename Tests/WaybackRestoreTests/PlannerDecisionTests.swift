import Foundation
import Testing
import WaybackCatalog
import WaybackCore
@testable import WaybackPostgres
@testable import WaybackRestore

/// The planner's two pure halves on a repository made of values: `route` (timeline, backups,
/// what the WAL is read for) and `decide` (from what the scan found, the plan).
@Suite struct PlannerDecisionTests {
    static let seg: UInt64 = 16 << 20

    static func manifest(_ id: String, start: UInt64, stop: UInt64, stopTime: Double) -> BackupManifest {
        BackupManifest(
            id: BackupID(id)!, type: .full, reference: nil, cluster: "c", systemIdentifier: "42", pgVersionNumber: 150004,
            walSegmentSize: seg, dataChecksums: true, startTime: Date(timeIntervalSince1970: stopTime - 10),
            stopTime: Date(timeIntervalSince1970: stopTime), startLSN: LSN(start), stopLSN: LSN(stop), timeline: 1, startWAL: "",
            stopWAL: "", backupLabel: "", tablespaceMap: "", tablespaces: [], compression: CompressionSettings(), objects: [],
            directories: [], files: [], wal: [], copySeconds: 10)
    }

    // Two backups on timeline 1 (segments 2 and 6), WAL archived from segment 2 to 9.
    let a = manifest("20261129-010000F", start: 0x2000028, stop: 0x2000100, stopTime: 1000)
    let b = manifest("20261129-020000F", start: 0x6000028, stop: 0x6000100, stopTime: 2000)

    func snapshot(segments: Set<UInt64> = Set(2...9)) -> RecoveryPlanner.Snapshot {
        RecoveryPlanner.Snapshot(backups: [a, b].map(BackupSummary.init),
                                 archive: ArchiveContents(segmentSize: Self.seg, segments: [1: segments], histories: [:], damagedHistories: [:]),
                                 windows: [], records: [], repository: "repository 'mem'", cluster: "c")
    }

    func request(_ target: RecoveryTarget, exclusive: Bool = false, backup: BackupID? = nil) -> RecoveryRequest {
        RecoveryRequest(target: target, exclusive: exclusive, action: nil, timeline: .latest, backupID: backup)
    }

    static func commit(xid: UInt32, at lsn: UInt64, unix: Double) -> WALEvent {
        WALEvent(kind: .commit, lsn: LSN(lsn), endLSN: LSN(lsn + 0x40), xid: xid,
                 timestamp: Int64((unix - Double(PostgresTime.epochOffset)) * 1_000_000))
    }

    @Test func aTimeTargetChoosesItsBackupBeforeTheWALIsReadAndLooksForTheFirstEndAfterIt() throws {
        let t = Int64(1500 * 1_000_000)
        let route = try RecoveryPlanner.route(request(.time(t)), snapshot: snapshot())
        #expect(route.chosen?.backup.id == a.id && route.timeline == 1)
        #expect(route.scan?.from.id == a.id)
        #expect(route.scan?.probe == .transactionEnd(micros: t - Int64(PostgresTime.epochOffset) * 1_000_000, exclusive: false, notBefore: a.stopLSN))
        // Found in segment 4: recovery reads segments 2 to 4 and stops before that commit.
        var scanned = RecoveryPlanner.ScanOutcome()
        scanned.found = Self.commit(xid: 900, at: 0x4000100, unix: 1501)
        let d = try RecoveryPlanner.decide(request(.time(t)), snapshot: snapshot(), route: route, scanned: scanned)
        #expect(d.plan.backup == a.id && d.plan.stop?.xid == 900 && d.plan.stop?.position == "before")
        #expect(d.plan.wal.segments == 3 && d.plan.wal.first == "000000010000000000000002" && d.plan.wal.last == "000000010000000000000004")
        #expect(d.plan.problems.isEmpty && d.chain.map(\.id) == [a.id])
    }

    @Test func aTimeNoTransactionEndsAfterIsRefusedNamingTheWindow() throws {
        let route = try RecoveryPlanner.route(request(.time(1_900_000_000)), snapshot: snapshot())
        #expect {
            try RecoveryPlanner.decide(request(.time(1_900_000_000)), snapshot: snapshot(), route: route, scanned: .init())
        } throws: { ($0 as? WaybackError)?.code == .restoreTarget && ($0 as? WaybackError)?.message.contains("after the latest recoverable time") == true }
    }

    @Test func aTransactionIsLookedForFromTheEarliestBackupAndItsBackupChosenOnceFound() throws {
        let route = try RecoveryPlanner.route(request(.xid(1234)), snapshot: snapshot())
        #expect(route.chosen == nil && route.scan?.from.id == a.id && route.scan?.probe == .transaction(1234))
        var scanned = RecoveryPlanner.ScanOutcome()
        scanned.found = Self.commit(xid: 1234, at: 0x7000200, unix: 2100)
        let d = try RecoveryPlanner.decide(request(.xid(1234)), snapshot: snapshot(), route: route, scanned: scanned)
        #expect(d.plan.backup == b.id, "the newest backup that ends before the commit")
        #expect(d.plan.wal.first == "000000010000000000000006" && d.plan.wal.last == "000000010000000000000007")
        #expect(throws: WaybackError.self) { try RecoveryPlanner.decide(request(.xid(1234)), snapshot: snapshot(), route: route, scanned: .init()) }
    }

    @Test func missingSegmentsInTheRangeAreProblemsOfThePlan() throws {
        let s = snapshot(segments: [2, 3, 5, 6, 7, 8, 9])
        let route = try RecoveryPlanner.route(request(.latest, backup: a.id), snapshot: s)
        let d = try RecoveryPlanner.decide(request(.latest, backup: a.id), snapshot: s, route: route, scanned: .init())
        #expect(d.plan.wal.missing == ["000000010000000000000004"])
        #expect(d.plan.problems.contains { $0.contains("000000010000000000000004 is missing") })
        var damaged = d
        damaged.addObjectProblems([a.id: ["pack/00-0000.pack is missing"]])
        #expect(damaged.plan.damagedObjects == ["backup \(a.id): pack/00-0000.pack is missing"] && damaged.plan.problems.count == 2)
    }
}
