import Foundation
import Logging
import Synchronization
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

struct CopyResult: Sendable {
    var objects: [BackupManifest.StoredObject]
    var files: [BackupManifest.File]
    var directories: [BackupManifest.Directory]
    var pageFailures: [BackupManifest.PageFailure]

    /// With the files a resumed backup reused (their chunks name `packs` by index), which come first.
    func adding(_ reused: [PackIndex.Entry], packs: [BackupManifest.StoredObject]) -> CopyResult {
        let shift = packs.count
        let moved = files.map { f in var f = f; f.chunks = f.chunks.map { var c = $0; c.object += shift; return c }; return f }
        return CopyResult(objects: packs + objects, files: (reused.map(\.file) + moved).sorted { $0.path < $1.path },
                          directories: directories,
                          pageFailures: (reused.compactMap(\.pageFailure) + pageFailures).sorted { $0.path < $1.path })
    }
}

/// Data checksum verification during the copy: pages whose LSN is at or after the backup start
/// are being written concurrently (and are restored from WAL by recovery), so only older pages
/// can be reported; a page that fails is read again once before it is reported, in case the first
/// read saw a write in progress.
struct PageVerification: Sendable {
    var startLSN: LSN
}

/// The backup a diff/incr builds on. A relation file's page whose LSN is below the reference's
/// start LSN has not been written since that backup started, so the reference's copy of it (plus
/// the WAL replay the reference would do) is the page; every page written since carries a newer
/// LSN, provided hint-bit changes are WAL-logged too (`pageLevel`: data checksums or
/// wal_log_hints, now and when the reference was taken). Other files are compared by size and
/// SHA-256, and stored whole when they differ.
///
/// With `changes` (the WAL's block map since the reference's start), `method` `wal` reads only
/// the blocks the WAL named (plus those past the reference's length), and `both` reads every
/// page as `scan` does and reports each changed page the map did not name (`ReadTally.misses`).
struct IncrementalReference: Sendable {
    var id: BackupID
    var startLSN: LSN
    var files: [String: BackupManifest.File]
    var pageLevel: Bool
    var method: IncrementalMethod = .scan
    var changes: ChangedBlocks?
    init(_ m: BackupManifest, pageLevel: Bool) {
        id = m.id
        startLSN = m.startLSN
        files = Dictionary(m.files.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
        self.pageLevel = pageLevel
    }

    /// Relation forks stored at page level: main and init. The free space map is not WAL-logged,
    /// and the visibility map's bits are cleared without a new page LSN (replay clears them from
    /// the heap record), so both are compared whole like other files.
    func isPageLevel(_ relation: PageChecksum.RelationFile?) -> Bool {
        guard pageLevel, let relation else { return false }
        return relation.fork == "main" || relation.fork == "init"
    }
}

/// Hands out files to workers, largest first, so the big relation segments start early and the
/// small files fill the gaps; `global/pg_control` last, as pg_basebackup does.
///
/// `readsDone` runs once every one of `workers` has asked for a file and found none left: the
/// data directory has been read (the packs may still be being made durable).
final class WorkQueue: Sendable {
    private let state: Mutex<(items: [DataDirectoryScan.FileItem], next: Int, idle: Set<Int>)>
    private let workers: Int
    private let readsDone: (@Sendable () -> Void)?
    init(_ items: [DataDirectoryScan.FileItem], workers: Int = 1, readsDone: (@Sendable () -> Void)? = nil) {
        state = Mutex((items.sorted { a, b in
            let al = a.path == "global/pg_control", bl = b.path == "global/pg_control"
            if al != bl { return bl }
            return a.size > b.size
        }, 0, []))
        self.workers = workers
        self.readsDone = readsDone
    }
    func next(worker: Int = 0) -> DataDirectoryScan.FileItem? {
        let (item, allIdle) = state.withLock { s -> (DataDirectoryScan.FileItem?, Bool) in
            guard s.next < s.items.count else {
                let first = s.idle.insert(worker).inserted
                return (nil, first && s.idle.count == workers)
            }
            defer { s.next += 1 }
            return (s.items[s.next], false)
        }
        if allIdle { readsDone?() }
        return item
    }
}

/// What the packs of this backup are part of, for their indexes (see `PackIndex`).
struct PackContext: Sendable {
    var type: BackupType
    var reference: BackupID?
    /// The run number in pack names (0, or more for a resumed backup).
    var run: Int
}

/// One worker's output: its packs and the files it stored in them (chunks name the pack by index
/// into `packs`).
struct WorkerOutput: Sendable {
    var worker: Int
    var packs: [BackupManifest.StoredObject] = []
    var files: [BackupManifest.File] = []
    var pageFailures: [BackupManifest.PageFailure] = []
}

extension PhysicalBackup {
    /// Copies every file through `parallelism` workers; each reads a file in 1 MiB frames, hashes,
    /// compresses and appends them to its current pack object, which it closes after
    /// `packTargetBytes` at a file boundary. Memory: one frame buffer and one compressor per worker.
    static func copyFiles(_ scan: DataDirectoryScan, id: BackupID, config: BackupConfiguration, catalog: Catalog,
                          verification: PageVerification?, incremental: IncrementalReference?, packs: PackContext, tally: ReadTally,
                          readsDone: (@Sendable () -> Void)? = nil, logger: Logger, progress: ProgressHandler?) async throws -> CopyResult {
        let queue = WorkQueue(scan.files, workers: config.parallelism, readsDone: readsDone)
        let counter = ByteCounter(bytesPerSecond: config.maxRateBytes)
        let total = scan.files.reduce(Int64(0)) { $0 + $1.size }
        let outputs = try await withProgress(phase: "backup \(id)", total: total, counter: counter, interval: 2, handler: progress) {
            try await withThrowingTaskGroup(of: WorkerOutput.self) { group in
                for w in 0..<config.parallelism {
                    group.addTask {
                        try await runWorker(w, queue: queue, id: id, config: config, catalog: catalog, verification: verification,
                                            incremental: incremental, packs: packs, counter: counter, tally: tally)
                    }
                }
                var all = [WorkerOutput]()
                for try await o in group { all.append(o) }
                return all.sorted { $0.worker < $1.worker }
            }
        }
        // Merge: number the packs globally and rewrite chunk object indices.
        var objects = [BackupManifest.StoredObject]()
        var files = [BackupManifest.File]()
        let failures = outputs.flatMap(\.pageFailures).sorted { $0.path < $1.path }
        for o in outputs {
            let base = objects.count
            objects += o.packs
            for var f in o.files {
                f.chunks = f.chunks.map { var c = $0; c.object += base; return c }
                files.append(f)
            }
        }
        files.sort { $0.path < $1.path }
        let dirs = scan.directories.map { BackupManifest.Directory(path: $0.path, mode: $0.mode) }
        logger.info("files copied", metadata: ["files": "\(files.count)", "packs": "\(objects.count)"])
        return CopyResult(objects: objects, files: files, directories: dirs, pageFailures: failures)
    }

    static func runWorker(_ worker: Int, queue: WorkQueue, id: BackupID, config: BackupConfiguration, catalog: Catalog,
                          verification: PageVerification?, incremental: IncrementalReference?, packs context: PackContext,
                          counter: ByteCounter, tally: ReadTally) async throws -> WorkerOutput {
        var out = WorkerOutput(worker: worker)
        let compressor = Compressor(config.compression)
        // The changed pages of a diff or incr (LZ4 by default: a restore through a chain decodes them all).
        let pageCompressor = config.pageCompression.map { $0 == config.compression ? compressor : Compressor($0) } ?? compressor
        var buffer = [UInt8].scratch(count: FrameFormat.rawChunk)
        var pending = queue.next(worker: worker)
        var sequence = 0
        while let first = pending {
            let name = RepositoryLayout.packName(worker: worker, sequence: sequence, run: context.run)
            let packIndex = out.packs.count
            sequence += 1
            var filesInPack = [BackupManifest.File]()
            var indexEntries = [PackIndex.Entry]()
            let (size, sha): (Int64, String) = try await config.repository.driver.withWriter(catalog.layout.objectKey(id, name), options: WriteOptions()) { writer in
                let frames = FrameWriter(writer: writer)
                var item: DataDirectoryScan.FileItem? = first
                while let file = item {
                    let readAt = Date().timeIntervalSince1970
                    if let (entry, failure) = try await copyOne(file, into: frames, packIndex: packIndex, compressor: compressor,
                                                                 pageCompressor: pageCompressor, buffer: &buffer, verification: verification,
                                                                 incremental: incremental, counter: counter, tally: tally) {
                        filesInPack.append(entry)
                        if let failure { out.pageFailures.append(failure) }
                        var local = entry
                        local.chunks = entry.chunks.map { var c = $0; c.object = 0; return c }
                        indexEntries.append(.init(file: local, mtimeNanoseconds: file.mtimeNanoseconds, readAt: readAt, pageFailure: failure))
                    }
                    item = nil
                    if frames.offset < config.packTargetBytes { item = queue.next(worker: worker) }
                    if item == nil && frames.offset < config.packTargetBytes { break }
                }
                return (frames.offset, frames.finalizeSHA256())
            }
            let pack = BackupManifest.StoredObject(name: name, size: size, sha256: sha)
            // The pack's index, so that a backup interrupted from here on can reuse it.
            try await catalog.writePackIndex(PackIndex(backup: id, type: context.type, reference: context.reference, pack: pack, entries: indexEntries))
            out.packs.append(pack)
            out.files += filesInPack
            pending = queue.next(worker: worker)
        }
        return out
    }

    /// Copies one file (verifying the data checksums of a relation file's pages with
    /// `verification`); nil when it vanished before it could be opened (dropped meanwhile). With
    /// `incremental`, a file the reference has is stored at page level (relation files) or not at
    /// all when unchanged (other files).
    static func copyOne(_ file: DataDirectoryScan.FileItem, into frames: FrameWriter, packIndex: Int, compressor: Compressor,
                        pageCompressor: Compressor, buffer: inout [UInt8], verification: PageVerification?, incremental: IncrementalReference?,
                        counter: ByteCounter, tally: ReadTally) async throws -> (BackupManifest.File, BackupManifest.PageFailure?)? {
        let handle: PosixFile
        do { handle = try PosixFile.openForReading(file.absolutePath) } catch let e as WaybackError where e.code == .notFound {
            return nil
        }
        defer { try? handle.close() }
        let relation = PageChecksum.relationFile(file.path)
        let verified = verification != nil ? relation : nil
        if let incremental, let old = incremental.files[file.path] {
            if incremental.isPageLevel(relation) {
                let choice = incremental.changes?.choice(path: file.path, referenceSize: old.size)
                if incremental.method == .wal, case .blocks(let named, let tail)? = choice {
                    return try await copyNamedPages(file, handle: handle, reference: old, named: named, tail: tail,
                                                    images: incremental.changes?.images(path: file.path) ?? [:],
                                                    checksums: incremental.changes?.checksums ?? false, incremental: incremental,
                                                    into: frames, packIndex: packIndex, pageCompressor: pageCompressor, buffer: &buffer,
                                                    verification: verification, relation: verified, counter: counter, tally: tally)
                }
                var crossCheck: (named: [UInt32], tail: UInt32)?
                if incremental.method == .both, case .blocks(let named, let tail)? = choice { crossCheck = (named, tail) }
                return try await copyPages(file, handle: handle, reference: old, incremental: incremental, crossCheck: crossCheck, into: frames,
                                           packIndex: packIndex, compressor: compressor, pageCompressor: pageCompressor, buffer: &buffer,
                                           verification: verification, relation: verified, counter: counter, tally: tally)
            }
            if file.size == old.size {
                let (size, sha) = try handle.sha256()
                tally.read(Int(size))
                if size == old.size && sha == old.sha256 {
                    counter.add(size)
                    return (BackupManifest.File(path: file.path, size: size, mode: file.mode, mtime: file.mtime, sha256: sha,
                                                chunks: [], base: incremental.id), nil)
                }
            }
        }
        return try await copyWhole(file, handle: handle, into: frames, packIndex: packIndex, compressor: compressor, buffer: &buffer,
                                   verification: verification, relation: verified, counter: counter, tally: tally)
    }

    static func copyWhole(_ file: DataDirectoryScan.FileItem, handle: PosixFile, into frames: FrameWriter, packIndex: Int, compressor: Compressor,
                          buffer: inout [UInt8], verification: PageVerification?, relation: PageChecksum.RelationFile?,
                          counter: ByteCounter, tally: ReadTally) async throws -> (BackupManifest.File, BackupManifest.PageFailure?)? {
        var hasher = SHA256Hasher()
        var chunks = [BackupManifest.Chunk]()
        var size: Int64 = 0
        var badBlocks = [UInt32]()
        let isRelation = PageChecksum.relationFile(file.path) != nil
        while true {
            let n = try readVerified(handle, at: size, into: &buffer, verification: verification, relation: relation, badBlocks: &badBlocks)
            if n == 0 { break }
            tally.read(n, pages: isRelation ? (n + PageChecksum.pageSize - 1) / PageChecksum.pageSize : 0)
            let frame = try buffer.withUnsafeBytes { all -> [UInt8] in
                let plain = UnsafeRawBufferPointer(rebasing: all[0..<n])
                hasher.update(plain)
                return try FrameFormat.encode(plain, compressor: compressor, pages: isRelation)
            }
            let loc = try await frames.append(frame: frame)
            chunks.append(.init(object: packIndex, offset: loc.offset, length: loc.length, raw: n))
            size += Int64(n)
            try await counter.consume(Int64(n))
            if n < buffer.count { break }
        }
        let entry = BackupManifest.File(path: file.path, size: size, mode: file.mode, mtime: file.mtime,
                                        sha256: hasher.finalizeHex(), chunks: chunks)
        guard let relation, !badBlocks.isEmpty else { return (entry, nil) }
        return (entry, BackupManifest.PageFailure(path: file.path, fileNode: relation.fileNode, fork: relation.fork, blocks: badBlocks))
    }

    /// Stores the pages gathered in `pending` (a page-level file's changed pages) as one frame and
    /// records where; `pending` is emptied for the next ones.
    static func flushPages(_ pending: inout [UInt8], into frames: FrameWriter, chunks: inout [BackupManifest.Chunk], packIndex: Int,
                           compressor: Compressor) async throws {
        guard !pending.isEmpty else { return }
        let frame = try pending.withUnsafeBytes { try FrameFormat.encode($0, compressor: compressor, pages: true) }
        let loc = try await frames.append(frame: frame)
        chunks.append(.init(object: packIndex, offset: loc.offset, length: loc.length, raw: pending.count))
        pending.removeAll(keepingCapacity: true)
    }

    /// A relation file at page level: every page whose LSN is at or after the reference's start
    /// (written since), new pages (LSN 0: all-zero or never WAL-logged; a zero page may stand
    /// where the reference had data before a truncation), and every block from the reference's
    /// length on; the rest comes from the reference. The file's SHA-256 covers every page.
    ///
    /// With `crossCheck` (`incr_method: both`: the blocks the WAL named and the tail), a page is
    /// stored when either method finds it changed, and a page the scan finds that the WAL did not
    /// name is a miss (but for all-zero pages, which an extension leaves without WAL, and pages
    /// whose LSN is the reference's start, the end of a record that began before it).
    static func copyPages(_ file: DataDirectoryScan.FileItem, handle: PosixFile, reference old: BackupManifest.File,
                          incremental: IncrementalReference, crossCheck: (named: [UInt32], tail: UInt32)? = nil,
                          into frames: FrameWriter, packIndex: Int, compressor: Compressor, pageCompressor: Compressor,
                          buffer: inout [UInt8], verification: PageVerification?, relation: PageChecksum.RelationFile?,
                          counter: ByteCounter, tally: ReadTally) async throws -> (BackupManifest.File, BackupManifest.PageFailure?)? {
        let pageSize = PageChecksum.pageSize
        let oldBlocks = old.size / Int64(pageSize)
        var hasher = SHA256Hasher()
        var chunks = [BackupManifest.Chunk]()
        var runs = [BackupManifest.BlockRun]()
        var pending = [UInt8]()
        pending.reserveCapacity(FrameFormat.rawChunk)
        var size: Int64 = 0
        var badBlocks = [UInt32]()
        var nextNamed = 0
        func flush() async throws {
            try await flushPages(&pending, into: frames, chunks: &chunks, packIndex: packIndex, compressor: pageCompressor)
        }
        while true {
            let n = try readVerified(handle, at: size, into: &buffer, verification: verification, relation: relation, badBlocks: &badBlocks)
            if n == 0 { break }
            tally.read(n, pages: (n + pageSize - 1) / pageSize)
            var offset = 0
            while offset < n {
                let length = min(pageSize, n - offset)
                let block = (size + Int64(offset)) / Int64(pageSize)
                var (changed, lsn, zero) = buffer.withUnsafeBytes { all -> (Bool, LSN, Bool) in
                    let page = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                    hasher.update(page)
                    let lsn = length < pageSize ? LSN(0) : PageChecksum.lsn(page)
                    let zero = lsn.value == 0 && !page.contains { $0 != 0 }
                    if length < pageSize || block >= oldBlocks { return (true, lsn, zero) }
                    return (lsn.value == 0 || lsn >= incremental.startLSN, lsn, zero)
                }
                if let (named, tail) = crossCheck {
                    while nextNamed < named.count && Int64(named[nextNamed]) < block { nextNamed += 1 }
                    let walNamed = block >= Int64(tail) || (nextNamed < named.count && Int64(named[nextNamed]) == block)
                    if changed && !walNamed && !zero && lsn != incremental.startLSN {
                        tally.miss("\(file.path) block \(block) (page LSN \(lsn))")
                    }
                    changed = changed || walNamed
                }
                if changed {
                    if let last = runs.last, Int64(last.start) + Int64(last.count) == block {
                        runs[runs.count - 1].count += 1
                    } else {
                        runs.append(.init(start: UInt32(block), count: 1))
                    }
                    buffer.withUnsafeBytes { pending.append(contentsOf: $0[offset..<(offset + length)]) }
                    if pending.count >= FrameFormat.rawChunk { try await flush() }
                }
                offset += length
            }
            size += Int64(n)
            try await counter.consume(Int64(n))
            if n < buffer.count { break }
        }
        try await flush()
        let failure = relation.flatMap { r in badBlocks.isEmpty ? nil : BackupManifest.PageFailure(path: file.path, fileNode: r.fileNode, fork: r.fork, blocks: badBlocks) }
        let sha = hasher.finalizeHex()
        if runs.isEmpty && size == old.size {
            if sha == old.sha256 {
                return (BackupManifest.File(path: file.path, size: size, mode: file.mode, mtime: file.mtime, sha256: sha, chunks: [], base: incremental.id), failure)
            }
            if !old.digestKnown {
                // The reference read only the WAL's pages: no page stored, but the digest known again.
                return (BackupManifest.File(path: file.path, size: size, mode: file.mode, mtime: file.mtime, sha256: sha, chunks: [],
                                            base: incremental.id, blocks: []), failure)
            }
            // No page has a newer LSN, yet the content differs (a change that was not WAL-logged):
            // store the file whole rather than trust the reference's copy.
            return try await copyWhole(file, handle: handle, into: frames, packIndex: packIndex, compressor: compressor, buffer: &buffer,
                                       verification: verification, relation: relation, counter: counter, tally: tally)
        }
        return (BackupManifest.File(path: file.path, size: size, mode: file.mode, mtime: file.mtime, sha256: sha, chunks: chunks,
                                    base: incremental.id, blocks: runs), failure)
    }

    /// How far ahead of its reads `copyNamedPages` announces the blocks it will read.
    static let readAheadBytes: Int64 = 64 << 20

    /// A relation file by the WAL's block map: only the blocks the WAL named below `tail`, and
    /// every block from `tail` to the end of the file (new since the reference, or past a
    /// truncation); the rest comes from the reference. A named block past the file's end was cut
    /// by a truncation after this backup started, which replay repeats. A named block the WAL's
    /// last record of it left as a full-page image (`images`, by block in this file) is built from
    /// the image, not read. The whole file is not read, so its SHA-256 is not known (empty in the
    /// entry).
    static func copyNamedPages(_ file: DataDirectoryScan.FileItem, handle: PosixFile, reference old: BackupManifest.File,
                               named: [UInt32], tail: UInt32, images: [UInt32: WALPageImage] = [:], checksums: Bool = false,
                               incremental: IncrementalReference, into frames: FrameWriter,
                               packIndex: Int, pageCompressor: Compressor, buffer: inout [UInt8], verification: PageVerification?,
                               relation: PageChecksum.RelationFile?, counter: ByteCounter,
                               tally: ReadTally) async throws -> (BackupManifest.File, BackupManifest.PageFailure?)? {
        let pageSize = PageChecksum.pageSize
        let maxPages = buffer.count / pageSize
        let length = try handle.size()
        // Reads of consecutive named blocks, at most a buffer each; a block built from its image
        // is an entry of 0 pages.
        var reads = [(block: UInt32, pages: Int)]()
        let decompressor = images.isEmpty ? nil : Decompressor()
        let firstBlock = PageChecksum.relationFile(file.path)?.firstBlock ?? 0
        for b in named {
            if images[b] != nil {
                reads.append((b, 0))
            } else if let last = reads.last, last.pages > 0, last.block &+ UInt32(last.pages) == b, last.pages < maxPages {
                reads[reads.count - 1].pages += 1
            } else {
                reads.append((b, 1))
            }
        }
        var chunks = [BackupManifest.Chunk]()
        var runs = [BackupManifest.BlockRun]()
        var pending = [UInt8]()
        pending.reserveCapacity(FrameFormat.rawChunk)
        var badBlocks = [UInt32]()
        func flush() async throws {
            try await flushPages(&pending, into: frames, chunks: &chunks, packIndex: packIndex, compressor: pageCompressor)
        }
        var end: Int64 = 0, readBytes: Int64 = 0
        var next = 0, tailBlock = tail
        // The reads ahead are announced to the kernel (a window of `readAheadBytes`), so that
        // they are in flight together rather than one after the other.
        var advised = 0, advisedBytes: Int64 = 0
        while true {
            while advised < reads.count && advisedBytes < Self.readAheadBytes {
                let r = reads[advised]
                if r.pages > 0 { handle.willNeed(offset: Int64(r.block) * Int64(pageSize), length: Int64(r.pages * pageSize)) }
                advisedBytes += Int64(r.pages * pageSize)
                advised += 1
            }
            if next < reads.count { advisedBytes -= Int64(reads[next].pages * pageSize) }
            let inTail = next >= reads.count
            let (block, pages) = inTail ? (tailBlock, maxPages) : reads[next]
            next += 1
            let offset = Int64(block) * Int64(pageSize)
            if !inTail && offset >= length { continue }
            if !inTail, pages == 0, let image = images[block], let decompressor {
                if let last = runs.last, last.start &+ last.count == block {
                    runs[runs.count - 1].count += 1
                } else {
                    runs.append(.init(start: block, count: 1))
                }
                let at = pending.count
                pending.append(contentsOf: repeatElement(0, count: pageSize))
                try pending.withUnsafeMutableBytes {
                    try image.write(into: UnsafeMutableRawBufferPointer(rebasing: $0[at..<(at + pageSize)]), block: firstBlock &+ block,
                                    checksums: checksums, decompressor: decompressor)
                }
                tally.builtFromImage()
                end = max(end, offset + Int64(pageSize))
                if pending.count >= FrameFormat.rawChunk { try await flush() }
                continue
            }
            let n = try readVerified(handle, at: offset, length: pages * pageSize, into: &buffer, verification: verification,
                                     relation: relation, badBlocks: &badBlocks)
            tally.read(n, pages: (n + pageSize - 1) / pageSize)
            readBytes += Int64(n)
            try await counter.consume(Int64(n))
            // Whole pages only, but for the last page of the file (an extension in progress).
            let keep = inTail ? n : n / pageSize * pageSize
            var at = 0
            while at < keep {
                let b = block &+ UInt32(at / pageSize)
                if let last = runs.last, last.start &+ last.count == b {
                    runs[runs.count - 1].count += 1
                } else {
                    runs.append(.init(start: b, count: 1))
                }
                let piece = min(pageSize, keep - at)
                buffer.withUnsafeBytes { pending.append(contentsOf: $0[at..<(at + piece)]) }
                at += piece
                if pending.count >= FrameFormat.rawChunk { try await flush() }
            }
            if keep > 0 { end = max(end, offset + Int64(keep)) }
            if inTail {
                if n < pages * pageSize { break }
                tailBlock &+= UInt32(pages)
            }
        }
        try await flush()
        // What was not read counts as done for the progress report.
        counter.add(max(0, file.size - readBytes))
        let size = max(length, end)
        let failure = relation.flatMap { r in badBlocks.isEmpty ? nil : BackupManifest.PageFailure(path: file.path, fileNode: r.fileNode, fork: r.fork, blocks: badBlocks) }
        if runs.isEmpty && size == old.size {
            return (BackupManifest.File(path: file.path, size: size, mode: file.mode, mtime: file.mtime, sha256: old.sha256, chunks: [],
                                        base: incremental.id), failure)
        }
        return (BackupManifest.File(path: file.path, size: size, mode: file.mode, mtime: file.mtime, sha256: "", chunks: chunks,
                                    base: incremental.id, blocks: runs), failure)
    }

    /// Reads the next buffer of a file at `offset`, verifying its pages' data checksums when asked.
    static func readVerified(_ handle: PosixFile, at offset: Int64, length: Int? = nil, into buffer: inout [UInt8],
                             verification: PageVerification?, relation: PageChecksum.RelationFile?, badBlocks: inout [UInt32]) throws -> Int {
        let want = min(length ?? buffer.count, buffer.count)
        let n = try buffer.withUnsafeMutableBytes { try handle.pread(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<want]), offset: offset) }
        if n > 0, let relation, let verification {
            try buffer.withUnsafeBytes { all in
                try verifyPages(UnsafeRawBufferPointer(rebasing: all[0..<n]), fileOffset: offset, relation: relation,
                                startLSN: verification.startLSN, file: handle, into: &badBlocks)
            }
        }
        return n
    }

    /// Checks every whole page of `data` (read at `fileOffset`); a page that fails and was last
    /// written before the backup started is read again from the file, and reported if it still fails.
    static func verifyPages(_ data: UnsafeRawBufferPointer, fileOffset: Int64, relation: PageChecksum.RelationFile, startLSN: LSN,
                            file: PosixFile, into bad: inout [UInt32]) throws {
        let size = PageChecksum.pageSize
        var offset = 0
        while offset + size <= data.count {
            let page = UnsafeRawBufferPointer(rebasing: data[offset..<(offset + size)])
            let block = relation.firstBlock &+ UInt32((fileOffset + Int64(offset)) / Int64(size))
            if !PageChecksum.verifies(page, block: block), PageChecksum.lsn(page) < startLSN {
                var again = [UInt8].scratch(count: size)
                let got = try again.withUnsafeMutableBytes { try file.pread(into: $0, offset: fileOffset + Int64(offset)) }
                let stillBad = again.withUnsafeBytes { p -> Bool in
                    guard got == size else { return false }  // truncated meanwhile: not a corruption
                    return !PageChecksum.verifies(p, block: block) && PageChecksum.lsn(p) < startLSN
                }
                if stillBad { bad.append(block) }
            }
            offset += size
        }
    }
}
