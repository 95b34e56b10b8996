import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// Builds a `RecoveryPlan` from the repository: reads the backup list, the archive listing and
/// history files, and the archived WAL along the way (every segment recovery will replay is read
/// and its checksum verified, so a missing or damaged segment is found before anything is written;
/// the records are decoded to find where recovery will stop and the recoverable window).
public enum RecoveryPlanner {
    public struct Result: Sendable {
        public var plan: RecoveryPlan
        public var manifest: BackupManifest
        /// The backups the restore reads: `manifest` first, then its reference, ... to the full.
        public var chain: [BackupManifest]
    }

    public static func plan(_ request: RecoveryRequest, catalog: Catalog, parallelism: Int, logger: Logger) async throws -> Result {
        _ = try await catalog.requireBinding()
        let all = try await catalog.manifests()
        guard let newest = all.last else {
            throw WaybackError(.notFound, "\(catalog.repository.description) has no backup of cluster '\(catalog.layout.cluster)'; take one with 'wayback backup'")
        }
        let segSize = newest.walSegmentSize
        // A diff/incr whose chain is broken (a backup it builds on is gone) cannot be restored.
        let byID = Dictionary(all.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        if let id = request.backupID, byID[id] != nil { _ = try BackupChains.chain(id, in: byID) }
        let manifests = restorable(all)
        guard !manifests.isEmpty else {
            throw WaybackError(.corrupt, "no backup in \(catalog.repository.description) can be restored: each is a diff or incr whose chain lacks a backup it builds on (\(all.map(\.id.rawValue).joined(separator: ", "))); take a full backup with 'wayback backup'")
        }
        let facts = manifests.map(BackupFacts.init)
        var requested: BackupFacts?
        if let id = request.backupID {
            guard let f = facts.first(where: { $0.id == id }) else {
                throw WaybackError(.notFound, "backup \(id) is not in \(catalog.repository.description); 'wayback status' lists the backups")
            }
            requested = f
        }
        let archive = try await catalog.archiveContents(segmentSize: segSize)

        // The timeline to recover along.
        let timeline: UInt32
        switch (request.target, request.timeline) {
        case (.backupEnd, .number(let n)) where n != (requested ?? facts.last!).timeline:
            throw WaybackError(.usage, "--to-backup-end stays on the backup's timeline \((requested ?? facts.last!).timeline); drop --timeline \(n)")
        case (.backupEnd, _), (_, .current):
            timeline = (requested ?? facts.last!).timeline
        case (_, .number(let n)):
            timeline = n
        case (_, .latest):
            timeline = max(archive.timelines.max() ?? 1, facts.map(\.timeline).max() ?? 1)
        }
        if let why = archive.damagedHistories[timeline] {
            throw WaybackError(.corrupt, "the history file of timeline \(timeline) cannot be read: \(why)")
        }
        guard let history = archive.history(of: timeline) else {
            throw WaybackError(.restoreTarget, "timeline \(timeline) has no history file (\(WALFileName.history(timeline: timeline))) in the archive, so its ancestry is unknown; choose another with --timeline current or --timeline N")
        }
        let windows = try await recoveryWindows(facts: facts, archive: archive, catalog: catalog)
        let windowText = windows.isEmpty ? "nothing (no backup, no archived WAL)" : windows.map(\.text).joined(separator: "; ")
        let usable = RecoverySelection.usable(facts, history: history)
        guard let earliest = usable.first else {
            throw WaybackError(.restoreTarget, "no backup leads to timeline \(timeline) (each was taken on another branch or after the switch); choose a timeline with --timeline. Recoverable: \(windowText)")
        }
        let lastSeg = RecoverySelection.lastSegment(archive, history: history)
        let pgTarget: Int64? = { if case .time(let t) = request.target { return t - Int64(PostgresTime.epochOffset) * 1_000_000 }; return nil }()

        // Find the target in the WAL and choose the backup.
        var problems = [String]()
        var stop: RecoveryPlan.StopPoint?
        let backup: BackupFacts, reason: String
        var endSeg: UInt64
        var scanned = ScanOutcome()
        func scan(from: BackupFacts, event: @escaping (WALEvent) -> Bool = { _ in false },
                  segment: @escaping (WALSegmentScan) -> Bool = { _ in false }) async throws {
            let first = from.startLSN.segmentNumber(segmentSize: segSize)
            let last = max(lastSeg ?? first, from.stopLSN.segmentNumber(segmentSize: segSize))
            scanned = try await scanPath(history.segments(first, last, segmentSize: segSize), archive: archive, backup: from,
                                         catalog: catalog, parallelism: parallelism, event: event, segment: segment)
            problems = scanned.problems.map(\.message)
        }
        switch request.target {
        case .backupEnd:
            (backup, reason) = try RecoverySelection.choose(usable, position: .end, requested: request.backupID, windowText: windowText)
            endSeg = backup.stopLSN.segmentNumber(segmentSize: segSize)
        case .latest:
            (backup, reason) = try RecoverySelection.choose(usable, position: .end, requested: request.backupID, windowText: windowText)
            try await scan(from: backup)
            endSeg = max(lastSeg ?? 0, backup.stopLSN.segmentNumber(segmentSize: segSize))
        case .time(let t):
            (backup, reason) = try RecoverySelection.choose(usable, position: .time(t), requested: request.backupID, windowText: windowText)
            let exclusive = request.exclusive, stopLSN = backup.stopLSN
            try await scan(from: backup, event: { e in
                guard e.lsn >= stopLSN, e.kind == .commit || e.kind == .abort else { return false }
                return exclusive ? e.timestamp >= pgTarget! : e.timestamp > pgTarget!
            })
            guard let e = scanned.found else {
                if problems.isEmpty {
                    throw WaybackError(.restoreTarget, "\(request.target) is after the latest recoverable time: no transaction ends after it in the archived WAL, so PostgreSQL would never reach it. Recoverable: \(windowText). Use --to-latest for everything archived")
                }
                throw WaybackError(.restoreTarget, "cannot reach \(request.target): \(problems.joined(separator: "; "))")
            }
            stop = .init(position: "before", record: e.description, lsn: e.lsn, xid: e.xid, time: Date(timeIntervalSince1970: e.unixSeconds), restorePoint: nil)
            endSeg = e.lsn.segmentNumber(segmentSize: segSize)
        case .lsn(let l):
            (backup, reason) = try RecoverySelection.choose(usable, position: .lsn(l), requested: request.backupID, windowText: windowText)
            try await scan(from: backup, segment: { s in (s.lastRecord ?? LSN(0)) >= l })
            guard let seg = scanned.foundSegment else {
                if problems.isEmpty {
                    throw WaybackError(.restoreTarget, "\(request.target) is after the end of the archived WAL. Recoverable: \(windowText)")
                }
                throw WaybackError(.restoreTarget, "cannot reach \(request.target): \(problems.joined(separator: "; "))")
            }
            stop = .init(position: request.exclusive ? "before" : "after", record: "the first record at or after \(l)", lsn: l, xid: nil, time: nil, restorePoint: nil)
            endSeg = seg
        case .xid(let x):
            try await scan(from: requested ?? earliest, event: { e in (e.kind == .commit || e.kind == .abort) && e.xid == x })
            guard let e = scanned.found else {
                if !problems.isEmpty { throw WaybackError(.restoreTarget, "cannot find \(request.target): \(problems.joined(separator: "; "))") }
                throw WaybackError(.restoreTarget, "transaction \(x) neither commits nor aborts in the archived WAL on the way to timeline \(timeline) (after the earliest backup); check the xid. Recoverable: \(windowText)")
            }
            (backup, reason) = try RecoverySelection.choose(usable, position: .record(e.lsn, others: []), requested: request.backupID, windowText: windowText)
            stop = .init(position: request.exclusive ? "before" : "after", record: e.description, lsn: e.lsn, xid: x,
                         time: Date(timeIntervalSince1970: e.unixSeconds), restorePoint: nil)
            endSeg = LSN(e.endLSN.value - 1).segmentNumber(segmentSize: segSize)
        case .name(let n):
            try await scan(from: requested ?? earliest)
            let points = scanned.restorePoints.filter { $0.kind == .restorePoint(n) }
            guard let e = points.last else {
                if !problems.isEmpty { throw WaybackError(.restoreTarget, "cannot find \(request.target): \(problems.joined(separator: "; "))") }
                let known = Set(scanned.restorePoints.compactMap { if case .restorePoint(let k) = $0.kind { return k }; return nil }).sorted()
                throw WaybackError(.restoreTarget, "there is no restore point named \"\(n)\" in the archived WAL on the way to timeline \(timeline) (after the earliest backup); restore points found: \(known.isEmpty ? "none" : known.prefix(10).joined(separator: ", "))")
            }
            let (b, why) = try RecoverySelection.choose(usable, position: .record(e.lsn, others: points.dropLast().map(\.lsn)),
                                                       requested: request.backupID, windowText: windowText)
            (backup, reason) = (b, points.count > 1 ? why + " (the name was used \(points.count) times: the last one is the target)" : why)
            stop = .init(position: "after", record: e.description, lsn: e.lsn, xid: nil, time: Date(timeIntervalSince1970: e.unixSeconds), restorePoint: n)
            endSeg = LSN(e.endLSN.value - 1).segmentNumber(segmentSize: segSize)
        }

        // The WAL recovery reads, and what is wrong with it.
        let firstSeg = backup.startLSN.segmentNumber(segmentSize: segSize)
        endSeg = max(endSeg, backup.stopLSN.segmentNumber(segmentSize: segSize))
        let needed = history.segments(firstSeg, endSeg, segmentSize: segSize)
        let missing = RecoverySelection.missing(needed, archive: archive, backup: backup)
        let missingNames = missing.map { $0.name(segmentSize: segSize).description }
        // Problems past the end of the replay range do not matter.
        problems = scanned.problems.filter { $0.segment <= endSeg }.map(\.message)
        for m in missingNames where !problems.contains(where: { $0.contains(m) }) {
            problems.append("WAL segment \(m) is missing from the archive: recovery cannot pass it")
        }
        // PostgreSQL reads the target timeline's history file (it lists every ancestor); its
        // presence was checked above.
        let histories = timeline > 1 ? [WALFileName.history(timeline: timeline).description] : []
        let inBackup = needed.filter { !archive.has($0.timeline, $0.number) && backup.walCopies.contains($0.number) }.count
        let manifest = manifests.first { $0.id == backup.id }!
        let chain = try BackupChains.chain(manifest.id, in: byID)
        // Every object the restore reads is listed with its recorded size (its content is
        // verified as it is restored).
        let damage = try await catalog.objectProblems(chain)
        let damagedObjects = chain.flatMap { m in (damage[m.id] ?? []).map { "backup \(m.id): \($0)" } }
        for m in chain where damage[m.id] != nil {
            problems.append("backup \(m.id) is damaged (\(damage[m.id]!.joined(separator: ", "))): restore another backup with --backup ID")
        }
        let records = (try? await catalog.restoreRecords()) ?? []
        let walBytes = Int64(needed.count) * Int64(segSize)
        let plan = RecoveryPlan(
            target: request.target.description, targetKind: request.target.kind,
            targetTime: { if case .time(let t) = request.target { return Format.postgresTimestamp(micros: t) }; return nil }(),
            exclusive: request.exclusive, action: request.effectiveAction, timeline: timeline,
            timelinePath: history.path.map(\.timeline).drop { $0 != backup.timeline }.map { $0 },
            backup: backup.id, backupReason: reason, backupStop: backup.stopTime, files: backup.files, bytes: backup.bytes,
            wal: .init(first: needed.first?.name(segmentSize: segSize).description, last: needed.last?.name(segmentSize: segSize).description,
                       segments: needed.count, inBackup: inBackup, histories: histories, missing: missingNames,
                       damaged: scanned.problems.filter { $0.segment <= endSeg && $0.damaged }.map(\.name), bytes: walBytes),
            stop: stop, windows: windows,
            estimate: RecoverySelection.estimate(bytes: backup.bytes, walBytes: walBytes, history: records, backups: facts),
            problems: problems, chain: chain.reversed().map(\.id), damagedObjects: damagedObjects.isEmpty ? nil : damagedObjects)
        logger.debug("recovery plan", metadata: ["wayback.backup": "\(backup.id)", "segments": "\(needed.count)"])
        return Result(plan: plan, manifest: manifest, chain: chain)
    }

    struct ScanOutcome {
        struct Problem { var segment: UInt64; var name: String; var damaged: Bool; var message: String }
        var found: WALEvent?
        var foundSegment: UInt64?
        /// Restore points met on the way (commits and aborts are not kept: there can be millions).
        var restorePoints: [WALEvent] = []
        var problems: [Problem] = []
    }

    /// Reads `segments` in order (those the archive lacks but the backup holds are skipped) until
    /// `event` or `segment` says the target is found; stops at the first missing or damaged one.
    static func scanPath(_ segments: [SegmentOnPath], archive: ArchiveContents, backup: BackupFacts, catalog: Catalog, parallelism: Int,
                         event: @escaping (WALEvent) -> Bool, segment: @escaping (WALSegmentScan) -> Bool) async throws -> ScanOutcome {
        var out = ScanOutcome()
        let segSize = archive.segmentSize
        var list = [SegmentOnPath]()
        for s in segments {
            if archive.has(s.timeline, s.number) { list.append(s); continue }
            if s.timeline == backup.timeline && backup.walCopies.contains(s.number) { continue }
            // A hole: recovery cannot pass it.
            let name = s.name(segmentSize: segSize).description
            out.problems.append(.init(segment: s.number, name: name, damaged: false,
                                      message: "WAL segment \(name) is missing from the archive: recovery cannot pass it"))
            break
        }
        try await catalog.scanSegments(list, segmentSize: segSize, parallelism: parallelism) { seg, result in
            switch result {
            case .failure(let e):
                let name = seg.name(segmentSize: segSize).description
                out.problems.insert(.init(segment: seg.number, name: name, damaged: e.code != .notFound,
                                          message: e.message + "; recovery cannot pass it"), at: 0)
                return false
            case .success(let scan):
                for e in scan.events {
                    if case .restorePoint = e.kind { out.restorePoints.append(e) }
                    if event(e) { out.found = e; out.foundSegment = seg.number; return false }
                }
                if segment(scan) { out.foundSegment = seg.number; return false }
                return true
            }
        }
        return out
    }

    /// The backups whose whole chain is there (the others cannot be restored), in order.
    static func restorable(_ all: [BackupManifest]) -> [BackupManifest] {
        let byID = Dictionary(all.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        return all.filter { (try? BackupChains.chain($0.id, in: byID)) != nil }
    }

    /// The recoverable window of every timeline (for `status`), from the same backups the plan
    /// can use, so that `status` and `restore --dry-run` agree.
    public static func recoverableWindows(catalog: Catalog) async throws -> [RecoveryWindow] {
        let manifests = restorable(try await catalog.manifests())
        guard let newest = manifests.last else { return [] }
        let archive = try await catalog.archiveContents(segmentSize: newest.walSegmentSize)
        return try await recoveryWindows(facts: manifests.map(BackupFacts.init), archive: archive, catalog: catalog)
    }

    /// Earliest and latest recoverable point of every timeline in the archive.
    static func recoveryWindows(facts: [BackupFacts], archive: ArchiveContents, catalog: Catalog) async throws -> [RecoveryWindow] {
        var out = [RecoveryWindow]()
        let segSize = archive.segmentSize
        for tli in Set(archive.timelines).union(facts.map(\.timeline)).sorted() {
            guard let h = archive.history(of: tli) else { continue }
            let usable = RecoverySelection.usable(facts, history: h)
            var w = RecoveryWindow(timeline: tli, earliest: usable.first?.stopTime, earliestLSN: usable.first?.stopLSN)
            // The last transaction end: scan the last segments of the path, newest first. A
            // segment that cannot be read or decoded is a gap: recovery stops before it.
            var damaged = [String]()
            if let last = RecoverySelection.lastSegment(archive, history: h) {
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
