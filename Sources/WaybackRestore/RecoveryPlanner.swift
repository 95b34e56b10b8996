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

    /// What a plan is decided from, read from the repository once: every backup's summary (the
    /// status index's, without the file lists: only the chain's manifests are read, once the
    /// backup is chosen), the archive's listing and history files, the recoverable windows (read
    /// from the last segments of each timeline) and the timings of earlier restores.
    public struct Snapshot: Sendable {
        /// Every complete backup, oldest first (broken chains included: `decide` names them).
        public var backups: [BackupSummary]
        public var archive: ArchiveContents
        public var windows: [RecoveryWindow]
        public var records: [RestoreRecord]
        /// For messages: the repository and the cluster.
        public var repository: String
        public var cluster: String

        public init(backups: [BackupSummary], archive: ArchiveContents, windows: [RecoveryWindow], records: [RestoreRecord],
                    repository: String, cluster: String) {
            self.backups = backups; self.archive = archive; self.windows = windows; self.records = records
            self.repository = repository; self.cluster = cluster
        }

        /// The backups whose whole chain is there (the others cannot be restored), in order.
        public var restorable: [BackupSummary] { RecoverableWindows.restorable(backups) }
    }

    /// What the archived WAL must be read for, once the timeline and the backups are known.
    public enum Probe: Sendable, Equatable {
        /// Everything to the end of the archive (restore points are collected on the way).
        case toEnd
        /// The first transaction end after `micros` (PostgreSQL's epoch; at it with `exclusive`),
        /// at or after `notBefore` (the backup's end).
        case transactionEnd(micros: Int64, exclusive: Bool, notBefore: LSN)
        /// The segment that holds the first record at or after this position.
        case position(LSN)
        /// The commit or abort of this transaction.
        case transaction(UInt32)
    }

    /// The first half of the decision (pure): the timeline to follow, the backups that lead to it,
    /// the backup when the target allows choosing it before the WAL is read, and what to read.
    public struct Route: Sendable {
        public var timeline: UInt32
        public var history: TimelineHistory
        public var facts: [BackupFacts]
        public var usable: [BackupFacts]
        public var windowText: String
        public var lastSegment: UInt64?
        /// Chosen before reading the WAL (end of backup, latest, a time, a position).
        public var chosen: (backup: BackupFacts, reason: String)?
        /// Where the WAL is read from, and for what (nil: not read).
        public var scan: (from: BackupFacts, probe: Probe)?
    }

    public static func plan(_ request: RecoveryRequest, catalog: Catalog, parallelism: Int, logger: Logger) async throws -> Result {
        let snapshot = try await read(catalog)
        let route = try route(request, snapshot: snapshot)
        var scanned = ScanOutcome()
        if let (from, probe) = route.scan {
            let segSize = snapshot.archive.segmentSize
            let first = from.startLSN.segmentNumber(segmentSize: segSize)
            let last = max(route.lastSegment ?? first, from.stopLSN.segmentNumber(segmentSize: segSize))
            scanned = try await scanPath(route.history.segments(first, last, segmentSize: segSize), archive: snapshot.archive, backup: from,
                                         probe: probe, catalog: catalog, parallelism: parallelism)
        }
        var decision = try decide(request, snapshot: snapshot, route: route, scanned: scanned)
        // The manifests of the chain alone are read (a repository of a week of hourly incrs holds
        // a hundred and more, each listing every file).
        let chain = try await catalog.manifests(decision.chain.map(\.id))
        // Every object the restore reads is listed with its recorded size (its content is
        // verified as it is restored).
        decision.addObjectProblems(try await catalog.objectProblems(chain))
        logger.debug("recovery plan", metadata: ["wayback.backup": "\(decision.plan.backup)", "segments": "\(decision.plan.wal.segments)"])
        return Result(plan: decision.plan, manifest: chain[0], chain: chain)
    }

    /// Reads what a plan is decided from (the binding is checked first).
    public static func read(_ catalog: Catalog) async throws -> Snapshot {
        _ = try await catalog.requireBinding()
        let all = try await StatusIndex.summaries(catalog).summaries
        guard let newest = all.last else {
            throw WaybackError(.notFound, "\(catalog.repository.description) has no backup of cluster '\(catalog.layout.cluster)'; take one with 'wayback backup'")
        }
        let archive = try await catalog.archiveContents(segmentSize: newest.walSegmentSize)
        let windows = try await RecoverableWindows.compute(facts: RecoverableWindows.restorable(all).map(BackupFacts.init), archive: archive, catalog: catalog)
        let records = (try? await catalog.restoreRecords()) ?? []
        return Snapshot(backups: all, archive: archive, windows: windows, records: records,
                        repository: catalog.repository.description, cluster: catalog.layout.cluster)
    }

    /// The timeline, the backups that lead there, and what the WAL must be read for (pure).
    public static func route(_ request: RecoveryRequest, snapshot: Snapshot) throws -> Route {
        let all = snapshot.backups
        guard !all.isEmpty else {
            throw WaybackError(.notFound, "\(snapshot.repository) has no backup of cluster '\(snapshot.cluster)'; take one with 'wayback backup'")
        }
        // A diff/incr whose chain is broken (a backup it builds on is gone) cannot be restored.
        let byID = Dictionary(all.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        if let id = request.backupID, byID[id] != nil { _ = try BackupChains.chain(id, in: byID) }
        let facts = snapshot.restorable.map(BackupFacts.init)
        guard let newestFacts = facts.last else {
            throw WaybackError(.corrupt, "no backup in \(snapshot.repository) can be restored: each is a diff or incr whose chain lacks a backup it builds on (\(all.map(\.id.rawValue).joined(separator: ", "))); take a full backup with 'wayback backup'")
        }
        var requested: BackupFacts?
        if let id = request.backupID {
            guard let f = facts.first(where: { $0.id == id }) else {
                throw WaybackError(.notFound, "backup \(id) is not in \(snapshot.repository); 'wayback status' lists the backups")
            }
            requested = f
        }
        let archive = snapshot.archive

        // The timeline to recover along.
        let timeline: UInt32
        switch (request.target, request.timeline) {
        case (.backupEnd, .number(let n)) where n != (requested ?? newestFacts).timeline:
            throw WaybackError(.usage, "--to-backup-end stays on the backup's timeline \((requested ?? newestFacts).timeline); drop --timeline \(n)")
        case (.backupEnd, _), (_, .current):
            timeline = (requested ?? newestFacts).timeline
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
        let windows = snapshot.windows
        let windowText = windows.isEmpty ? "nothing (no backup, no archived WAL)" : windows.map(\.text).joined(separator: "; ")
        let usable = RecoverableWindows.usable(facts, history: history)
        guard let earliest = usable.first else {
            throw WaybackError(.restoreTarget, "no backup leads to timeline \(timeline) (each was taken on another branch or after the switch); choose a timeline with --timeline. Recoverable: \(windowText)")
        }
        var route = Route(timeline: timeline, history: history, facts: facts, usable: usable, windowText: windowText,
                          lastSegment: RecoverableWindows.lastSegment(archive, history: history))
        func choose(_ position: RecoverySelection.Position) throws -> BackupFacts {
            let c = try RecoverySelection.choose(usable, position: position, requested: request.backupID, windowText: windowText)
            route.chosen = c
            return c.0
        }
        switch request.target {
        case .backupEnd:
            _ = try choose(.end)
        case .latest:
            route.scan = (try choose(.end), .toEnd)
        case .time(let t):
            let b = try choose(.time(t))
            route.scan = (b, .transactionEnd(micros: t - Int64(PostgresTime.epochOffset) * 1_000_000, exclusive: request.exclusive, notBefore: b.stopLSN))
        case .lsn(let l):
            route.scan = (try choose(.lsn(l)), .position(l))
        case .xid(let x):
            // The backup is chosen once the transaction's end is found.
            route.scan = (requested ?? earliest, .transaction(x))
        case .name:
            route.scan = (requested ?? earliest, .toEnd)
        }
        return route
    }

    /// A plan decided, before the objects of its chain are checked.
    public struct Decision: Sendable {
        public var plan: RecoveryPlan
        /// The backups the restore reads: the chosen one first, then its reference, ... to the full.
        public var chain: [BackupSummary]

        /// Adds what is wrong with the chain's objects (`Catalog.objectProblems`) to the plan.
        public mutating func addObjectProblems(_ damage: [BackupID: [String]]) {
            let damaged = chain.flatMap { m in (damage[m.id] ?? []).map { "backup \(m.id): \($0)" } }
            for m in chain where damage[m.id] != nil {
                plan.problems.append("backup \(m.id) is damaged (\(damage[m.id]!.joined(separator: ", "))): restore another backup with --backup ID")
            }
            plan.damagedObjects = damaged.isEmpty ? nil : damaged
        }
    }

    /// The second half (pure): from what the WAL scan found, the backup, where recovery stops,
    /// the WAL it reads and what is wrong with it.
    public static func decide(_ request: RecoveryRequest, snapshot: Snapshot, route: Route, scanned: ScanOutcome) throws -> Decision {
        let archive = snapshot.archive, segSize = archive.segmentSize
        let history = route.history, usable = route.usable, windowText = route.windowText, timeline = route.timeline
        var problems = scanned.problems.map(\.message)
        var stop: RecoveryPlan.StopPoint?
        let backup: BackupFacts, reason: String
        var endSeg: UInt64
        func unreachable(_ what: String, _ otherwise: String) -> WaybackError {
            problems.isEmpty ? WaybackError(.restoreTarget, otherwise)
                             : WaybackError(.restoreTarget, "\(what) \(request.target): \(problems.joined(separator: "; ")). Recoverable: \(windowText)")
        }
        switch request.target {
        case .backupEnd:
            (backup, reason) = route.chosen!
            endSeg = backup.stopLSN.segmentNumber(segmentSize: segSize)
        case .latest:
            (backup, reason) = route.chosen!
            endSeg = max(route.lastSegment ?? 0, backup.stopLSN.segmentNumber(segmentSize: segSize))
        case .time:
            (backup, reason) = route.chosen!
            guard let e = scanned.found else {
                throw unreachable("cannot reach", "\(request.target) is after the latest recoverable time: no transaction ends after it in the archived WAL, so PostgreSQL would never reach it. Recoverable: \(windowText). Use --to-latest for everything archived")
            }
            stop = .init(position: "before", record: e.description, lsn: e.lsn, xid: e.xid, time: Date(timeIntervalSince1970: e.unixSeconds), restorePoint: nil)
            endSeg = e.lsn.segmentNumber(segmentSize: segSize)
        case .lsn(let l):
            (backup, reason) = route.chosen!
            guard let seg = scanned.foundSegment else {
                throw unreachable("cannot reach", "\(request.target) is after the end of the archived WAL. Recoverable: \(windowText)")
            }
            stop = .init(position: request.exclusive ? "before" : "after", record: "the first record at or after \(l)", lsn: l, xid: nil, time: nil, restorePoint: nil)
            endSeg = seg
        case .xid(let x):
            guard let e = scanned.found else {
                throw unreachable("cannot find", "transaction \(x) neither commits nor aborts in the archived WAL on the way to timeline \(timeline) (after the earliest backup); check the xid. Recoverable: \(windowText)")
            }
            (backup, reason) = try RecoverySelection.choose(usable, position: .record(e.lsn, others: []), requested: request.backupID, windowText: windowText)
            stop = .init(position: request.exclusive ? "before" : "after", record: e.description, lsn: e.lsn, xid: x,
                         time: Date(timeIntervalSince1970: e.unixSeconds), restorePoint: nil)
            endSeg = LSN(e.endLSN.value - 1).segmentNumber(segmentSize: segSize)
        case .name(let n):
            let points = scanned.restorePoints.filter { $0.kind == .restorePoint(n) }
            guard let e = points.last else {
                let known = Set(scanned.restorePoints.compactMap { if case .restorePoint(let k) = $0.kind { return k }; return nil }).sorted()
                throw unreachable("cannot find", "there is no restore point named \"\(n)\" in the archived WAL on the way to timeline \(timeline) (after the earliest backup); restore points found: \(known.isEmpty ? "none" : known.prefix(10).joined(separator: ", "))")
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
        // presence was checked by `route`.
        let histories = timeline > 1 ? [WALFileName.history(timeline: timeline).description] : []
        let inBackup = needed.filter { !archive.has($0.timeline, $0.number) && backup.walCopies.contains($0.number) }.count
        let byID = Dictionary(snapshot.backups.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let chain = try BackupChains.chain(backup.id, in: byID)
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
            stop: stop, windows: snapshot.windows,
            estimate: RecoverySelection.estimate(bytes: backup.bytes, walBytes: walBytes, history: snapshot.records, backups: route.facts),
            problems: problems, chain: chain.reversed().map(\.id), damagedObjects: nil)
        return Decision(plan: plan, chain: chain)
    }

    /// What reading the WAL along the route found.
    public struct ScanOutcome: Sendable {
        public struct Problem: Sendable { public var segment: UInt64; public var name: String; public var damaged: Bool; public var message: String }
        public var found: WALEvent?
        public var foundSegment: UInt64?
        /// Restore points met on the way (commits and aborts are not kept: there can be millions).
        public var restorePoints: [WALEvent] = []
        public var problems: [Problem] = []
        public init() {}
    }

    /// Reads `segments` in order (those the archive lacks but the backup holds are skipped) until
    /// `event` or `segment` says the target is found; stops at the first missing or damaged one.
    static func scanPath(_ segments: [SegmentOnPath], archive: ArchiveContents, backup: BackupFacts, probe: Probe, catalog: Catalog,
                         parallelism: Int) async throws -> ScanOutcome {
        let event: (WALEvent) -> Bool, segment: (WALSegmentScan) -> Bool
        switch probe {
        case .toEnd:
            (event, segment) = ({ _ in false }, { _ in false })
        case .transactionEnd(let t, let exclusive, let notBefore):
            event = { e in
                guard e.lsn >= notBefore, e.kind == .commit || e.kind == .abort else { return false }
                return exclusive ? e.timestamp >= t : e.timestamp > t
            }
            segment = { _ in false }
        case .position(let l):
            (event, segment) = ({ _ in false }, { s in (s.lastRecord ?? LSN(0)) >= l })
        case .transaction(let x):
            (event, segment) = ({ e in (e.kind == .commit || e.kind == .abort) && e.xid == x }, { _ in false })
        }
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


}
