import Foundation
import Testing
import WaybackCore
import WaybackPostgres
@testable import WaybackCatalog

@Suite struct BackupChainTests {
    static func manifest(_ id: String, reference: String? = nil, timeline: UInt32 = 1, stop: UInt64 = 0x3000000,
                         checksums: Bool = true, files: [BackupManifest.File] = []) -> BackupManifest {
        let bid = BackupID(id)!
        let type: BackupType = id.hasSuffix("F") ? .full : id.hasSuffix("D") ? .diff : .incr
        return BackupManifest(id: bid, type: type, reference: reference.flatMap { BackupID($0) }, cluster: "c", systemIdentifier: "42",
                              pgVersionNumber: 150004, walSegmentSize: 16 << 20, dataChecksums: checksums, startTime: Date(), stopTime: Date(),
                              startLSN: LSN(stop - 0x100), stopLSN: LSN(stop), timeline: timeline, startWAL: "", stopWAL: "", backupLabel: "",
                              tablespaceMap: "", tablespaces: [], compression: CompressionSettings(), objects: [], directories: [], files: files,
                              wal: [], copySeconds: 0)
    }
    static let now = BackupChains.Current(timeline: 1, history: nil, dataChecksums: true, pgVersionNumber: 150010)

    @Test func referenceChoice() {
        let f = Self.manifest("20261101-000000F")
        let i1 = Self.manifest("20261101-010000I", reference: "20261101-000000F")
        let i2 = Self.manifest("20261101-020000I", reference: "20261101-010000I")
        let all = [f, i1, i2]
        #expect(BackupChains.decide(.incr, backups: all, current: Self.now, maxChainLength: 10) == .init(type: .incr, reference: i2.id, note: nil))
        #expect(BackupChains.decide(.diff, backups: all, current: Self.now, maxChainLength: 10) == .init(type: .diff, reference: f.id, note: nil))
        #expect(BackupChains.decide(.full, backups: all, current: Self.now, maxChainLength: 10).reference == nil)
        // A chain of 4 is too long for a limit of 3: a diff on the full instead.
        let capped = BackupChains.decide(.incr, backups: all, current: Self.now, maxChainLength: 3)
        #expect(capped.type == .diff && capped.reference == f.id && capped.note?.contains("max_chain_length") == true)
        #expect(BackupChains.decide(.incr, backups: all, current: Self.now, maxChainLength: 1).type == .full)
        // Nothing to build on.
        let none = BackupChains.decide(.incr, backups: [BackupManifest](), current: Self.now, maxChainLength: 10)
        #expect(none.type == .full && none.note != nil)
        // Checksums switched on since: every page was rewritten without a new LSN.
        let off = [Self.manifest("20261101-000000F", checksums: false)]
        #expect(BackupChains.decide(.incr, backups: off, current: Self.now, maxChainLength: 10).type == .full)
        // A broken chain (its full is gone) is no reference; the newest intact backup is.
        #expect(BackupChains.decide(.incr, backups: [f, i1, Self.manifest("20261101-030000I", reference: "20261101-025900I")],
                                    current: Self.now, maxChainLength: 10).reference == i1.id)
        // The status index's summaries decide as the manifests do; a summary without the
        // reference fields (an index written before them) is never a reference.
        for type in [BackupType.incr, .diff] {
            for limit in [1, 3, 10] {
                #expect(BackupChains.decide(type, backups: all.map(BackupSummary.init), current: Self.now, maxChainLength: limit)
                        == BackupChains.decide(type, backups: all, current: Self.now, maxChainLength: limit))
            }
        }
        var old = all.map(BackupSummary.init)
        old[old.count - 1].pgVersionNumber = nil
        #expect(BackupChains.decide(.incr, backups: old, current: Self.now, maxChainLength: 10).reference == old[old.count - 2].id)
    }

    @Test func referenceMustBeOnThePresentHistory() {
        // Timeline 2 left timeline 1 at 0/3000000: a backup of timeline 1 that ended after that
        // saw writes the present cluster never had.
        let history = TimelineHistory(timeline: 2, parents: [.init(timeline: 1, switchPoint: LSN(0x3000000))])
        let current = BackupChains.Current(timeline: 2, history: history, dataChecksums: true, pgVersionNumber: 150010)
        let before = Self.manifest("20261101-000000F", stop: 0x2000000)
        let after = Self.manifest("20261101-010000F", stop: 0x4000000)
        #expect(BackupChains.decide(.incr, backups: [before, after], current: current, maxChainLength: 10).reference == before.id)
        let other = BackupChains.Current(timeline: 3, history: TimelineHistory(timeline: 3, parents: []), dataChecksums: true, pgVersionNumber: 150010)
        #expect(BackupChains.decide(.incr, backups: [before, after], current: other, maxChainLength: 10).type == .full)
    }

    @Test func chainsAndExpiry() throws {
        let f = Self.manifest("20261101-000000F")
        let d = Self.manifest("20261101-010000D", reference: "20261101-000000F")
        let i = Self.manifest("20261101-020000I", reference: "20261101-010000D")
        let f2 = Self.manifest("20261102-000000F")
        let all = [f, d, i, f2]
        let byID = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })
        #expect(try BackupChains.chain(i.id, in: byID).map(\.id) == [i.id, d.id, f.id])
        #expect(BackupChains.dependents(of: f.id, in: all) == [d.id, i.id])
        #expect(BackupChains.dependents(of: f2.id, in: all).isEmpty)
        // The full cannot go while the incr stays; all three can go together.
        let blocked = BackupChains.expiryBlockers(remove: [f.id], backups: all)
        #expect(blocked.map(\.backup) == [f.id] && blocked.first?.keptDependent == d.id)
        #expect(BackupChains.expiryBlockers(remove: [f.id, d.id, i.id], backups: all).isEmpty)
        // A missing link is named.
        do {
            _ = try BackupChains.chain(i.id, in: byID.filter { $0.key != d.id })
            Issue.record("a broken chain must throw")
        } catch let e as WaybackError {
            #expect(e.code == .corrupt && e.message.contains(d.id.rawValue))
        }
    }

    @Test func blockOwnershipTakesEachBlockFromTheNewestVersion() throws {
        let page = BlockOwnership.blockSize
        // The full: 4 blocks in two frames of 2 blocks.
        let full = BackupManifest.File(path: "base/1/2", size: Int64(4 * page), mode: 0o600, mtime: 0, sha256: "",
                                       chunks: [.init(object: 0, offset: 0, length: 0, raw: 2 * page), .init(object: 0, offset: 0, length: 0, raw: 2 * page)])
        // incr 1: blocks 1 and 4 (the file grew to 5 blocks).
        let i1 = BackupManifest.File(path: "base/1/2", size: Int64(5 * page), mode: 0o600, mtime: 0, sha256: "",
                                     chunks: [.init(object: 0, offset: 0, length: 0, raw: 2 * page)], base: BackupID("20261101-000000F"),
                                     blocks: [.init(start: 1, count: 1), .init(start: 4, count: 1)])
        // incr 2: block 4 again; the file shrank to 5 blocks... and block 0.
        let i2 = BackupManifest.File(path: "base/1/2", size: Int64(5 * page), mode: 0o600, mtime: 0, sha256: "",
                                     chunks: [.init(object: 0, offset: 0, length: 0, raw: 2 * page)], base: BackupID("20261101-010000I"),
                                     blocks: [.init(start: 0, count: 1), .init(start: 4, count: 1)])
        let plan = try BlockOwnership.plan(size: Int64(5 * page), versions: [i2, i1, full])
        func blocks(_ frames: [BlockOwnership.FramePlan]) -> [Int64] {
            frames.flatMap { f in f.pieces.flatMap { p in stride(from: p.fileOffset, to: p.fileOffset + Int64(p.length), by: page).map { $0 / Int64(page) } } }
        }
        #expect(blocks(plan[0]) == [0, 4])
        #expect(blocks(plan[1]) == [1])
        #expect(blocks(plan[2]) == [2, 3])
        #expect(plan[2].map(\.chunk) == [1])  // the full's first frame (blocks 0, 1) is not read
        // Truncated to 2 blocks: nothing beyond is written.
        let short = try BlockOwnership.plan(size: Int64(2 * page), versions: [i2, i1, full])
        #expect(blocks(short[0]) == [0] && blocks(short[1]) == [1] && short[2].isEmpty)
        // A chain that leaves block 5 uncovered is damaged.
        #expect(throws: WaybackError.self) { try BlockOwnership.plan(size: Int64(6 * page), versions: [i2, i1, full]) }
    }
}

@Suite struct PackIndexTests {
    @Test func aCopyStandsForTheFileOnlyWhileTheFileIsUnchangedAndWasQuiet() {
        let file = BackupManifest.File(path: "base/1/2", size: 8192, mode: 0o600, mtime: 100, sha256: "", chunks: [])
        let readAt = 1_800_000_000.0
        let quiet = Int64((readAt - 5) * 1e9)
        let e = PackIndex.Entry(file: file, mtimeNanoseconds: quiet, readAt: readAt, pageFailure: nil)
        #expect(e.stillValid(size: 8192, mtimeNanoseconds: quiet))
        #expect(!e.stillValid(size: 16384, mtimeNanoseconds: quiet), "grown")
        #expect(!e.stillValid(size: 8192, mtimeNanoseconds: quiet + 1), "written since (even 1 ns later)")
        // Written within the second before it was read: a later write could keep the same time.
        let busy = Int64((readAt - 0.5) * 1e9)
        #expect(!PackIndex.Entry(file: file, mtimeNanoseconds: busy, readAt: readAt, pageFailure: nil).stillValid(size: 8192, mtimeNanoseconds: busy))
    }
}
