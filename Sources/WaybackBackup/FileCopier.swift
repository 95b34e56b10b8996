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
}

/// Data checksum verification during the copy: pages whose LSN is at or after the backup start
/// are being written concurrently (and are restored from WAL by recovery), so only older pages
/// can be reported; a page that fails is read again once before it is reported, in case the first
/// read saw a write in progress.
struct PageVerification: Sendable {
    var startLSN: LSN
}

/// Hands out files to workers, largest first, so the big relation segments start early and the
/// small files fill the gaps; `global/pg_control` last, as pg_basebackup does.
final class WorkQueue: Sendable {
    private let state: Mutex<(items: [DataDirectoryScan.FileItem], next: Int)>
    init(_ items: [DataDirectoryScan.FileItem]) {
        state = Mutex((items.sorted { a, b in
            let al = a.path == "global/pg_control", bl = b.path == "global/pg_control"
            if al != bl { return bl }
            return a.size > b.size
        }, 0))
    }
    func next() -> DataDirectoryScan.FileItem? {
        state.withLock { s in
            guard s.next < s.items.count else { return nil }
            defer { s.next += 1 }
            return s.items[s.next]
        }
    }
}

/// One worker's output: its packs and the files it stored in them (chunks name the pack by index
/// into `packs`).
struct WorkerOutput: Sendable {
    var worker: Int
    var packs: [BackupManifest.StoredObject] = []
    var files: [BackupManifest.File] = []
    var pageFailures: [BackupManifest.PageFailure] = []
}

extension FullBackup {
    /// Copies every file through `parallelism` workers; each reads a file in 1 MiB frames, hashes,
    /// compresses and appends them to its current pack object, which it closes after
    /// `packTargetBytes` at a file boundary. Memory: one frame buffer and one compressor per worker.
    static func copyFiles(_ scan: DataDirectoryScan, id: BackupID, config: BackupConfiguration, catalog: Catalog,
                          verification: PageVerification?, logger: Logger, progress: ProgressHandler?) async throws -> CopyResult {
        let queue = WorkQueue(scan.files)
        let counter = ByteCounter()
        let total = scan.files.reduce(Int64(0)) { $0 + $1.size }
        let outputs = try await withProgress(phase: "backup \(id)", total: total, counter: counter, interval: 2, handler: progress) {
            try await withThrowingTaskGroup(of: WorkerOutput.self) { group in
                for w in 0..<config.parallelism {
                    group.addTask {
                        try await runWorker(w, queue: queue, id: id, config: config, catalog: catalog, verification: verification, counter: counter)
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
                          verification: PageVerification?, counter: ByteCounter) async throws -> WorkerOutput {
        var out = WorkerOutput(worker: worker)
        let compressor = Compressor(config.compression)
        var buffer = [UInt8].scratch(count: FrameFormat.rawChunk)
        var pending = queue.next()
        var sequence = 0
        while let first = pending {
            let name = RepositoryLayout.packName(worker: worker, sequence: sequence)
            let packIndex = out.packs.count
            sequence += 1
            var filesInPack = [BackupManifest.File]()
            let (size, sha): (Int64, String) = try await config.repository.driver.withWriter(catalog.layout.objectKey(id, name), options: WriteOptions()) { writer in
                let frames = FrameWriter(writer: writer)
                var item: DataDirectoryScan.FileItem? = first
                while let file = item {
                    if let (entry, failure) = try await copyOne(file, into: frames, packIndex: packIndex, compressor: compressor, buffer: &buffer,
                                                                 verification: verification, counter: counter) {
                        filesInPack.append(entry)
                        if let failure { out.pageFailures.append(failure) }
                    }
                    item = nil
                    if frames.offset < config.packTargetBytes { item = queue.next() }
                    if item == nil && frames.offset < config.packTargetBytes { break }
                }
                return (frames.offset, frames.finalizeSHA256())
            }
            out.packs.append(.init(name: name, size: size, sha256: sha))
            out.files += filesInPack
            pending = queue.next()
        }
        return out
    }

    /// Copies one file (verifying the data checksums of a relation file's pages with
    /// `verification`); nil when it vanished before it could be opened (dropped meanwhile).
    static func copyOne(_ file: DataDirectoryScan.FileItem, into frames: FrameWriter, packIndex: Int, compressor: Compressor,
                        buffer: inout [UInt8], verification: PageVerification?,
                        counter: ByteCounter) async throws -> (BackupManifest.File, BackupManifest.PageFailure?)? {
        let handle: PosixFile
        do { handle = try PosixFile.openForReading(file.absolutePath) } catch let e as WaybackError where e.code == .notFound {
            return nil
        }
        defer { try? handle.close() }
        var hasher = SHA256Hasher()
        var chunks = [BackupManifest.Chunk]()
        var size: Int64 = 0
        let relation = verification != nil ? PageChecksum.relationFile(file.path) : nil
        var badBlocks = [UInt32]()
        while true {
            let n = try buffer.withUnsafeMutableBytes { try handle.readFully(into: $0) }
            if n == 0 { break }
            if let relation, let verification {
                try buffer.withUnsafeBytes { all in
                    try verifyPages(UnsafeRawBufferPointer(rebasing: all[0..<n]), fileOffset: size, relation: relation,
                                    startLSN: verification.startLSN, file: handle, into: &badBlocks)
                }
            }
            let frame = try buffer.withUnsafeBytes { all -> [UInt8] in
                let plain = UnsafeRawBufferPointer(rebasing: all[0..<n])
                hasher.update(plain)
                return try FrameFormat.encode(plain, compressor: compressor)
            }
            let loc = try await frames.append(frame: frame)
            chunks.append(.init(object: packIndex, offset: loc.offset, length: loc.length, raw: n))
            size += Int64(n)
            counter.add(Int64(n))
            if n < buffer.count { break }
        }
        let entry = BackupManifest.File(path: file.path, size: size, mode: file.mode, mtime: file.mtime,
                                        sha256: hasher.finalizeHex(), chunks: chunks)
        guard let relation, !badBlocks.isEmpty else { return (entry, nil) }
        return (entry, BackupManifest.PageFailure(path: file.path, fileNode: relation.fileNode, fork: relation.fork, blocks: badBlocks))
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
                let stillBad = try again.withUnsafeBytes { p -> Bool in
                    guard got == size else { return false }  // truncated meanwhile: not a corruption
                    return !PageChecksum.verifies(p, block: block) && PageChecksum.lsn(p) < startLSN
                }
                if stillBad { bad.append(block) }
            }
            offset += size
        }
    }
}
