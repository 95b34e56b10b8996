import WaybackCore

/// One fork of one relation, as WAL names it (`RelFileNode` and fork number).
public struct RelationFork: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var tablespace: UInt32
    public var database: UInt32
    public var relation: UInt32
    /// 0 main, 1 free space map, 2 visibility map, 3 init.
    public var fork: UInt8
    public init(tablespace: UInt32, database: UInt32, relation: UInt32, fork: UInt8) {
        self.tablespace = tablespace; self.database = database; self.relation = relation; self.fork = fork
    }
    public static func < (a: RelationFork, b: RelationFork) -> Bool {
        (a.tablespace, a.database, a.relation, a.fork) < (b.tablespace, b.database, b.relation, b.fork)
    }
    public var description: String { "\(tablespace)/\(database)/\(relation) fork \(fork)" }
}

/// What a stretch of WAL changed, block by block (for an incremental backup that reads only the
/// blocks WAL names): every block a record references (`XLogRegisterBuffer`: every change of a
/// WAL-logged page registers its block), relation forks created and truncated, and what WAL does
/// not describe block by block: a database copied file by file (`CREATE DATABASE ... STRATEGY
/// FILE_COPY`, `ALTER DATABASE SET TABLESPACE`), a resource manager Wayback does not know, a
/// record it cannot parse, or WAL it did not read. Those are `fallbacks`: the affected database,
/// or the whole backup, is scanned as before.
public struct WALBlockMap: Sendable, Equatable {
    public var blocks: [RelationFork: Set<UInt32>] = [:]
    /// Forks created (`smgr create`): every block of them is new.
    public var created: Set<RelationFork> = []
    /// The smallest length each truncated fork was cut to.
    public var truncated: [RelationFork: UInt32] = [:]
    /// Databases (tablespace, database) copied file by file: their files are scanned whole.
    public var copiedDatabases: Set<[UInt32]> = []
    public var droppedDatabases: Set<[UInt32]> = []
    /// Why the map cannot stand for the whole range (empty: it can).
    public var fallbacks: [String] = []
    public var records = 0
    /// The first and last record folded in.
    public var first: LSN?
    public var last: LSN?
    /// Records that begin before this are left out (the reference backup's start: a checkpoint's
    /// redo point, where a record begins).
    public var from: LSN
    /// Records that begin at or after this are left out too (the new backup's start: replay
    /// covers them, and the newest segment may still be being written there).
    public var until: LSN?
    /// The main-fork pages whose last record in the range carried a full-page image that replay
    /// applies: replay from the range's start leaves each of them as that image, whatever the page
    /// was before, so a backup can take the page from here instead of reading it (see
    /// `WALPageImage`). Kept only while `imageBudget` (bytes, compressed) allows; 0 keeps none.
    public var images: [RelationFork: [UInt32: WALPageImage]] = [:]
    public var imageBudget = 0
    /// The kept images' bytes (compressed).
    public private(set) var imageBytes = 0

    public init(from: LSN, until: LSN? = nil, imageBudget: Int = 0) { self.from = from; self.until = until; self.imageBudget = imageBudget }

    public var complete: Bool { fallbacks.isEmpty }
    public var blockCount: Int { blocks.values.reduce(0) { $0 + $1.count } }

    public mutating func fallBack(_ why: String) { if !fallbacks.contains(why) { fallbacks.append(why) } }

    /// Of `named`, the blocks a backup must read: all but those a kept image stands for.
    public func toRead(_ named: [RelationFork: Set<UInt32>]) -> [RelationFork: Set<UInt32>] {
        guard !images.isEmpty else { return named }
        var out = named
        for (fork, kept) in images where out[fork] != nil { out[fork]!.subtract(kept.keys) }
        return out.filter { !$0.value.isEmpty }
    }

    /// Adds the map of the range that follows this one (its `from` is this map's `until`). A block
    /// the later range names keeps the image that range left, or none; images are compressed as
    /// they are kept, within `imageBudget`. (Measured, and not kept: compressing each segment's
    /// images in a task of its own, or one segment later so that those the next segment replaces
    /// are never compressed; both held more memory, 155-167 MiB against 141-144 MiB at pgbench
    /// scale 100, for no gain in time.)
    public mutating func append(_ next: WALBlockMap) {
        let compressors = WALPageImage.Compressors()
        func kept(_ image: WALPageImage) -> WALPageImage? {
            image.compressed ? image : try? image.compressed(with: compressors)
        }
        for (fork, set) in next.blocks {
            blocks[fork, default: []].formUnion(set)
            let newer = next.images[fork]
            guard images[fork] != nil || newer != nil else { continue }
            for block in set {
                if let old = images[fork]?.removeValue(forKey: block) { imageBytes -= old.bytes.count }
                // (A full budget compresses nothing more.)
                guard imageBytes < imageBudget, let image = newer?[block], let image = kept(image),
                      imageBytes + image.bytes.count <= imageBudget else { continue }
                images[fork, default: [:]][block] = image
                imageBytes += image.bytes.count
            }
            if images[fork]?.isEmpty == true { images[fork] = nil }
        }
        created.formUnion(next.created)
        for (fork, n) in next.truncated { truncated[fork] = min(truncated[fork] ?? n, n) }
        copiedDatabases.formUnion(next.copiedDatabases)
        droppedDatabases.formUnion(next.droppedDatabases)
        for f in next.fallbacks { fallBack(f) }
        records += next.records
        first = first ?? next.first
        last = next.last ?? last
        until = next.until
    }

    // Resource managers (rmgrlist.h, PostgreSQL 13 to 15) and the info bits that matter here.
    static let rmXLOG: UInt8 = 0, rmSMGR: UInt8 = 2, rmDBASE: UInt8 = 4, rmLastBuiltin: UInt8 = 21
    static let smgrCreate: UInt8 = 0x10, smgrTruncate: UInt8 = 0x20
    /// `XLOG_PAGE_MAGIC` of PostgreSQL 15 (0xD110): the database records and image flags changed then.
    static let magic15: UInt16 = 0xD110

    /// Whether the map needs a record of this resource manager whole (its main data), not only
    /// its headers.
    static func needsWholeRecord(rmid: UInt8) -> Bool { rmid == rmSMGR || rmid == rmDBASE }

    /// Folds one record in: `r` is its first bytes (header included; all `total` of them for the
    /// storage and database managers, see `needsWholeRecord`, and for every record when images are
    /// kept). `end` is where the record ends (the LSN replay gives a page it restores).
    mutating func add(record r: [UInt8], lsn: LSN, pageMagic: UInt16, total: Int? = nil, end: LSN? = nil) {
        guard lsn >= from, until.map({ lsn < $0 }) ?? true else { return }
        records += 1
        if first == nil { first = lsn }
        last = lsn
        guard r.count >= 24 else { fallBack("a record at \(lsn) is shorter than its header"); return }
        let info = r[16], rmid = r[17]
        func u16(_ o: Int) -> UInt32 { UInt32(r[o]) | UInt32(r[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { u16(o) | u16(o + 2) << 16 }
        if rmid > Self.rmLastBuiltin {
            fallBack("resource manager \(rmid) (an extension's) at \(lsn) is not one Wayback reads")
        }
        let layout: WALRecordLayout
        switch WALRecordLayout.parse(r, magic: pageMagic, total: total ?? r.count, images: imageBudget > 0) {
        case .success(let l): layout = l
        case .failure(let why): fallBack("a record at \(lsn): \(why.message)"); return
        }
        for (k, (fork, block)) in layout.blocks.enumerated() {
            blocks[fork, default: []].insert(block)
            guard imageBudget > 0 else { continue }
            // The page's last record so far: its image stands for the page, or no image does.
            if fork.fork == 0, let end, r.count == (total ?? r.count), let ref = layout.images[k], ref.applied, !ref.compressed,
               let image = WALPageImage(r[ref.range], holeOffset: ref.holeOffset, lsn: LSN((end.value + 7) & ~7)) {
                images[fork, default: [:]][block] = image
            } else {
                images[fork]?[block] = nil
            }
        }
        let main = layout.main
        func m32(_ k: Int) -> UInt32? { main.lowerBound + k + 4 <= main.upperBound && main.upperBound <= r.count ? u32(main.lowerBound + k) : nil }
        switch (rmid, info & 0xF0) {
        case (Self.rmSMGR, Self.smgrCreate):
            // xl_smgr_create: RelFileNode rnode; ForkNumber forkNum
            if let spc = m32(0), let db = m32(4), let relNode = m32(8), let fork = m32(12) {
                created.insert(RelationFork(tablespace: spc, database: db, relation: relNode, fork: UInt8(truncatingIfNeeded: fork)))
            } else { fallBack("an smgr create record at \(lsn) cannot be read") }
        case (Self.rmSMGR, Self.smgrTruncate):
            // xl_smgr_truncate: BlockNumber blkno; RelFileNode rnode; int flags (1 heap, 2 vm, 4 fsm)
            if let blkno = m32(0), let spc = m32(4), let db = m32(8), let relNode = m32(12) {
                let key = RelationFork(tablespace: spc, database: db, relation: relNode, fork: 0)
                truncated[key] = min(truncated[key] ?? blkno, blkno)
            } else { fallBack("an smgr truncate record at \(lsn) cannot be read") }
        case (Self.rmDBASE, let op):
            // 15: 0x00 create by file copy, 0x10 create by WAL log, 0x20 drop; 13-14: 0x00 create (a copy), 0x10 drop.
            let fileCopy = op == 0x00, drop = pageMagic >= Self.magic15 ? op == 0x20 : op == 0x10
            if fileCopy {
                // xl_dbase_create(_file_copy)_rec: Oid db_id; Oid tablespace_id; ...
                if let db = m32(0), let spc = m32(4) { copiedDatabases.insert([spc, db]) } else { fallBack("a database create record at \(lsn) cannot be read") }
            } else if drop {
                // xl_dbase_drop_rec: Oid db_id; int ntablespaces; Oid tablespace_ids[]
                if let db = m32(0), let n = m32(4) {
                    for k in 0..<Int(min(n, 1024)) { if let spc = m32(8 + 4 * k) { droppedDatabases.insert([spc, db]) } }
                } else { fallBack("a database drop record at \(lsn) cannot be read") }
            }
        default:
            break
        }
    }
}

/// Where a record's parts are: the block each header references, and the main data (the record's
/// last bytes). The headers are walked as DecodeXLogRecord does: until what is left is the
/// blocks' data and images and the main data, whose lengths the headers give (a record without
/// main data has no main data header). `magic` is the page's `XLOG_PAGE_MAGIC` (the image flags
/// moved in PostgreSQL 15).
struct WALRecordLayout {
    var blocks: [(fork: RelationFork, block: UInt32)] = []
    /// Each block's full-page image, if it has one (in `blocks`' order).
    var images: [ImageReference?] = []
    var main: Range<Int>

    /// Where a block's image is in the record, and what its header says of it.
    struct ImageReference {
        var range: Range<Int>
        var holeOffset: Int
        /// Replay restores it (`BKPIMAGE_APPLY`; an image without is for wal_consistency_checking).
        var applied: Bool
        var compressed: Bool
    }

    /// `r` may be the first bytes of a record of `total` bytes: enough for the headers; `main` is
    /// then only a range of the whole record. `images`: place the blocks' images too.
    static func parse(_ r: [UInt8], magic: UInt16, total: Int? = nil, images: Bool = false) -> Result<WALRecordLayout, WaybackError> {
        let total = total ?? r.count
        func cut(_ what: String) -> Result<WALRecordLayout, WaybackError> { .failure(WaybackError(.corrupt, "\(what) is cut short")) }
        guard r.count >= 24 else { return cut("the header") }
        func u16(_ o: Int) -> UInt32 { UInt32(r[o]) | UInt32(r[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { u16(o) | u16(o + 2) << 16 }
        var o = 24, dataTotal = 0, mainLength = 0
        var rel: (UInt32, UInt32, UInt32)?
        var out = WALRecordLayout(main: total..<total)
        // Each block's image header (offset, length, hole offset, flags) and data length, for the
        // images' places after the headers.
        var parts = [(image: (length: Int, hole: Int, info: UInt8)?, data: Int)]()
        headers: while total - o > dataTotal {
            let id = r[o]; o += 1
            switch id {
            case 255:  // XLR_BLOCK_ID_DATA_SHORT: the last header
                guard o < r.count else { return cut("the main data header") }
                mainLength = Int(r[o]); o += 1; break headers
            case 254:  // XLR_BLOCK_ID_DATA_LONG
                guard o + 4 <= r.count else { return cut("the main data header") }
                mainLength = Int(u32(o)); o += 4; break headers
            case 253: o += 2  // XLR_BLOCK_ID_ORIGIN
            case 252: o += 4  // XLR_BLOCK_ID_TOPLEVEL_XID
            case 0...32:
                guard o + 3 <= r.count else { return cut("a block reference") }
                let forkFlags = r[o]
                let dataLength = Int(u16(o + 1))
                dataTotal += dataLength; o += 3
                var image: (length: Int, hole: Int, info: UInt8)?
                if forkFlags & 0x10 != 0 {  // BKPBLOCK_HAS_IMAGE
                    guard o + 5 <= r.count else { return cut("a block image header") }
                    dataTotal += Int(u16(o))
                    let bimg = r[o + 4]
                    image = (Int(u16(o)), Int(u16(o + 2)), bimg)
                    o += 5
                    // A hole in a compressed image: its length follows.
                    let compressed = magic >= WALBlockMap.magic15 ? bimg & 0x1C != 0 : bimg & 0x02 != 0
                    if bimg & 0x01 != 0 && compressed { o += 2 }
                }
                if forkFlags & 0x80 == 0 {  // not BKPBLOCK_SAME_REL: a RelFileNode follows
                    guard o + 12 <= r.count else { return cut("a block reference") }
                    rel = (u32(o), u32(o + 4), u32(o + 8)); o += 12
                }
                guard let (spc, db, relNode) = rel else { return .failure(WaybackError(.corrupt, "a block reference names no relation")) }
                guard o + 4 <= r.count else { return cut("a block reference") }
                out.blocks.append((RelationFork(tablespace: spc, database: db, relation: relNode, fork: forkFlags & 0x0F), u32(o)))
                if images { parts.append((image, dataLength)) }
                o += 4
            default:
                return .failure(WaybackError(.corrupt, "a block header Wayback does not know (\(id))"))
            }
        }
        guard mainLength <= total else { return cut("the main data") }
        out.main = (total - mainLength)..<total
        guard images else { return .success(out) }
        // After the headers, each block's image then its data, then the main data: the images are
        // placed only when the lengths add up to the record's.
        if o + dataTotal + mainLength == total {
            var at = o
            out.images = parts.map { part in
                defer { at += (part.image?.length ?? 0) + part.data }
                guard let image = part.image else { return nil }
                let (applied, compressed) = magic >= WALBlockMap.magic15
                    ? (image.info & 0x02 != 0, image.info & 0x1C != 0)   // BKPIMAGE_APPLY, BKPIMAGE_COMPRESS_*
                    : (image.info & 0x04 != 0, image.info & 0x02 != 0)   // 13-14: BKPIMAGE_APPLY, BKPIMAGE_IS_COMPRESSED
                return ImageReference(range: at..<(at + image.length), holeOffset: image.info & 0x01 != 0 ? image.hole : 0,
                                      applied: applied, compressed: compressed)
            }
        } else {
            out.images = parts.map { _ in nil }
        }
        return .success(out)
    }
}

extension RelationFork {
    /// The fork a data directory file belongs to, and which 1 GiB segment of it the file is:
    /// `base/<db>/<node>[_fork][.n]` (the default tablespace), `global/<node>...` (the global
    /// one, database 0) or `pg_tblspc/<spc>/<version dir>/<db>/<node>...`.
    public static func of(path: String) -> (fork: RelationFork, segment: UInt32)? {
        guard let file = PageChecksum.relationFile(path) else { return nil }
        let parts = path.split(separator: "/")
        let spc: UInt32?, db: UInt32?
        switch parts.first {
        case "base": spc = 1663; db = UInt32(parts[1])
        case "global": spc = 1664; db = 0
        case "pg_tblspc": spc = UInt32(parts[1]); db = UInt32(parts[3])
        default: spc = nil; db = nil
        }
        let forks: [String: UInt8] = ["main": 0, "fsm": 1, "vm": 2, "init": 3]
        guard let spc, let db, let fork = forks[file.fork] else { return nil }
        return (RelationFork(tablespace: spc, database: db, relation: file.fileNode, fork: fork), file.segment)
    }

    /// The data directory path of one segment file of this fork, the inverse of `of(path:)`:
    /// `versionDirectory` is the tablespace's `PG_<major>_<catalog version>` directory, needed
    /// outside the default and global tablespaces (nil there: no path).
    public func path(segment: UInt32, versionDirectory: String?) -> String? {
        let suffixes = ["", "_fsm", "_vm", "_init"]
        guard Int(fork) < suffixes.count else { return nil }
        let file = "\(relation)\(suffixes[Int(fork)])" + (segment > 0 ? ".\(segment)" : "")
        switch tablespace {
        case 1663: return "base/\(database)/\(file)"
        case 1664: return "global/\(file)"
        default: return versionDirectory.map { "pg_tblspc/\(tablespace)/\($0)/\(database)/\(file)" }
        }
    }
}
