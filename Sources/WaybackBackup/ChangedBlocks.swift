import Synchronization
import WaybackCatalog
import WaybackCore
import WaybackPostgres

/// What the WAL since the reference's start says about each relation file (`backup.incr_method`
/// `wal` and `both`): read these blocks, or scan the file because the WAL does not describe it
/// block by block. Pure: built once from a `WALBlockMap`, asked by every worker.
struct ChangedBlocks: Sendable {
    /// What to read of one segment file of a relation fork, in blocks of that file.
    enum Choice: Equatable {
        /// Read every page and compare its LSN (today's method): the fork was created in the
        /// range, its database was copied file by file, or the map is not complete.
        case scan
        /// The blocks below `tail` the WAL named (sorted), and every block from `tail` to the end:
        /// `tail` is the reference's length, or the length a truncation cut the fork to if less
        /// (blocks past a truncation are new even where the reference had data).
        case blocks([UInt32], tail: UInt32)
    }

    let map: WALBlockMap
    private let sorted: [RelationFork: [UInt32]]

    init(_ map: WALBlockMap) {
        self.map = map
        sorted = map.blocks.mapValues { $0.sorted() }
    }

    func choice(path: String, referenceSize: Int64) -> Choice {
        guard map.complete, let (fork, segment) = RelationFork.of(path: path) else { return .scan }
        if map.created.contains(fork) || map.copiedDatabases.contains([fork.tablespace, fork.database]) { return .scan }
        let perSegment = PageChecksum.blocksPerSegment
        let first = segment &* perSegment
        var tail = UInt32(min(referenceSize / Int64(PageChecksum.pageSize), Int64(perSegment)))
        // smgr truncate records name the main fork (the free space and visibility maps are not
        // read at page level).
        if let cut = map.truncated[RelationFork(tablespace: fork.tablespace, database: fork.database, relation: fork.relation, fork: 0)],
           fork.fork == 0 {
            tail = min(tail, cut > first ? cut - first : 0)
        }
        guard let all = sorted[fork] else { return .blocks([], tail: tail) }
        // The named blocks of this segment file, below the tail.
        let lo = lowerBound(all, first), hi = lowerBound(all, first &+ tail)
        return .blocks(all[lo..<hi].map { $0 - first }, tail: tail)
    }

    private func lowerBound(_ a: [UInt32], _ v: UInt32) -> Int {
        var lo = 0, hi = a.count
        while lo < hi { let mid = (lo + hi) / 2; if a[mid] < v { lo = mid + 1 } else { hi = mid } }
        return lo
    }
}

/// What the backup's workers read (bytes and relation pages), and, with `incr_method: both`, the
/// pages the scan found changed that the WAL's map did not name (how many, and the first few).
final class ReadTally: Sendable {
    static let missesKept = 20
    let bytes = Atomic<Int64>(0)
    let blocks = Atomic<Int64>(0)
    private let missed = Mutex<(count: Int, first: [String])>((0, []))

    func read(_ n: Int, pages: Int = 0) {
        bytes.add(Int64(n), ordering: .relaxed)
        if pages > 0 { blocks.add(Int64(pages), ordering: .relaxed) }
    }

    func miss(_ what: String) {
        missed.withLock { m in
            m.count += 1
            if m.first.count < Self.missesKept { m.first.append(what) }
        }
    }
    var misses: (count: Int, first: [String]) { missed.withLock { $0 } }
}
