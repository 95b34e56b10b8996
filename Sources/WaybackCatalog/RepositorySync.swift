import Synchronization
import Foundation
import Logging
import WaybackCore
import WaybackStorage

/// Copies what one repository has of a cluster and another lacks, in an order that keeps the
/// target consistent at every moment: the binding, WAL files, restore records and pins, then for each
/// backup and logical dump its data objects, then its manifest copy, and its manifest last (the
/// backup exists in the target only once everything it needs is there). Objects stream through (constant memory)
/// and are verified on the way (WAL objects against their header's checksum, a backup's or a dump's
/// objects against the SHA-256 its manifest records), so a damaged source is never copied (with a
/// `ReplicatedStorage` source, the next repository is read instead). Objects that `verify` found
/// damaged in the target (its `VerifyRecordStore`) are replaced by a sound copy: that is how a
/// damaged repository is repaired. The target's `StatusIndex` is its own: it is rebuilt from the
/// target's listing, never copied.
public enum RepositorySync {
    public enum Scope: Sendable { case all, wal }

    public struct Result: Sendable, Equatable {
        public var objects = 0
        public var bytes: Int64 = 0
        public var backups = [String]()
        /// Objects `verify` had found damaged in the target, replaced by a sound copy.
        public var repaired = [String]()
        /// Backups and dumps left out because the source's copy is damaged (an object fails its
        /// check, or the manifest cannot be read) or because the backup they depend on was left
        /// out: id and why, in id order. The rest is copied; the target never lists these.
        public var skipped = [Skipped]()
        public init() {}
    }

    public struct Skipped: Sendable, Equatable, Encodable {
        public var id: String
        public var reason: String
        public init(id: String, reason: String) { self.id = id; self.reason = reason }
    }

    /// The keys to copy, in order (pure): everything of the cluster in `source` but not in
    /// `target`, for complete backups only (those with a manifest in `source`).
    public static func plan(layout: RepositoryLayout, source: [ObjectInfo], target: [ObjectInfo], scope: Scope) -> [String] {
        let have = Set(target.map(\.key))
        var first = [String](), wal = [String](), records = [String](), data = [String](), manifests = [String]()
        var complete = Set<BackupID>(), completeDumps = Set<DumpID>()
        for o in source {
            if case .backup(let id, "manifest.json")? = layout.parse(o.key) { complete.insert(id) }
            if case .dump(let id, "manifest.json")? = layout.parse(o.key) { completeDumps.insert(id) }
        }
        for o in source where !have.contains(o.key) {
            let k = o.key
            switch layout.parse(k) {
            case .wal?: wal.append(k)
            case _ where scope == .wal: continue
            case .binding?, .bindingCopy?: first.append(k)
            case .restoreRecord?, .pin?, .dumpPin?: records.append(k)
            case .index?: continue  // each repository's own, rebuilt from its own listing
            case .backup(let id, _)? where complete.contains(id):
                if layout.parse(k)?.isManifest == true { manifests.append(k) } else { data.append(k) }
            case .dump(let id, _)? where completeDumps.contains(id):
                if isManifest(k, layout: layout) { manifests.append(k) } else { data.append(k) }
            default: continue
            }
        }
        // Per backup: the copy before the primary manifest (sorting puts "manifest.copy" first).
        manifests.sort()
        return first.sorted() + wal.sorted() + records.sorted() + data.sorted() + manifests
    }

    /// The objects to replace (pure): those `verify` found damaged in the target that the source
    /// has and that the plan does not copy anyway. Only objects of the layout (WAL, a backup's or a
    /// dump's), never a record or an index.
    public static func repairs(layout: RepositoryLayout, damaged: some Collection<String>, source: [ObjectInfo], planned: [String]) -> [String] {
        let have = Set(source.map(\.key)), copying = Set(planned)
        return damaged.filter { k in
            guard have.contains(k), !copying.contains(k) else { return false }
            switch layout.parse(k) {
            case .wal?, .backup?, .dump?: return true
            default: return false
            }
        }.sorted()
    }

    /// A backup's or a dump's manifest (or its copy): copied after everything it lists.
    static func isManifest(_ key: String, layout: RepositoryLayout) -> Bool {
        switch layout.parse(key) {
        case .dump(_, let name)?: return name.hasPrefix("manifest.")
        case let k?: return k.isManifest
        case nil: return false
        }
    }

    /// Copies what `target` lacks; `parallelism` objects at a time, each in full before its
    /// manifest. Damage is kept to what it touches: a backup or dump whose source copy is damaged
    /// (`.corrupt`: an object fails its check, or its manifest cannot be read) is left out with
    /// the backups that depend on it, and named in `Result.skipped`, while everything else is
    /// copied; a damaged WAL object is left out the same way. Any other failure (the target or
    /// the source cannot be reached or written) throws at once (what was copied stays: it is
    /// complete).
    @discardableResult
    public static func run(cluster: String, from source: Repository, to target: Repository, scope: Scope = .all,
                           parallelism: Int, logger: Logger, events: EventLog? = nil, clock: any WaybackClock = SystemClock()) async throws -> Result {
        let layout = RepositoryLayout(cluster: cluster)
        let prefix = cluster + "/"
        let sourceObjects = try await source.driver.list(prefix: prefix)
        let keys = plan(layout: layout, source: sourceObjects, target: try await target.driver.list(prefix: prefix), scope: scope)
        let fix = scope == .all
            ? repairs(layout: layout, damaged: try await VerifyRecordStore(driver: target.driver, cluster: cluster).damaged().keys,
                      source: sourceObjects, planned: keys)
            : []
        let recorded = try await recordedDigests(of: keys + fix, in: Catalog(repository: source, cluster: cluster), layout: layout)
        let skips = SyncLedger(recorded.unreadable)
        for (id, reference) in recorded.references.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where skips.contains(reference.rawValue) {
            skips.add(id.rawValue, "the backup it depends on, \(reference), was not copied")
        }
        var result = Result()
        let replace = Set(fix)
        let data = (fix + keys.filter { !isManifest($0, layout: layout) }).filter { skips.owner(of: $0, layout: layout).map { !skips.contains($0) } ?? true }
        let manifests = keys.filter { isManifest($0, layout: layout) }
        let cursor = WorkCursor(limit: data.count)
        let counter = ByteCounter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, parallelism) {
                group.addTask {
                    while let n = cursor.next() {
                        let key = data[n], owner = skips.owner(of: key, layout: layout)
                        if let owner, skips.contains(owner) { continue }
                        do {
                            let size = try await copy(key, from: source.driver, to: target.driver, layout: layout,
                                                      sha256: recorded.digests[key], replace: replace.contains(key))
                            counter.add(size)
                            if replace.contains(key) { skips.replaced(key, size: size, sha256: recorded.digests[key]) }
                        } catch let e as WaybackError where e.code == .corrupt {
                            // Damage in the source: that object (and its backup or dump) stays out.
                            skips.add(owner ?? key, e.message)
                            events?.emit(.error, .verifyProblem, "\(owner ?? key) is not copied to \(target.description): \(e.message)",
                                         repository: source.name)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        // Manifests in id order (a diff's or incr's reference comes first): one whose reference
        // was left out is left out too, so the target never lists a backup it cannot restore.
        for k in manifests {
            guard let owner = skips.owner(of: k, layout: layout), !skips.contains(owner) else { continue }
            if case .backup(let id, _)? = layout.parse(k), let reference = recorded.references[id], skips.contains(reference.rawValue) {
                skips.add(owner, "the backup it depends on, \(reference), was not copied")
                continue
            }
            counter.add(try await copy(k, from: source.driver, to: target.driver, layout: layout, sha256: recorded.digests[k]))
            if case .backup(let id, "manifest.json")? = layout.parse(k) { result.backups.append(id.rawValue) }
            if case .dump(let id, "manifest.json")? = layout.parse(k) { result.backups.append(id.rawValue) }
        }
        // The target's own index, from its own listing (also when nothing was copied: it may lack one).
        await StatusIndex.refreshEach(Catalog(repository: target, cluster: cluster), known: [],
                                      events: events ?? .logging(.sync, cluster: cluster, to: logger))
        result.skipped = skips.all
        result.repaired = skips.repairs.map(\.key).sorted()
        // What verify had found damaged there is sound now: the next sync does not copy it again,
        // and status and check stop reporting it before the next verify.
        do {
            try await VerifyRecordStore(driver: target.driver, cluster: cluster).markSound(skips.repairs, layout: layout, at: clock.now)
        } catch {
            events?.emit(.warning, .recordFailed, "the verification records of \(target.description) could not be updated after the repair (\(error)); the next verify reads the replaced objects again",
                         repository: target.name)
        }
        result.objects = keys.count - keys.filter { k in skips.owner(of: k, layout: layout).map { skips.contains($0) } ?? false }.count
        result.bytes = counter.current
        if !result.repaired.isEmpty {
            logger.notice("replaced \(result.repaired.count) object(s) that verify had found damaged in \(target.description) with sound copies from \(source.description)")
        }
        if result.objects > 0 {
            logger.info("copied \(result.objects) objects (\(Format.bytes(result.bytes))) from \(source.description) to \(target.description)")
        }
        return result
    }

    /// What is left out of one sync, shared by its workers: backup or dump ids (or a WAL
    /// object's key) and why, the first reason kept; and the damaged objects replaced.
    final class SyncLedger: Sendable {
        private let reasons: Mutex<[String: String]>
        private let replacedObjects = Mutex([(key: String, size: Int64, sha256: String?)]())
        init(_ initial: [String: String]) { reasons = Mutex(initial) }
        func replaced(_ key: String, size: Int64, sha256: String?) { replacedObjects.withLock { $0.append((key, size, sha256)) } }
        var repairs: [(key: String, size: Int64, sha256: String?)] { replacedObjects.withLock { $0 } }
        func add(_ id: String, _ reason: String) { reasons.withLock { if $0[id] == nil { $0[id] = reason } } }
        func contains(_ id: String) -> Bool { reasons.withLock { $0[id] != nil } }
        var all: [Skipped] { reasons.withLock { $0.map { Skipped(id: $0.key, reason: $0.value) }.sorted { $0.id < $1.id } } }

        /// The backup or dump a key belongs to (its id), the key itself for a WAL object, nil for
        /// anything else (the binding, records: their failure stops the sync).
        func owner(of key: String, layout: RepositoryLayout) -> String? {
            switch layout.parse(key) {
            case .backup(let id, _)?: id.rawValue
            case .dump(let id, _)?: id.rawValue
            case .wal?: key
            default: nil
            }
        }
    }

    /// What the source's manifests say of the backups and dumps `keys` belong to (each read once):
    /// the SHA-256 each object is recorded with (WAL objects carry theirs in their header), each
    /// backup's reference, and the backups and dumps whose manifest cannot be read (`.corrupt`
    /// or `.notFound`: both copies damaged), with why. Other failures throw.
    struct Recorded {
        var digests = [String: String]()
        var references = [BackupID: BackupID]()
        var unreadable = [String: String]()
    }

    static func recordedDigests(of keys: [String], in catalog: Catalog, layout: RepositoryLayout) async throws -> Recorded {
        var backups = Set<BackupID>(), dumps = Set<DumpID>()
        for k in keys {
            switch layout.parse(k) {
            case .backup(let id, _)?: backups.insert(id)
            case .dump(let id, _)?: dumps.insert(id)
            default: break
            }
        }
        var out = Recorded()
        func unreadable(_ id: String, _ e: WaybackError) throws {
            guard e.code == .corrupt || e.code == .notFound else { throw e }
            out.unreadable[id] = "its manifest cannot be read in \(catalog.repository.description) (\(e.message))"
        }
        for id in backups.sorted(by: { $0.rawValue < $1.rawValue }) {
            do {
                let m = try await catalog.manifest(id)
                for o in m.objects where !o.sha256.isEmpty { out.digests[layout.objectKey(id, o.name)] = o.sha256 }
                out.references[id] = m.reference
            } catch let e as WaybackError { try unreadable(id.rawValue, e) }
        }
        for id in dumps.sorted(by: { $0.rawValue < $1.rawValue }) {
            do {
                for o in try await catalog.dumpManifest(id).objects where !o.sha256.isEmpty { out.digests[layout.dumpObjectKey(id, o.name)] = o.sha256 }
            } catch let e as WaybackError { try unreadable(id.rawValue, e) }
        }
        return out
    }

    /// Streams one object, verified on the way: a WAL object against its header, any other against
    /// `sha256` when given. A damaged object throws `.corrupt` before the target keeps anything.
    /// `replace` writes over an object the target has (a damaged one); otherwise a WAL object the
    /// target got meanwhile is kept. Returns its size.
    public static func copy(_ key: String, from source: any StorageDriver, to target: any StorageDriver, layout: RepositoryLayout,
                            sha256 expected: String? = nil, replace: Bool = false) async throws -> Int64 {
        let isWAL = layout.parse(key)?.isWAL == true
        do {
            return try await source.withReader(key, range: nil) { reader in
                try await target.withWriter(key, options: WriteOptions(ifAbsent: isWAL && !replace)) { writer in
                    var hasher = SHA256Hasher()
                    var header = [UInt8]()
                    while true {
                        let chunk = try await reader.read(maxLength: 1 << 20)
                        if chunk.isEmpty { break }
                        if isWAL {
                            var rest = chunk[...]
                            if header.count < WALObject.headerLength {
                                let take = min(WALObject.headerLength - header.count, rest.count)
                                header += rest.prefix(take)
                                rest = rest.dropFirst(take)
                            }
                            if !rest.isEmpty { rest.withUnsafeBytes { hasher.update($0) } }
                        } else if expected != nil {
                            chunk.withUnsafeBytes { hasher.update($0) }
                        }
                        try await writer.write(chunk)
                    }
                    if isWAL {
                        let h = try WALObject.decodeHeader(header, name: key)
                        guard hasher.finalizeHex() == h.sha256 else {
                            throw WaybackError(.corrupt, "archived WAL file \(key) in \(source.description) fails its checksum; it is damaged")
                        }
                    } else if let expected, hasher.finalizeHex() != expected {
                        throw WaybackError(.corrupt, "\(key) in \(source.description) fails its SHA-256 check (its manifest records \(expected.prefix(12))...); it is damaged")
                    }
                    return writer.bytesWritten
                }
            }
        } catch let e as WaybackError where e.code == .conflict && isWAL {
            // The target got it meanwhile (a wal-push or another sync): keep what is there.
            return 0
        }
    }
}
