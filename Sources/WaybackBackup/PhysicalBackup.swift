import Foundation
import Logging
import Synchronization
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What `wayback backup` needs.
public struct BackupConfiguration: Sendable {
    public var repository: Repository
    public var cluster: String
    public var pgdata: String
    public var connection: ConnectionSettings
    public var compression: CompressionSettings
    /// How the changed pages of a diff or incr are compressed (nil: as `compression`).
    public var pageCompression: CompressionSettings?
    public var parallelism: Int
    public var lockDirectory: String
    /// How long to wait for the backup's WAL to reach the archive.
    public var archiveWaitSeconds: Double
    /// Request an immediate checkpoint at backup start.
    public var fastCheckpoint: Bool
    /// Close a pack object after this many stored bytes (at a file boundary).
    public var packTargetBytes: Int64
    /// Pages that fail their data checksum make the backup fail (instead of a warning).
    public var failOnPageChecksum = false
    /// full, diff (on the newest full) or incr (on the newest backup).
    public var type: BackupType = .full
    /// Continue an interrupted backup of the same type (false: `--no-resume`, start over).
    public var resume = true
    /// Read at most this many bytes per second from the data directory (nil: as fast as it goes).
    public var maxRateBytes: Int64?
    /// The most backups a restore chain may hold (full + diff/incr); a longer one makes the next
    /// backup a diff or full.
    public var maxChainLength = 30
    /// Where the backup's warnings go (damaged pages, a type decided otherwise, leftovers).
    public var events: EventLog
    /// Where the backup's `backup_logs` row is written (nil: nowhere).
    public var backupLog: BackupLog?
    /// Local repositories (name, path) whose free space must hold the backup's expected size.
    public var localRepositories: [(name: String, path: String)] = []
    /// Back up even when the expected size does not fit (`--force`).
    public var force = false
    /// Pin the backup once it is complete (`backup --pin`): retention never expires it.
    public var pin = false
    /// Count every table's rows in one snapshot right after `pg_backup_stop` (`backup.record_row_counts`).
    public var recordRowCounts = false
    /// How a diff/incr finds the changed pages (`backup.incr_method`).
    public var incrMethod = IncrementalMethod.wal
    /// Stores one complete WAL segment of `pg_wal` (its path) as `wal-push` does: create-if-absent
    /// in each synchronous repository, compared with what is there. The backup pushes its stop
    /// segment itself with it (see `pushStopSegment`); nil: it waits for archive_command alone.
    public var pushWAL: (@Sendable (String) async throws -> Void)?

    public init(repository: Repository, cluster: String, pgdata: String, connection: ConnectionSettings,
                compression: CompressionSettings, parallelism: Int, lockDirectory: String,
                archiveWaitSeconds: Double = 120, fastCheckpoint: Bool = true, packTargetBytes: Int64 = 256 << 20,
                failOnPageChecksum: Bool = false, type: BackupType = .full, maxChainLength: Int = 30, resume: Bool = true,
                events: EventLog) {
        self.events = events
        self.failOnPageChecksum = failOnPageChecksum; self.type = type; self.maxChainLength = max(1, maxChainLength); self.resume = resume
        self.repository = repository; self.cluster = cluster; self.pgdata = pgdata; self.connection = connection
        self.compression = compression; self.parallelism = max(1, parallelism); self.lockDirectory = lockDirectory
        self.archiveWaitSeconds = archiveWaitSeconds; self.fastCheckpoint = fastCheckpoint; self.packTargetBytes = packTargetBytes
    }
}

/// A backup's one call of `pg_backup_stop`, started once (by the copy's last read, or by whoever
/// needs the result first), with the time it returned: the end of the backup, as close to the
/// stop record as can be (restores to a time use it).
final class BackupStopper: Sendable {
    private let session: PostgresSession
    private let clock: any WaybackClock
    private let task = Mutex<Task<(BackupStopResult, Date), any Error>?>(nil)

    init(session: PostgresSession, clock: any WaybackClock) { self.session = session; self.clock = clock }

    func start() {
        task.withLock { t in
            if t == nil { t = Task { [session, clock] in (try await session.backupStop(), clock.now) } }
        }
    }

    func result() async throws -> (BackupStopResult, Date) {
        start()
        return try await task.withLock { $0! }.value
    }
}

/// An online, non-exclusive base backup: full, or diff/incr at page level on an earlier backup.
public enum PhysicalBackup {
    public static func run(_ config: BackupConfiguration, clock: any WaybackClock = SystemClock(),
                           logger: Logger, progress: ProgressHandler? = nil) async throws -> BackupManifest {
        if getuid() == 0 {
            throw WaybackError(.cluster, "wayback backup must not run as root: it reads PGDATA as the PostgreSQL OS user and stores files that user can restore; run it as that user, e.g. 'sudo -u postgres wayback backup'")
        }
        let catalog = Catalog(repository: config.repository, cluster: config.cluster)
        let session = try await PostgresSession.connect(config.connection, logger: logger)
        do {
            let facts = try await session.facts()
            let lock = try RepositoryLock.acquire(directory: config.lockDirectory, cluster: config.cluster, systemIdentifier: facts.systemIdentifier,
                                                  repository: config.repository, command: "backup")
            defer { lock.release() }
            let manifest = try await run(config, session: session, facts: facts, catalog: catalog, clock: clock, logger: logger, progress: progress)
            await session.close()
            return manifest
        } catch {
            await session.close()
            throw error
        }
    }

    static func run(_ config: BackupConfiguration, session: PostgresSession, facts: ClusterFacts, catalog: Catalog, clock: any WaybackClock,
                    logger: Logger, progress: ProgressHandler?) async throws -> BackupManifest {
        let binding = try await catalog.requireBinding(systemIdentifier: facts.systemIdentifier)
        try checkCluster(facts, config: config)
        // Copied from the directory it was proven to be (symbolic links resolved).
        var config = config
        config.pgdata = FileSystem.realPath(config.pgdata) ?? config.pgdata
        // PostgreSQL's start checkpoint is an incr's longest wait (it writes the buffers the
        // transactions since the last checkpoint left dirty): it is requested first, and the
        // repository is read while it runs. What the early decoding of the WAL needs from the
        // session is asked before, since the session is busy until the start returns.
        let tablespaces = try await session.tablespaces()
        let flushed = try? await session.flushedWALLSN()
        let startTime = clock.now
        let starting = Task { [config] in
            try await session.backupStart(label: "wayback \(config.cluster) \(Format.timestamp(startTime))", fast: config.fastCheckpoint)
        }
        // The data directory's metadata is read into the kernel's cache meanwhile, so that the
        // scan after the start (it must come after) finds it there.
        let pgdata = config.pgdata
        async let warmed: Void = { _ = try? DataDirectoryScan.scan(pgdata: pgdata) }()
        let prepared: Prepared
        do {
            prepared = try await prepare(config, facts: facts, flushed: flushed, starting: starting, catalog: catalog, startTime: startTime,
                                         clock: clock, logger: logger)
            await warmed
        } catch {
            await warmed
            // The backup PostgreSQL started for this run is stopped (the start is waited for: it
            // cannot be called off half way).
            if (try? await starting.value) != nil { _ = try? await session.backupStop() }
            throw error
        }
        let (decision, reference, resume, id) = (prepared.decision, prepared.reference, prepared.resume, prepared.id)
        defer { prepared.early.stop() }
        await config.backupLog?.started(id, type: decision.type, at: startTime)
        do {
            let manifest = try await copy(id, config: config, session: session, starting: starting, early: prepared.early, tablespaces: tablespaces,
                                          catalog: catalog, facts: facts, binding: binding, decision: decision, reference: reference,
                                          resume: resume, startTime: startTime, clock: clock, logger: logger, progress: progress)
            let failed = Set((catalog.repository.driver as? ReplicatedStorage)?.failures.map(\.repository) ?? [])
            await config.backupLog?.finished(manifest, holders: catalog.repository.members.map(\.name).filter { !failed.contains($0) })
            return manifest
        } catch {
            // Recorded even when the backup was stopped by cancellation (a daemon's shutdown):
            // the write runs in a task of its own, which that cancellation does not reach.
            if let log = config.backupLog {
                let message = error is CancellationError ? "stopped before it finished (the daemon was shut down); the next backup resumes it"
                                                         : (error as? WaybackError)?.message ?? String(describing: error)
                let type = decision.type
                await Task.detached { await log.failed(id, type: type, at: startTime, error: message) }.value
            }
            throw error
        }
    }

    /// What a backup decides from the repository before it copies: its type and reference, an
    /// interrupted backup it continues, and its id.
    struct Prepared {
        let decision: BackupChains.Decision
        let reference: BackupManifest?
        let resume: ResumePoint?
        let id: BackupID
        let early: EarlyDecoding
    }

    /// An incr's WAL decoding begun before its start returns (see `earlyChanges`), and the
    /// read-ahead of the blocks the decoding finds (also those of the rest, decoded after the
    /// start); `stop` ends both.
    struct EarlyDecoding: Sendable {
        let task: Task<(WALBlockMap, Double), Never>?
        let readAhead: BlockReadAhead?
        func stop() {
            task?.cancel()
            readAhead?.finish()
        }
    }

    /// Reads and tidies the repository while PostgreSQL's start checkpoint runs; an incr's WAL
    /// decoding begins as soon as its reference is known.
    static func prepare(_ config: BackupConfiguration, facts: ClusterFacts, flushed: LSN?, starting: Task<LSN, any Error>, catalog: Catalog,
                        startTime: Date, clock: any WaybackClock, logger: Logger) async throws -> Prepared {
        let decision = try await decideType(config, facts: facts, catalog: catalog)
        var reference: BackupManifest?
        if let r = decision.reference { reference = try await catalog.manifest(r) }
        // An incr's WAL up to the last whole segment flushed before the start is decoded from here
        // on, while the start checkpoint runs and the repository is read; the rest once the start
        // is known. The blocks it finds are read ahead into the kernel's cache meanwhile.
        let readAhead = reference != nil && config.incrMethod != .scan ? BlockReadAhead(pgdata: config.pgdata, after: starting) : nil
        let early = EarlyDecoding(task: earlyChanges(since: reference, decision: decision, config: config, facts: facts, flushed: flushed,
                                                     catalog: catalog, readAhead: readAhead),
                                  readAhead: readAhead)
        do {
            return try await prepareRest(config, decision: decision, reference: reference, early: early, catalog: catalog, startTime: startTime,
                                         clock: clock, logger: logger)
        } catch {
            early.stop()
            throw error
        }
    }

    /// The rest of `prepare`, while the decoding runs: leftovers, free space, resume, id.
    static func prepareRest(_ config: BackupConfiguration, decision: BackupChains.Decision, reference: BackupManifest?, early: EarlyDecoding,
                            catalog: Catalog, startTime: Date, clock: any WaybackClock, logger: Logger) async throws -> Prepared {
        // Unfinished uploads and temporary files a crash left more than a day ago.
        for member in catalog.repository.members {
            do {
                let n = try await member.driver.removeLeftovers(olderThan: clock.now.addingTimeInterval(-86400))
                if n > 0 { logger.info("removed \(n) leftovers of interrupted writes from \(member.description)") }
            } catch {
                config.events.emit(.warning, .cleanup, "cannot clean up leftovers in \(member.description): \(error)", repository: member.name)
            }
        }

        if !config.force { try await requireSpace(config, type: decision.type, catalog: catalog) }
        if let note = decision.note { config.events.emit(.warning, .backupDecision, note) }
        // An interrupted backup of the same kind is continued (its folder and id kept); every
        // other leftover folder is removed.
        let resume = config.resume ? try await ResumePoint.find(catalog: catalog, decision: decision, events: config.events, logger: logger) : nil
        // Unfinished writes in backup folders are the killed backup's (the lock keeps others out).
        _ = try? await catalog.repository.driver.removeLeftovers(olderThan: clock.now, prefix: catalog.layout.backupsPrefix)
        _ = try await catalog.removeIncompleteBackups(except: resume?.id, logger: logger)
        let id: BackupID
        if let resume { id = resume.id } else { id = try await uniqueID(catalog: catalog, start: startTime, type: decision.type) }
        return Prepared(decision: decision, reference: reference, resume: resume, id: id, early: early)
    }

    /// The backup proper, once its id is chosen: start, copy, stop, WAL, manifest.
    static func copy(_ id: BackupID, config: BackupConfiguration, session: PostgresSession, starting: Task<LSN, any Error>, early: EarlyDecoding,
                     tablespaces: [TablespaceInfo], catalog: Catalog, facts: ClusterFacts, binding: ClusterBinding,
                     decision: BackupChains.Decision, reference: BackupManifest?, resume: ResumePoint?,
                     startTime: Date, clock: any WaybackClock, logger: Logger, progress: ProgressHandler?) async throws -> BackupManifest {
        var log = logger
        log[metadataKey: "wayback.backup"] = "\(id)"
        log.info("backup starting", metadata: ["wayback.cluster": "\(config.cluster)", "type": "\(decision.type)",
                                               "reference": "\(decision.reference.map(\.rawValue) ?? "none")"])

        let startLSN = try await starting.value
        log.info("pg_backup_start done", metadata: ["lsn": "\(startLSN)"])

        let copyStart = monotonicSeconds()
        // pg_backup_stop is called as soon as the workers have read the last file, so that the
        // stop segment's archiving overlaps the packs being made durable.
        let stopping = BackupStopper(session: session, clock: clock)
        var copied: CopyResult
        var reused = [PackIndex.Entry]()
        let tally = ReadTally()
        var fallbacks = [String]()
        var walDecoding: (records: Int, seconds: Double, reused: [BackupID])?
        var changes: ChangedBlocks?
        do {
            try facts.requireStartCheckpoint(in: config.pgdata, startLSN: startLSN)
            var scan = try DataDirectoryScan.scan(pgdata: config.pgdata)
            if let resume {
                (reused, scan.files) = resume.split(scan.files)
                log.info("resuming interrupted backup", metadata: ["reused": "\(reused.count)", "to copy": "\(scan.files.count)"])
            }
            // Data checksums are verified when the cluster has them (8 KiB pages, the only size
            // PostgreSQL is normally built with).
            let verify = facts.dataChecksums && binding.blockSize == PageChecksum.pageSize ? PageVerification(startLSN: startLSN) : nil
            var incremental = reference.map { IncrementalReference($0, pageLevel: facts.hintsLogged && $0.hintsLogged == true) }
            if let r = reference, incremental != nil {
                (incremental!.method, incremental!.changes, fallbacks, walDecoding) = await changedBlocks(since: r, start: startLSN, config: config,
                    facts: facts, pageLevel: incremental!.pageLevel, reuseMaps: decision.type == .diff, early: early.task, readAhead: early.readAhead,
                    catalog: catalog, logger: log)
                changes = incremental!.changes
            }
            copied = try await copyFiles(scan, id: id, config: config, catalog: catalog, verification: verify, incremental: incremental,
                                         packs: PackContext(type: decision.type, reference: decision.reference, run: resume?.run ?? 0),
                                         tally: tally, readsDone: { stopping.start() }, logger: log, progress: progress)
            if let resume { copied = copied.adding(reused, packs: resume.packs) }
            let misses = tally.misses
            if misses.count > 0 {
                throw WaybackError(.internal, "backup.incr_method is both and the WAL's block map missed \(misses.count) changed page\(misses.count == 1 ? "" : "s") the scan found (\(misses.first.prefix(5).joined(separator: "; "))\(misses.count > 5 ? "; ..." : "")); the backup was not kept. This is a bug in Wayback's reading of the WAL: set backup.incr_method: scan and report it with this message")
            }
            if !copied.pageFailures.isEmpty {
                config.events.emit(.error, .damagedPages, PageFailureReport.summary(copied.pageFailures), backup: id.rawValue)
                if config.failOnPageChecksum {
                    throw WaybackError(.pageChecksum, "\(PageFailureReport.summary(copied.pageFailures)); the backup was not kept (backup.page_checksum_failures: fail). Restore the damaged relations from an earlier backup or rebuild them (REINDEX for an index), then back up again")
                }
            }
        } catch {
            _ = try? await stopping.result()
            throw error
        }
        let copySeconds = monotonicSeconds() - copyStart
        let (stop, stopTime) = try await stopping.result()
        let label = try BackupLabel.parse(stop.backupLabel)
        log.info("pg_backup_stop done", metadata: ["lsn": "\(stop.stopLSN)"])
        // Row counts are taken while the backup's WAL reaches the archive.
        let counting: Task<RowCounts?, Never>? = config.recordRowCounts && !facts.isInRecovery ? Task {
            do {
                return try await RowCounts.take(config.connection, clock: clock, logger: log)
            } catch {
                config.events.emit(.warning, .backupDecision, "the row counts (backup.record_row_counts) could not be taken, so drills of backup \(id) will not compare them: \((error as? WaybackError)?.message ?? String(describing: error))", backup: id.rawValue)
                return nil
            }
        } : nil
        defer { counting?.cancel() }

        // The WAL from the start to the stop segment must be in the archive before the backup counts.
        let segSize = facts.walSegmentSize
        let firstSeg = startLSN.segmentNumber(segmentSize: segSize)
        let lastSeg = LSN(stop.stopLSN.value - 1).segmentNumber(segmentSize: segSize)
        let needed = (firstSeg...lastSeg).map { WALFileName(timeline: label.timeline, segmentNumber: $0, segmentSize: segSize) }
        if let push = config.pushWAL, !facts.isInRecovery {
            await pushStopSegment(needed.last!, segmentSize: segSize, push: push, pgdata: config.pgdata, catalog: catalog, logger: log)
        }
        try await waitForArchive(needed, catalog: catalog, session: session, timeout: config.archiveWaitSeconds, logger: log)
        // Copy those segments into the backup itself.
        var walCopies = [BackupManifest.WALCopy]()
        for name in needed {
            let src = catalog.walKey(name)
            let rel = RepositoryLayout.backupWALName(name)
            let (size, sha) = try await copyObject(from: src, to: catalog.layout.objectKey(id, rel), driver: config.repository.driver)
            walCopies.append(.init(name: name.description, object: rel, size: size, sha256: sha))
        }

        let manifest = BackupManifest(
            id: id, type: decision.type, reference: decision.reference, cluster: config.cluster, systemIdentifier: binding.systemIdentifier,
            pgVersionNumber: facts.versionNumber, walSegmentSize: segSize, dataChecksums: facts.dataChecksums,
            startTime: startTime, stopTime: stopTime, startLSN: startLSN, stopLSN: stop.stopLSN, timeline: label.timeline,
            startWAL: needed.first!.description, stopWAL: needed.last!.description, backupLabel: stop.backupLabel,
            tablespaceMap: stop.tablespaceMap,
            tablespaces: tablespaces.map { .init(oid: $0.oid, name: $0.name, location: $0.location) },
            compression: config.compression, objects: copied.objects + walCopies.map { .init(name: $0.object, size: $0.size, sha256: $0.sha256) },
            directories: copied.directories, files: copied.files, wal: walCopies, copySeconds: copySeconds)
        var final = manifest
        // The block map, kept for later diffs (complete maps only).
        if let map = changes?.map, map.complete {
            do {
                final.objects.append(try await BlockMapObject.write(map, backup: id, catalog: catalog, compression: config.compression))
            } catch {
                config.events.emit(.warning, .backupDecision, "the block map of backup \(id) could not be kept (a later diff decodes the WAL instead): \((error as? WaybackError)?.message ?? String(describing: error))", backup: id.rawValue)
            }
        }
        final.note = decision.note
        final.hintsLogged = facts.hintsLogged
        if resume != nil { final.resumed = .init(files: reused.count, bytes: reused.reduce(Int64(0)) { $0 + $1.file.size }) }
        final.pageChecksumFailures = copied.pageFailures.isEmpty ? nil : copied.pageFailures
        final.rowCounts = await counting?.value
        final.reading = .init(method: reference == nil ? nil : config.incrMethod, bytesRead: tally.bytes.load(ordering: .relaxed),
                              blocksRead: tally.blocks.load(ordering: .relaxed), blocksFromImages: tally.fromImages.load(ordering: .relaxed),
                              fallbacks: fallbacks.isEmpty ? nil : fallbacks,
                              walRecords: walDecoding?.records, walSeconds: walDecoding.map { ($0.seconds * 1000).rounded() / 1000 })
        if let reused = walDecoding?.reused, !reused.isEmpty { final.reading?.mapsReused = reused }
        if final.objects.contains(where: { $0.name == BlockMapObject.name }) { final.reading?.mapFrom = changes?.map.from }
        try await catalog.writeManifest(final)
        // Pack indexes (and packs a resumed backup did not use) are not needed any more.
        do {
            _ = try await catalog.removeUnlisted(id, keep: Set(final.objects.map(\.name)))
        } catch {
            config.events.emit(.warning, .cleanup, "could not remove the pack indexes of backup \(id): \(error)", backup: id.rawValue)
        }
        if config.pin { try await catalog.pin(id, until: nil, now: clock.now) }
        // The backup counts from its manifest on; the index only makes reading the state cheaper.
        await StatusIndex.refreshEach(catalog, known: [final], events: config.events)
        log.info("backup complete", metadata: ["bytes": "\(manifest.sizes.database)", "stored": "\(manifest.sizes.repository)"])
        return final
    }

    /// The method a diff/incr on `reference` uses, the WAL's block map from the reference's start to
    /// this backup's (`wal` and `both`), and why parts are scanned instead. The newest segments
    /// come from pg_wal (not archived yet at the start), the others from the archive.
    static func changedBlocks(since reference: BackupManifest, start: LSN, config: BackupConfiguration, facts: ClusterFacts, pageLevel: Bool,
                              reuseMaps: Bool, early: Task<(WALBlockMap, Double), Never>? = nil, readAhead: BlockReadAhead? = nil,
                              catalog: Catalog, logger: Logger) async -> (IncrementalMethod, ChangedBlocks?, [String], (records: Int, seconds: Double, reused: [BackupID])?) {
        let method = config.incrMethod
        guard method != .scan else { return (method, nil, [], nil) }
        var why: String?
        if !pageLevel {
            why = "neither data checksums nor wal_log_hints were on for backup \(reference.id) and this one, so hint-bit changes are not in the WAL: relation files are compared whole"
        } else if reference.timeline != facts.timeline {
            why = "the reference backup \(reference.id) is on timeline \(reference.timeline) and the cluster on \(facts.timeline): every relation file was scanned"
        }
        if let why {
            // A cluster without hint-bit logging is told once per backup in the log, not as a
            // warning every hour: its incrs always compare relation files whole.
            if pageLevel { config.events.emit(.warning, .backupDecision, why) } else { logger.info("\(why)") }
            return (method, nil, [why], nil)
        }
        let began = monotonicSeconds()
        // The kept maps of the backups since the reference (a diff's incrs), then the WAL after them.
        // (An incr's reference is the newest backup: no kept map can follow it; its WAL may have
        // been decoded in part already.)
        var (map, reused) = reuseMaps ? await keptMaps(since: reference, before: start, catalog: catalog, events: config.events) : (nil, [])
        var earlySeconds = 0.0
        if map == nil, let (part, took) = await early?.value, part.from == reference.startLSN, let until = part.until, until <= start {
            map = part
            earlySeconds = took
        }
        let records = map == nil || !reused.isEmpty ? 0 : map!.records
        let budget = imageBudget(config, facts: facts)
        let rest = await WALChanges.collect(from: map?.until ?? reference.startLSN, to: start, timeline: facts.timeline,
                                            segmentSize: facts.walSegmentSize, catalog: catalog, pgWal: config.pgdata + "/pg_wal",
                                            imageBudget: budget, found: readAhead.map { r in { r.offer($0) } })
        if map == nil {
            map = rest
        } else {
            // Kept maps hold no images: the images of the WAL decoded after them are kept.
            map!.imageBudget = budget
            map!.append(rest)
        }
        let seconds = monotonicSeconds() - began + earlySeconds
        let full = map!
        var fallbacks = full.fallbacks.map { "\($0): every relation file was scanned" }
        fallbacks += full.copiedDatabases.sorted { $0.lexicographicallyPrecedes($1) }.map {
            "database \($0[1]) in tablespace \($0[0]) was copied file by file (CREATE DATABASE ... STRATEGY FILE_COPY or ALTER DATABASE ... SET TABLESPACE): its files were scanned"
        }
        for f in fallbacks { config.events.emit(.warning, .backupDecision, "backup on \(reference.id): \(f)") }
        logger.info("changed blocks from the WAL", metadata: ["from": "\(reference.startLSN)", "to": "\(start)", "records": "\(records + rest.records)",
                                                              "blocks": "\(full.blockCount)", "seconds": "\(Int(seconds * 1000) / 1000)",
                                                              "maps reused": "\(reused.count)"])
        return (method, ChangedBlocks(full, checksums: facts.dataChecksums), fallbacks, (records + rest.records, seconds, reused.map(\.id)))
    }

    /// Bytes of page images (compressed) an incr's block map keeps, so that the pages whose last
    /// record in the range carries a full-page image are built from it instead of read (see
    /// `WALPageImage`): with `incr_method: wal` on 8 KiB pages. The budget bounds the memory
    /// (24 MiB: about 70,000 B-tree leaf pages of pgbench, filtered, or 10,000 heap pages); past it the pages are read.
    static let imageBudget = 24 << 20
    static func imageBudget(_ config: BackupConfiguration, facts: ClusterFacts) -> Int {
        config.incrMethod == .wal && facts.blockSize == PageChecksum.pageSize ? imageBudget : 0
    }

    /// For an incr of the WAL method on the cluster's timeline: a task decoding the WAL from the
    /// reference's start to the start of the segment the server is flushing now (whole segments,
    /// flushed), with how long it took, so that it runs while `pg_backup_start` waits for its
    /// checkpoint. Nil when there is nothing to gain.
    static func earlyChanges(since reference: BackupManifest?, decision: BackupChains.Decision, config: BackupConfiguration, facts: ClusterFacts,
                             flushed: LSN?, catalog: Catalog, readAhead: BlockReadAhead?) -> Task<(WALBlockMap, Double), Never>? {
        guard let r = reference, decision.type == .incr, config.incrMethod != .scan, facts.hintsLogged, r.hintsLogged == true,
              r.timeline == facts.timeline, let flushed else { return nil }
        let segmentSize = facts.walSegmentSize
        let boundary = LSN(flushed.value / segmentSize * segmentSize)
        guard boundary.value > r.startLSN.value + segmentSize else { return nil }
        let pgWal = config.pgdata + "/pg_wal"
        return Task {
            let began = monotonicSeconds()
            let map = await WALChanges.collect(from: r.startLSN, to: boundary, timeline: facts.timeline, segmentSize: segmentSize,
                                               catalog: catalog, pgWal: pgWal, imageBudget: imageBudget(config, facts: facts),
                                               found: readAhead.map { r in { r.offer($0) } })
            return (map, monotonicSeconds() - began)
        }
    }

    /// The kept block maps that lead on from `reference`'s start without a gap (each map's range
    /// begins where the previous one ends), merged: for a diff, the maps of the incrs since its
    /// full. Empty when there are none, or when one cannot be read (the WAL is decoded instead).
    static func keptMaps(since reference: BackupManifest, before start: LSN, catalog: Catalog,
                         events: EventLog) async -> (WALBlockMap?, [BackupManifest]) {
        guard let all = try? await StatusIndex.summaries(catalog).summaries else { return (nil, []) }
        let kept = all.filter { $0.timeline == reference.timeline && $0.mapFrom != nil && $0.startLSN <= start }
        var at = reference.startLSN, links = [BackupSummary]()
        while let next = kept.filter({ $0.mapFrom == at && $0.startLSN > at }).max(by: { $0.startLSN < $1.startLSN }) {
            links.append(next)
            at = next.startLSN
        }
        var merged: WALBlockMap?, chain = [BackupManifest]()
        for link in links {
            do {
                let m = try await catalog.manifest(link.id)
                chain.append(m)
                let map = try await BlockMapObject.read(m, catalog: catalog)
                guard map.complete, map.from == (merged?.until ?? reference.startLSN), map.until == m.startLSN else {
                    throw WaybackError(.corrupt, "it does not cover the range its manifest says")
                }
                if merged == nil { merged = map } else { merged!.append(map) }
            } catch {
                events.emit(.warning, .backupDecision, "the block map of backup \(link.id) cannot be used (\((error as? WaybackError)?.message ?? String(describing: error))); the WAL since \(reference.id) is decoded instead")
                return (nil, [])
            }
        }
        return (merged, merged == nil ? [] : chain)
    }

    /// Refuses a backup whose expected size does not fit in a local repository's free space.
    static func requireSpace(_ config: BackupConfiguration, type: BackupType, catalog: Catalog) async throws {
        guard !config.localRepositories.isEmpty else { return }
        let backups = try await StatusIndex.summaries(catalog).summaries
        let expected = DiskWatch.expectedSize(type: type, backups: backups,
                                              firstFullBytes: (try? DataDirectoryScan.scan(pgdata: config.pgdata).files.reduce(Int64(0)) { $0 + $1.size }) ?? 0)
        for r in config.localRepositories {
            let usage = try FileSystemUsage.of(r.path)
            if expected > usage.availableBytes {
                throw WaybackError(.noSpace, "the \(type) backup will need about \(Format.bytes(expected)) but repository '\(r.name)' (\(r.path)) has \(Format.bytes(usage.availableBytes)) free; nothing was written. Free space there or run 'wayback expire', or 'wayback backup --force' to try anyway")
            }
        }
    }

    static func checkCluster(_ facts: ClusterFacts, config: BackupConfiguration) throws {
        guard facts.walLevel == "replica" || facts.walLevel == "logical" else {
            throw WaybackError(.cluster, "wal_level is '\(facts.walLevel)'; a physical backup needs wal_level = replica (or logical): set it and restart PostgreSQL")
        }
        guard facts.archiveMode == "on" || facts.archiveMode == "always" else {
            throw WaybackError(.cluster, "archive_mode is '\(facts.archiveMode)'; set archive_mode = on and archive_command = 'wayback wal-push %p' (see 'wayback init'), then restart PostgreSQL")
        }
        guard !facts.isInRecovery else {
            throw WaybackError(.cluster, "the cluster is in recovery (a standby); back up the primary")
        }
        try facts.requireDataDirectory(config.pgdata)
    }

    static func uniqueID(catalog: Catalog, start: Date, type: BackupType) async throws -> BackupID {
        var t = start
        let existing = Set(try await catalog.backupIDs())
        // Unique by time alone, whatever the type letter.
        while BackupType.allCases.contains(where: { existing.contains(BackupID(startTime: t, type: $0)) }) { t += 1 }
        return BackupID(startTime: t, type: type)
    }

    /// The type and reference of the backup about to start (see `BackupChains.decide`).
    static func decideType(_ config: BackupConfiguration, facts: ClusterFacts, catalog: Catalog) async throws -> BackupChains.Decision {
        guard config.type != .full else { return .init(type: .full, reference: nil, note: nil) }
        // The status index's summaries (a few reads however many backups there are); the
        // manifests of entries that lack the reference fields are read.
        var summaries = try await StatusIndex.summaries(catalog).summaries
        for (i, s) in summaries.enumerated() where !s.decidable { summaries[i] = BackupSummary(try await catalog.manifest(s.id)) }
        var history: TimelineHistory?
        if facts.timeline > 1 {
            history = try await catalog.archiveContents(segmentSize: facts.walSegmentSize).history(of: facts.timeline)
        }
        let current = BackupChains.Current(timeline: facts.timeline, history: history, dataChecksums: facts.dataChecksums,
                                           pgVersionNumber: facts.versionNumber)
        return BackupChains.decide(config.type, backups: summaries, current: current, maxChainLength: config.maxChainLength)
    }

    /// The stop segment, pushed by the backup itself when PostgreSQL has marked it complete
    /// (`archive_status/<segment>.ready`, which `pg_backup_stop`'s WAL switch writes before it
    /// returns) and the archiver has stored the segment before it: the backup then does not wait
    /// for the archiver to start archive_command (a new process) for it. The archiver's own push
    /// finds it archived. A push that fails, an archiver behind or failing, a standby (whose stop
    /// does not switch segments): the wait is left to archive_command, as before, so that broken
    /// archiving still stops the backup with its error. Create-if-absent keeps the race with the
    /// archiver safe: PostgreSQL recycles the file only after the archiver's push has stored it,
    /// and a push that finds the object there compares with it, never replaces it.
    static func pushStopSegment(_ name: WALFileName, segmentSize: UInt64, push: @Sendable (String) async throws -> Void, pgdata: String,
                                catalog: Catalog, logger: Logger) async {
        let number = name.segmentNumber(segmentSize: segmentSize)
        guard number > 0, (try? FileSystem.status(pgdata + "/pg_wal/archive_status/" + name.description + ".ready"))??.isRegular == true else { return }
        let previous = WALFileName(timeline: name.timeline, segmentNumber: number - 1, segmentSize: segmentSize)
        do {
            guard try await catalog.repository.driver.info(catalog.walKey(name)) == nil,
                  try await catalog.repository.driver.info(catalog.walKey(previous)) != nil else { return }
        } catch {
            return
        }
        do {
            try await push(pgdata + "/pg_wal/" + name.description)
            logger.debug("stored the stop segment \(name) without waiting for archive_command")
        } catch {
            logger.info("the stop segment \(name) is left to archive_command: \((error as? WaybackError)?.message ?? String(describing: error))")
        }
    }

    static func waitForArchive(_ names: [WALFileName], catalog: Catalog, session: PostgresSession, timeout: Double, logger: Logger) async throws {
        let began = monotonicSeconds()
        let deadline = began + timeout
        var pending = names
        var told = 0.0
        while true {
            var still = [WALFileName]()
            for n in pending where try await catalog.repository.driver.info(catalog.walKey(n)) == nil { still.append(n) }
            pending = still
            if pending.isEmpty { return }
            // Say what the backup waits for: after 2 s, then every 30 s.
            let waited = monotonicSeconds() - began
            if waited >= 2 && (told == 0 || waited - told >= 30) {
                told = waited
                logger.info("waiting for WAL file \(pending[0]) (\(pending.count) of \(names.count) the backup needs) to be archived by PostgreSQL's archive_command; \(Int(timeout - waited)) s left (backup.archive_wait_seconds)")
            }
            if monotonicSeconds() > deadline {
                let state = (try? await session.archiverState()).map { "\($0)" } ?? "archiver state unknown"
                throw WaybackError(.archiveTimeout, "WAL file \(pending[0]) needed by the backup did not reach the archive within \(Int(timeout))s (\(state)); check archive_command = 'wayback wal-push %p' and the server log")
            }
            // Soon at first (the segment is usually pushed within a few tens of milliseconds).
            try await Task.sleep(nanoseconds: waited < 1 ? 10_000_000 : 100_000_000)
        }
    }

    static func copyObject(from src: String, to dst: String, driver: any StorageDriver) async throws -> (Int64, String) {
        try await driver.withReader(src, range: nil) { reader in
            try await driver.withWriter(dst, options: WriteOptions()) { writer in
                var h = SHA256Hasher()
                while true {
                    let chunk = try await reader.read(maxLength: 1 << 20)
                    if chunk.isEmpty { break }
                    h.update(chunk)
                    try await writer.write(chunk)
                }
                return (writer.bytesWritten, h.finalizeHex())
            }
        }
    }
}

/// How page checksum failures are told: one line naming each file's fork, relation and blocks.
public enum PageFailureReport {
    public static func summary(_ failures: [BackupManifest.PageFailure]) -> String {
        let pages = failures.reduce(0) { $0 + $1.blocks.count }
        let list = failures.prefix(10).map { f in
            let blocks = f.blocks.prefix(20).map(String.init).joined(separator: ", ") + (f.blocks.count > 20 ? ", ..." : "")
            return "\(f.path) (relation file node \(f.fileNode), \(f.fork) fork) block\(f.blocks.count == 1 ? "" : "s") \(blocks)"
        }.joined(separator: "; ")
        return "\(pages) page\(pages == 1 ? "" : "s") failed \(pages == 1 ? "its" : "their") data checksum: \(list)\(failures.count > 10 ? "; ..." : "")"
    }
}
