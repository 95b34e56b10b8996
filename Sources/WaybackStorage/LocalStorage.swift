#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WaybackCore

/// A repository in a local (POSIX) directory.
///
/// Writes go to a hidden temporary file in the object's directory (`.NAME.tmp-PID-RANDOM`), which is
/// fsynced and then renamed (or, for `ifAbsent`, hard-linked, which fails atomically when the name
/// exists) into place, after which the directory is fsynced. Listings skip temporary files, so an
/// interrupted write never shows as an object.
///
/// Files are mode 0600 and directories 0700 (the data of the cluster's tables is readable by the
/// repository's owner only). Run as root, everything it creates is given to the owner of the
/// repository directory (or of its nearest existing parent), so that a command run as root never
/// leaves objects the PostgreSQL OS user cannot read or replace.
public struct LocalStorage: StorageDriver {
    public let root: String
    public let fileMode: UInt32
    public let directoryMode: UInt32
    /// Who new files and directories are given to (only when running as root).
    public let owner: (uid: UInt32, gid: UInt32)?

    public init(root: String, fileMode: UInt32 = 0o600, directoryMode: UInt32 = 0o700) {
        self.root = FileSystem.absolute(root)
        self.fileMode = fileMode
        self.directoryMode = directoryMode
        owner = geteuid() == 0 ? Self.repositoryOwner(self.root) : nil
    }

    /// The owner of `root` or of its nearest existing parent, unless that is root.
    static func repositoryOwner(_ root: String) -> (uid: UInt32, gid: UInt32)? {
        var p = root
        while true {
            if let st = try? FileSystem.status(p, followLinks: true) { return st.uid == 0 ? nil : (st.uid, st.gid) }
            let parent = FileSystem.parentPath(p)
            if parent == p { return nil }
            p = parent
        }
    }

    public var description: String { "local repository \(root)" }
    public var capabilities: StorageCapabilities { [.posix, .atomicCreate] }

    /// The path of `key`, refused when a part of it below the root is a symbolic link: Wayback
    /// never follows a link it did not make, and one inside a repository could lead a read, a
    /// write or a removal out of it. (The root itself may be a link: it is the configuration's.)
    /// Parts that do not exist yet are fine (a write creates them).
    func path(_ key: String) throws -> String {
        guard !key.isEmpty, !key.hasPrefix("/"), !key.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else {
            throw WaybackError(.internal, "invalid storage key '\(key)'")
        }
        var current = root
        for part in key.split(separator: "/") {
            current += "/" + part
            guard let st = try FileSystem.status(current) else { break }
            if st.isSymlink { throw linkRefused(current) }
        }
        return root + "/" + key
    }

    func linkRefused(_ path: String) -> WaybackError {
        let target = FileSystem.linkTarget(path).map { " (to \($0))" } ?? ""
        return WaybackError(.repository, "\(path) in \(description) is a symbolic link\(target); Wayback does not follow links inside a repository: put the data itself there, or set the repository's path to where it is")
    }

    static func isTemporary(_ name: String) -> Bool { name.hasPrefix(".") && name.contains(".tmp-") }

    public func info(_ key: String) async throws -> ObjectInfo? {
        guard let st = try FileSystem.status(try path(key)), st.isRegular else { return nil }
        return ObjectInfo(key: key, size: st.size)
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        // Start the walk at the deepest directory the prefix names.
        let dirPart = prefix.contains("/") ? String(prefix[..<prefix.lastIndex(of: "/")!]) : ""
        var out = [ObjectInfo]()
        // The starting folder is checked part by part; below it, each entry is looked at itself.
        func walk(_ rel: String) throws {
            let abs = rel.isEmpty ? root : rel == dirPart ? try path(rel) : root + "/" + rel
            guard let st = try FileSystem.status(abs, followLinks: rel.isEmpty), st.isDirectory else { return }
            for name in try FileSystem.list(abs) where !Self.isTemporary(name) {
                let key = rel.isEmpty ? name : rel + "/" + name
                guard key.hasPrefix(prefix) || prefix.hasPrefix(key + "/") else { continue }
                guard let child = try FileSystem.status(abs + "/" + name) else { continue }
                if child.isSymlink { throw linkRefused(abs + "/" + name) }
                if child.isDirectory { try walk(key) } else if child.isRegular, key.hasPrefix(prefix) {
                    out.append(ObjectInfo(key: key, size: child.size))
                }
            }
        }
        try walk(dirPart)
        return out.sorted { $0.key < $1.key }
    }

    public func withReader<R>(_ key: String, range: Range<Int64>?, _ body: (any ObjectReader) async throws -> R) async throws -> R {
        let p = try path(key)
        let file: PosixFile
        do { file = try PosixFile.openForReading(p, followLinks: false) } catch let e as WaybackError where e.code == .notFound {
            throw WaybackError(.notFound, "object \(key) is not in \(description)")
        }
        var size: Int64 = 0
        if let st = try FileSystem.status(p) { size = st.size }
        let r = range ?? 0..<size
        guard r.lowerBound >= 0, r.upperBound <= size else {
            throw WaybackError(.corrupt, "object \(key) in \(description) has \(size) bytes, fewer than the \(r.upperBound) expected")
        }
        let reader = LocalReader(file: file, offset: r.lowerBound, end: r.upperBound)
        defer { try? file.close() }
        return try await body(reader)
    }

    public func withWriter<R>(_ key: String, options: WriteOptions, _ body: (any ObjectWriter) async throws -> R) async throws -> R {
        let final = try path(key)
        let dir = FileSystem.parentPath(final)
        try FileSystem.makeDirectories(dir, mode: mode_t(directoryMode), owner: owner)
        if options.ifAbsent, try FileSystem.status(final) != nil {
            throw WaybackError(.conflict, "object \(key) already exists in \(description)")
        }
        let tmp = dir + "/." + FileSystem.lastComponent(final) + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let file: PosixFile
        do {
            file = try PosixFile.create(tmp, mode: mode_t(fileMode))
        } catch let e as WaybackError where e.code == .notFound {
            // A concurrent remove pruned the (then empty) directory: create it again.
            try FileSystem.makeDirectories(dir, mode: mode_t(directoryMode), owner: owner)
            file = try PosixFile.create(tmp, mode: mode_t(fileMode))
        }
        if let owner, fchown(file.fd, owner.uid, owner.gid) != 0 {
            let err = errno
            try? file.close(); try? FileSystem.remove(tmp)
            throw PosixError.make(err, "give to uid \(owner.uid)", tmp)
        }
        let writer = LocalWriter(file: file)
        do {
            let result = try await body(writer)
            try file.fsync()
            try file.close()
            if options.ifAbsent {
                if link(tmp, final) != 0 {
                    let err = errno
                    try? FileSystem.remove(tmp)
                    if err == EEXIST { throw WaybackError(.conflict, "object \(key) already exists in \(description)") }
                    throw PosixError.make(err, "link", final)
                }
                try FileSystem.remove(tmp)
            } else {
                try FileSystem.rename(tmp, final)
            }
            try FileSystem.syncDirectory(dir)
            return result
        } catch {
            try? file.close()
            try? FileSystem.remove(tmp)
            throw error
        }
    }

    /// Removes the object, then the directories it leaves empty (up to the root).
    public func remove(_ key: String) async throws {
        try removeFile(try path(key))
    }

    func removeFile(_ p: String) throws {
        try FileSystem.remove(p)
        var dir = FileSystem.parentPath(p)
        while dir.count > root.count, dir.hasPrefix(root + "/"), rmdir(dir) == 0 { dir = FileSystem.parentPath(dir) }
    }

    /// Removes temporary files (`.NAME.tmp-PID-RANDOM`) that crashed writers left before `date`.
    /// Only directories and temporary names are looked at (`stat`), not every object: a
    /// repository of a year's WAL holds hundreds of thousands, and on NFS each look is a round trip.
    public func removeLeftovers(olderThan date: Date, prefix: String) async throws -> Int {
        var removed = 0
        let cutoff = Int64(date.timeIntervalSince1970)
        func walk(_ dir: String, _ rel: String) throws {
            for (name, isDirectory) in (try? FileSystem.entries(dir)) ?? [] {
                let p = dir + "/" + name
                let key = rel.isEmpty ? name : rel + "/" + name
                guard key.hasPrefix(prefix) || prefix.hasPrefix(key + "/") else { continue }
                guard isDirectory != false || Self.isTemporary(name), let st = try FileSystem.status(p) else { continue }
                if st.isDirectory { try walk(p, key) } else if Self.isTemporary(name), st.mtime <= cutoff {
                    try removeFile(p)
                    removed += 1
                }
            }
        }
        try walk(root, "")
        return removed
    }
}

final class LocalReader: ObjectReader {
    let file: PosixFile
    var offset: Int64
    let end: Int64
    init(file: PosixFile, offset: Int64, end: Int64) { self.file = file; self.offset = offset; self.end = end }

    func read(maxLength: Int) async throws -> [UInt8] {
        let n = Int(min(Int64(maxLength), end - offset))
        if n <= 0 { return [] }
        var buf = [UInt8].scratch(count: n)
        let got = try buf.withUnsafeMutableBytes { try file.pread(into: $0, offset: offset) }
        if got < n {
            throw WaybackError(.corrupt, "\(file.path) ended early: it is shorter than its recorded size")
        }
        offset += Int64(got)
        return buf
    }
}

final class LocalWriter: ObjectWriter {
    let file: PosixFile
    private(set) var bytesWritten: Int64 = 0
    init(file: PosixFile) { self.file = file }
    func write(_ bytes: [UInt8]) async throws {
        try bytes.withUnsafeBytes { try file.write($0) }
        bytesWritten += Int64(bytes.count)
    }
}
