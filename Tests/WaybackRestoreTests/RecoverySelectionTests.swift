import Foundation
import Testing
import WaybackCatalog
import WaybackCore
import WaybackPostgres
@testable import WaybackRestore

/// The pure decisions of recovery planning: which backups lead to a timeline, which one ends
/// before a target, which segments recovery reads and which are missing.
@Suite struct RecoverySelectionTests {
    static let seg: UInt64 = 16 << 20

    static func backup(_ id: String, tl: UInt32, start: UInt64, stop: UInt64, stopTime: Double, copies: Set<UInt64> = []) -> BackupFacts {
        BackupFacts(id: BackupID(id)!, timeline: tl, startLSN: LSN(start), stopLSN: LSN(stop),
                    startTime: Date(timeIntervalSince1970: stopTime - 10), stopTime: Date(timeIntervalSince1970: stopTime),
                    bytes: 1 << 30, files: 900, walCopies: copies, copySeconds: 10)
    }

    // Timeline 1 until 0/5000000, then 2. Backups: A and B on 1 (B after the switch: only on the
    // abandoned branch for timeline 2), C on 2.
    let a = backup("20261129-010000F", tl: 1, start: 0x2000028, stop: 0x2000100, stopTime: 1000, copies: [2])
    let b = backup("20261129-020000F", tl: 1, start: 0x6000028, stop: 0x6000100, stopTime: 2000)
    let c = backup("20261129-030000F", tl: 2, start: 0x7000028, stop: 0x7000100, stopTime: 3000)
    let h2 = TimelineHistory(timeline: 2, parents: [.init(timeline: 1, switchPoint: LSN(0x5000000))])
    let h1 = TimelineHistory(timeline: 1, parents: [])

    @Test func usableBackupsFollowTheTimelinePath() {
        #expect(RecoverableWindows.usable([c, b, a], history: h2).map(\.id) == [a.id, c.id])
        #expect(RecoverableWindows.usable([c, b, a], history: h1).map(\.id) == [a.id, b.id])
    }

    @Test func theNewestBackupThatEndsBeforeTheTarget() throws {
        let usable = RecoverableWindows.usable([a, b, c], history: h2)
        #expect(try RecoverySelection.choose(usable, position: .time(2_500_000_000), requested: nil, windowText: "w").0.id == a.id)
        #expect(try RecoverySelection.choose(usable, position: .time(3_000_000_000), requested: nil, windowText: "w").0.id == c.id)
        #expect(try RecoverySelection.choose(usable, position: .lsn(LSN(0x7000100)), requested: nil, windowText: "w").0.id == c.id)
        #expect(try RecoverySelection.choose(usable, position: .lsn(LSN(0x70000FF)), requested: nil, windowText: "w").0.id == a.id)
        #expect(try RecoverySelection.choose(usable, position: .end, requested: nil, windowText: "w").0.id == c.id)
        // Before every backup's end: refused, naming the window.
        #expect {
            try RecoverySelection.choose(usable, position: .time(999_000_000), requested: nil, windowText: "the window")
        } throws: { ($0 as? WaybackError)?.code == .restoreTarget && ($0 as? WaybackError)?.message.contains("the window") == true }
        // --backup: honoured when it can reach the target, refused otherwise.
        #expect(try RecoverySelection.choose(usable, position: .end, requested: a.id, windowText: "w").0.id == a.id)
        #expect(throws: WaybackError.self) { try RecoverySelection.choose(usable, position: .lsn(LSN(0x3000000)), requested: c.id, windowText: "w") }
        #expect(throws: WaybackError.self) { try RecoverySelection.choose(usable, position: .end, requested: b.id, windowText: "w") }
    }

    @Test func aRestorePointNameMetEarlierIsAvoided() throws {
        let usable = RecoverableWindows.usable([a, b], history: h1)
        // PostgreSQL stops at the first restore point of a name it meets. The same name earlier at
        // 0/5000000: recovery from a would stop there, from b it cannot (b starts after it).
        let chosen = try RecoverySelection.choose(usable, position: .record(LSN(0x6800000), others: [LSN(0x5000000)]), requested: nil, windowText: "w")
        #expect(chosen.0.id == b.id)
        let clean = try RecoverySelection.choose(usable, position: .record(LSN(0x6800000), others: [LSN(0x1000000)]), requested: nil, windowText: "w")
        #expect(clean.0.id == b.id)
        // Inside b's own range: no backup can reach the later one.
        #expect(throws: WaybackError.self) {
            try RecoverySelection.choose(usable, position: .record(LSN(0x6800000), others: [LSN(0x6000080)]), requested: nil, windowText: "w")
        }
    }

    @Test func segmentsAlongThePathAndWhatIsMissing() {
        let archive = ArchiveContents(segmentSize: Self.seg, segments: [1: [3, 4, 5, 6, 7], 2: [5, 6, 8, 9]], histories: [2: h2])
        // Segment 5 holds the switch point: read from timeline 2; timeline 1's 6 and 7 are the abandoned branch.
        let path = h2.segments(2, 9, segmentSize: Self.seg)
        #expect(path.map(\.timeline) == [1, 1, 1, 2, 2, 2, 2, 2])
        #expect(RecoverableWindows.lastSegment(archive, history: h2) == 9)
        #expect(RecoverableWindows.lastSegment(archive, history: h1) == 7)
        // 2 is in backup a's own copies; 7 on timeline 2 is a hole.
        #expect(RecoverySelection.missing(path, archive: archive, backup: a).map(\.number) == [7])
    }

    @Test func estimatesUseMeasuredSpeedsWhenThereAreAny() {
        let none = RecoverySelection.estimate(bytes: 1 << 30, walBytes: 64 << 20, history: [], backups: [a])
        #expect(abs(none.filesSeconds - 10) < 0.001 && abs(none.replaySeconds - 1) < 0.001)
        #expect(none.basis.contains("copy speed of backup"))
        let measured = RestoreRecord(time: Date(), backup: a.id, target: "t", bytes: 1 << 30, files: 900, filesSeconds: 4,
                                     walBytes: 128 << 20, replaySeconds: 1)
        let e = RecoverySelection.estimate(bytes: 1 << 30, walBytes: 64 << 20, history: [measured], backups: [a])
        #expect(abs(e.filesSeconds - 4) < 0.001 && abs(e.replaySeconds - 0.5) < 0.001)
        #expect(e.basis.contains("last 1 restore"))
    }

    @Test func recoverySettingsMatchTheTarget() {
        func plan(_ t: RecoveryTarget) -> RecoveryPlan {
            RecoveryPlan(target: t.description, targetKind: t.kind, targetTime: nil, exclusive: false, action: .pause, timeline: 2, timelinePath: [1, 2],
                         backup: a.id, backupReason: "", backupStop: Date(), files: 1, bytes: 1,
                         wal: .init(first: nil, last: nil, segments: 0, inBackup: 0, histories: [], missing: [], damaged: [], bytes: 0),
                         stop: nil, windows: [], estimate: .init(seconds: 0, filesSeconds: 0, replaySeconds: 0, basis: ""), problems: [])
        }
        let time = RecoveryRequest(target: .time(1_795_912_867_250_000), exclusive: true)
        let text = RecoverySettings.text(plan: plan(time.target), request: time, restoreCommand: "wb --config 'x' wal-fetch %f %p", archiveMode: .off)
        #expect(text.contains("restore_command = 'wb --config ''x'' wal-fetch %f %p'"))
        #expect(text.contains("recovery_target_time = '2026-11-29 00:41:07.250000+00'"))
        #expect(text.contains("recovery_target_inclusive = 'off'") && text.contains("recovery_target_action = 'pause'"))
        #expect(text.contains("recovery_target_timeline = '2'") && text.contains("archive_mode = 'off'"))
        #expect(RecoverySettings.read(text)?.backup == a.id && RecoverySettings.read(text)?.archiveMode == .off)
        #expect(text.split(separator: "\n").allSatisfy { RecoverySettings.owns($0) })
        let latest = RecoveryRequest(target: .latest)
        let l = RecoverySettings.text(plan: plan(.latest), request: latest, restoreCommand: "wb", archiveMode: .preserve)
        #expect(!l.contains("recovery_target_action") && !l.contains("archive_mode") && latest.effectiveAction == .promote)
        #expect(RecoveryRequest(target: .name("x")).effectiveAction == .pause)
        #expect(!RecoverySettings.owns("shared_buffers = '1GB'") && !RecoverySettings.owns("archive_mode = 'on'"))
        // restore --start with a promote target: written as a pause, promoted by RestoredCluster.
        let promote = RecoveryRequest(target: .lsn(LSN(0x3000000)), action: .promote)
        let checked = RecoverySettings.text(plan: plan(promote.target), request: promote, restoreCommand: "wb", archiveMode: .off, promoteAfterCheck: true)
        #expect(checked.contains("recovery_target_action = 'pause'") && checked.contains("wayback restore --start promotes"))
        #expect(checked.split(separator: "\n").allSatisfy { RecoverySettings.owns($0) })
        let plainPromote = RecoverySettings.text(plan: plan(promote.target), request: promote, restoreCommand: "wb", archiveMode: .off)
        #expect(plainPromote.contains("recovery_target_action = 'promote'"))
        // A pause asked for stays a pause, with no comment.
        let paused = RecoverySettings.text(plan: plan(time.target), request: time, restoreCommand: "wb", archiveMode: .off, promoteAfterCheck: true)
        #expect(!paused.contains("wayback restore --start promotes"))
    }
}
