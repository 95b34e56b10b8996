import Foundation
import WaybackCore
import WaybackStorage

/// What one pack of an unfinished backup holds, written (sealed JSON, kind `pack-index`) right
/// after the pack is complete. Only a backup that is interrupted needs it: the next `backup`
/// reads the indexes of the leftover folder and reuses the files whose copies are still valid
/// instead of copying them again. A finished backup's manifest supersedes its indexes, which are
/// then removed.
public struct PackIndex: Codable, Sendable {
    public static let kind = "pack-index"

    public struct Entry: Codable, Sendable {
        /// The file as the manifest would hold it; its chunks name object 0 (this pack).
        public var file: BackupManifest.File
        /// The modification time (ns) the file had when the backup listed it.
        public var mtimeNanoseconds: Int64
        /// When reading the file began (seconds since 1970).
        public var readAt: Double
        public var pageFailure: BackupManifest.PageFailure?
        public init(file: BackupManifest.File, mtimeNanoseconds: Int64, readAt: Double, pageFailure: BackupManifest.PageFailure?) {
            self.file = file; self.mtimeNanoseconds = mtimeNanoseconds; self.readAt = readAt; self.pageFailure = pageFailure
        }

        /// Whether the copy can stand for the file as it is now: same size and modification
        /// time, and the file had not been written for a second before it was read (a write
        /// later than that would have changed the time, whatever the clock's granularity).
        public func stillValid(size: Int64, mtimeNanoseconds now: Int64) -> Bool {
            size == file.size && now == mtimeNanoseconds && Double(mtimeNanoseconds) / 1e9 < readAt - 1
        }
    }

    public var backup: BackupID
    public var type: BackupType
    public var reference: BackupID?
    public var pack: BackupManifest.StoredObject
    public var entries: [Entry]

    public init(backup: BackupID, type: BackupType, reference: BackupID?, pack: BackupManifest.StoredObject, entries: [Entry]) {
        self.backup = backup; self.type = type; self.reference = reference; self.pack = pack; self.entries = entries
    }
}

extension Catalog {
    public func writePackIndex(_ index: PackIndex) async throws {
        let bytes = try SealedJSON.encode(index, kind: PackIndex.kind)
        try await repository.driver.writeAll(layout.objectKey(index.backup, RepositoryLayout.packIndexName(index.pack.name)), bytes)
    }

    /// The pack indexes of a backup folder (damaged ones are skipped: their packs are not reused).
    public func packIndexes(_ id: BackupID) async -> [PackIndex] {
        let prefix = layout.objectKey(id, "pack/")
        guard let objects = try? await repository.driver.list(prefix: prefix) else { return [] }
        var out = [PackIndex]()
        for o in objects where o.key.hasSuffix(".index") {
            if let i = try? await readSealed(PackIndex.self, kind: PackIndex.kind, keys: [o.key], limit: 256 << 20) { out.append(i) }
        }
        return out
    }

    /// Backup folders without a manifest (interrupted backups), oldest first.
    public func incompleteBackupIDs() async throws -> [BackupID] {
        let complete = Set(try await backupIDs())
        var ids = Set<BackupID>()
        for obj in try await repository.driver.list(prefix: layout.backupsPrefix) {
            if let id = layout.parse(obj.key)?.backupID, !complete.contains(id) { ids.insert(id) }
        }
        return ids.sorted()
    }

    /// Removes the objects of a backup's folder that `keep` does not name (relative names), e.g.
    /// the pack indexes and unused packs of a resumed backup once its manifest is written.
    public func removeUnlisted(_ id: BackupID, keep: Set<String>) async throws -> Int {
        let extra = try await repository.driver.list(prefix: layout.backupPrefix(id)).map(\.key).filter { key in
            guard case .backup(id, let name)? = layout.parse(key) else { return false }
            return !keep.contains(name) && layout.parse(key)?.isManifest == false
        }
        try await repository.driver.remove(keys: extra)
        return extra.count
    }
}
