import Foundation
import Synchronization
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What `wayback restore` needs.
public struct RestoreConfiguration: Sendable {
    public var repository: Repository
    public var cluster: String
    public var targetDirectory: String
    public var request: RecoveryRequest
    public var archiveMode: ArchiveMode
    /// Restore onto an existing stopped data directory, rewriting only what differs.
    public var delta = false
    /// The restore is started by `RestoredCluster` with `promoteAfterCheck`: a promote target is
    /// written as a pause, and promoted by it (see `RestoredCluster.Options`).
    public var promoteAfterCheck = false
    public var parallelism: Int
    /// The `restore_command` line PostgreSQL will run (`/path/wayback --config F wal-fetch %f %p`).
    public var restoreCommand: String
    /// Owner for the restored files when running as root (nil: the owner of the target's parent).
    public var owner: (uid: UInt32, gid: UInt32)?
    /// Tablespace OID -> new location (default: the location recorded in the backup).
    public var tablespaceMap: [UInt32: String]
    /// "Now" for what the restore records (its record's time, the generated files' times).
    public var clock: any WaybackClock = SystemClock()
    /// PostgreSQL's bin directory for starting the restored cluster (`WAYBACK_PG_BIN`; nil: the
    /// one of the restored directory's `PG_VERSION`).
    public var pgBinDirectory: String?
    /// Where the warnings go (a file read from another repository, an interrupted restore's
    /// leftover removed, timings not recorded).
    public var events: EventLog

    public init(repository: Repository, cluster: String, targetDirectory: String, request: RecoveryRequest, archiveMode: ArchiveMode,
                parallelism: Int, restoreCommand: String, owner: (uid: UInt32, gid: UInt32)? = nil, tablespaceMap: [UInt32: String] = [:],
                events: EventLog) {
        self.events = events
        self.repository = repository; self.cluster = cluster; self.targetDirectory = targetDirectory.isEmpty ? "" : FileSystem.absolute(targetDirectory)
        self.request = request; self.archiveMode = archiveMode; self.parallelism = max(1, parallelism); self.restoreCommand = restoreCommand
        self.owner = owner; self.tablespaceMap = tablespaceMap
    }
}

public struct RestoreReport: Sendable {
    public var plan: RecoveryPlan
    public var backup: BackupManifest
    public var targetDirectory: String
    public var files: Int
    public var bytes: Int64
    /// The whole restore, and the part of it spent planning (reading and checking the WAL).
    public var seconds: Double
    public var planSeconds: Double
    /// With `--delta`: files rewritten (the rest were already right) and files removed.
    public var rewritten: Int? = nil
    public var removed: Int? = nil
    /// Configuration files the backup did not hold and the restore wrote (`MinimalConfiguration`).
    public var configurationWritten = [String]()
}

/// The configuration a restored copy needs to start when the backed-up cluster keeps its own
/// outside its data directory (`config_file`, `hba_file`, `ident_file`: Debian's and Ubuntu's
/// `/etc/postgresql/<version>/<cluster>`), so that the backup holds none. Minimal files, never
/// the original's: its `data_directory` would name the production directory.
public enum MinimalConfiguration {
    public static let files: [(name: String, text: String)] = [
        ("postgresql.conf", """
            # Written by wayback restore: the backed-up cluster keeps its configuration outside its data
            # directory, so the backup has none. Settings for this copy go here (recovery settings are in
            # postgresql.auto.conf); copy the production settings before this copy serves as a primary.

            """),
        ("pg_hba.conf", """
            # Written by wayback restore (the backup has no pg_hba.conf): local connections of the same
            # OS user only. Add your production rules before this copy serves clients.
            local all all peer

            """),
        ("pg_ident.conf", """
            # Written by wayback restore (the backup has no pg_ident.conf).

            """),
    ]
}

/// Restores a backup into an empty directory.
///
/// Everything is built in a hidden sibling directory (`.NAME.wayback-restore-<run id>`) and renamed into
/// place only when every file has been written, verified and synced to disk, so an interrupted restore
/// never leaves a directory PostgreSQL would start.
public enum Restore {
    public static func run(_ config: RestoreConfiguration, logger: Logger, progress: ProgressHandler? = nil) async throws -> RestoreReport {
        let started = monotonicSeconds()
        let catalog = Catalog(repository: config.repository, cluster: config.cluster)
        // Recovery's wal-fetch ends the archive only where every repository can say so.
        let binding = try await catalog.requireBoundEverywhere()
        let target = config.targetDirectory
        let delta = config.delta && FileManager.default.fileExists(atPath: target + "/PG_VERSION")
        if delta { try checkDeltaTarget(target, systemIdentifier: binding.systemID) } else { try checkTarget(target, what: "target directory") }
        let planned = try await RecoveryPlanner.plan(config.request, catalog: catalog, parallelism: config.parallelism, logger: logger)
        let planSeconds = monotonicSeconds() - started
        try planned.plan.requireFeasible()
        let manifest = planned.manifest
        let chain = planned.chain
        var log = logger
        log[metadataKey: "wayback.backup"] = "\(manifest.id)"

        var tablespaceTargets = [UInt32: String]()
        for ts in manifest.tablespaces {
            let loc = FileSystem.absolute(config.tablespaceMap[ts.oid] ?? ts.location)
            if !delta {
                try checkTarget(loc, what: "location of tablespace '\(ts.name)' (OID \(ts.oid)); map it elsewhere with --tablespace-map \(ts.oid)=DIR")
            }
            tablespaceTargets[ts.oid] = loc
        }
        let owner = try config.owner ?? ownerFor(target)
        if delta {
            let (bytes, state, configuration) = try await runDelta(chain, plan: planned.plan, tablespaces: tablespaceTargets, owner: owner,
                                                    config: config, catalog: catalog, progress: progress, logger: log)
            return RestoreReport(plan: planned.plan, backup: manifest, targetDirectory: target, files: manifest.files.count, bytes: bytes,
                                 seconds: monotonicSeconds() - started, planSeconds: planSeconds, rewritten: state.rewritten.load(ordering: .relaxed),
                                 removed: state.removed, configurationWritten: configuration)
        }

        // Staging directories, renamed into place at the end.
        let run = RunID.make()
        let staging = stagingPath(target, run: run)
        removeAbandonedStaging(target, events: config.events)
        for loc in tablespaceTargets.values { removeAbandonedStaging(loc, events: config.events) }
        var stagedTablespaces = [UInt32: String]()
        for (oid, loc) in tablespaceTargets { stagedTablespaces[oid] = stagingPath(loc, run: run) }
        let allStaging = [staging] + stagedTablespaces.values.sorted()
        do {
            for dir in allStaging {
                try FileSystem.removeTree(dir)
                try FileSystem.makeDirectories(FileSystem.parentPath(dir))
                do {
                    try FileSystem.makeDirectories(dir, mode: 0o700)
                } catch let e as WaybackError {
                    // Staged beside the target and renamed into place (never a half-restored
                    // directory PostgreSQL could start), so the parent must be writable.
                    let parent = FileSystem.parentPath(dir)
                    let user = getpwuid(geteuid()).map { String(cString: $0.pointee.pw_name) } ?? "the user running wayback"
                    throw WaybackError(e.code, "cannot stage the restore in \(parent): \(e.message). The restore is written beside its target and renamed into place, so \(parent) must be writable by \(user); choose a target in a directory \(user) owns, or make one (install -d -o \(user) -m 700 \(parent)/restores)")
                }
            }
            let layout = Layout(staging: staging, tablespaces: stagedTablespaces, finalTablespaces: tablespaceTargets)
            try createDirectories(manifest, layout: layout)
            // Flushed as it is written (see `FileSystemFlusher`), once more at the end.
            let flusher = try FileSystemFlusher(allStaging)
            flusher.start()
            defer { flusher.stop() }
            let bytes = try await restoreFiles(chain, layout: layout, config: config, catalog: catalog, progress: progress)
            log.debug("files written", metadata: ["seconds": "\(monotonicSeconds() - started)"])
            let configuration = try await writeExtras(manifest, plan: planned.plan, layout: layout, config: config, catalog: catalog)
            if let owner, getuid() == 0 {
                for dir in allStaging { try chownTree(dir, uid: owner.uid, gid: owner.gid) }
            }
            // syncfs(2) per file system instead of an fsync per file (a data directory has about a
            // thousand files; each fsync is a disk round trip), then every directory.
            try flusher.finish()
            try syncTree(staging)
            for dir in stagedTablespaces.values { try syncTree(dir) }
            log.debug("files synced", metadata: ["seconds": "\(monotonicSeconds() - started)"])
            // Publish: tablespaces first, the data directory last.
            for (oid, dir) in stagedTablespaces { try publish(dir, to: tablespaceTargets[oid]!) }
            try publish(staging, to: target)
            log.info("restore complete", metadata: ["target": "\(target)", "files": "\(manifest.files.count)"])
            return RestoreReport(plan: planned.plan, backup: manifest, targetDirectory: target, files: manifest.files.count, bytes: bytes,
                                 seconds: monotonicSeconds() - started, planSeconds: planSeconds, configurationWritten: configuration)
        } catch {
            for dir in allStaging { try? FileSystem.removeTree(dir) }
            throw error
        }
    }

    /// The plan of a restore, without writing anything (`restore --dry-run`): a target directory
    /// the restore would refuse is one of the plan's problems (none given: not checked).
    public static func plan(_ config: RestoreConfiguration, logger: Logger) async throws -> RecoveryPlan {
        let catalog = Catalog(repository: config.repository, cluster: config.cluster)
        var plan = try await RecoveryPlanner.plan(config.request, catalog: catalog, parallelism: config.parallelism, logger: logger).plan
        let binding = try await catalog.requireBoundEverywhere()
        guard !config.targetDirectory.isEmpty else { return plan }
        do {
            if config.delta && FileManager.default.fileExists(atPath: config.targetDirectory + "/PG_VERSION") {
                try checkDeltaTarget(config.targetDirectory, systemIdentifier: binding.systemID)
            } else {
                try checkTarget(config.targetDirectory, what: "target directory")
            }
        } catch let e as WaybackError {
            plan.problems.append(e.message)
        }
        return plan
    }

    /// The OS user that owns (or will own) the restored directory: PostgreSQL runs as this user.
    public static func osUserName(for directory: String) throws -> String {
        let uid = try FileSystem.status(directory, followLinks: true)?.uid ?? getuid()
        guard let pw = getpwuid(uid) else { return "postgres" }
        return String(cString: pw.pointee.pw_name)
    }

    /// Keeps what this restore measured in the repository, for later estimates and drills.
    public static func record(_ report: RestoreReport, started: RestoredCluster.Report?, catalog: Catalog,
                              clock: any WaybackClock = SystemClock(), events: EventLog) async {
        let record = RestoreRecord(time: clock.now, backup: report.backup.id, target: report.plan.target, bytes: report.bytes,
                                   files: report.files, filesSeconds: report.seconds - report.planSeconds,
                                   walBytes: started == nil ? nil : report.plan.wal.bytes,
                                   replaySeconds: started?.recoverySeconds, readySeconds: started?.readySeconds)
        do { try await catalog.writeRestoreRecord(record) } catch {
            events.emit(.warning, .recordFailed, "could not record the restore timings in the repository: \(error)", backup: report.backup.id.rawValue)
        }
    }

    /// A target must be missing or an empty directory, and no server may run there.
    static func checkTarget(_ path: String, what: String) throws {
        if DataDirectory.runningPostmasterPID(path) != nil {
            throw WaybackError(.conflict, "a PostgreSQL server is running in \(path) (\(what)); stop it first, and restore into an empty directory")
        }
        guard let st = try FileSystem.status(path, followLinks: true) else {
            let parent = FileSystem.parentPath(path)
            guard try FileSystem.status(parent, followLinks: true)?.isDirectory == true else {
                throw WaybackError(.usage, "the parent of \(path) (\(what)) does not exist; create it first")
            }
            return
        }
        guard st.isDirectory else { throw WaybackError(.conflict, "\(path) (\(what)) exists and is not a directory") }
        guard try FileSystem.list(path).isEmpty else {
            throw WaybackError(.conflict, "\(path) (\(what)) is not empty; restore into an empty or new directory (nothing was written)")
        }
    }

    /// Removes staging directories left next to `target` by restores that were killed (their
    /// process is gone); they were never renamed into place, so nothing depends on them.
    static func removeAbandonedStaging(_ target: String, events: EventLog) {
        let parent = FileSystem.parentPath(target)
        let prefix = "." + FileSystem.lastComponent(target) + ".wayback-restore-"
        for name in (try? FileSystem.list(parent)) ?? [] where name.hasPrefix(prefix) {
            guard let pid = RunID.processID(name.dropFirst(prefix.count)), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            events.emit(.warning, .cleanup, "removing the leftover of an interrupted restore: \(parent)/\(name)")
            try? FileSystem.removeTree(parent + "/" + name)
        }
    }

    /// `.NAME.wayback-restore-<run id>` next to `target` (see `RunID`).
    static func stagingPath(_ target: String, run: String) -> String {
        FileSystem.parentPath(target) + "/." + FileSystem.lastComponent(target) + ".wayback-restore-\(run)"
    }

    static func ownerFor(_ target: String) throws -> (uid: UInt32, gid: UInt32)? {
        guard getuid() == 0 else { return nil }
        guard let st = try FileSystem.status(FileSystem.parentPath(target), followLinks: true) else { return nil }
        return (st.uid, st.gid)
    }

    struct Layout: Sendable {
        var staging: String
        var tablespaces: [UInt32: String]
        var finalTablespaces: [UInt32: String]
        /// The SHA-256 of each file rebuilt whose digest the manifest does not know (pages read
        /// by the WAL method), computed as it was written: for `backup_manifest`.
        let computed = ComputedDigests()

        /// Where a manifest path is written during the restore.
        func path(_ rel: String) -> String {
            if rel.hasPrefix("pg_tblspc/") {
                let parts = rel.split(separator: "/", maxSplits: 2)
                if parts.count >= 2, let oid = UInt32(parts[1]), let dir = tablespaces[oid] {
                    return parts.count == 3 ? dir + "/" + parts[2] : dir
                }
            }
            return staging + "/" + rel
        }
    }

    static func createDirectories(_ m: BackupManifest, layout: Layout) throws {
        for ts in m.tablespaces {
            // pg_tblspc/<oid> is a link to the final location.
            try FileSystem.makeDirectories(layout.staging + "/pg_tblspc", mode: 0o700)
            try FileSystem.symlink(target: layout.finalTablespaces[ts.oid]!, at: layout.staging + "/pg_tblspc/\(ts.oid)")
        }
        for d in m.directories.sorted(by: { $0.path < $1.path }) {
            let parts = d.path.split(separator: "/")
            if parts.count == 2, parts[0] == "pg_tblspc" { continue }
            let p = layout.path(d.path)
            try FileSystem.makeDirectories(p, mode: 0o700)
            try FileSystem.chmod(p, d.mode & 0o777 == 0 ? 0o700 : d.mode)
        }
    }

    /// Restores every file with `parallelism` workers, verifying each file's SHA-256.
    static func restoreFiles(_ chain: [BackupManifest], layout: Layout, config: RestoreConfiguration, catalog: Catalog,
                             progress: ProgressHandler?, delta: DeltaState? = nil) async throws -> Int64 {
        let m = chain[0]
        let order = m.files.indices.sorted { m.files[$0].size > m.files[$1].size }
        let cursor = WorkCursor(limit: order.count)
        let counter = ByteCounter()
        let total = m.files.reduce(Int64(0)) { $0 + $1.size }
        try await withProgress(phase: "restore \(m.id)", total: total, counter: counter, interval: 2, handler: progress) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<config.parallelism {
                    group.addTask {
                        while true {
                            guard let n = cursor.next() else { return }
                            let i = order[n]
                            if let delta {
                                try await delta.restore(m.files[i], chain: chain, layout: layout, catalog: catalog, counter: counter)
                            } else {
                                try await restoreOne(m.files[i], chain: chain, layout: layout, catalog: catalog, counter: counter)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        return total
    }

    /// Files from this size on are written with `O_DIRECT`.
    static let directBytes = Int64(SequentialWriter.bufferBytes)
    /// Files from this size on are hashed and written by threads of their own, so that the other
    /// workers' files and this one's decompression share the cores, rather than this worker
    /// hashing and waiting for the disk alone.
    static let backgroundBytes: Int64 = 8 << 20

    /// A new file for `f` at `path`, with `f`'s mode (600 when it has none).
    static func writer(for f: BackupManifest.File, at path: String) throws -> SequentialWriter {
        try SequentialWriter(creating: path, mode: mode_t(f.mode & 0o777 == 0 ? 0o600 : f.mode & 0o777), direct: f.size >= directBytes,
                             background: f.size >= backgroundBytes)
    }

    /// Restores one file of `chain[0]` (rebuilt through the chain of a diff/incr), verifying it.
    static func restoreOne(_ f: BackupManifest.File, chain: [BackupManifest], layout: Layout, catalog: Catalog, counter: ByteCounter,
                           into destination: String? = nil) async throws {
        let path = destination ?? layout.path(f.path)
        let driver = catalog.repository.driver
        let source = try BackupChains.source(of: f, chain: chain)
        func attempt(_ driver: any StorageDriver) async throws {
            switch source {
            case .whole(var stored, let m):
                guard stored.size == f.size, stored.sha256 == f.sha256 else {
                    throw WaybackError(.corrupt, "backup \(chain[0].id) is damaged: file \(f.path) is recorded as unchanged since backup \(m.id), but with another checksum; restore another backup (--backup ID)")
                }
                // An unchanged file keeps this backup's mode and time.
                stored.mode = f.mode; stored.mtime = f.mtime
                try await restoreOne(stored, manifest: m, to: path, from: driver, keys: catalog.layout, counter: counter)
            case .pages(let versions):
                let sha = try await restorePages(f, versions: versions, to: path, from: driver, keys: catalog.layout, counter: counter)
                if !f.digestKnown { layout.computed.set(f.path, sha) }
            }
        }
        do {
            try await attempt(driver)
        } catch let e as WaybackError where e.code == .corrupt {
            // A damage that no frame check catches (uncompressed frames) shows only in the file's
            // SHA-256: read the whole file again from each other repository.
            guard let replicated = driver as? ReplicatedStorage else { throw e }
            for r in replicated.replicas.dropFirst() {
                replicated.events.emit(.warning, .repositoryFallback, "file \(f.path) of backup \(chain[0].id) fails its check (\(e.message)); restoring it from \(r.description)",
                                       repository: r.name, backup: chain[0].id.rawValue)
                try? FileSystem.remove(path)
                if (try? await attempt(r.driver)) != nil { return }
            }
            throw e
        }
    }

    /// Restores one file from `driver` and verifies its size and SHA-256. A chunk run that fails
    /// in one repository of a `ReplicatedStorage` is read again from the next one: each run starts
    /// by rewinding the writer to where the run began, file and digest, so the body can start over.
    static func restoreOne(_ f: BackupManifest.File, manifest m: BackupManifest, to path: String, from driver: any StorageDriver,
                           keys: RepositoryLayout, counter: ByteCounter) async throws {
        let out = try writer(for: f, at: path)
        // A file's chunks are contiguous runs in one or more packs: read each run with one request.
        var i = 0
        while i < f.chunks.count {
            var j = i
            while j + 1 < f.chunks.count, f.chunks[j + 1].object == f.chunks[i].object,
                  f.chunks[j + 1].offset == f.chunks[j].offset + Int64(f.chunks[j].length) { j += 1 }
            let object = m.objects[f.chunks[i].object]
            let key = keys.objectKey(m.id, object.name)
            let start = f.chunks[i].offset, end = f.chunks[j].offset + Int64(f.chunks[j].length)
            let runStart = out.position
            do {
                try await driver.withReader(key, range: start..<end) { reader in
                    try out.rewind(to: runStart)
                    let frames = FrameReader(reader: reader, name: "\(object.name) of backup \(m.id)")
                    for k in i...j {
                        let n = try await frames.nextFrame { header, decode -> Int in
                            guard header.rawLength == f.chunks[k].raw else {
                                throw WaybackError(.corrupt, "frame size mismatch")
                            }
                            // Decompressed where it is written, hashed and written from there.
                            try out.append(count: header.rawLength, decode)
                            return header.rawLength
                        }
                        counter.add(Int64(n))
                    }
                }
            } catch let e as WaybackError where e.code == .corrupt || e.code == .notFound {
                throw WaybackError(.corrupt, "backup \(m.id) is damaged: file \(f.path) cannot be read from \(object.name) (\(e.message)); nothing was restored. Restore another backup (--backup ID) or run a new backup")
            }
            i = j + 1
        }
        let written = try out.finish()
        guard written.size == f.size, written.sha256 == f.sha256 else {
            throw WaybackError(.corrupt, "backup \(m.id) is damaged: file \(f.path) fails its SHA-256 check; nothing was restored. Restore another backup (--backup ID) or run a new backup")
        }
        var times = [timespec(tv_sec: Int(f.mtime), tv_nsec: 0), timespec(tv_sec: Int(f.mtime), tv_nsec: 0)]
        _ = utimensat(AT_FDCWD, path, &times, 0)
    }

    /// backup_label, tablespace_map, the backup's WAL in pg_wal, recovery settings, the
    /// configuration files the backup lacks (returned), backup_manifest.
    @discardableResult
    static func writeExtras(_ m: BackupManifest, plan: RecoveryPlan, layout: Layout, config: RestoreConfiguration, catalog: Catalog) async throws -> [String] {
        let now = Int64(config.clock.now.timeIntervalSince1970)
        var entries = m.files.map {
            PGBackupManifest.Entry(path: $0.path, size: $0.size, mtime: $0.mtime, sha256: $0.digestKnown ? $0.sha256 : layout.computed.get($0.path) ?? "")
        }
        func writeText(_ rel: String, _ text: String, manifestEntry: Bool) throws {
            let bytes = Array(text.utf8)
            let f = try PosixFile.create(layout.staging + "/" + rel, mode: 0o600)
            try bytes.withUnsafeBytes { try f.write($0) }
            try f.close()
            if manifestEntry {
                entries.append(.init(path: rel, size: Int64(bytes.count), mtime: now, sha256: SHA256Hasher.hex(bytes)))
            }
        }
        try writeText("backup_label", m.backupLabel, manifestEntry: true)
        // No tablespace_map: the pg_tblspc links are created here, pointing at the (possibly
        // mapped) new locations, as pg_basebackup does in plain format. A tablespace_map would make
        // PostgreSQL re-create the links to the original locations.
        for w in m.wal {
            let dest = layout.staging + "/pg_wal/" + w.name
            let file = try PosixFile.create(dest, mode: 0o600)
            do {
                let h = try await WALObject.read(catalog.repository.driver, key: catalog.layout.objectKey(m.id, w.object), name: w.name) {
                    try file.pwrite($0, offset: $1)
                }
                try file.truncate(h.size)
            } catch let e as WaybackError {
                throw WaybackError(.corrupt, "backup \(m.id) is damaged: its copy of WAL file \(w.name) cannot be read (\(e.message))")
            }
            try file.close()
            // Handed over in pg_wal only to a copy that archives nothing; one that archives gets
            // the segment as pg_basebackup leaves it, and PostgreSQL marks it itself.
            if config.archiveMode == .off, WALFileName(w.name)?.kind == .segment { try seedSpool(layout.staging, segment: w.name) }
        }
        limitPrefetch(layout.staging, plan: plan)
        // Recovery settings.
        let autoPath = layout.staging + "/postgresql.auto.conf"
        var auto = (try? String(contentsOfFile: autoPath, encoding: .utf8)) ?? ""
        auto = auto.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !RecoverySettings.owns($0) }
            .joined(separator: "\n")
        if !auto.isEmpty && !auto.hasSuffix("\n") { auto += "\n" }
        auto += RecoverySettings.text(plan: plan, request: config.request, restoreCommand: config.restoreCommand, archiveMode: config.archiveMode,
                                      promoteAfterCheck: config.promoteAfterCheck)
        try? FileSystem.remove(autoPath)
        try writeText("postgresql.auto.conf", auto, manifestEntry: false)
        try writeText("recovery.signal", "", manifestEntry: false)
        var configuration = [String]()
        for (name, text) in MinimalConfiguration.files where !m.files.contains(where: { $0.path == name }) {
            try? FileSystem.remove(layout.staging + "/" + name)
            try writeText(name, text, manifestEntry: true)
            configuration.append(name)
        }
        let pgManifest = PGBackupManifest.render(files: entries, timeline: m.timeline, startLSN: m.startLSN, endLSN: m.stopLSN)
        try writeText("backup_manifest", String(decoding: pgManifest, as: UTF8.self), manifestEntry: false)
        return configuration
    }

    /// Offers a segment of the backup's own WAL, written into `pg_wal`, as if prefetched (see
    /// `Prefetch` in WaybackArchive): the spool gets a second name of the same file and
    /// `archive_status` a `.done`, and the spool the hand-over mark (the copy archives nothing). The first `wal-fetch` of recovery then hands it over in place and
    /// PostgreSQL reads it from `pg_wal`, rather than a second copy through `%p` that PostgreSQL
    /// would rename and sync before replay starts. The directories are synced with the rest.
    static func seedSpool(_ dataDirectory: String, segment name: String) throws {
        let spool = PrefetchSpool.path(dataDirectory: dataDirectory), pgWAL = dataDirectory + "/pg_wal"
        try FileSystem.makeDirectories(spool, mode: 0o700)
        try? FileSystem.remove(spool + "/" + name)
        guard link(pgWAL + "/" + name, spool + "/" + name) == 0 else { throw PosixError.make(errno, "link \(name) into the prefetch spool", spool) }
        guard PrefetchSpool.markArchived(name, pgWAL: pgWAL) else { throw PosixError.make(errno, "mark \(name) as archived", pgWAL + "/archive_status") }
        guard PrefetchSpool.recordBoot(spool) else { throw PosixError.make(errno, "record the boot in", spool) }
        let marker = spool + "/" + PrefetchSpool.handOverFile
        if try FileSystem.status(marker) == nil { try PosixFile.create(marker, mode: 0o600).close() }
    }

    /// Tells the prefetcher the last segment recovery will ask for (`.last` in the spool), so that
    /// it fetches nothing further: segments there are only written to be recycled, each synced, by
    /// PostgreSQL at promotion. That is the one after the plan's last: PostgreSQL's read-ahead
    /// (`wal_decode_buffer_size`) decodes past the stop record, into the next segment when the stop
    /// is near a segment's end. No limit for `--to-latest`.
    static func limitPrefetch(_ dataDirectory: String, plan: RecoveryPlan) {
        let spool = PrefetchSpool.path(dataDirectory: dataDirectory), path = spool + "/" + PrefetchSpool.lastFile
        try? FileSystem.remove(path)
        guard plan.targetKind != .latest, let last = plan.wal.last.flatMap(WALFileName.init), FileManager.default.fileExists(atPath: spool) else { return }
        try? Data((last.next().description + "\n").utf8).write(to: URL(fileURLWithPath: path))
    }

    static func chownTree(_ path: String, uid: UInt32, gid: UInt32) throws {
        try FileSystem.chown(path, uid: uid, gid: gid)
        guard let st = try FileSystem.status(path), st.isDirectory else { return }
        for name in try FileSystem.list(path) { try chownTree(path + "/" + name, uid: uid, gid: gid) }
    }

    /// fsync every directory (file data was flushed by a `FileSystemFlusher`).
    static func syncTree(_ path: String) throws {
        guard let st = try FileSystem.status(path), st.isDirectory else { return }
        for name in try FileSystem.list(path) { try syncTree(path + "/" + name) }
        try FileSystem.syncDirectory(path)
    }

    static func publish(_ staging: String, to target: String) throws {
        if let st = try FileSystem.status(target), st.isDirectory {
            if rmdir(target) != 0 { throw PosixError.make(errno, "replace empty directory", target) }
        }
        try FileSystem.rename(staging, target)
        try FileSystem.syncDirectory(FileSystem.parentPath(target))
    }
}

/// File digests computed during a restore, by manifest path.
final class ComputedDigests: Sendable {
    private let digests = Mutex<[String: String]>([:])
    func set(_ path: String, _ sha: String) { digests.withLock { $0[path] = sha } }
    func get(_ path: String) -> String? { digests.withLock { $0[path] } }
}
