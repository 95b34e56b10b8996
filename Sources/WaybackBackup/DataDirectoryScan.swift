import WaybackCore
import WaybackStorage

/// What a base backup copies from a data directory: the same set pg_basebackup copies.
public struct DataDirectoryScan: Sendable {
    public struct FileItem: Sendable {
        /// Path relative to the data directory (tablespace files under `pg_tblspc/<oid>/`).
        public var path: String
        public var absolutePath: String
        public var size: Int64
        public var mode: UInt32
        public var mtime: Int64
        /// Nanoseconds: a resumed backup reuses a file copied before only if this is unchanged.
        public var mtimeNanoseconds: Int64 = 0
    }

    public var files: [FileItem] = []
    public var directories: [(path: String, mode: UInt32)] = []
    /// Tablespace OIDs found as links in pg_tblspc, with their targets.
    public var tablespaceLinks: [(oid: UInt32, target: String)] = []

    /// Directories whose contents are not copied (the directory itself is).
    static let skipContents: Set<String> = ["pg_wal", "pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial",
                                            "pg_snapshots", "pg_stat_tmp", "pg_subtrans"]
    /// Files never copied, in any directory.
    static let skipFiles: Set<String> = ["postmaster.pid", "postmaster.opts", "pg_internal.init", "backup_label",
                                         "tablespace_map", "backup_manifest", "current_logfiles", "postgresql.auto.conf.tmp",
                                         "backup_label.old", "recovery.signal", "standby.signal"]

    /// Walks `pgdata`. Files that vanish during the walk are skipped (a dropped relation; WAL
    /// replay recreates the state).
    public static func scan(pgdata: String) throws -> DataDirectoryScan {
        var scan = DataDirectoryScan()
        try scan.walk(absolute: pgdata, relative: "", top: true)
        return scan
    }

    mutating func walk(absolute: String, relative: String, top: Bool) throws {
        let names: [String]
        do { names = try FileSystem.list(absolute) } catch let e as WaybackError where e.code == .notFound { return }
        // Relation forks of unlogged relations: skip all but the init fork (the server rebuilds them).
        let unlogged = Set(names.compactMap { $0.hasSuffix("_init") ? String($0.dropLast(5)) : nil })
        let inDatabaseDir = relative.hasPrefix("base/") || relative == "global" || relative.hasPrefix("pg_tblspc/")
        for name in names {
            let abs = absolute + "/" + name
            let rel = relative.isEmpty ? name : relative + "/" + name
            if Self.skipFiles.contains(name) || name.hasPrefix("pgsql_tmp") { continue }
            if inDatabaseDir, Self.isTemporaryRelation(name) { continue }
            if inDatabaseDir, !unlogged.isEmpty, !name.hasSuffix("_init"), unlogged.contains(Self.relfilenode(name)) { continue }
            guard var st = try FileSystem.status(abs) else { continue }
            if st.isSymlink {
                if relative == "pg_tblspc", let oid = UInt32(name) {
                    tablespaceLinks.append((oid, try FileSystem.readLink(abs)))
                    directories.append((rel, 0o700))
                    try walk(absolute: abs, relative: rel, top: false)
                    continue
                }
                // Other links (pg_wal on another disk, a linked config file): copy what they point to.
                guard let target = try FileSystem.status(abs, followLinks: true) else { continue }
                st = target
            }
            if st.isDirectory {
                directories.append((rel, st.mode))
                if top && Self.skipContents.contains(name) {
                    if name == "pg_wal" { directories.append(("pg_wal/archive_status", 0o700)) }
                    continue
                }
                try walk(absolute: abs, relative: rel, top: false)
            } else if st.isRegular {
                files.append(FileItem(path: rel, absolutePath: abs, size: st.size, mode: st.mode, mtime: st.mtime,
                                      mtimeNanoseconds: st.mtimeNanoseconds))
            }
        }
    }

    /// `t<backend>_<relfilenode>[_fork][.segment]`: a temporary relation.
    static func isTemporaryRelation(_ name: String) -> Bool {
        guard name.hasPrefix("t"), let us = name.firstIndex(of: "_") else { return false }
        return name.dropFirst().prefix(upTo: us).allSatisfy(\.isNumber) && name[name.index(after: us)...].first?.isNumber == true
    }

    /// The relfilenode part of a relation file name (`16384_fsm.1` -> `16384`).
    static func relfilenode(_ name: String) -> String {
        String(name.prefix { $0.isNumber })
    }
}
