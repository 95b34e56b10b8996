import Synchronization
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

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
    /// The cluster has data checksums: a page built from an image gets its checksum.
    let checksums: Bool
    private let sorted: [RelationFork: [UInt32]]

    init(_ map: WALBlockMap, checksums: Bool = false) {
        self.map = map
        self.checksums = checksums
        sorted = map.blocks.mapValues { $0.sorted() }
    }

    /// The pages of one segment file of a relation fork that the map's kept images stand for, by
    /// block in that file (with `choice` `.blocks`: the named blocks among them are built from
    /// the images instead of read).
    func images(path: String) -> [UInt32: WALPageImage] {
        guard !map.images.isEmpty, let (fork, segment) = RelationFork.of(path: path), let all = map.images[fork] else { return [:] }
        let first = segment &* PageChecksum.blocksPerSegment
        var out = [UInt32: WALPageImage]()
        for (block, image) in all where block >= first && block - first < PageChecksum.blocksPerSegment { out[block - first] = image }
        return out
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

/// Reads ahead, into the kernel's page cache (`POSIX_FADV_WILLNEED`), the blocks the WAL decoding
/// of an incr finds, segment by segment, while the decoding goes on: the copy that follows finds
/// its scattered pages there instead of waiting for each read-ahead window in turn. Only the
/// kernel's cache is filled (a page written later replaces the cached one); the copy reads every
/// page itself. The advising waits for `pg_backup_start` to return: reads during its checkpoint
/// slow the checkpoint's writes (measured: a 1.0 s incr took 1.3 s).
///
/// Main and init forks only (what an incr reads page by page), up to `budget` bytes (a block named
/// by several segments is counted each time), so that a large change cannot evict its own first
/// pages before the copy reads them. One task does the advising, in the order the WAL named the
/// blocks; its owner `finish`es it. Each segment's advice is given on a thread of its own
/// (`Blocking`): `posix_fadvise` waits while the disk's queue is full, and a cooperative thread
/// held there would stall the decoding it runs beside.
final class BlockReadAhead: Sendable {
    static let defaultBudget: Int64 = 512 << 20
    private let input: AsyncStream<[RelationFork: Set<UInt32>]>.Continuation
    private let worker: Task<Void, Never>
    private let finished = Finished()

    /// Set by `finish`, read by the advising threads.
    final class Finished: Sendable {
        private let flag = Atomic<Bool>(false)
        func set() { flag.store(true, ordering: .relaxed) }
        var isSet: Bool { flag.load(ordering: .relaxed) }
    }

    init(pgdata: String, after start: Task<LSN, any Error>, budget: Int64 = BlockReadAhead.defaultBudget) {
        let (stream, input) = AsyncStream<[RelationFork: Set<UInt32>]>.makeStream()
        self.input = input
        let finished = finished
        worker = Task {
            _ = try? await start.value
            var left = budget
            // Each tablespace's PG_<version> directory, nil when it has none.
            var versionDirectories = [UInt32: String?]()
            for await blocks in stream where left > 0 {
                let forks = blocks.filter { $0.key.fork == 0 || $0.key.fork == 3 }.sorted { $0.key < $1.key }
                for fork in forks.map(\.key) where versionDirectories[fork.tablespace] == nil {
                    let names = fork.tablespace > 1664 ? (try? FileSystem.list(pgdata + "/pg_tblspc/\(fork.tablespace)")) ?? [] : []
                    versionDirectories.updateValue(names.first { $0.hasPrefix("PG_") }, forKey: fork.tablespace)
                }
                let directories = versionDirectories, budget = left
                left -= (try? await Blocking.run {
                    var advised: Int64 = 0
                    for (fork, set) in forks where advised < budget && !finished.isSet {
                        advised += Self.advise(fork, blocks: set.sorted(), pgdata: pgdata, versionDirectory: directories[fork.tablespace] ?? nil,
                                               budget: budget - advised, finished: finished)
                    }
                    return advised
                }) ?? 0
            }
        }
    }

    /// Hands the blocks of one decoded segment to the advising task (`WALChanges.collect`'s `found`).
    func offer(_ blocks: [RelationFork: Set<UInt32>]) { input.yield(blocks) }

    /// Ends the advising (what is in flight in the kernel completes on its own).
    func finish() {
        finished.set()
        input.finish()
        worker.cancel()
    }

    /// Advises the runs of adjacent `blocks` (sorted) of one fork, file by file; returns the bytes
    /// advised (at most `budget`, rounded up to a run). Stops once the read-ahead is `finished`.
    static func advise(_ fork: RelationFork, blocks: [UInt32], pgdata: String, versionDirectory: String?, budget: Int64,
                       finished: Finished = Finished()) -> Int64 {
        let pageSize = Int64(PageChecksum.pageSize), perSegment = PageChecksum.blocksPerSegment
        var advised: Int64 = 0, i = 0
        while i < blocks.count, advised < budget, !finished.isSet {
            let segment = blocks[i] / perSegment
            var j = i
            while j < blocks.count && blocks[j] / perSegment == segment { j += 1 }
            defer { i = j }
            // A file that is not there (dropped since) or is a link is not read.
            guard let relative = fork.path(segment: segment, versionDirectory: versionDirectory),
                  let file = try? PosixFile.openForReading(pgdata + "/" + relative, followLinks: false) else { continue }
            var k = i
            while k < j, advised < budget {
                var end = k + 1
                while end < j && blocks[end] == blocks[end - 1] &+ 1 { end += 1 }
                file.willNeed(offset: Int64(blocks[k] % perSegment) * pageSize, length: Int64(end - k) * pageSize)
                advised += Int64(end - k) * pageSize
                k = end
            }
            try? file.close()
        }
        return advised
    }
}

/// What the backup's workers read (bytes and relation pages) and the pages they built from the
/// WAL's images instead, and, with `incr_method: both`, the pages the scan found changed that the
/// WAL's map did not name (how many, and the first few).
final class ReadTally: Sendable {
    static let missesKept = 20
    let bytes = Atomic<Int64>(0)
    let blocks = Atomic<Int64>(0)
    let fromImages = Atomic<Int64>(0)
    private let missed = Mutex<(count: Int, first: [String])>((0, []))

    func read(_ n: Int, pages: Int = 0) {
        bytes.add(Int64(n), ordering: .relaxed)
        if pages > 0 { blocks.add(Int64(pages), ordering: .relaxed) }
    }

    func builtFromImage() { fromImages.add(1, ordering: .relaxed) }

    func miss(_ what: String) {
        missed.withLock { m in
            m.count += 1
            if m.first.count < Self.missesKept { m.first.append(what) }
        }
    }
    var misses: (count: Int, first: [String]) { missed.withLock { $0 } }
}
