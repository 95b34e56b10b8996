import Foundation
import WaybackCore
import WaybackPostgres

/// The facts of a backup that recovery planning uses.
public struct BackupFacts: Sendable, Equatable {
    public var id: BackupID
    public var timeline: UInt32
    public var startLSN: LSN
    public var stopLSN: LSN
    public var startTime: Date
    public var stopTime: Date
    public var bytes: Int64
    public var files: Int
    /// Segment numbers of the WAL copies stored in the backup itself.
    public var walCopies: Set<UInt64>
    public var copySeconds: Double

    public init(id: BackupID, timeline: UInt32, startLSN: LSN, stopLSN: LSN, startTime: Date, stopTime: Date,
                bytes: Int64, files: Int, walCopies: Set<UInt64>, copySeconds: Double) {
        self.id = id; self.timeline = timeline; self.startLSN = startLSN; self.stopLSN = stopLSN
        self.startTime = startTime; self.stopTime = stopTime; self.bytes = bytes; self.files = files
        self.walCopies = walCopies; self.copySeconds = copySeconds
    }

    public init(_ m: BackupManifest) { self.init(BackupSummary(m)) }

    public init(_ s: BackupSummary) {
        self.init(id: s.id, timeline: s.timeline, startLSN: s.startLSN, stopLSN: s.stopLSN, startTime: s.startTime,
                  stopTime: s.stopTime, bytes: s.sizes.database, files: s.sizes.files,
                  walCopies: Set(s.walCopies.compactMap { WALFileName($0)?.segmentNumber(segmentSize: s.walSegmentSize) }),
                  copySeconds: s.copySeconds)
    }
}

/// The recoverable window of one timeline.
public struct RecoveryWindow: Sendable, Codable, Equatable {
    public var timeline: UInt32
    /// End of the earliest backup that leads to this timeline: nothing earlier can be recovered.
    public var earliest: Date?
    public var earliestLSN: LSN?
    /// Time of the last commit or abort in the archived WAL of this timeline.
    public var latest: Date?
    /// End of the last record in the archived WAL of this timeline.
    public var latestLSN: LSN?
    /// Archived segments near the end that could not be read or decoded: recovery stops before
    /// them, so the window ends there.
    public var damaged: [String]?

    public init(timeline: UInt32, earliest: Date? = nil, earliestLSN: LSN? = nil, latest: Date? = nil, latestLSN: LSN? = nil) {
        self.timeline = timeline; self.earliest = earliest; self.earliestLSN = earliestLSN; self.latest = latest; self.latestLSN = latestLSN
    }

    public var text: String {
        let from = earliest.map { "\(Format.timestamp($0)) (\(earliestLSN?.description ?? "?"))" } ?? "no backup leads here"
        let to = latest.map { "\(Format.timestamp($0)) (\(latestLSN?.description ?? "?"))" } ?? (latestLSN.map { "LSN \($0)" } ?? "no archived WAL")
        let harm = (damaged ?? []).isEmpty ? "" : " (DAMAGED, recovery cannot pass: \(damaged!.joined(separator: ", ")))"
        return "timeline \(timeline): \(from) to \(to)\(harm)"
    }
}

/// What can be recovered, per timeline: shared by `status` (and the daemon's pages) and the
/// restore plan, so that they agree.
public enum RecoverableWindows {
    /// Backups from which recovery can follow `history`: taken on a timeline of the path, and
    /// finished before the path leaves that timeline.
    public static func usable(_ backups: [BackupFacts], history: TimelineHistory) -> [BackupFacts] {
        backups.filter { b in
            guard history.contains(b.timeline) else { return false }
            if let leave = history.switchPoint(leaving: b.timeline) { return b.stopLSN <= leave }
            return true
        }.sorted { ($0.stopLSN, $0.id) < ($1.stopLSN, $1.id) }
    }

    /// The highest segment of the path present in the archive (nil: none). A parent's segments
    /// after the switch belong to the abandoned branch and do not count.
    public static func lastSegment(_ archive: ArchiveContents, history: TimelineHistory) -> UInt64? {
        var best: UInt64?
        for p in history.path {
            for s in archive.segments[p.timeline] ?? [] where history.timeline(forSegment: s, segmentSize: archive.segmentSize) == p.timeline {
                if best == nil || s > best! { best = s }
            }
        }
        return best
    }

    /// The newest segment of the path at or below `last` that is not archived (nil: none down to
    /// segment 1).
    public static func lastHole(_ archive: ArchiveContents, history: TimelineHistory, from last: UInt64) -> UInt64? {
        var s = last
        while s > 1 {
            s -= 1
            if !archive.has(history.timeline(forSegment: s, segmentSize: archive.segmentSize), s) { return s }
        }
        return nil
    }

    /// The backups whose whole chain is there (the others cannot be restored), in order.
    public static func restorable<M: ChainMember>(_ all: [M]) -> [M] {
        let byID = Dictionary(all.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        return all.filter { (try? BackupChains.chain($0.id, in: byID)) != nil }
    }

    /// The recoverable window of every timeline (for `status`), from the same backups the plan
    /// can use, so that `status` and `restore --dry-run` agree. `wal`: the archive's listing.
    public static func compute(catalog: Catalog, backups all: [BackupSummary], wal: [WALFileName]) async throws -> [RecoveryWindow] {
        let backups = restorable(all)
        guard let newest = backups.last else { return [] }
        let archive = try await catalog.archiveContents(segmentSize: newest.walSegmentSize, listed: wal)
        return try await compute(facts: backups.map(BackupFacts.init), archive: archive, catalog: catalog)
    }

    /// Earliest and latest recoverable point of every timeline in the archive.
    public static func compute(facts: [BackupFacts], archive: ArchiveContents, catalog: Catalog) async throws -> [RecoveryWindow] {
        var out = [RecoveryWindow]()
        let segSize = archive.segmentSize
        for tli in Set(archive.timelines).union(facts.map(\.timeline)).sorted() {
            guard let h = archive.history(of: tli) else { continue }
            var usable = usable(facts, history: h)
            // Recovery runs from a backup's end through every archived segment after it: a backup
            // before a hole in the archive (an expired range, a lost file) restores to its own end
            // only, so the window starts at the first backup after the last hole.
            if let last = lastSegment(archive, history: h), let hole = lastHole(archive, history: h, from: last) {
                let after = usable.filter { $0.stopLSN.segmentNumber(segmentSize: segSize) >= hole }
                if !after.isEmpty { usable = after }
            }
            var w = RecoveryWindow(timeline: tli, earliest: usable.first?.stopTime, earliestLSN: usable.first?.stopLSN)
            // The last transaction end: scan the last segments of the path, newest first. A
            // segment that cannot be read or decoded is a gap: recovery stops before it.
            var damaged = [String]()
            if let last = lastSegment(archive, history: h) {
                var s = last
                var probes = 0
                while probes < 8 {
                    let seg = SegmentOnPath(timeline: h.timeline(forSegment: s, segmentSize: segSize), number: s)
                    guard archive.has(seg.timeline, seg.number) else { break }
                    var result: Swift.Result<WALSegmentScan, WaybackError>?
                    try await catalog.scanSegments([seg], segmentSize: segSize, parallelism: 1) { _, r in result = r; return false }
                    probes += 1
                    switch result {
                    case .success(let scan)?:
                        if w.latestLSN == nil { w.latestLSN = scan.endOfRecords ?? scan.lastRecord }
                        if let e = scan.events.last(where: { $0.kind == .commit || $0.kind == .abort }) {
                            w.latest = Date(timeIntervalSince1970: e.unixSeconds)
                            probes = 8
                        }
                    case .failure(let e)? where e.code != .notFound:
                        // Everything found after it is out of reach.
                        damaged.insert(seg.name(segmentSize: segSize).description, at: 0)
                        w.latestLSN = nil
                        w.latest = nil
                    default:
                        probes = 8
                    }
                    if s == 0 { break }
                    s -= 1
                }
            }
            w.damaged = damaged.isEmpty ? nil : damaged
            // The window never ends before it starts: with no transaction after the newest backup
            // that leads here, the end of that backup is the latest point.
            if let newest = usable.max(by: { $0.stopLSN < $1.stopLSN }) {
                if w.latest.map({ $0 < newest.stopTime }) ?? true { w.latest = newest.stopTime }
                if w.latestLSN.map({ $0 < newest.stopLSN }) ?? true { w.latestLSN = newest.stopLSN }
            }
            out.append(w)
        }
        return out
    }
}
