import WaybackCore
import Foundation

/// Where everything lives in a repository. The only place that knows object keys.
///
/// ```
/// <cluster>/cluster.json, cluster.copy.json          binding to one cluster (sealed JSON)
/// <cluster>/wal/<timeline><log>/<segment>           WAL segments and .backup files (WAL objects)
/// <cluster>/wal/history/<timeline>.history          timeline history files (WAL objects)
/// <cluster>/backups/<id>/pack/<worker>-<seq>.pack   backup data: frames of many files
/// <cluster>/backups/<id>/pack/<...>.index           what a pack holds, until the manifest exists (resume)
/// <cluster>/backups/<id>/wal/<segment>              copies of the WAL the backup needs
/// <cluster>/backups/<id>/manifest.json, .copy.json  written last: the backup exists once it is there
/// <cluster>/restores/<time>-<run id>.json            what each restore measured (for estimates)
/// <cluster>/pins/<backup or dump id>.json           a backup or dump kept whatever the retention policy says
/// <cluster>/index.json                              summaries of the complete backups (`StatusIndex`:
///                                                   a cache, each repository its own, never copied)
/// ```
public struct RepositoryLayout: Sendable {
    public let cluster: String
    public init(cluster: String) { self.cluster = cluster }

    public var bindingKey: String { "\(cluster)/cluster.json" }
    public var bindingCopyKey: String { "\(cluster)/cluster.copy.json" }
    public var walPrefix: String { "\(cluster)/wal/" }
    public var backupsPrefix: String { "\(cluster)/backups/" }
    public var indexKey: String { "\(cluster)/index.json" }
    public var pinsPrefix: String { "\(cluster)/pins/" }
    public func pinKey(_ id: BackupID) -> String { "\(cluster)/pins/\(id).json" }
    public func pinKey(_ id: DumpID) -> String { "\(cluster)/pins/\(id).json" }

    public func walKey(_ name: WALFileName) -> String {
        switch name.kind {
        case .history: return "\(cluster)/wal/history/\(name)"
        default: return "\(cluster)/wal/\(name.segmentName.prefix(16))/\(name)"
        }
    }

    public var restoresPrefix: String { "\(cluster)/restores/" }
    public func restoreRecordKey(_ time: Date, run: String = RunID.make()) -> String {
        "\(cluster)/restores/\(Self.pad(Int(time.timeIntervalSince1970 * 1000), 14))-\(run).json"
    }

    public func backupPrefix(_ id: BackupID) -> String { "\(cluster)/backups/\(id)/" }
    /// Logical dumps, beside the physical backups and never among them.
    public var dumpsPrefix: String { "\(cluster)/dumps/" }
    public func dumpPrefix(_ id: DumpID) -> String { "\(cluster)/dumps/\(id)/" }
    public func dumpManifestKey(_ id: DumpID) -> String { "\(cluster)/dumps/\(id)/manifest.json" }
    public func dumpManifestCopyKey(_ id: DumpID) -> String { "\(cluster)/dumps/\(id)/manifest.copy.json" }
    public func dumpObjectKey(_ id: DumpID, _ relative: String) -> String { "\(cluster)/dumps/\(id)/\(relative)" }
    public func manifestKey(_ id: BackupID) -> String { "\(cluster)/backups/\(id)/manifest.json" }
    public func manifestCopyKey(_ id: BackupID) -> String { "\(cluster)/backups/\(id)/manifest.copy.json" }
    /// Pack keys are stored relative to the backup folder in the manifest.
    public func objectKey(_ id: BackupID, _ relative: String) -> String { "\(cluster)/backups/\(id)/\(relative)" }
    /// `pack/00-0000.pack`; a resumed backup's packs carry the run: `pack/r1-00-0000.pack`.
    public static func packName(worker: Int, sequence: Int, run: Int = 0) -> String {
        "pack/" + (run > 0 ? "r\(run)-" : "") + pad(worker, 2) + "-" + pad(sequence, 4) + ".pack"
    }
    /// The index of a pack (see `PackIndex`).
    public static func packIndexName(_ pack: String) -> String {
        (pack.hasSuffix(".pack") ? String(pack.dropLast(5)) : pack) + ".index"
    }
    public static func backupWALName(_ name: WALFileName) -> String { "wal/\(name)" }

    /// What a key of this cluster is: the one parser of keys (listings are read through it).
    public enum Key: Sendable, Equatable {
        case binding, bindingCopy
        /// An archived WAL file (segment, `.backup` or `.history`).
        case wal(WALFileName)
        /// An object of a backup's folder, by its name relative to the folder
        /// (`manifest.json`, `pack/00-0000.pack`, `wal/<segment>`).
        case backup(BackupID, String)
        case restoreRecord(String)
        /// The repository's own status index (`StatusIndex`).
        case index
        /// A pin of a backup (`Pin`).
        case pin(BackupID)
        /// A pin of a logical dump (`DumpPin`).
        case dumpPin(DumpID)
        /// An object of a logical dump's folder (`manifest.json`, `db/<name>.dump`, `globals.sql`).
        case dump(DumpID, String)

        /// The backup whose folder holds it.
        public var backupID: BackupID? { if case .backup(let id, _) = self { return id }; return nil }
        /// A backup's manifest or its copy (the object that makes the backup count).
        public var isManifest: Bool {
            if case .backup(_, let name) = self { return name == "manifest.json" || name == "manifest.copy.json" }
            return false
        }
        public var isWAL: Bool { if case .wal = self { return true }; return false }
    }

    /// The meaning of `key`, or nil for a key that is not this cluster's or not of the layout.
    public func parse(_ key: String) -> Key? {
        // Byte-wise: a listing of a large archive parses a million keys.
        let k = key.utf8, c = cluster.utf8
        guard k.count > c.count, k.starts(with: c), k[k.index(k.startIndex, offsetBy: c.count)] == UInt8(ascii: "/") else { return nil }
        let parts = k[k.index(k.startIndex, offsetBy: c.count + 1)...].split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            .map { Substring($0) }
        switch parts.first {
        case "cluster.json" where parts.count == 1: return .binding
        case "cluster.copy.json" where parts.count == 1: return .bindingCopy
        case "index.json" where parts.count == 1: return .index
        case "wal" where parts.count == 3:
            guard let name = WALFileName(String(parts[2])) else { return nil }
            // Only where walKey puts it: history files under history/, the others under the
            // first 16 characters of their segment name.
            let folder = parts[1].utf8
            let fits = name.kind == .history ? parts[1] == "history" : folder.count == 16 && folder.elementsEqual(parts[2].utf8.prefix(16))
            return fits ? .wal(name) : nil
        case "backups" where parts.count >= 3:
            guard let id = BackupID(String(parts[1])), !parts[2...].contains(where: \.isEmpty) else { return nil }
            return .backup(id, parts[2...].joined(separator: "/"))
        case "dumps" where parts.count >= 3:
            guard let id = DumpID(String(parts[1])), !parts[2...].contains(where: \.isEmpty) else { return nil }
            return .dump(id, parts[2...].joined(separator: "/"))
        case "restores" where parts.count == 2 && parts[1].hasSuffix(".json"): return .restoreRecord(String(parts[1]))
        case "pins" where parts.count == 2 && parts[1].hasSuffix(".json"):
            let id = String(parts[1].dropLast(5))
            return BackupID(id).map { .pin($0) } ?? DumpID(id).map { .dumpPin($0) }
        default: return nil
        }
    }

    static func pad(_ v: Int, _ w: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s }
}
