import Foundation
import Logging
import WaybackCore
import WaybackStorage

/// A cluster's view of one repository: its binding, backups and WAL archive.
public struct Catalog: Sendable {
    public let repository: Repository
    public let layout: RepositoryLayout

    public init(repository: Repository, cluster: String) {
        self.repository = repository
        self.layout = RepositoryLayout(cluster: cluster)
    }

    var driver: any StorageDriver { repository.driver }

    // MARK: binding

    /// The binding, from `cluster.json` or (if that is damaged or missing) its copy; nil when the
    /// cluster folder was never initialised.
    public func binding() async throws -> ClusterBinding? {
        do {
            return try await readSealed(ClusterBinding.self, kind: ClusterBinding.kind, keys: [layout.bindingKey, layout.bindingCopyKey], limit: 1 << 20)
        } catch let e as WaybackError where e.code == .corrupt {
            // Unreadable because it is encrypted and this configuration has no key for it?
            for member in repository.members where !(member.driver is EncryptedStorage) {
                try await EncryptedStorage.requirePlain(member.driver, name: member.name)
            }
            throw e
        }
    }

    /// Reads the first of `keys` that exists and verifies (a metadata file and its twin); nil when
    /// none exists; the first verification error when every existing one is damaged.
    func readSealed<T: Decodable>(_ type: T.Type, kind: String, keys: [String], limit: Int) async throws -> T? {
        var firstError: WaybackError?
        for key in keys {
            do {
                let bytes = try await driver.readAll(key, limit: limit)
                return try SealedJSON.decode(T.self, from: bytes, kind: kind, name: "\(repository.name):\(key)")
            } catch let e as WaybackError where e.code == .notFound {
                continue
            } catch let e as WaybackError {
                firstError = firstError ?? e
            }
        }
        if let firstError { throw firstError }
        return nil
    }

    /// The binding, or `.repository` telling the user to run `wayback init`.
    public func requireBinding() async throws -> ClusterBinding {
        guard let b = try await binding() else {
            throw WaybackError(.repository, "\(repository.description) has no cluster '\(layout.cluster)'; run 'wayback init' first")
        }
        return b
    }

    /// Proves that an object none of the repositories has is really absent: every repository
    /// answers and holds this cluster, all bound to one system identifier. An unmounted file system
    /// or a removed cluster folder looks like an empty archive; this tells them apart. Throws
    /// `.repository` naming the first repository that does not hold the cluster, or the error of one
    /// that cannot be read. Returns the binding (the first repository's).
    @discardableResult
    public func requireBoundEverywhere() async throws -> ClusterBinding {
        var first: (Repository, ClusterBinding)?
        for member in repository.members {
            guard let b = try await Catalog(repository: member, cluster: layout.cluster).binding() else {
                throw WaybackError(.repository, "\(member.description) has no cluster '\(layout.cluster)' (an unmounted file system, a removed folder, a wrong path?), so Wayback cannot tell whether a WAL file is archived, and recovery would stop at the end of the archive rather than end early; mount or repair it, or remove it from the configuration (when it is lost for good)")
            }
            if let (r, fb) = first, fb.systemID != b.systemID {
                throw WaybackError(.repository, "\(member.description) holds cluster '\(layout.cluster)' with system identifier \(b.systemIdentifier), but \(r.description) holds \(fb.systemIdentifier); the configuration mixes repositories of two clusters")
            }
            first = first ?? (member, b)
        }
        guard let (_, binding) = first else { throw WaybackError(.internal, "a repository without members") }
        return binding
    }

    /// Checks that this repository belongs to the cluster with `systemIdentifier`.
    public func requireBinding(systemIdentifier: UInt64) async throws -> ClusterBinding {
        let b = try await requireBinding()
        guard !b.isLogical else {
            throw WaybackError(.repository, "\(repository.description) holds cluster '\(layout.cluster)' as a logical cluster (dumps only); a physical backup or archive needs its own cluster.name")
        }
        guard b.systemID == systemIdentifier else {
            throw WaybackError(.repository, "\(repository.description) cluster '\(layout.cluster)' belongs to the PostgreSQL cluster with system identifier \(b.systemIdentifier), not \(systemIdentifier); use another cluster name or repository")
        }
        return b
    }

    public func writeBinding(_ b: ClusterBinding) async throws {
        let bytes = try SealedJSON.encode(b, kind: ClusterBinding.kind)
        try await driver.writeAll(layout.bindingCopyKey, bytes)
        try await driver.writeAll(layout.bindingKey, bytes)
    }

    // MARK: backups

    /// Ids of complete backups (those with a manifest), oldest first.
    public func backupIDs() async throws -> [BackupID] {
        var ids = Set<BackupID>()
        for obj in try await driver.list(prefix: layout.backupsPrefix) {
            guard let key = layout.parse(obj.key), key.isManifest, let id = key.backupID else { continue }
            ids.insert(id)
        }
        return ids.sorted()
    }

    /// Reads a manifest, falling back to its copy; `.notFound` when the backup does not exist.
    public func manifest(_ id: BackupID) async throws -> BackupManifest {
        if let m = try await readSealed(BackupManifest.self, kind: BackupManifest.kind,
                                        keys: [layout.manifestKey(id), layout.manifestCopyKey(id)], limit: 1 << 30) {
            return m
        }
        throw WaybackError(.notFound, "backup \(id) is not in \(repository.description); 'wayback status' lists the backups")
    }

    public func manifests() async throws -> [BackupManifest] {
        try await manifests(try await backupIDs())
    }

    /// The manifests of `ids`, in their order.
    public func manifests(_ ids: [BackupID]) async throws -> [BackupManifest] {
        // Read and decoded four at a time (a manifest lists every file: decoding one is
        // milliseconds, and on S3 each is a request), returned in order.
        return try await withThrowingTaskGroup(of: (Int, BackupManifest).self) { group in
            var out = [BackupManifest?](repeating: nil, count: ids.count)
            var next = 0
            func start() {
                let i = next
                next += 1
                group.addTask { (i, try await self.manifest(ids[i])) }
            }
            while next < min(4, ids.count) { start() }
            while let (i, m) = try await group.next() {
                out[i] = m
                if next < ids.count { start() }
            }
            return out.compactMap { $0 }
        }
    }

    /// Writes the manifest: the copy first, then the primary, which makes the backup exist.
    public func writeManifest(_ m: BackupManifest) async throws {
        let bytes = try SealedJSON.encode(m, kind: BackupManifest.kind)
        try await driver.writeAll(layout.manifestCopyKey(m.id), bytes)
        try await driver.writeAll(layout.manifestKey(m.id), bytes)
    }

    /// Removes every object of a backup folder that has no manifest (left by an interrupted
    /// backup), but for the folder `except` (being resumed); returns how many objects it removed.
    public func removeIncompleteBackups(except: BackupID? = nil, logger: Logger) async throws -> Int {
        let complete = Set(try await backupIDs())
        var removed = 0
        for obj in try await driver.list(prefix: layout.backupsPrefix) {
            guard let id = layout.parse(obj.key)?.backupID, !complete.contains(id), id != except else { continue }
            try await driver.remove(obj.key)
            removed += 1
        }
        if removed > 0 { logger.info("removed \(removed) objects of interrupted backups") }
        return removed
    }

    // MARK: WAL archive

    public func walKey(_ name: WALFileName) -> String { layout.walKey(name) }

    /// Every archived WAL file name, sorted.
    public func archivedWAL() async throws -> [WALFileName] {
        try await driver.list(prefix: layout.walPrefix).compactMap { obj in
            if case .wal(let name)? = layout.parse(obj.key) { return name }
            return nil
        }.sorted()
    }
}

/// The archive's contents per timeline, for `status`.
public struct TimelineRange: Sendable, Codable, Equatable {
    public var timeline: UInt32
    public var first: String
    public var last: String
    public var segments: Int
    /// Names of the first missing segments inside [first, last] (at most 10).
    public var gaps: [String]

    /// Summarises segment names per timeline (history and backup files are ignored).
    public static func summarize(_ names: [WALFileName], segmentSize: UInt64) -> [TimelineRange] {
        var byTimeline = [UInt32: [UInt64]]()
        for n in names where n.kind == .segment {
            byTimeline[n.timeline, default: []].append(n.segmentNumber(segmentSize: segmentSize))
        }
        return byTimeline.keys.sorted().map { tli in
            let nums = byTimeline[tli]!.sorted()
            var gaps = [String]()
            var prev = nums[0]
            for n in nums.dropFirst() {
                var m = prev + 1
                while m < n && gaps.count < 10 {
                    gaps.append(WALFileName(timeline: tli, segmentNumber: m, segmentSize: segmentSize).description)
                    m += 1
                }
                prev = n
            }
            return TimelineRange(timeline: tli,
                                 first: WALFileName(timeline: tli, segmentNumber: nums.first!, segmentSize: segmentSize).description,
                                 last: WALFileName(timeline: tli, segmentNumber: nums.last!, segmentSize: segmentSize).description,
                                 segments: nums.count, gaps: gaps)
        }
    }
}

extension Catalog {
    /// What one listing of the backups folder of each repository tells about `manifests`: the
    /// objects (packs, WAL copies) that are missing, or of another size than recorded, in every
    /// repository (with several, a backup is whole while one of them has each object whole).
    /// Contents are not read: a flipped byte is found only by reading (`restore`, a verification).
    /// Keyed by backup, one line per object; backups without a problem are left out. Throws when
    /// no repository can be listed.
    public func objectProblems(_ manifests: [BackupManifest]) async throws -> [BackupID: [String]] {
        var listings = [[ObjectInfo]]()
        var firstError: (any Error)?
        for member in repository.members {
            do {
                listings.append(try await member.driver.list(prefix: layout.backupsPrefix))
            } catch {
                firstError = firstError ?? error
            }
        }
        guard !listings.isEmpty else { throw firstError ?? WaybackError(.internal, "no repository to list") }
        return Self.objectProblems(manifests.map { ($0.id, $0.objects.map { ($0.name, $0.size) }) }, listings: listings, layout: layout)
    }

    /// The same from listings already taken (one per repository that could be listed; pure).
    public static func objectProblems(_ backups: [(id: BackupID, objects: [(name: String, size: Int64)])], listings: [[ObjectInfo]],
                                      layout: RepositoryLayout) -> [BackupID: [String]] {
        var bad: [BackupID: [String: String]]?
        for listing in listings {
            let listed = Dictionary(listing.map { ($0.key, $0.size) }, uniquingKeysWith: { a, _ in a })
            var mine = [BackupID: [String: String]]()
            for (id, objects) in backups {
                for o in objects {
                    if let size = listed[layout.objectKey(id, o.name)] {
                        if size != o.size { mine[id, default: [:]][o.name] = "\(o.name) has \(size) bytes, \(o.size) recorded" }
                    } else {
                        mine[id, default: [:]][o.name] = "\(o.name) is missing"
                    }
                }
            }
            guard let previous = bad else { bad = mine; continue }
            // Bad only where every repository listed is bad (in the first one's words).
            var both = [BackupID: [String: String]]()
            for (id, objects) in previous {
                let kept = objects.filter { mine[id]?[$0.key] != nil }
                if !kept.isEmpty { both[id] = kept }
            }
            bad = both
        }
        return (bad ?? [:]).mapValues { objects in objects.keys.sorted().map { objects[$0]! } }
    }
}
