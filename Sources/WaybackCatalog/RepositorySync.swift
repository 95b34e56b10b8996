import Foundation
import Logging
import WaybackCore
import WaybackStorage

/// Copies what one repository has of a cluster and another lacks, in an order that keeps the
/// target consistent at every moment: the binding, WAL files, restore records and pins, then for each
/// backup and logical dump its data objects, then its manifest copy, and its manifest last (the
/// backup exists in the target only once everything it needs is there). Objects stream through (constant memory);
/// WAL objects are verified against their checksum on the way, so a damaged source is never
/// copied (with a `ReplicatedStorage` source, the next repository is read instead). The target's
/// `StatusIndex` is its own: it is rebuilt from the target's listing, never copied.
public enum RepositorySync {
    public enum Scope: Sendable { case all, wal }

    public struct Result: Sendable, Equatable {
        public var objects = 0
        public var bytes: Int64 = 0
        public var backups = [String]()
        public init() {}
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
            case .restoreRecord?, .pin?: records.append(k)
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

    /// A backup's or a dump's manifest (or its copy): copied after everything it lists.
    static func isManifest(_ key: String, layout: RepositoryLayout) -> Bool {
        switch layout.parse(key) {
        case .dump(_, let name)?: return name.hasPrefix("manifest.")
        case let k?: return k.isManifest
        case nil: return false
        }
    }

    /// Copies what `target` lacks; `parallelism` objects at a time, each in full before its
    /// manifest. Throws the first failure (what was copied stays: it is complete).
    @discardableResult
    public static func run(cluster: String, from source: Repository, to target: Repository, scope: Scope = .all,
                           parallelism: Int, logger: Logger, events: EventLog? = nil) async throws -> Result {
        let layout = RepositoryLayout(cluster: cluster)
        let prefix = cluster + "/"
        let keys = plan(layout: layout, source: try await source.driver.list(prefix: prefix),
                        target: try await target.driver.list(prefix: prefix), scope: scope)
        var result = Result()
        let data = keys.filter { !isManifest($0, layout: layout) }
        let manifests = keys.filter { isManifest($0, layout: layout) }
        let cursor = WorkCursor(limit: data.count)
        let counter = ByteCounter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, parallelism) {
                group.addTask {
                    while let n = cursor.next() {
                        counter.add(try await copy(data[n], from: source.driver, to: target.driver, layout: layout))
                    }
                }
            }
            try await group.waitForAll()
        }
        for k in manifests {
            counter.add(try await copy(k, from: source.driver, to: target.driver, layout: layout))
            if case .backup(let id, "manifest.json")? = layout.parse(k) { result.backups.append(id.rawValue) }
            if case .dump(let id, "manifest.json")? = layout.parse(k) { result.backups.append(id.rawValue) }
        }
        // The target's own index, from its own listing (also when nothing was copied: it may lack one).
        await StatusIndex.refreshEach(Catalog(repository: target, cluster: cluster), known: [],
                                      events: events ?? .logging(.sync, cluster: cluster, to: logger))
        result.objects = keys.count
        result.bytes = counter.current
        if result.objects > 0 {
            logger.info("copied \(result.objects) objects (\(Format.bytes(result.bytes))) from \(source.description) to \(target.description)")
        }
        return result
    }

    /// Streams one object; WAL objects are verified on the way. Returns its size.
    public static func copy(_ key: String, from source: any StorageDriver, to target: any StorageDriver, layout: RepositoryLayout) async throws -> Int64 {
        let isWAL = layout.parse(key)?.isWAL == true
        do {
            return try await source.withReader(key, range: nil) { reader in
                try await target.withWriter(key, options: WriteOptions(ifAbsent: isWAL)) { writer in
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
                        }
                        try await writer.write(chunk)
                    }
                    if isWAL {
                        let h = try WALObject.decodeHeader(header, name: key)
                        guard hasher.finalizeHex() == h.sha256 else {
                            throw WaybackError(.corrupt, "archived WAL file \(key) in \(source.description) fails its checksum; it is damaged")
                        }
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
