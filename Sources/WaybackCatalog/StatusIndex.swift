import Foundation
import WaybackCore
import WaybackStorage

/// What `status`, the recoverable windows and the daemon's pages need of one backup: its
/// manifest without the file list (a manifest names every file; this is a few hundred bytes).
public struct BackupSummary: Codable, Sendable, Equatable, ChainMember {
    public var id: BackupID
    public var type: BackupType
    public var reference: BackupID?
    public var timeline: UInt32
    public var startLSN: LSN
    public var stopLSN: LSN
    public var startTime: Date
    public var stopTime: Date
    public var walSegmentSize: UInt64
    public var sizes: BackupManifest.Sizes
    public var digests: BackupManifest.Digests
    /// The backup's objects (packs and WAL copies) with their recorded sizes.
    public var objects: [Object]
    /// Names of the WAL segments copied into the backup.
    public var walCopies: [String]
    public var copySeconds: Double
    /// What the choice of a diff/incr's reference needs (`BackupChains.decide`), and where the
    /// range of the block map the backup keeps begins (nil in entries written before they were
    /// recorded: `refresh` reads those manifests again once).
    public var pgVersionNumber: Int?
    public var dataChecksums: Bool?
    public var mapFrom: LSN?

    public struct Object: Codable, Sendable, Equatable {
        public var name: String
        public var size: Int64
    }

    public init(_ m: BackupManifest) {
        id = m.id; type = m.type; reference = m.reference; timeline = m.timeline
        startLSN = m.startLSN; stopLSN = m.stopLSN; startTime = m.startTime; stopTime = m.stopTime
        walSegmentSize = m.walSegmentSize; sizes = m.sizes; digests = m.digests
        objects = m.objects.map { Object(name: $0.name, size: $0.size) }
        walCopies = m.wal.map(\.name); copySeconds = m.copySeconds
        pgVersionNumber = m.pgVersionNumber; dataChecksums = m.dataChecksums; mapFrom = m.reading?.mapFrom
    }

    /// Whether the summary holds what `BackupChains.decide` needs.
    public var decidable: Bool { pgVersionNumber != nil && dataChecksums != nil }

    /// Plain bytes this backup stored per byte stored in the repository (as the manifest's).
    public var compressionRatio: Double {
        sizes.repository > 0 ? Double(sizes.copied ?? sizes.database) / Double(sizes.repository) : 0
    }
}

/// A repository's index of its complete backups, so that reading its state costs a few requests
/// however many backups it holds: `<cluster>/index.json` (sealed JSON, see `RepositoryLayout`),
/// one summary per backup with the size of the manifest it was taken from.
///
/// The index is a cache, never the truth. Readers trust an entry only while it matches the
/// listing of the backups folder (which `status` takes anyway, to check every backup's objects):
/// the backup's manifest is listed, with the recorded size (manifests are written once and never
/// changed). A backup listed without a matching entry is read from its manifest; an entry whose
/// manifest is gone is ignored. So a missing, stale, damaged or foreign index costs reads, never a
/// wrong answer. Writers of manifests (`backup`, `repo sync` into its target, `expire`) rebuild
/// the index of each repository they wrote to, from that repository's own listing. Each
/// repository has its own index: `repo sync` never copies it.
public struct StatusIndex: Codable, Sendable, Equatable {
    public static let kind = "wayback-status-index"

    public struct Entry: Codable, Sendable, Equatable {
        /// The size of the manifest the summary was taken from, as the listing shows it.
        public var manifestSize: Int64
        public var summary: BackupSummary
    }

    /// Sorted by backup id.
    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries.sorted { $0.summary.id < $1.summary.id } }

    /// The size of each complete backup's manifest in a listing of the backups folder: the
    /// primary's, or its copy's when only the copy is there (`Catalog.manifest` reads either).
    public static func manifestSizes(_ listing: [ObjectInfo], layout: RepositoryLayout) -> [BackupID: Int64] {
        var primary = [BackupID: Int64](), copy = [BackupID: Int64]()
        for o in listing {
            guard case .backup(let id, let name)? = layout.parse(o.key) else { continue }
            if name == "manifest.json" { primary[id] = o.size } else if name == "manifest.copy.json" { copy[id] = o.size }
        }
        return copy.merging(primary) { _, p in p }
    }

    /// The entries that match `listed` (backup id to manifest size), by id.
    public func matching(_ listed: [BackupID: Int64]) -> [BackupID: BackupSummary] {
        var out = [BackupID: BackupSummary]()
        for e in entries where listed[e.summary.id] == e.manifestSize { out[e.summary.id] = e.summary }
        return out
    }

    /// The summaries of the backups `listed` names, oldest first: from `known` where it has them,
    /// the others read by `read` four at a time. Also returns the ids that were read.
    public static func resolve(listed: Set<BackupID>, known: [BackupID: BackupSummary],
                               read: @escaping @Sendable (BackupID) async throws -> BackupSummary) async throws
        -> (summaries: [BackupSummary], read: [BackupID]) {
        let missing = listed.subtracting(known.keys).sorted()
        var found = known.filter { listed.contains($0.key) }
        try await withThrowingTaskGroup(of: BackupSummary.self) { group in
            var next = 0
            while next < min(4, missing.count) { let id = missing[next]; group.addTask { try await read(id) }; next += 1 }
            while let s = try await group.next() {
                found[s.id] = s
                if next < missing.count { let id = missing[next]; group.addTask { try await read(id) }; next += 1 }
            }
        }
        return (found.values.sorted { $0.id < $1.id }, missing)
    }

    /// The summaries of every complete backup of `catalog` (one listing, the index, and the
    /// manifests it lacks), oldest first; also the listing's manifest sizes.
    public static func summaries(_ catalog: Catalog) async throws -> (summaries: [BackupSummary], listing: [ObjectInfo]) {
        let listing = try await catalog.driver.list(prefix: catalog.layout.backupsPrefix)
        let listed = manifestSizes(listing, layout: catalog.layout)
        let known = await read(catalog)?.matching(listed) ?? [:]
        let resolved = try await resolve(listed: Set(listed.keys), known: known) { BackupSummary(try await catalog.manifest($0)) }
        return (resolved.summaries, listing)
    }

    /// The index of `catalog`'s repository; nil when there is none or it cannot be used (damaged,
    /// of another format, unreadable): it is a cache, and the manifests are read instead.
    public static func read(_ catalog: Catalog) async -> StatusIndex? {
        try? await catalog.readSealed(StatusIndex.self, kind: kind, keys: [catalog.layout.indexKey], limit: 256 << 20)
    }

    /// Rebuilds the index of one repository from its own listing (under the cluster's lock, by a
    /// writer of manifests): entries that still match are kept, manifests not in it are read
    /// (`known`: manifests the caller holds), and it is written only when it changed. Returns the
    /// index as written.
    @discardableResult
    public static func refresh(_ catalog: Catalog, known: [BackupManifest] = []) async throws -> StatusIndex {
        let listed = manifestSizes(try await catalog.driver.list(prefix: catalog.layout.backupsPrefix), layout: catalog.layout)
        let old = await read(catalog)
        // Entries from before the reference fields were recorded are read again (once).
        var summaries = (old?.matching(listed) ?? [:]).filter { $0.value.decidable }
        for m in known where listed[m.id] != nil { summaries[m.id] = BackupSummary(m) }
        let resolved = try await resolve(listed: Set(listed.keys), known: summaries) { id in BackupSummary(try await catalog.manifest(id)) }
        let index = StatusIndex(entries: resolved.summaries.map { Entry(manifestSize: listed[$0.id] ?? 0, summary: $0) })
        if index != old {
            try await catalog.driver.writeAll(catalog.layout.indexKey, try SealedJSON.encode(index, kind: kind))
        }
        return index
    }

    /// Refreshes the index of every repository of `catalog` (each from its own listing); a
    /// repository whose index cannot be rebuilt gets a `recordFailed` event (the index is a cache:
    /// the next writer rebuilds it, and readers read the manifests meanwhile).
    public static func refreshEach(_ catalog: Catalog, known: [BackupManifest] = [], events: EventLog) async {
        for member in catalog.repository.members {
            do {
                try await refresh(Catalog(repository: member, cluster: catalog.layout.cluster), known: known)
            } catch {
                events.emit(.warning, .recordFailed,
                            "could not update the status index of \(member.description) (status reads the manifests instead until the next backup): \(error)",
                            repository: member.name)
            }
        }
    }
}
