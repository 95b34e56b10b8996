import Foundation
import Testing
import WaybackCore
import WaybackPostgres

/// The pure part of row counts: reading a snapshot, and finding the WAL position whose commits
/// are exactly those a snapshot saw.
@Suite("row counts: snapshots and the count point")
struct RowCountsTests {
    static func commit(_ xid: UInt32, at lsn: UInt64) -> WALEvent {
        WALEvent(kind: .commit, lsn: LSN(lsn), endLSN: LSN(lsn + 64), xid: xid, timestamp: 0)
    }

    @Test("a pg_snapshot is read as PostgreSQL writes it; a malformed one is refused")
    func parse() throws {
        let s = try #require(TransactionSnapshot("100:110:102,105"))
        #expect(s.xmin == 100 && s.xmax == 110 && s.inProgress == [102, 105])
        #expect(s.sees(99) && s.sees(101) && !s.sees(102) && !s.sees(105) && !s.sees(110) && !s.sees(200))
        #expect(TransactionSnapshot("100:100:") != nil)
        for bad in ["", "100:90:", "100:110:120", "a:b:", "100:110"] { #expect(TransactionSnapshot(bad) == nil, "\(bad)") }
    }

    @Test("a 32-bit id from WAL is widened next to the snapshot's, across an epoch boundary")
    func widen() throws {
        let epoch: UInt64 = 1 << 32
        let s = TransactionSnapshot(xmin: epoch + 5, xmax: epoch + 10, inProgress: [])
        #expect(s.widen(7) == epoch + 7)
        #expect(s.widen(UInt32.max) == epoch - 1, "just before the wrap: the previous epoch")
        let low = TransactionSnapshot(xmin: 3, xmax: 10, inProgress: [])
        #expect(low.widen(4_000_000_000) == 4_000_000_000, "no epoch before the first")
    }

    @Test("snapshots that see the same finished transactions are alike; one that saw a commit more is not")
    func sameness() throws {
        let a = try #require(TransactionSnapshot("100:110:102"))
        #expect(a.seesSameAs(try #require(TransactionSnapshot("100:112:102,110,111"))), "110 and 111 unseen by both")
        #expect(!a.seesSameAs(try #require(TransactionSnapshot("100:110:"))), "102 finished in the second")
        #expect(!a.seesSameAs(try #require(TransactionSnapshot("100:111:102"))), "110 finished in the second")
    }

    @Test("the count point is just after the last commit the snapshot saw; none when an unseen commit comes first; the backup's end when nothing was seen after it")
    func point() throws {
        let s = try #require(TransactionSnapshot("100:110:105"))
        let stop: UInt64 = 1000, lsn: UInt64 = 5000
        // 103 and 104 seen, 105 (in progress) and 110 (after) not: stop after 104.
        #expect(RowCounts.countPoint(snapshot: s, commits: [Self.commit(103, at: 1100), Self.commit(104, at: 1200), Self.commit(105, at: 1300),
                                                            Self.commit(110, at: 1400)],
                                     stop: LSN(stop), lsn: LSN(lsn)) == .after(LSN(1200)))
        // 105 committed in the WAL before 104, yet the snapshot did not see it: no position fits.
        #expect(RowCounts.countPoint(snapshot: s, commits: [Self.commit(105, at: 1100), Self.commit(104, at: 1200)],
                                     stop: LSN(stop), lsn: LSN(lsn)) == .none(straddling: [105]))
        // Only unseen commits after the end: the end itself.
        #expect(RowCounts.countPoint(snapshot: s, commits: [Self.commit(110, at: 1100)], stop: LSN(stop), lsn: LSN(lsn)) == .backupEnd)
        // A commit the snapshot saw but past the counts' position cannot be one it saw: ignored.
        #expect(RowCounts.countPoint(snapshot: s, commits: [Self.commit(101, at: 6000)], stop: LSN(stop), lsn: LSN(lsn)) == .backupEnd)
        // An unseen commit before the end is included by any restore: none.
        #expect(RowCounts.countPoint(snapshot: s, commits: [Self.commit(105, at: 900)], stop: LSN(stop), lsn: LSN(lsn)) == .none(straddling: [105]))
    }

    @Test("differences name each table with both counts, and tables only one side has")
    func differences() {
        let recorded = RowCounts.Database(name: "shop", snapshot: "1:1:", tables: ["public.a": 3, "public.b": 4, "public.c": 1], unreadable: 0)
        let lines = RowCounts.differences(recorded: recorded, copy: ["public.a": 3, "public.b": 5, "public.d": 0])
        #expect(lines == ["shop.public.b: 4 recorded, 5 in the copy", "shop.public.c: 1 recorded, missing in the copy",
                          "shop.public.d: in the copy, not recorded"])
        #expect(RowCounts.differences(recorded: recorded, copy: recorded.tables).isEmpty)
    }
}
