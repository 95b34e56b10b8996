import Foundation
import Testing
import WaybackCatalog
import WaybackCore
@testable import WaybackVerify

/// Which objects an incremental `verify` reads: new, changed and damaged ones always, plus the
/// share of the rest read longest ago, so that a cycle of runs reads everything.
@Suite struct VerifySelectionTests {
    func candidate(_ i: Int, size: Int64 = 100, sha: String? = "a") -> VerifyCandidate {
        VerifyCandidate(key: "main/backups/b/pack/\(i)", group: "backups/b", size: size, sha256: sha)
    }
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func everythingNewIsReadAndAllMeansAll() {
        let cs = (0..<5).map { candidate($0) }
        #expect(VerifySelection.choose(cs, records: [:], resamplePercent: 0, all: false) == Set(cs.map(\.key)))
        let records = Dictionary(uniqueKeysWithValues: cs.map { ($0.key, VerifyRecord(size: 100, sha256: "a", verifiedAt: t0, sound: true)) })
        #expect(VerifySelection.choose(cs, records: records, resamplePercent: 0, all: false).isEmpty)
        #expect(VerifySelection.choose(cs, records: records, resamplePercent: 0, all: true).count == 5)
    }

    @Test func theShareIsOfBytesSoOneLargeObjectIsNotReadEveryRun() {
        // A 1,000-byte pack among 19 WAL files of 100 bytes: a 10 % share is 290 bytes (three
        // WAL files), and the pack is chosen only when it is among the oldest.
        var cs = [VerifyCandidate(key: "main/backups/b/pack/big", group: "backups/b", size: 1000, sha256: "a")]
        cs += (0..<19).map { VerifyCandidate(key: "main/wal/\($0)", group: "wal/0", size: 100, sha256: nil) }
        var records = [String: VerifyRecord]()
        for (i, c) in cs.enumerated() { records[c.key] = VerifyRecord(size: c.size, sha256: c.sha256, verifiedAt: t0.addingTimeInterval(i == 0 ? 50 : Double(i)), sound: true) }
        let chosen = VerifySelection.choose(cs, records: records, resamplePercent: 10, all: false)
        #expect(!chosen.contains(cs[0].key) && chosen.count == 3, "\(chosen.sorted())")
        #expect(VerifySelection.choose(cs, records: records, resamplePercent: 0, all: false).isEmpty)
    }

    @Test func changedAndDamagedObjectsAreAlwaysReadAgain() {
        let cs = [candidate(0, size: 200), candidate(1, sha: "b"), candidate(2), candidate(3)]
        var records = Dictionary(uniqueKeysWithValues: cs.map { ($0.key, VerifyRecord(size: 100, sha256: "a", verifiedAt: t0, sound: true)) })
        records[cs[2].key]!.sound = false
        #expect(VerifySelection.choose(cs, records: records, resamplePercent: 0, all: false) == [cs[0].key, cs[1].key, cs[2].key])
    }

    @Test func theShareIsTheOldestRoundedUpAndACycleCoversEverything() {
        let cs = (0..<25).map { candidate($0) }
        var records = [String: VerifyRecord]()
        for (i, c) in cs.enumerated() { records[c.key] = VerifyRecord(size: 100, sha256: "a", verifiedAt: t0.addingTimeInterval(Double(i)), sound: true) }
        let first = VerifySelection.choose(cs, records: records, resamplePercent: 10, all: false)
        #expect(first == Set(cs.prefix(3).map(\.key)), "10 % of 2,500 bytes: the 3 oldest objects of 100")
        // Run after run, marking what was read as read now: ten runs read every object.
        var seen = Set<String>(), now = t0.addingTimeInterval(1000)
        for _ in 0..<10 {
            let chosen = VerifySelection.choose(cs, records: records, resamplePercent: 10, all: false)
            for k in chosen { records[k]!.verifiedAt = now }
            seen.formUnion(chosen)
            now = now.addingTimeInterval(1)
        }
        #expect(seen.count == cs.count)
    }
}
