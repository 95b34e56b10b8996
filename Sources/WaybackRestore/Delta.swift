import Foundation
import Logging
import Synchronization
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// `restore --delta`: onto an existing, stopped data directory, rewriting only the files whose
/// size or SHA-256 differ from the backup and removing what the backup does not have; only onto a
/// directory of the same cluster (system identifier). The directory's `global/pg_control` is moved
/// aside first and the backup's restored last, so an interrupted delta restore leaves a directory
/// PostgreSQL refuses to start rather than a mixture it would start.
final class DeltaState: Sendable {
    let rewritten = Atomic<Int>(0)
    let removed: Int
    init(removed: Int) { self.removed = removed }

    func restore(_ f: BackupManifest.File, chain: [BackupManifest], layout: Restore.Layout, catalog: Catalog,
                 counter: ByteCounter) async throws {
        let path = layout.path(f.path)
        if f.path == Restore.controlFile { return }
        if let st = try FileSystem.status(path), st.isRegular, st.size == f.size, try Self.sha256(path) == f.sha256 {
            _ = chmod(path, mode_t(f.mode & 0o777 == 0 ? 0o600 : f.mode & 0o777))
            var times = [timespec(tv_sec: Int(f.mtime), tv_nsec: 0), timespec(tv_sec: Int(f.mtime), tv_nsec: 0)]
            _ = utimensat(AT_FDCWD, path, &times, 0)
            counter.add(f.size)
            return
        }
        let tmp = path + ".wayback-delta"
        try? FileSystem.remove(tmp)
        try await Restore.restoreOne(f, chain: chain, layout: layout, catalog: catalog, counter: counter, into: tmp)
        if let st = try FileSystem.status(path), st.isDirectory { try FileSystem.removeTree(path) }
        try FileSystem.rename(tmp, path)
        rewritten.wrappingAdd(1, ordering: .relaxed)
    }

    static func sha256(_ path: String) throws -> String {
        let file = try PosixFile.openForReading(path)
        defer { try? file.close() }
        return try file.sha256().sha256
    }
}

extension Restore {
    static let controlFile = ControlFile.relativePath
    /// Where a delta restore keeps the directory's own control file while it works: the directory
    /// cannot be started meanwhile, and a repeated delta restore still knows whose it is.
    static let keptControlFile = "global/pg_control.wayback-before-delta"

    /// A delta target: an existing data directory of this cluster (`systemIdentifier`, from its
    /// control file, or the one an interrupted delta restore kept) whose server is stopped.
    static func checkDeltaTarget(_ path: String, systemIdentifier: UInt64) throws {
        if DataDirectory.runningPostmasterPID(path) != nil {
            throw WaybackError(.conflict, "a PostgreSQL server is running in \(path); stop it before a delta restore")
        }
        let fix = "a delta restore rewrites only a data directory of the same cluster: restore into an empty directory instead (--force does not change this)"
        guard let control = try ControlFile.read(path: path + "/" + controlFile) ?? ControlFile.read(path: path + "/" + keptControlFile) else {
            throw WaybackError(.conflict, "\(path) has no \(controlFile), so it cannot be shown to belong to this cluster; \(fix)")
        }
        guard control.systemIdentifier == systemIdentifier else {
            throw WaybackError(.conflict, "\(path) belongs to another cluster (system identifier \(control.systemIdentifier), the backups are of \(systemIdentifier)); \(fix)")
        }
    }

    static func runDelta(_ chain: [BackupManifest], plan: RecoveryPlan, tablespaces: [UInt32: String], owner: (uid: UInt32, gid: UInt32)?,
                         config: RestoreConfiguration, catalog: Catalog, progress: ProgressHandler?,
                         logger: Logger) async throws -> (bytes: Int64, state: DeltaState, configuration: [String]) {
        let m = chain[0]
        let target = config.targetDirectory
        let layout = Layout(staging: target, tablespaces: tablespaces, finalTablespaces: tablespaces)
        // 1. Not startable from here on (the control file is kept aside until the end).
        if try FileSystem.status(target + "/" + controlFile) != nil {
            try FileSystem.rename(target + "/" + controlFile, target + "/" + keptControlFile)
        }
        try FileSystem.syncDirectory(target + "/global")
        // 2. Remove what the backup does not have (tablespace links are re-created below).
        var keepFiles = Set(m.files.map { layout.path($0.path) })
        keepFiles.remove(layout.path(controlFile))
        keepFiles.insert(layout.path(keptControlFile))
        var keepDirs = Set(m.directories.map { layout.path($0.path) })
        keepDirs.insert(target)
        for loc in tablespaces.values { keepDirs.insert(loc) }
        var removed = 0
        func prune(_ dir: String) throws {
            for name in try FileSystem.list(dir) {
                let p = dir + "/" + name
                guard let st = try FileSystem.status(p) else { continue }
                if st.isSymlink || !st.isDirectory {
                    if st.isSymlink || !keepFiles.contains(p) { try FileSystem.remove(p); removed += 1 }
                } else {
                    try prune(p)
                    if !keepDirs.contains(p) { try FileSystem.removeTree(p) }
                }
            }
        }
        try prune(target)
        for loc in tablespaces.values where FileManager.default.fileExists(atPath: loc) { try prune(loc) }
        logger.info("delta restore: removed what the backup does not have", metadata: ["files": "\(removed)"])
        // 3. Directories and tablespace links, then the files that differ.
        for loc in tablespaces.values { try FileSystem.makeDirectories(loc, mode: 0o700) }
        try createDirectories(m, layout: layout)
        let state = DeltaState(removed: removed)
        let all = [target] + tablespaces.values.sorted()
        // Flushed as it is written (see `FileSystemFlusher`), once more at the end.
        let flusher = try FileSystemFlusher(all)
        flusher.start()
        defer { flusher.stop() }
        let bytes = try await restoreFiles(chain, layout: layout, config: config, catalog: catalog, progress: progress, delta: state)
        let configuration = try await writeExtras(m, plan: plan, layout: layout, config: config, catalog: catalog)
        if let owner, getuid() == 0 { for dir in all { try chownTree(dir, uid: owner.uid, gid: owner.gid) } }
        try flusher.finish()
        for dir in all { try syncTree(dir) }
        // 4. pg_control last: now the directory is complete.
        guard let control = m.files.first(where: { $0.path == controlFile }) else {
            throw WaybackError(.corrupt, "backup \(m.id) has no \(controlFile); it cannot be restored")
        }
        let tmp = layout.path(controlFile) + ".wayback-delta"
        try? FileSystem.remove(tmp)
        try await restoreOne(control, chain: chain, layout: layout, catalog: catalog, counter: ByteCounter(), into: tmp)
        if let owner, getuid() == 0 { try FileSystem.chown(tmp, uid: owner.uid, gid: owner.gid) }
        let f = try PosixFile.openForWriting(tmp)
        try f.fsync()
        try f.close()
        try FileSystem.rename(tmp, layout.path(controlFile))
        try FileSystem.remove(layout.path(keptControlFile))
        try FileSystem.syncDirectory(target + "/global")
        state.rewritten.wrappingAdd(1, ordering: .relaxed)
        return (bytes, state, configuration)
    }
}
