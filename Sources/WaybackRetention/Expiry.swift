import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackStorage

/// What `wayback expire` (and the daemon's expire job) needs.
public struct ExpiryConfiguration: Sendable {
    /// One repository as it is kept: the repository and its policy (`retention:`, or its own).
    public struct Member: Sendable {
        public var repository: Repository
        public var policy: RetentionPolicy
        public init(repository: Repository, policy: RetentionPolicy) { self.repository = repository; self.policy = policy }
    }

    public var members: [Member]
    public var cluster: String
    public var lockDirectory: String
    /// Plan only.
    public var dryRun: Bool
    /// Apply an expiry that removes more than half of a repository's complete backups.
    public var force: Bool
    public var events: EventLog
    public var backupLog: BackupLog?

    public init(members: [Member], cluster: String, lockDirectory: String, dryRun: Bool, force: Bool, events: EventLog, backupLog: BackupLog?) {
        self.members = members; self.cluster = cluster; self.lockDirectory = lockDirectory; self.dryRun = dryRun; self.force = force
        self.events = events; self.backupLog = backupLog
    }
}

/// The outcome of an expiry, per repository (`expire --json`).
public struct ExpiryReport: Sendable, Codable {
    public struct WALRange: Sendable, Codable, Equatable {
        public var timeline: UInt32
        public var first: String
        public var last: String
        public var files: Int
    }

    public struct PerRepository: Sendable, Codable {
        public var name: String
        public var plan: RetentionPlan?
        /// The logical dumps' plan (nil: the repository holds none).
        public var dumps: RetentionPlan?
        /// Archived WAL removed (or, with `--dry-run`, to remove), per timeline.
        public var wal: [WALRange]
        /// Bytes removed (or to remove) from this repository.
        public var freedBytes: Int64
        /// Objects of backups an earlier, interrupted expiry left behind, removed now.
        public var leftovers: Int
        /// Why this repository was not expired (unreadable, or the expiry needs --force).
        public var error: String?
    }

    public var at: Date
    public var dryRun: Bool
    public var repositories: [PerRepository]
}

public enum Expiry {
    /// Plans, and unless `dryRun` applies, the expiry of every repository under the cluster's lock
    /// (taken by the caller). A repository that cannot be read, or whose expiry needs `--force`,
    /// is left as it is and reported; the others are expired.
    public static func run(_ config: ExpiryConfiguration, now: Date, logger: Logger) async -> ExpiryReport {
        var report = ExpiryReport(at: now, dryRun: config.dryRun, repositories: [])
        var expiredIn = [BackupID: (summary: BackupSummary, from: [String])]()
        var holders = [BackupID: [String]]()
        var dumpsExpiredIn = [DumpID: (listing: DumpListing, from: [String])]()
        var dumpHolders = [DumpID: [String]]()
        for member in config.members {
            var r = ExpiryReport.PerRepository(name: member.repository.name, plan: nil, dumps: nil, wal: [], freedBytes: 0, leftovers: 0, error: nil)
            do {
                let outcome = try await expire(member, cluster: config.cluster, dryRun: config.dryRun, force: config.force, now: now, logger: logger)
                r.plan = outcome.plan
                r.dumps = outcome.dumpPlan.decisions.isEmpty ? nil : outcome.dumpPlan
                for d in outcome.dumps {
                    if outcome.dumpPlan.expired.contains(where: { $0.id == d.id.rawValue }) {
                        dumpsExpiredIn[d.id, default: (d, [])].from.append(member.repository.name)
                    } else {
                        dumpHolders[d.id, default: []].append(member.repository.name)
                    }
                }
                r.wal = outcome.wal
                r.freedBytes = outcome.freedBytes
                r.leftovers = outcome.leftovers
                for s in outcome.summaries {
                    if outcome.plan.expired.contains(where: { $0.id == s.id.rawValue }) {
                        expiredIn[s.id, default: (s, [])].from.append(member.repository.name)
                    } else {
                        holders[s.id, default: []].append(member.repository.name)
                    }
                }
            } catch {
                r.error = (error as? WaybackError)?.message ?? String(describing: error)
                config.events.emit(.error, .jobOutcome, "expire in repository '\(member.repository.name)' did not run: \(r.error!)",
                                   repository: member.repository.name)
            }
            report.repositories.append(r)
        }
        // The catalog: expired where no repository holds the backup any more, else partial.
        if !config.dryRun, let log = config.backupLog, !expiredIn.isEmpty {
            let gone = expiredIn.values.filter { holders[$0.summary.id] == nil }.map(\.summary).sorted { $0.id < $1.id }
            await log.expired(gone, at: now)
            let elsewhere = expiredIn.values.filter { holders[$0.summary.id] != nil }
                .map { log.row($0.summary, holders: holders[$0.summary.id] ?? []) }
            await log.write(elsewhere)
        }
        if !config.dryRun, let log = config.backupLog, !dumpsExpiredIn.isEmpty {
            await log.expired(dumps: dumpsExpiredIn.keys.filter { dumpHolders[$0] == nil }.sorted(), at: now)
            await log.write(dumpsExpiredIn.values.filter { dumpHolders[$0.listing.id] != nil }
                .map { log.row(dump: $0.listing.id, bytes: $0.listing.bytes, digests: nil, holders: dumpHolders[$0.listing.id] ?? []) })
        }
        return report
    }

    struct Outcome {
        var plan: RetentionPlan
        var summaries: [BackupSummary]
        var dumpPlan: RetentionPlan
        var dumps: [DumpListing]
        var wal: [ExpiryReport.WALRange]
        var freedBytes: Int64
        var leftovers: Int
    }

    /// One repository: read (one listing of the backups folder and of the archive, the index,
    /// the pins), plan, and apply: each expired backup's manifests first (it stops counting),
    /// then its data; then the WAL below the cutoff; then the index.
    static func expire(_ member: ExpiryConfiguration.Member, cluster: String, dryRun: Bool, force: Bool, now: Date,
                       logger: Logger) async throws -> Outcome {
        let catalog = Catalog(repository: member.repository, cluster: cluster)
        let driver = member.repository.driver
        let layout = catalog.layout
        _ = try await catalog.requireBinding()
        let (summaries, listing) = try await StatusIndex.summaries(catalog)
        let listed = StatusIndex.manifestSizes(listing, layout: layout)
        let pins = try await catalog.pins()
        let walObjects = try await driver.list(prefix: layout.walPrefix)
        let plan = RetentionPlanner.plan(summaries, policy: member.policy, pins: pins, now: now)
        let dumpObjects = try await driver.list(prefix: layout.dumpsPrefix)
        let dumps = DumpListing.from([(member.repository.name, dumpObjects)], layout: layout)
        let dumpPins = try await catalog.dumpPins()
        let dumpPlan = RetentionPlanner.plan(dumps: dumps, policy: member.policy, pins: dumpPins, now: now)

        for (p, what) in [(plan, "complete backups"), (dumpPlan, "logical dumps")] where p.needsForce && !force && !dryRun {
            throw WaybackError(.expiryRefused, "the expiry would remove \(p.expired.count) of the \(p.decisions.count) \(what) in repository '\(member.repository.name)' (more than half): check the retention policy ('wayback expire --dry-run' shows why each is kept), or run 'wayback expire --force' by hand")
        }
        // Objects of each backup folder, and WAL files with their sizes.
        var folders = [BackupID: [ObjectInfo]]()
        for o in listing { if let id = layout.parse(o.key)?.backupID { folders[id, default: []].append(o) } }
        var walSizes = [WALFileName: (key: String, size: Int64)]()
        for o in walObjects { if case .wal(let name)? = layout.parse(o.key) { walSizes[name] = (o.key, o.size) } }
        let segmentSize = summaries.first?.walSegmentSize ?? (16 << 20)
        let walGone = RetentionPlanner.walToRemove(walSizes.keys.sorted(), cutoff: plan.walCutoff, segmentSize: segmentSize)
        // Folders without a manifest and without a pack index: what an interrupted expiry left
        // (an interrupted backup that can be resumed keeps its indexes, and the next backup decides).
        let leftovers = folders.filter { id, objects in
            listed[id] == nil && !objects.contains { $0.key.hasSuffix(".index") }
        }

        let expired = plan.expired.compactMap { BackupID($0.id) }
        var freed = expired.reduce(Int64(0)) { $0 + (folders[$1] ?? []).reduce(0) { $0 + $1.size } }
        freed += walGone.reduce(Int64(0)) { $0 + (walSizes[$1]?.size ?? 0) }
        freed += leftovers.values.joined().reduce(Int64(0)) { $0 + $1.size }
        var dumpFolders = [DumpID: [ObjectInfo]]()
        for o in dumpObjects { if case .dump(let id, _)? = layout.parse(o.key) { dumpFolders[id, default: []].append(o) } }
        let dumpsGone = dumpPlan.expired.compactMap { DumpID($0.id) }
        freed += dumpsGone.reduce(Int64(0)) { $0 + (dumpFolders[$1] ?? []).reduce(0) { $0 + $1.size } }
        let outcome = Outcome(plan: plan, summaries: summaries, dumpPlan: dumpPlan, dumps: dumps, wal: ranges(walGone, segmentSize: segmentSize), freedBytes: freed,
                              leftovers: leftovers.values.reduce(0) { $0 + $1.count })
        if dryRun { return outcome }

        for id in expired {
            // The backup stops counting before any of its data goes: primary manifest, then copy.
            try await driver.remove(layout.manifestKey(id))
            try await driver.remove(layout.manifestCopyKey(id))
            let rest = (folders[id] ?? []).map(\.key).filter { layout.parse($0)?.isManifest != true }
            try await driver.remove(keys: rest)
            if pins[id] != nil { try? await driver.remove(layout.pinKey(id)) }
            logger.info("expired backup \(id) from \(member.repository.description)")
        }
        for id in dumpsGone {
            // Like a backup: it stops counting (manifest, then its copy) before its objects go.
            try await driver.remove(layout.dumpManifestKey(id))
            try await driver.remove(layout.dumpManifestCopyKey(id))
            try await driver.remove(keys: (dumpFolders[id] ?? []).map(\.key).filter { !$0.hasSuffix("/manifest.json") && !$0.hasSuffix("/manifest.copy.json") })
            if dumpPins[id] != nil { try? await driver.remove(layout.pinKey(id)) }
            logger.info("expired dump \(id) from \(member.repository.description)")
        }
        try await driver.remove(keys: leftovers.values.joined().map(\.key))
        try await driver.remove(keys: walGone.compactMap { walSizes[$0]?.key })
        try await StatusIndex.refresh(catalog)
        return outcome
    }

    /// Consecutive names per timeline, as ranges for the report.
    static func ranges(_ names: [WALFileName], segmentSize: UInt64) -> [ExpiryReport.WALRange] {
        var out = [ExpiryReport.WALRange]()
        for n in names.sorted() {
            if var last = out.last, last.timeline == n.timeline {
                last.last = n.description
                last.files += 1
                out[out.count - 1] = last
            } else {
                out.append(.init(timeline: n.timeline, first: n.description, last: n.description, files: 1))
            }
        }
        return out
    }
}
