import WaybackCore

/// A WAL record that matters to recovery targets: a transaction's commit or abort (what
/// `recovery_target_time` and `recovery_target_xid` stop at) or a named restore point
/// (`pg_create_restore_point`, what `recovery_target_name` stops at).
public struct WALEvent: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case commit
        case abort
        case restorePoint(String)
    }

    public var kind: Kind
    /// Where the record starts (PostgreSQL's ReadRecPtr; what `recovery_target_lsn` compares with).
    public var lsn: LSN
    /// Where the next record starts.
    public var endLSN: LSN
    /// The top-level transaction id (for prepared transactions: the prepared one); 0 for restore points.
    public var xid: UInt32
    /// The record's timestamp in microseconds since 2000-01-01 00:00 UTC (PostgreSQL's TimestampTz).
    public var timestamp: Int64

    public init(kind: Kind, lsn: LSN, endLSN: LSN, xid: UInt32, timestamp: Int64) {
        self.kind = kind; self.lsn = lsn; self.endLSN = endLSN; self.xid = xid; self.timestamp = timestamp
    }

    public var unixSeconds: Double { PostgresTime.unixSeconds(timestamp) }

    public var description: String {
        switch kind {
        case .commit: "commit of transaction \(xid) at \(lsn)"
        case .abort: "abort of transaction \(xid) at \(lsn)"
        case .restorePoint(let n): "restore point \"\(n)\" at \(lsn)"
        }
    }
}

/// PostgreSQL timestamps: microseconds since 2000-01-01 00:00:00 UTC.
public enum PostgresTime {
    public static let epochOffset: Double = 946_684_800
    public static func unixSeconds(_ t: Int64) -> Double { Double(t) / 1_000_000 + epochOffset }
}

/// What one pass over a segment found.
public struct WALSegmentScan: Sendable, Equatable {
    public var records = 0
    public var events: [WALEvent] = []
    /// Start of the first and of the last record that begin in this segment, if any.
    public var firstRecord: LSN?
    public var lastRecord: LSN?
    /// End of the last complete record (or of the record continued into the next segment: nil then).
    public var endOfRecords: LSN?
    /// The segment ends the WAL of its timeline at this point (zeros or an invalid record follow).
    public var endOfWAL = false
    /// The segment was closed early by a WAL switch (`pg_switch_wal`, `archive_timeout`).
    public var switched = false
}

/// Reads the record structure of WAL segments (PostgreSQL 13 to 15 format), one segment after
/// another, carrying a record that spans segments. It follows the chain of records (each one's
/// `xl_prev` must point at the one before) and stops at zeros or a broken chain, which is where
/// PostgreSQL's own replay of the file would end. It does not check record CRCs: archived segments
/// are protected by the repository's SHA-256, and PostgreSQL checks CRCs again during replay.
public struct WALRecordScanner: Sendable {
    static let pageFirstIsContRecord: UInt16 = 0x0001
    static let pageLongHeader: UInt16 = 0x0002
    static let shortPageHeader = 24
    static let longPageHeader = 40
    static let recordHeader = 24

    static let rmXLOG: UInt8 = 0
    static let rmXACT: UInt8 = 1
    static let xlogSwitch: UInt8 = 0x40
    static let xlogRestorePoint: UInt8 = 0x70
    static let xactCommit: UInt8 = 0x00
    static let xactAbort: UInt8 = 0x20
    static let xactCommitPrepared: UInt8 = 0x30
    static let xactAbortPrepared: UInt8 = 0x40
    static let xactHasInfo: UInt8 = 0x80

    public let segmentSize: UInt64
    /// A record begun in the previous segment: its start, its length, the bytes kept so far (at
    /// most `limit`: all of an interesting record, the headers of one only the block map needs,
    /// none of the others), and how many bytes are still to come.
    private var carry: (start: LSN, total: Int, bytes: [UInt8], limit: Int, remaining: Int)?
    /// What the block map reads of a record that is neither a transaction's nor a storage or
    /// database change: its headers (at most 33 block references of 27 bytes after the record
    /// header), not its page images and data.
    static let blockHeadersPrefix = 2048
    private var previousRecord: LSN?
    private var expectedSegment: UInt64?
    /// When set, every record is read whole and its block references (and the relation and
    /// database changes WAL does not describe block by block) are folded into it.
    public var blockMap: WALBlockMap?
    /// Where the record begins that the last segment scanned left unfinished (it continues in
    /// the next segment); nil when the segment ended at a record boundary.
    public var pendingRecordStart: LSN? { carry?.start }
    private var pageMagic: UInt16 = 0

    public init(segmentSize: UInt64 = WALFileName.defaultSegmentSize) {
        self.segmentSize = segmentSize
    }

    /// Scans the plain content of segment `segmentNumber`. Call it for consecutive segments to
    /// follow records across segment boundaries; a gap (or the first call) starts afresh at the
    /// first record that begins in the segment.
    public mutating func scan(_ b: UnsafeRawBufferPointer, segmentNumber: UInt64) throws -> WALSegmentScan {
        var out = WALSegmentScan()
        guard let header = WALSegmentHeader.parse(b), UInt64(header.segmentSize) == segmentSize,
              b.count == Int(segmentSize) else {
            throw WaybackError(.corrupt, "WAL segment \(segmentNumber) does not start with a valid WAL page header")
        }
        let page = Int(header.blockSize)
        let base = segmentNumber * segmentSize
        guard header.pageAddress == base else {
            throw WaybackError(.corrupt, "WAL segment \(segmentNumber) holds the data of another segment (page address \(LSN(header.pageAddress)))")
        }
        if expectedSegment != segmentNumber {
            // A segment missing in between: the records it held are unknown.
            if expectedSegment != nil, blockMap != nil { blockMap?.fallBack("WAL segments before segment \(segmentNumber) were not read (a gap)") }
            carry = nil; previousRecord = nil
        }
        expectedSegment = segmentNumber + 1
        pageMagic = header.magic
        let collecting = blockMap != nil
        func fold(_ record: [UInt8], start: LSN, total: Int, end: LSN) {
            blockMap?.add(record: record, lsn: start, pageMagic: pageMagic, total: total, end: end)
        }
        // Page images are in the records' bodies: kept images need every record whole.
        let bodyLimit = blockMap.map { $0.imageBudget > 0 } == true ? Int.max : Self.blockHeadersPrefix

        func u16(_ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { UInt32(u16(o)) | UInt32(u16(o + 2)) << 16 }
        func u64(_ o: Int) -> UInt64 { UInt64(u32(o)) | UInt64(u32(o + 4)) << 32 }
        func headerLength(_ pageStart: Int) -> Int { pageStart == 0 ? Self.longPageHeader : Self.shortPageHeader }

        /// Copies (while `sink` holds fewer than `limit` bytes) or skips `count` logical bytes
        /// starting at physical offset `pos`, stepping over page headers. Returns the physical
        /// offset after them, or nil when the segment ends first (then `copied` tells how many
        /// were consumed).
        func consume(from pos: Int, count: Int, into sink: inout [UInt8], limit: Int, copied: inout Int) -> Int? {
            var p = pos, left = count
            copied = 0
            while left > 0 {
                if p % page == 0 {
                    if p >= b.count { return nil }
                    p += headerLength(p)
                }
                let n = min(left, page - p % page)
                if sink.count < limit {
                    let take = min(n, limit - sink.count)
                    sink.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[p..<(p + take)]))
                }
                p += n; left -= n; copied += n
            }
            return p
        }

        var pos = Self.longPageHeader
        // A record continued from the previous segment.
        if header.pageAddress == base, u16(2) & Self.pageFirstIsContRecord != 0 {
            let remaining = Int(u32(16))
            if var c = carry, c.remaining == remaining {
                var copied = 0
                if let next = consume(from: pos, count: remaining, into: &c.bytes, limit: c.limit, copied: &copied) {
                    pos = next
                    let end = LSN(base + UInt64(next))
                    if c.limit == Int.max, let e = Self.event(c.bytes, start: c.start, end: end) { out.events.append(e) }
                    if collecting { fold(c.bytes, start: c.start, total: c.total, end: end) }
                    out.records += 1
                    previousRecord = c.start
                    out.endOfRecords = end
                    carry = nil
                } else {
                    // A record longer than the whole segment.
                    c.remaining -= copied
                    carry = c
                    return out
                }
            } else {
                var sink = [UInt8](), copied = 0
                if carry != nil, collecting { blockMap?.fallBack("a record continued into segment \(segmentNumber) does not match the one begun before it") }
                carry = nil; previousRecord = nil
                guard let next = consume(from: pos, count: remaining, into: &sink, limit: 0, copied: &copied) else { return out }
                pos = next
            }
        } else {
            carry = nil
        }

        // Records that begin in this segment.
        while true {
            pos = (pos + 7) & ~7
            if pos % page == 0 {
                if pos >= b.count { break }
                pos += headerLength(pos)
            }
            // xl_tot_len and xl_xid are always on the record's first page (records are 8-aligned).
            let total = Int(u32(pos))
            if total == 0 { out.endOfWAL = true; break }
            guard total >= Self.recordHeader, total < 1 << 30 else { out.endOfWAL = true; break }
            let start = LSN(base + UInt64(pos))
            var head = [UInt8](), copied = 0
            let afterHead: Int, prev: UInt64, info: UInt8, rmid: UInt8
            if pos % page + Self.recordHeader <= page {
                // The common case: the header is on one page, read in place (no copy).
                prev = u64(pos + 8); info = b[pos + 16]; rmid = b[pos + 17]
                afterHead = pos + Self.recordHeader
            } else {
                head.reserveCapacity(Self.recordHeader)
                guard let a = consume(from: pos, count: Self.recordHeader, into: &head, limit: Int.max, copied: &copied) else {
                    // The header itself continues in the next segment (kept whole: its kind is
                    // not known yet).
                    carry = (start, total, head, Int.max, total - copied)
                    previousRecord = nil
                    out.endOfRecords = nil
                    break
                }
                afterHead = a
                prev = head.withUnsafeBytes { h in (0..<8).reduce(UInt64(0)) { $0 | UInt64(h[8 + $1]) << (8 * $1) } }
                info = head[16]; rmid = head[17]
            }
            if let previousRecord, prev != previousRecord.value { out.endOfWAL = true; break }
            let interesting = (rmid == Self.rmXACT) || (rmid == Self.rmXLOG && (info & 0xF0 == Self.xlogRestorePoint || info & 0xF0 == Self.xlogSwitch))
                || (collecting && WALBlockMap.needsWholeRecord(rmid: rmid))
            let limit = interesting ? Int.max : collecting ? bodyLimit : 0
            var record = [UInt8]()
            if limit > 0 {
                record.reserveCapacity(min(total, limit))
                if head.isEmpty { record.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[pos..<(pos + Self.recordHeader)])) } else { record = head }
            }
            if out.firstRecord == nil { out.firstRecord = start }
            out.lastRecord = start
            guard let next = consume(from: afterHead, count: total - Self.recordHeader, into: &record, limit: limit, copied: &copied) else {
                carry = (start, total, record, limit, total - Self.recordHeader - copied)
                previousRecord = nil
                out.endOfRecords = nil
                break
            }
            out.records += 1
            previousRecord = start
            pos = next
            out.endOfRecords = LSN(base + UInt64(next))
            if collecting { fold(record, start: start, total: total, end: LSN(base + UInt64(next))) }
            if interesting {
                if rmid == Self.rmXLOG && info & 0xF0 == Self.xlogSwitch {
                    // The rest of the segment is unused.
                    out.switched = true
                    carry = nil
                    break
                }
                if let e = Self.event(record, start: start, end: LSN(base + UInt64(next))) { out.events.append(e) }
            }
        }
        return out
    }

    /// Decodes a commit, abort or restore-point record; nil for anything else.
    static func event(_ r: [UInt8], start: LSN, end: LSN) -> WALEvent? {
        guard r.count >= recordHeader else { return nil }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(r[o + $1]) << (8 * $1) } }
        func i64(_ o: Int) -> Int64 { Int64(bitPattern: (0..<8).reduce(UInt64(0)) { $0 | UInt64(r[o + $1]) << (8 * $1) }) }
        let rmid = r[17], info = r[16]
        guard let main = mainData(r) else { return nil }
        if rmid == rmXLOG, info & 0xF0 == xlogRestorePoint {
            // xl_restore_point: TimestampTz rp_time; char rp_name[64]
            guard main.count >= 8 + 1 else { return nil }
            let nameBytes = r[(main.lowerBound + 8)..<min(main.upperBound, main.lowerBound + 8 + 64)]
            let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
            return WALEvent(kind: .restorePoint(name), lsn: start, endLSN: end, xid: 0, timestamp: i64(main.lowerBound))
        }
        guard rmid == rmXACT else { return nil }
        let op = info & 0x70
        guard op == xactCommit || op == xactAbort || op == xactCommitPrepared || op == xactAbortPrepared, main.count >= 8 else { return nil }
        let time = i64(main.lowerBound)
        var xid = u32(4)
        if op == xactCommitPrepared || op == xactAbortPrepared {
            // The prepared transaction's xid is in the xl_xact_twophase part.
            guard info & xactHasInfo != 0, let x = twoPhaseXid(r, main: main, commit: op == xactCommitPrepared) else { return nil }
            xid = x
        }
        let kind: WALEvent.Kind = (op == xactCommit || op == xactCommitPrepared) ? .commit : .abort
        return WALEvent(kind: kind, lsn: start, endLSN: end, xid: xid, timestamp: time)
    }

    /// The range of the record's main data (nil: none, or a record that cannot be parsed).
    static func mainData(_ r: [UInt8], magic: UInt16 = WALBlockMap.magic15) -> Range<Int>? {
        guard case .success(let layout) = WALRecordLayout.parse(r, magic: magic), !layout.main.isEmpty else { return nil }
        return layout.main
    }

    /// xl_xact_parsed's twophase_xid: walk the optional parts that precede it (PostgreSQL 15 order).
    static func twoPhaseXid(_ r: [UInt8], main: Range<Int>, commit: Bool) -> UInt32? {
        func u32(_ o: Int) -> UInt32? { o + 4 <= main.upperBound ? (0..<4).reduce(0) { $0 | UInt32(r[o + $1]) << (8 * $1) } : nil }
        var o = main.lowerBound + 8
        guard let xinfo = u32(o) else { return nil }
        o += 4
        if xinfo & (1 << 0) != 0 { o += 8 }  // dbinfo
        if xinfo & (1 << 1) != 0 { guard let n = u32(o) else { return nil }; o += 4 + 4 * Int(n) }  // subxacts
        if xinfo & (1 << 2) != 0 { guard let n = u32(o) else { return nil }; o += 4 + 12 * Int(n) }  // relfilenodes
        if xinfo & (1 << 8) != 0 { guard let n = u32(o) else { return nil }; o += 4 + 12 * Int(n) }  // dropped stats
        if commit, xinfo & (1 << 3) != 0 { guard let n = u32(o) else { return nil }; o += 4 + 16 * Int(n) }  // invalidations
        guard xinfo & (1 << 4) != 0 else { return nil }  // XACT_XINFO_HAS_TWOPHASE
        return u32(o)
    }
}

/// A timeline history file (`00000002.history`): the parents of a timeline and where it left each.
public struct TimelineHistory: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var timeline: UInt32
        /// Where this timeline was left for the next one in the list.
        public var switchPoint: LSN
        public init(timeline: UInt32, switchPoint: LSN) { self.timeline = timeline; self.switchPoint = switchPoint }
    }

    public var timeline: UInt32
    /// Ancestors, oldest first.
    public var parents: [Entry]

    public init(timeline: UInt32, parents: [Entry]) {
        self.timeline = timeline; self.parents = parents
    }

    /// Parses PostgreSQL's format: `parentTLI<TAB>switchpoint<TAB>reason` per line, `#` comments.
    public static func parse(_ text: String, timeline: UInt32) throws -> TimelineHistory {
        var entries = [Entry]()
        for line in text.split(separator: "\n") {
            let t = line.trimmed(of: " \t\r")
            if t.isEmpty || t.hasPrefix("#") { continue }
            let fields = t.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard fields.count >= 2, let tli = UInt32(fields[0]), let lsn = LSN(fields[1]) else {
                throw WaybackError(.corrupt, "timeline history file of timeline \(timeline) has a malformed line: \(t)")
            }
            if let last = entries.last, tli <= last.timeline || lsn < last.switchPoint {
                throw WaybackError(.corrupt, "timeline history file of timeline \(timeline) is out of order at: \(t)")
            }
            entries.append(Entry(timeline: tli, switchPoint: lsn))
        }
        return TimelineHistory(timeline: timeline, parents: entries)
    }

    /// Every timeline on the way to this one with the LSN range it covers: [begin, end), end nil
    /// for this timeline itself.
    public var path: [(timeline: UInt32, begin: LSN, end: LSN?)] {
        var out = [(timeline: UInt32, begin: LSN, end: LSN?)]()
        var begin = LSN(0)
        for p in parents {
            out.append((p.timeline, begin, p.switchPoint))
            begin = p.switchPoint
        }
        out.append((timeline, begin, nil))
        return out
    }

    /// The timeline that holds `lsn` on the way to this one.
    public func timeline(at lsn: LSN) -> UInt32 {
        for p in path where lsn >= p.begin && (p.end == nil || lsn < p.end!) { return p.timeline }
        return timeline
    }

    /// The timeline whose file PostgreSQL reads for segment `number` when recovering along this
    /// history: the newest timeline that had begun by that segment (the segment holding a switch
    /// point is read from the new timeline, which starts with a copy of the old one's data).
    public func timeline(forSegment number: UInt64, segmentSize: UInt64) -> UInt32 {
        for p in path.reversed() where p.begin.value / segmentSize <= number { return p.timeline }
        return path.first!.timeline
    }

    public func contains(_ tli: UInt32) -> Bool { tli == timeline || parents.contains { $0.timeline == tli } }

    /// Where the path leaves `tli` (nil: it never does, or it is not on the path).
    public func switchPoint(leaving tli: UInt32) -> LSN? {
        path.first { $0.timeline == tli }?.end
    }
}

extension StringProtocol {
    func trimmed(of set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

/// Checks of the small text files PostgreSQL archives besides segments, before they are stored:
/// a junk file under such a name would break restore planning, be read by PostgreSQL, and keep
/// the real file of that name from ever being archived.
public enum ArchivedTextFile {
    /// A history or backup history file is a few lines; anything larger is not one.
    public static let maximumSize = 1 << 20

    /// A timeline history file of `timeline` as PostgreSQL writes it: UTF-8 lines of
    /// `parentTLI<TAB>switchpoint<TAB>reason` (and `#` comments), at least one, parents in
    /// ascending order and below `timeline`, switch points not decreasing.
    public static func validateHistory(_ bytes: [UInt8], timeline: UInt32) throws {
        let name = WALFileName.history(timeline: timeline).description
        func refuse(_ why: String) -> WaybackError {
            WaybackError(.corrupt, "\(name) is not a timeline history file (\(why)); refusing to archive it. archive_command must be 'wayback wal-push %p'")
        }
        guard bytes.count <= maximumSize else { throw refuse("\(bytes.count) bytes") }
        guard let text = String(validating: bytes, as: UTF8.self), !bytes.contains(0) else { throw refuse("not text") }
        let history: TimelineHistory
        do { history = try TimelineHistory.parse(text, timeline: timeline) } catch let e as WaybackError { throw refuse(e.message) }
        guard timeline > 1, let last = history.parents.last else { throw refuse("no parent timeline") }
        guard last.timeline < timeline else { throw refuse("parent timeline \(last.timeline) is not below \(timeline)") }
    }

    /// A backup history file (`SEGMENT.OFFSET.backup`): its first line is
    /// `START WAL LOCATION: X/X (file SEGMENT)` with the LSN of the name's segment and offset, and
    /// it has a `STOP WAL LOCATION:` line.
    public static func validateBackupHistory(_ bytes: [UInt8], name: WALFileName, segmentSize: UInt64) throws {
        func refuse(_ why: String) -> WaybackError {
            WaybackError(.corrupt, "\(name) is not a backup history file (\(why)); refusing to archive it. archive_command must be 'wayback wal-push %p'")
        }
        guard bytes.count <= maximumSize else { throw refuse("\(bytes.count) bytes") }
        guard let text = String(validating: bytes, as: UTF8.self), !bytes.contains(0) else { throw refuse("not text") }
        let lines = text.split(separator: "\n")
        let prefix = "START WAL LOCATION: "
        guard let first = lines.first, first.hasPrefix(prefix) else { throw refuse("no START WAL LOCATION line") }
        let fields = first.dropFirst(prefix.count).split(separator: " ")
        guard fields.count == 3, let lsn = LSN(fields[0]), fields[1] == "(file", fields[2] == Substring(name.segmentName + ")") else {
            throw refuse("malformed START WAL LOCATION line")
        }
        guard lsn.segmentNumber(segmentSize: segmentSize) == name.segmentNumber(segmentSize: segmentSize),
              UInt64(name.backupOffset, radix: 16) == lsn.value % segmentSize else {
            throw refuse("its start \(lsn) is not the location its name gives")
        }
        guard lines.contains(where: { $0.hasPrefix("STOP WAL LOCATION: ") }) else { throw refuse("no STOP WAL LOCATION line") }
    }
}
