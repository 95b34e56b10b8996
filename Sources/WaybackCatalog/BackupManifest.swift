import Foundation
import WaybackCore
import WaybackPostgres

/// The manifest of one backup: the truth of what the backup is and where every byte lives.
/// Stored as sealed JSON at `backups/<id>/manifest.json` (and `manifest.copy.json`), written after
/// every data object and WAL copy of the backup. A backup folder without a readable manifest is not
/// a backup.
public struct BackupManifest: Codable, Sendable {
    public static let kind = "backup-manifest"

    public struct Tablespace: Codable, Sendable, Equatable {
        public var oid: UInt32
        public var name: String
        public var location: String
        public init(oid: UInt32, name: String, location: String) { self.oid = oid; self.name = name; self.location = location }
    }

    /// A data object (pack) of this backup: name relative to the backup folder.
    public struct StoredObject: Codable, Sendable, Equatable {
        public var name: String
        public var size: Int64
        public var sha256: String
        public init(name: String, size: Int64, sha256: String) { self.name = name; self.size = size; self.sha256 = sha256 }
    }

    /// Where one frame of a file lives: object index, offset, stored length (with header), plain length.
    public struct Chunk: Codable, Sendable, Equatable {
        public var object: Int
        public var offset: Int64
        public var length: Int
        public var raw: Int
        enum CodingKeys: String, CodingKey { case object = "o", offset = "f", length = "l", raw = "r" }
        public init(object: Int, offset: Int64, length: Int, raw: Int) {
            self.object = object; self.offset = offset; self.length = length; self.raw = raw
        }
    }

    /// A run of blocks (8 KiB pages) of a file: `[start, count]` in JSON.
    public struct BlockRun: Codable, Sendable, Equatable {
        public var start: UInt32
        public var count: UInt32
        public init(start: UInt32, count: UInt32) { self.start = start; self.count = count }
        public init(from decoder: any Decoder) throws {
            var c = try decoder.unkeyedContainer()
            start = try c.decode(UInt32.self); count = try c.decode(UInt32.self)
        }
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.unkeyedContainer()
            try c.encode(start); try c.encode(count)
        }
    }

    /// One file of the backup. Three shapes:
    /// - stored whole: `chunks` hold the whole content, `base` and `blocks` are nil;
    /// - unchanged since the reference backup: `base` names it, `chunks` is empty, `blocks` nil;
    /// - page level: `base` names the reference, `blocks` lists the blocks this backup stored (in
    ///   order, their pages back to back in `chunks`); every other block comes from `base`'s version.
    /// `size` is always the whole file's as it is restored. `sha256` is the whole file's too, except
    /// for a page-level entry whose pages the WAL named (`backup.incr_method: wal`): that backup
    /// read only those pages, so `sha256` is empty and a restore computes the digest as it writes.
    public struct File: Codable, Sendable, Equatable {
        /// Path relative to the data directory, `/` separated; tablespace files under `pg_tblspc/<oid>/`.
        public var path: String
        public var size: Int64
        public var mode: UInt32
        public var mtime: Int64
        /// SHA-256 of the plain content (empty: not known, see above).
        public var sha256: String
        public var chunks: [Chunk]
        /// The backup whose version of this file holds what this entry does not (diff/incr only).
        public var base: BackupID?
        /// Page level: the blocks stored in `chunks`.
        public var blocks: [BlockRun]?
        public init(path: String, size: Int64, mode: UInt32, mtime: Int64, sha256: String, chunks: [Chunk],
                    base: BackupID? = nil, blocks: [BlockRun]? = nil) {
            self.path = path; self.size = size; self.mode = mode; self.mtime = mtime; self.sha256 = sha256; self.chunks = chunks
            self.base = base; self.blocks = blocks
        }
        enum CodingKeys: String, CodingKey { case path, size, mode, mtime, sha256, chunks, base, blocks }
        /// Decoded by hand: an incr's manifest lists tens of thousands of block runs, and the
        /// generic path (an `Array<BlockRun>`, each run through its own `Decodable`) cost 12 %
        /// more CPU in decoding a manifest.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            path = try c.decode(String.self, forKey: .path)
            size = try c.decode(Int64.self, forKey: .size)
            mode = try c.decode(UInt32.self, forKey: .mode)
            mtime = try c.decode(Int64.self, forKey: .mtime)
            sha256 = try c.decode(String.self, forKey: .sha256)
            chunks = try c.decode([Chunk].self, forKey: .chunks)
            base = try c.decodeIfPresent(BackupID.self, forKey: .base)
            if try c.contains(.blocks) && !c.decodeNil(forKey: .blocks) {
                var list = try c.nestedUnkeyedContainer(forKey: .blocks)
                var runs = [BlockRun]()
                runs.reserveCapacity(list.count ?? 0)
                while !list.isAtEnd {
                    var pair = try list.nestedUnkeyedContainer()
                    runs.append(BlockRun(start: try pair.decode(UInt32.self), count: try pair.decode(UInt32.self)))
                }
                blocks = runs
            } else {
                blocks = nil
            }
        }
        /// Whether `sha256` is the whole file's (it always is, but for entries of the WAL method).
        public var digestKnown: Bool { !sha256.isEmpty }
        /// Plain bytes this entry itself stores.
        public var storedPlainBytes: Int64 { chunks.reduce(Int64(0)) { $0 + Int64($1.raw) } }
    }

    public struct Directory: Codable, Sendable, Equatable {
        public var path: String
        public var mode: UInt32
        public init(path: String, mode: UInt32) { self.path = path; self.mode = mode }
    }

    /// A WAL segment copied into the backup (WAL object format), so the backup can always reach
    /// consistency even when the archive has been expired.
    public struct WALCopy: Codable, Sendable, Equatable {
        public var name: String
        public var object: String
        public var size: Int64
        public var sha256: String
        public init(name: String, object: String, size: Int64, sha256: String) {
            self.name = name; self.object = object; self.size = size; self.sha256 = sha256
        }
    }

    public struct Sizes: Codable, Sendable, Equatable {
        /// Plain bytes of every file copied (what the backup restores, WAL copies excluded).
        public var database: Int64
        /// Bytes stored in the repository by this backup (packs plus WAL copies).
        public var repository: Int64
        public var files: Int
        public var wal: Int64
        /// Plain bytes this backup stored itself (less than `database` for diff/incr; nil in
        /// manifests written before diff/incr existed, where it equals `database`).
        public var copied: Int64?
        public init(database: Int64, repository: Int64, files: Int, wal: Int64, copied: Int64? = nil) {
            self.database = database; self.repository = repository; self.files = files; self.wal = wal; self.copied = copied
        }
    }

    /// The backup's MD5 and SHA-256: digests of its content listing (see `contentListing`), which
    /// names every file and WAL copy with its size and SHA-256. Equal digests mean equal content.
    public struct Digests: Codable, Sendable, Equatable {
        public var md5: String
        public var sha256: String
        public init(md5: String, sha256: String) { self.md5 = md5; self.sha256 = sha256 }
    }

    /// Pages of one relation file that failed their data checksum during the backup.
    public struct PageFailure: Codable, Sendable, Equatable {
        /// The file, relative to the data directory (`base/5/16384.1`).
        public var path: String
        public var fileNode: UInt32
        /// main, fsm, vm or init.
        public var fork: String
        /// Block numbers in the relation fork (counting across its 1 GiB segment files).
        public var blocks: [UInt32]
        public init(path: String, fileNode: UInt32, fork: String, blocks: [UInt32]) {
            self.path = path; self.fileNode = fileNode; self.fork = fork; self.blocks = blocks
        }
    }

    public var id: BackupID
    public var type: BackupType
    /// The backup this one depends on (diff/incr), nil for a full backup.
    public var reference: BackupID?
    public var status: String
    public var cluster: String
    public var systemIdentifier: String
    public var pgVersionNumber: Int
    public var walSegmentSize: UInt64
    public var dataChecksums: Bool
    public var startTime: Date
    public var stopTime: Date
    public var startLSN: LSN
    public var stopLSN: LSN
    public var timeline: UInt32
    public var startWAL: String
    public var stopWAL: String
    public var backupLabel: String
    public var tablespaceMap: String
    public var tablespaces: [Tablespace]
    public var compression: CompressionSettings
    /// Reserved: nil means not encrypted.
    public var encryption: String?
    public var sizes: Sizes
    public var digests: Digests
    public var objects: [StoredObject]
    public var directories: [Directory]
    public var files: [File]
    public var wal: [WALCopy]
    /// Seconds the copy phase took (for throughput estimates of later restores).
    public var copySeconds: Double
    /// Pages that failed their data checksum (nil: none, or the cluster has no data checksums).
    public var pageChecksumFailures: [PageFailure]?
    /// Why the backup has another type than the one asked for (a diff/incr that became a full).
    public var note: String?
    /// Whether every page change gave the page a new LSN while this backup ran (data checksums or
    /// wal_log_hints on). A later diff/incr stores relation files at page level only when its
    /// reference has this and the cluster still has it.
    public var hintsLogged: Bool?
    /// Set when the backup continued an interrupted one: the files it reused from there.
    public var resumed: Resumed?
    /// Every table's rows, counted right after the backup (`backup.record_row_counts`; nil: not taken).
    public var rowCounts: RowCounts?
    /// What the backup read from the data directory and how it found the changed pages (nil in
    /// manifests written before Wayback recorded it).
    public var reading: Reading?

    /// The cost of a backup on the data directory's disks (`backup --json` prints it).
    public struct Reading: Codable, Sendable, Equatable {
        /// How a diff/incr found the changed pages (`backup.incr_method`; nil for a full).
        public var method: IncrementalMethod?
        /// Bytes read from the data directory's files.
        public var bytesRead: Int64
        /// Relation pages (8 KiB) among them.
        public var blocksRead: Int64
        /// Relation pages not read but built from the full-page images the WAL's last record of
        /// each page carried (`incr_method: wal`; nil: none).
        public var blocksFromImages: Int64?
        /// Why parts (or all) of the relation files were scanned instead of read from the WAL's
        /// block map: a gap or damage in the WAL, a database copied file by file, a reference on
        /// another timeline (empty: none).
        public var fallbacks: [String]?
        /// WAL records decoded for the block map, and how long that took.
        public var walRecords: Int?
        public var walSeconds: Double?
        /// The backups whose kept block maps this one reused (a diff: the incrs since its full),
        /// so that only the WAL after the newest of them was decoded.
        public var mapsReused: [BackupID]?
        /// Where the WAL range of the block map this backup keeps (object `blockmap`) begins: its
        /// reference's start; the range ends at this backup's start (nil: no map kept).
        public var mapFrom: LSN?
        public init(method: IncrementalMethod?, bytesRead: Int64, blocksRead: Int64, blocksFromImages: Int64? = nil, fallbacks: [String]? = nil,
                    walRecords: Int? = nil, walSeconds: Double? = nil) {
            self.method = method; self.bytesRead = bytesRead; self.blocksRead = blocksRead
            self.blocksFromImages = blocksFromImages.flatMap { $0 > 0 ? $0 : nil }; self.fallbacks = fallbacks
            self.walRecords = walRecords; self.walSeconds = walSeconds
        }
    }

    public struct Resumed: Codable, Sendable, Equatable {
        public var files: Int
        public var bytes: Int64
        public init(files: Int, bytes: Int64) { self.files = files; self.bytes = bytes }
    }

    public init(id: BackupID, type: BackupType, reference: BackupID?, cluster: String, systemIdentifier: String,
                pgVersionNumber: Int, walSegmentSize: UInt64, dataChecksums: Bool, startTime: Date, stopTime: Date,
                startLSN: LSN, stopLSN: LSN, timeline: UInt32, startWAL: String, stopWAL: String, backupLabel: String,
                tablespaceMap: String, tablespaces: [Tablespace], compression: CompressionSettings, objects: [StoredObject],
                directories: [Directory], files: [File], wal: [WALCopy], copySeconds: Double) {
        self.id = id; self.type = type; self.reference = reference; self.status = "complete"; self.cluster = cluster
        self.systemIdentifier = systemIdentifier; self.pgVersionNumber = pgVersionNumber; self.walSegmentSize = walSegmentSize
        self.dataChecksums = dataChecksums; self.startTime = startTime; self.stopTime = stopTime
        self.startLSN = startLSN; self.stopLSN = stopLSN; self.timeline = timeline; self.startWAL = startWAL; self.stopWAL = stopWAL
        self.backupLabel = backupLabel; self.tablespaceMap = tablespaceMap; self.tablespaces = tablespaces
        self.compression = compression; self.encryption = nil; self.objects = objects; self.directories = directories
        self.files = files; self.wal = wal; self.copySeconds = copySeconds
        let database = files.reduce(Int64(0)) { $0 + $1.size }
        let repository = objects.reduce(Int64(0)) { $0 + $1.size }
        let walStored = wal.reduce(Int64(0)) { $0 + $1.size }
        let copied = files.reduce(Int64(0)) { $0 + $1.storedPlainBytes }
        self.sizes = Sizes(database: database, repository: repository, files: files.count, wal: walStored, copied: copied)
        self.digests = Digests(md5: "", sha256: "")
        self.digests = Self.digests(files: files, wal: wal, backupLabel: backupLabel, tablespaceMap: tablespaceMap)
    }

    /// One line per file (`F path size sha256`), per WAL copy (`W name size sha256`), then
    /// `L sha256(backup_label)` and `M sha256(tablespace_map)`, files sorted by path.
    public static func contentListing(files: [File], wal: [WALCopy], backupLabel: String, tablespaceMap: String) -> String {
        var s = ""
        for f in files.sorted(by: { $0.path < $1.path }) { s += "F \(f.path) \(f.size) \(f.sha256)\n" }
        for w in wal.sorted(by: { $0.name < $1.name }) { s += "W \(w.name) \(w.size) \(w.sha256)\n" }
        s += "L \(SHA256Hasher.hex(Array(backupLabel.utf8)))\n"
        s += "M \(SHA256Hasher.hex(Array(tablespaceMap.utf8)))\n"
        return s
    }

    public static func digests(files: [File], wal: [WALCopy], backupLabel: String, tablespaceMap: String) -> Digests {
        let bytes = Array(contentListing(files: files, wal: wal, backupLabel: backupLabel, tablespaceMap: tablespaceMap).utf8)
        var md5 = MD5Hasher(); md5.update(bytes)
        return Digests(md5: md5.finalizeHex(), sha256: SHA256Hasher.hex(bytes))
    }

    /// The entry for `path`, nil when the backup has no such file.
    public func file(_ path: String) -> File? {
        var lo = 0, hi = files.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if files[mid].path < path { lo = mid + 1 } else { hi = mid }
        }
        return lo < files.count && files[lo].path == path ? files[lo] : nil
    }

    /// Plain bytes this backup stored per byte stored in the repository.
    public var compressionRatio: Double {
        sizes.repository > 0 ? Double(sizes.copied ?? sizes.database) / Double(sizes.repository) : 0
    }
}
