import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What `wal-push` and `wal-fetch` need.
public struct ArchiveConfiguration: Sendable {
    /// What reads come from: the one repository, or all of them with fallback.
    public var repository: Repository
    /// The repositories `wal-push` writes before it returns, first one first (each on its own).
    public var syncRepositories: [Repository]
    /// Names of the repositories `wal-push` feeds through the spool (`AsyncSpool`).
    public var asyncRepositories: [String]
    public var cluster: String
    public var compression: CompressionSettings
    public var parallelism: Int
    /// Segments `wal-fetch` fetches ahead (0: none), and how to start the background prefetcher:
    /// the argument vector before `<from> <count> <spool>` (`[wayback, --config, F, wal-prefetch]`).
    public var prefetchSegments: Int
    public var prefetchCommand: [String]
    /// The spool of asynchronous repositories, its limit, and how to start the drainer.
    public var spoolPath: String
    public var spoolLimitBytes: Int64
    public var drainCommand: [String]
    /// Where the warnings go (a queue falling behind, a repository that could not be read).
    public var events: EventLog

    public init(repository: Repository, syncRepositories: [Repository]? = nil, asyncRepositories: [String] = [],
                cluster: String, compression: CompressionSettings, parallelism: Int,
                prefetchSegments: Int = 0, prefetchCommand: [String] = [],
                spoolPath: String = "", spoolLimitBytes: Int64 = 4 << 30, drainCommand: [String] = [], events: EventLog) {
        self.events = events
        self.repository = repository
        self.syncRepositories = syncRepositories ?? [repository]
        self.asyncRepositories = asyncRepositories
        self.cluster = cluster
        self.compression = compression
        self.parallelism = max(1, parallelism)
        self.prefetchSegments = prefetchSegments
        self.prefetchCommand = prefetchCommand
        self.spoolPath = spoolPath
        self.spoolLimitBytes = spoolLimitBytes
        self.drainCommand = drainCommand
    }
}

public enum PushOutcome: Sendable, Equatable {
    /// Stored now.
    case stored(bytes: Int64)
    /// The same content was already in the archive (PostgreSQL retried a push that had succeeded).
    case alreadyArchived
    /// The daemon had stored it ahead (`PushAhead`), and the object checked out.
    case storedAhead(bytes: Int64)
}

/// `archive_command` and `restore_command`: one WAL file in, one out.
public enum WALArchive {
    /// Stores one WAL file (segment, partial segment, `.history` or `.backup` file) durably in every
    /// synchronous repository (the first one first), then queues it for the asynchronous ones.
    /// Idempotent per repository: the same content already stored is success; other content under
    /// the same name is refused with `.conflict` (PostgreSQL keeps the file and retries). When the
    /// first repository has it but a later synchronous one fails, throws `.replica`.
    ///
    /// `queueAsync: false` leaves the asynchronous repositories to the next push of the same file
    /// (a backup that pushes its stop segment ahead of PostgreSQL's archiver).
    public static func push(path: String, configuration: ArchiveConfiguration, queueAsync: Bool = true, logger: Logger) async throws -> PushOutcome {
        let fileName = FileSystem.lastComponent(path)
        guard let name = WALFileName(fileName) else {
            throw WaybackError(.usage, "'\(fileName)' is not a WAL file name; archive_command must be 'wayback wal-push %p'")
        }
        let first = configuration.syncRepositories[0]
        let file = try openWAL(path)

        // With the daemon pushing ahead, the segment is usually stored already: check and return.
        var claim: SegmentClaim?
        defer { claim?.release() }
        if name.kind == .segment {
            let ahead = PushAhead(pgWAL: FileSystem.parentPath(path))
            if ahead.daemonRunning {
                if let outcome = try await ahead.take(name, file: file, configuration: configuration, logger: logger) {
                    if queueAsync {
                        queueForAsyncRepositories(fileName, configuration: configuration, segmentSize: try PushAhead.identity(file.fd, path: path).size)
                    }
                    return outcome
                }
                // Storing it here: the daemon leaves it alone meanwhile.
                claim = SegmentClaim.take(ahead.claimPath(name))
            }
        }

        let binding = try await Catalog(repository: first, cluster: configuration.cluster).requireBinding()
        // A WAL segment is the unit PostgreSQL hands us; it is read whole (16 MiB by default) so that
        // hashing and compressing its frames can run in parallel.
        let size = Int(try FileSystem.status(path, followLinks: true)?.size ?? 0)
        if name.kind == .segment || name.kind == .partial {
            try checkSegmentHeader(file, path: path, binding: binding, configuration: configuration)
        }

        if name.kind == .history || name.kind == .backupHistory {
            guard size <= ArchivedTextFile.maximumSize else {
                throw WaybackError(.corrupt, "\(fileName) has \(size) bytes, too many for a \(name.kind == .history ? "timeline" : "backup") history file; refusing to archive it")
            }
            let content = try readWhole(file, size: size)
            if name.kind == .history {
                try ArchivedTextFile.validateHistory(content, timeline: name.timeline)
            } else {
                try ArchivedTextFile.validateBackupHistory(content, name: name, segmentSize: binding.walSegmentSize)
            }
        }

        var object: [UInt8]?
        var outcome = PushOutcome.alreadyArchived
        var failed = [(String, WaybackError)]()
        for (i, repo) in configuration.syncRepositories.enumerated() {
            do {
                let o = try await store(file: file, size: size, name: name, in: repo, cluster: configuration.cluster, object: &object,
                                        configuration: configuration)
                if i == 0 { outcome = o }
            } catch let e as WaybackError where i > 0 && e.code != .conflict {
                failed.append((repo.name, e))
            }
        }
        if queueAsync { queueForAsyncRepositories(fileName, configuration: configuration, segmentSize: Int64(binding.walSegmentSize)) }
        if let (repo, e) = failed.first {
            throw WaybackError(.replica, "WAL file \(fileName) is stored in '\(first.name)' but not in '\(repo)' (\(e.message)); PostgreSQL will push it again, or set wal_push: async for '\(repo)'")
        }
        return outcome
    }

    /// Queues the file for the asynchronous repositories.
    static func queueForAsyncRepositories(_ fileName: String, configuration: ArchiveConfiguration, segmentSize: Int64) {
        guard !configuration.asyncRepositories.isEmpty else { return }
        AsyncSpool(path: configuration.spoolPath, limitBytes: configuration.spoolLimitBytes)
            .enqueue(fileName, repositories: configuration.asyncRepositories, segmentSize: segmentSize,
                     drainCommand: configuration.drainCommand, events: configuration.events)
    }

    /// Refuses a segment that is not one, or belongs to another cluster than the repository's.
    static func checkSegmentHeader(_ file: PosixFile, path: String, binding: ClusterBinding, configuration: ArchiveConfiguration) throws {
        var head = [UInt8](repeating: 0, count: WALSegmentHeader.length)
        let n = try head.withUnsafeMutableBytes { try file.pread(into: $0, offset: 0) }
        let header = head.withUnsafeBytes { n == head.count ? WALSegmentHeader.parse($0) : nil }
        guard let header else {
            throw WaybackError(.corrupt, "\(path) does not start with a WAL page header; it is not a WAL segment")
        }
        guard header.systemIdentifier == binding.systemID else {
            throw WaybackError(.repository, "\(FileSystem.lastComponent(path)) belongs to the cluster with system identifier \(header.systemIdentifier), but cluster '\(configuration.cluster)' in \(configuration.syncRepositories[0].description) is bound to \(binding.systemIdentifier); check cluster.name in the configuration")
        }
    }

    /// Stores the file in one repository unless it is there (then compares).
    static func store(file: PosixFile, size: Int, name: WALFileName, in repo: Repository, cluster: String, object: inout [UInt8]?,
                      configuration: ArchiveConfiguration) async throws -> PushOutcome {
        let key = RepositoryLayout(cluster: cluster).walKey(name)
        let fileName = name.description
        // No look-up first: create-if-absent answers whether it is there (one request less on
        // S3), and a repeated push (the rare case) pays the compression it did not need.
        if object == nil {
            let frames = try await encodeFrames(fd: file.fd, path: file.path, size: size, configuration: configuration)
            object = WALObject.encode(size: Int64(size), frames: frames)
        }
        do {
            try await repo.driver.writeAll(key, object!, options: WriteOptions(ifAbsent: true))
            return .stored(bytes: Int64(object!.count))
        } catch let e as WaybackError where e.code == .conflict {
            // Another push of the same name won the race: compare with what it stored.
            return try await compare(try readWhole(file, size: size), key: key, name: fileName, repository: repo)
        }
    }

    /// Compares new content with an archived object byte for byte (only on a repeated push, so the
    /// cost does not matter, and the answer does not depend on compression settings).
    static func compare(_ content: [UInt8], key: String, name: String, repository: Repository) async throws -> PushOutcome {
        var same = true
        let header = try await WALObject.read(repository.driver, key: key, name: name) { plain, offset in
            if offset == 0 { same = true }
            guard same else { return }
            let end = Int(offset) + plain.count
            if end > content.count {
                same = false
            } else {
                same = content.withUnsafeBytes { memcmp($0.baseAddress! + Int(offset), plain.baseAddress!, plain.count) == 0 }
            }
        }
        if same && header.size == Int64(content.count) { return .alreadyArchived }
        throw WaybackError(.conflict, "WAL file \(name) is already archived in \(repository.description) with different content; refusing to overwrite it. Two clusters may be archiving into the same cluster name: check cluster.name")
    }

    /// The encoded frames of the file: `parallelism` workers each read (pread) and compress every
    /// n-th 1 MiB frame, so reading overlaps compression and no whole-file buffer is needed.
    static func encodeFrames(fd: Int32, path: String, size: Int, configuration: ArchiveConfiguration) async throws -> [[UInt8]] {
        let chunk = FrameFormat.rawChunk
        let frameCount = max(1, (size + chunk - 1) / chunk)
        let workers = min(configuration.parallelism, frameCount)
        let settings = configuration.compression
        return try await withThrowingTaskGroup(of: (Int, [[UInt8]]).self) { group in
            for w in 0..<workers {
                group.addTask {
                    let compressor = Compressor(settings)
                    var buffer = [UInt8].scratch(count: chunk)
                    var out = [[UInt8]]()
                    var i = w
                    while i < frameCount {
                        let want = min(chunk, size - i * chunk)
                        let got = try buffer.withUnsafeMutableBytes { b -> Int in
                            let n = pread(fd, b.baseAddress, want, off_t(i * chunk))
                            if n < 0 { throw PosixError.make(errno, "read", path) }
                            return n
                        }
                        guard got == want else { throw WaybackError(.io, "\(path) changed size while it was read") }
                        out.append(try buffer.withUnsafeBytes { try FrameFormat.encode(UnsafeRawBufferPointer(rebasing: $0[0..<got]), compressor: compressor) })
                        i += workers
                    }
                    return (w, out)
                }
            }
            var stripes = [[[UInt8]]](repeating: [], count: workers)
            for try await (w, frames) in group { stripes[w] = frames }
            return (0..<frameCount).map { stripes[$0 % workers][$0 / workers] }
        }
    }

    static func openWAL(_ path: String) throws -> PosixFile {
        do { return try PosixFile.openForReading(path) } catch let e as WaybackError where e.code == .notFound {
            throw WaybackError(.usage, "WAL file \(path) does not exist; archive_command must be 'wayback wal-push %p'")
        }
    }

    static func readWhole(_ file: PosixFile, size: Int) throws -> [UInt8] {
        var got = 0
        let buf = try [UInt8](unsafeUninitializedCapacity: size) { b, count in
            got = try file.pread(into: UnsafeMutableRawBufferPointer(b), offset: 0)
            count = got
        }
        guard got == size else { throw WaybackError(.io, "\(file.path) changed size while it was read") }
        return buf
    }

    /// Where `restore` put the file PostgreSQL asked for.
    public enum Delivery: Sendable {
        /// At the destination (`%p`).
        case destination
        /// In `pg_wal` under its own name, linked there by the prefetcher (see `Prefetch`):
        /// PostgreSQL must be told the file was not restored (exit 1), and then reads it from `pg_wal`.
        case pgWAL
    }

    /// `restore_command`: a segment comes from the prefetch spool when it is there; otherwise,
    /// during recovery, the prefetcher is started (unless one runs) from this segment and the
    /// segment taken from it, since it is the first the prefetcher fetches; otherwise, or when no
    /// prefetcher delivers it, from the archive. When the archive does not have a segment (the end
    /// of recovery) the spool is removed and `.notFound` thrown.
    @discardableResult
    public static func restore(name fileName: String, destination: String, configuration: ArchiveConfiguration,
                               logger: Logger) async throws -> Delivery {
        guard let name = WALFileName(fileName) else {
            throw WaybackError(.usage, "'\(fileName)' is not a WAL file name; restore_command must be 'wayback wal-fetch %f %p'")
        }
        let spool = Prefetch.spool(forDestination: destination)
        // Only for recovery, where PostgreSQL passes pg_wal/RECOVERYXLOG: a fetch to anywhere else
        // (a script copying segments out) must not leave a spool next to its file.
        let inPGWAL = FileSystem.lastComponent(FileSystem.parentPath(FileSystem.absolute(destination))) == "pg_wal" && name.kind == .segment
        let prefetching = inPGWAL && configuration.prefetchSegments > 0 && !configuration.prefetchCommand.isEmpty
        // Recovery is about to leave archive recovery, or to pick a timeline: what it replayed from
        // the spool must be durable first.
        if name.kind == .history && FileSystem.lastComponent(FileSystem.parentPath(FileSystem.absolute(destination))) == "pg_wal" {
            try Prefetch.syncPGWAL(FileSystem.parentPath(FileSystem.absolute(destination)))
        }
        if inPGWAL { Prefetch.prepare(spool, create: prefetching) }
        if prefetching { Prefetch.record(position: name, spool: spool) }
        // A segment in the spool is handed over even with prefetching off: the restore offers the
        // backup's own WAL there.
        var taken = inPGWAL ? Prefetch.take(name, spool: spool, destination: destination) : nil
        if prefetching {
            await Prefetch.start(configuration.prefetchCommand, from: name, count: configuration.prefetchSegments, spool: spool)
            let beyond = Prefetch.limit(spool).map { $0.timeline == name.timeline && name > $0 } ?? false
            if taken == nil, !beyond, await Prefetch.waitFor(name, spool: spool) {
                taken = Prefetch.take(name, spool: spool, destination: destination)
            }
        }
        if let taken {
            logger.debug("WAL file from the prefetch spool", metadata: ["wayback.segment": "\(fileName)", "in": "\(taken)"])
            return taken
        }
        do {
            _ = try await fetch(name: fileName, destination: destination, configuration: configuration, logger: logger)
        } catch let e as WaybackError where e.code == .notFound && inPGWAL {
            Prefetch.remove(spool)  // the end of recovery: nothing further to fetch
            throw e
        }
        return .destination
    }

    /// Fetches one WAL file into `destination` (written to a temporary name, then renamed), verifying
    /// its checksum; `startWriteback` hands each piece to the disk as it is written, without
    /// waiting. Throws `.notFound` when the archive does not have it: the normal end of recovery.
    public static func fetch(name fileName: String, destination: String, configuration: ArchiveConfiguration, logger: Logger,
                             startWriteback: Bool = false) async throws -> Int64 {
        guard let name = WALFileName(fileName) else {
            throw WaybackError(.usage, "'\(fileName)' is not a WAL file name; restore_command must be 'wayback wal-fetch %f %p'")
        }
        let catalog = Catalog(repository: configuration.repository, cluster: configuration.cluster)
        let key = catalog.walKey(name)
        let dest = FileSystem.absolute(destination)
        let tmp = FileSystem.parentPath(dest) + "/." + FileSystem.lastComponent(dest) + ".wayback-tmp-\(RunID.make())"
        try? FileSystem.remove(tmp)
        let file: PosixFile
        do { file = try PosixFile.create(tmp, mode: 0o600) } catch let e as WaybackError where e.code == .notFound {
            // Never exit 1 ("not archived") for a destination that cannot be written.
            throw WaybackError(.io, "cannot write \(destination): the directory \(FileSystem.parentPath(dest)) does not exist; restore_command must be 'wayback wal-fetch %f %p'")
        }
        do {
            let header = try await WALObject.read(configuration.repository.driver, key: key, name: fileName) { plain, offset in
                try file.pwrite(plain, offset: offset)
                // The prefetcher's segments: the disk gets each piece at once, so their later sync
                // has little left to wait for.
                if startWriteback { file.startWriteback(offset: offset, length: Int64(plain.count)) }
            }
            try file.truncate(header.size)
            try file.close()
            try FileSystem.rename(tmp, dest)
            logger.debug("fetched WAL file", metadata: ["wayback.segment": "\(fileName)"])
            return header.size
        } catch let e as WaybackError where e.code == .notFound {
            try? file.close(); try? FileSystem.remove(tmp)
            // PostgreSQL takes "not archived" for the end of the archive and ends recovery there:
            // say it only when every repository is readable and holds this cluster.
            try await catalog.requireBoundEverywhere()
            throw WaybackError(.notFound, "WAL file \(fileName) is not in the archive of \(configuration.repository.description)")
        } catch {
            try? file.close(); try? FileSystem.remove(tmp)
            throw error
        }
    }
}
