import Foundation
import WaybackCatalog
import WaybackCore
import WaybackStorage

/// An object `verify` may read: its key, the group its record lives in, and what it is now.
public struct VerifyCandidate: Sendable, Equatable {
    public var key: String
    public var group: String
    public var size: Int64
    public var sha256: String?
    public init(key: String, group: String, size: Int64, sha256: String?) {
        self.key = key; self.group = group; self.size = size; self.sha256 = sha256
    }
}

/// Which objects a run reads: a pure function of the candidates and their records.
public enum VerifySelection {
    /// With `all`, every candidate. Otherwise every candidate that is new (no record), changed
    /// (another size or recorded SHA-256) or found damaged before, plus the others that were read
    /// longest ago, up to `resamplePercent` of their bytes (at least one object when the share is
    /// not 0), so that every object is read again within `100 / resamplePercent` runs.
    public static func choose(_ candidates: [VerifyCandidate], records: [String: VerifyRecord], resamplePercent: Int, all: Bool) -> Set<String> {
        if all { return Set(candidates.map(\.key)) }
        var chosen = Set<String>()
        var old = [(key: String, at: Date, size: Int64)]()
        for c in candidates {
            guard let r = records[c.key], r.sound, r.size == c.size, r.sha256 == c.sha256 else {
                chosen.insert(c.key)
                continue
            }
            old.append((c.key, r.verifiedAt, c.size))
        }
        let percent = Int64(max(0, min(100, resamplePercent)))
        guard percent > 0 else { return chosen }
        let share = (old.reduce(Int64(0)) { $0 + $1.size } * percent + 99) / 100
        var taken: Int64 = 0
        for o in old.sorted(by: { ($0.at, $0.key) < ($1.at, $1.key) }) {
            if taken >= share && taken > 0 { break }
            chosen.insert(o.key)
            taken += max(1, o.size)
        }
        return chosen
    }
}

/// What the records say of one backup in one repository.
public struct BackupVerification: Codable, Sendable, Equatable {
    /// When every object of the backup had been read (the oldest of their last reads); nil when
    /// some were never read.
    public var verifiedAt: Date?
    /// false when an object was damaged at its last read; nil when not every object was read.
    public var sound: Bool?
}

extension Verify {
    /// The verification state of each backup from the records `verify` keeps in `repository`.
    public static func states(_ repository: Repository, cluster: String, backups: [BackupSummary]) async -> [BackupID: BackupVerification] {
        let store = VerifyRecordStore(driver: repository.driver, cluster: cluster)
        let layout = RepositoryLayout(cluster: cluster)
        var out = [BackupID: BackupVerification]()
        for b in backups {
            let records = await store.load("backups/\(b.id)").records
            let mine = b.objects.map { records[layout.objectKey(b.id, $0.name)] }
            if mine.contains(where: { $0?.sound == false }) {
                out[b.id] = BackupVerification(verifiedAt: nil, sound: false)
            } else if !mine.isEmpty, mine.allSatisfy({ $0 != nil }) {
                out[b.id] = BackupVerification(verifiedAt: mine.compactMap { $0?.verifiedAt }.min(), sound: true)
            } else {
                out[b.id] = BackupVerification(verifiedAt: nil, sound: nil)
            }
        }
        return out
    }
}
