import Synchronization
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// The blocks the WAL changed between two positions of one timeline (an incremental backup's
/// reference start and its own start): each segment read from `pg_wal` when it is there whole and
/// cached, else from the archive, else from `pg_wal` (the newest is not archived yet when a backup
/// starts; see `segment`), and folded into a `WALBlockMap`. What cannot be read is one of the map's fallbacks, never an
/// error: a backup then scans what the map cannot stand for.
///
/// The map's `until` is where the next range must begin: `end`, or the start of a record the last
/// segment left unfinished (it is in neither map until the next range reads it whole).
///
/// `found` is told the blocks of each segment as soon as it is folded in (a block may be told
/// again in a later segment), but for those a kept image stands for, so that they can be read
/// ahead while the decoding goes on. `imageBudget` bytes of page images are kept (see
/// `WALBlockMap.images`; 0: none).
public enum WALChanges {
    /// Segments fetched at once ahead of the one being scanned (each a segment's size in memory).
    static let fetchAhead: UInt64 = 2

    public static func collect(from start: LSN, to end: LSN, timeline: UInt32, segmentSize: UInt64, catalog: Catalog,
                               pgWal: String?, imageBudget: Int = 0, found: (([RelationFork: Set<UInt32>]) -> Void)? = nil) async -> WALBlockMap {
        var scanner = WALRecordScanner(segmentSize: segmentSize)
        var map = WALBlockMap(from: start, until: end, imageBudget: imageBudget)
        guard start < end else { return map }
        let first = start.segmentNumber(segmentSize: segmentSize), last = LSN(end.value - 1).segmentNumber(segmentSize: segmentSize)
        func name(_ n: UInt64) -> WALFileName { WALFileName(timeline: timeline, segmentNumber: n, segmentSize: segmentSize) }
        // The next `fetchAhead` segments are fetched (read, decrypted, decompressed, checked), each
        // in a task, while this one is scanned: fetching costs more than scanning.
        var fetching = [Task<Result<[UInt8], WaybackError>, Never>](), queued = first
        let buffers = SegmentBuffers(size: Int(segmentSize))
        func fetchAhead() {
            while queued <= last && fetching.count < Int(Self.fetchAhead) {
                let name = name(queued)
                fetching.append(Task { await segment(name, segmentSize: segmentSize, catalog: catalog, pgWal: pgWal, buffers: buffers) })
                queued += 1
            }
        }
        func nextSegment() async -> Result<[UInt8], WaybackError> {
            fetchAhead()
            let fetched = await fetching.removeFirst().value
            fetchAhead()
            return fetched
        }
        defer { for f in fetching { f.cancel() } }
        // Each segment is folded into a map of its own, then into the range's (which compresses
        // the page images it keeps).
        for n in first...last {
            scanner.blockMap = WALBlockMap(from: start, until: end, imageBudget: imageBudget)
            let goOn = await scanSegment(n, name: name(n), last: last, end: end, scanner: &scanner, next: nextSegment,
                                         pgWal: pgWal, timeline: timeline, segmentSize: segmentSize, buffers: buffers)
            let part = scanner.blockMap!
            map.append(part)
            if !part.blocks.isEmpty, let found {
                let toRead = map.toRead(part.blocks)
                if !toRead.isEmpty { found(toRead) }
            }
            if !goOn { break }
        }
        if let pending = scanner.pendingRecordStart, pending < end { map.until = pending }
        return map
    }

    /// Scans segment `n` (`next` fetches it) into `scanner`'s map (what cannot be read is a fallback there); false when
    /// the backup stopped (the task was cancelled) and the reading ends here. The segment's buffer
    /// goes back to `buffers` afterwards.
    static func scanSegment(_ n: UInt64, name: WALFileName, last: UInt64, end: LSN, scanner: inout WALRecordScanner,
                            next: () async -> Result<[UInt8], WaybackError>, pgWal: String?, timeline: UInt32, segmentSize: UInt64,
                            buffers: SegmentBuffers? = nil) async -> Bool {
        // A backup that stops (its owner cancelled the task) stops reading here.
        if Task.isCancelled {
            scanner.blockMap?.fallBack("the WAL was not read to the end (the backup stopped)")
            return false
        }
        // The segments after those are announced to the kernel (those in pg_wal).
        if let pgWal {
            for ahead in (n + 1 + Self.fetchAhead)...(n + 3 + Self.fetchAhead) where ahead <= last {
                announce(pgWal + "/" + self.name(ahead, timeline, segmentSize))
            }
        }
        let bytes: [UInt8]
        switch await next() {
        case .success(let b): bytes = b
        case .failure(let why):
            scanner.blockMap?.fallBack("WAL segment \(name) \(why.message)")
            return true
        }
        defer { buffers?.give(bytes) }
        do {
            let scan = try bytes.withUnsafeBytes { try scanner.scan($0, segmentNumber: n) }
            // The records must run on to the next segment (or past `end` in the last one):
            // WAL that stops early in the range is damaged, and what it held is unknown.
            let reached = scan.switched || !scan.endOfWAL || (scan.endOfRecords.map { reaches($0, end) } ?? false)
            if !reached {
                let at = scan.endOfRecords.map { " at \($0)" } ?? ""
                scanner.blockMap?.fallBack("WAL segment \(name) ends early\(at), before \(n < last ? "the segment's end" : "\(end)") (damaged or not yet written)")
            }
        } catch {
            scanner.blockMap?.fallBack("WAL segment \(name) cannot be read (\((error as? WaybackError)?.message ?? String(describing: error)))")
        }
        return true
    }

    static func name(_ n: UInt64, _ timeline: UInt32, _ segmentSize: UInt64) -> String {
        WALFileName(timeline: timeline, segmentNumber: n, segmentSize: segmentSize).description
    }

    /// Starts reading a file into the page cache (`POSIX_FADV_WILLNEED`); a missing file is no error.
    static func announce(_ path: String) {
        guard let f = try? PosixFile.openForReading(path) else { return }
        f.willNeed(offset: 0, length: 0)
        try? f.close()
    }

    /// Whether records ending at `recordsEnd` reach `end`, the position where the next record
    /// begins: records start 8-aligned, and past a page's end after its header.
    static func reaches(_ recordsEnd: LSN, _ end: LSN) -> Bool {
        let aligned = (recordsEnd.value + 7) & ~7
        if aligned >= end.value { return true }
        return aligned % 8192 == 0 && end.value <= aligned + 40
    }

    /// The plain bytes of one segment, in a buffer of `buffers`: from `pg_wal` when it is there
    /// whole and in the page cache; else from the archive (a thirteenth of the bytes to read, for
    /// pgbench's WAL); else from `pg_wal` (the newest segments are not archived yet). The failure
    /// says why none served.
    static func segment(_ name: WALFileName, segmentSize: UInt64, catalog: Catalog, pgWal: String?, buffers: SegmentBuffers) async -> Result<[UInt8], WaybackError> {
        var bytes = buffers.take()  // every byte is read into it
        let local = pgWal.flatMap { try? PosixFile.openForReading($0 + "/" + name.description) }
        defer { try? local?.close() }
        func fromPgWal() -> Bool {
            guard let local, (try? local.size()) == Int64(segmentSize) else { return false }
            return (try? bytes.withUnsafeMutableBytes { try local.pread(into: $0, offset: 0) }) == Int(segmentSize)
        }
        if let local, local.isCached(length: Int(segmentSize)), fromPgWal() { return .success(bytes) }
        do {
            let header = try await WALObject.read(catalog.repository.driver, key: catalog.layout.walKey(name), name: name.description) { plain, offset in
                guard offset + Int64(plain.count) <= Int64(bytes.count) else { throw WaybackError(.corrupt, "archived WAL file \(name) is longer than a segment") }
                bytes.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + plain.count)]).copyMemory(from: plain) }
            }
            guard header.size == Int64(segmentSize) else { return fromPgWal() ? .success(bytes) : .failure(WaybackError(.corrupt, "is shorter than a segment in the archive")) }
            return .success(bytes)
        } catch let e as WaybackError where e.code == .notFound {
            return fromPgWal() ? .success(bytes) : .failure(WaybackError(.notFound, "is neither in pg_wal nor in the archive"))
        } catch {
            if fromPgWal() { return .success(bytes) }
            return .failure(WaybackError(.corrupt, "is not in pg_wal and cannot be read from the archive (\((error as? WaybackError)?.message ?? String(describing: error)))"))
        }
    }
}

/// Segment-sized buffers handed on from one segment to the next, so that at most
/// `WALChanges.fetchAhead` + 1 exist at once. (A new 16 MiB buffer for each segment is served by
/// glibc from heaps that the freed ones leave fragmented: measured at pgbench scale 300, the incr's
/// peak resident memory was 20-30 MiB higher.)
final class SegmentBuffers: Sendable {
    private let free = Mutex<[[UInt8]]>([])
    let size: Int
    init(size: Int) { self.size = size }

    func take() -> [UInt8] { free.withLock { $0.popLast() } ?? .scratch(count: size) }
    /// A buffer no one reads any more (one of another size is dropped).
    func give(_ buffer: [UInt8]) {
        guard buffer.count == size else { return }
        free.withLock { $0.append(buffer) }
    }
}
