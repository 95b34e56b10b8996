#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import WaybackCore

/// A thin owner of a POSIX file descriptor for streaming I/O without Foundation overhead.
/// Not thread-safe; one per task.
public final class PosixFile {
    public let path: String
    public private(set) var fd: Int32

    private init(path: String, fd: Int32) { self.path = path; self.fd = fd }
    deinit { if fd >= 0 { _ = Glibc.close(fd) } }

    /// Opens a file for reading; without `followLinks`, a symbolic link is refused (ELOOP).
    public static func openForReading(_ path: String, followLinks: Bool = true) throws -> PosixFile {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | (followLinks ? 0 : O_NOFOLLOW))
        guard fd >= 0 else { throw PosixError.make(errno, "open", path) }
        return PosixFile(path: path, fd: fd)
    }

    /// Creates a new file (it must not exist), write-only or, with `readable`, read-write.
    public static func create(_ path: String, mode: mode_t = 0o640, readable: Bool = false) throws -> PosixFile {
        let fd = Glibc.open(path, (readable ? O_RDWR : O_WRONLY) | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw PosixError.make(errno, "create", path) }
        return PosixFile(path: path, fd: fd)
    }

    /// Creates a new file (it must not exist), read-write with `O_DIRECT`; nil when the file system
    /// refuses `O_DIRECT` (tmpfs before Linux 6.6, some FUSE file systems).
    static func createDirect(_ path: String, mode: mode_t) throws -> PosixFile? {
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | SequentialWriter.oDirect, mode)
        if fd < 0, errno == EINVAL {
            // Some kernels create the file before refusing the flag; O_EXCL made it ours.
            _ = unlink(path)
            return nil
        }
        guard fd >= 0 else { throw PosixError.make(errno, "create", path) }
        return PosixFile(path: path, fd: fd)
    }

    /// Opens an existing file for writing (for in-place updates).
    public static func openForWriting(_ path: String) throws -> PosixFile {
        let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw PosixError.make(errno, "open", path) }
        return PosixFile(path: path, fd: fd)
    }

    /// Reads up to `count` bytes into `buffer` (from the current offset); 0 at end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw PosixError.make(errno, "read", path)
        }
    }

    /// Fills as much of `buffer` as the file has; returns the count (short only at end of file).
    public func readFully(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 { break }
            done += n
        }
        return done
    }

    public func pread(into buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 { if errno == EINTR { continue }; throw PosixError.make(errno, "read", path) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Asks the kernel to start reading a range into the page cache now (`POSIX_FADV_WILLNEED`),
    /// so that scattered reads that follow find it there: many reads in flight at once instead of
    /// one at a time. Only a hint; errors are ignored.
    public func willNeed(offset: Int64, length: Int64) {
        _ = posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_WILLNEED)
    }

    /// Whether the first `length` bytes are all in the page cache (`mincore` of a mapping that is
    /// never read through): a read of them would not wait for the disk. False when it cannot tell.
    public func isCached(length: Int) -> Bool {
        #if os(Linux)
        guard length > 0, let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { return false }
        defer { munmap(map, length) }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        var resident = [UInt8](repeating: 0, count: (length + pageSize - 1) / pageSize)
        guard mincore(map, length, &resident) == 0 else { return false }
        return resident.allSatisfy { $0 & 1 != 0 }
        #else
        return false
        #endif
    }

    /// The file's current length.
    public func size() throws -> Int64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw PosixError.make(errno, "fstat", path) }
        return Int64(st.st_size)
    }

    /// Size and SHA-256 (hex) of the whole content, read from the start.
    public func sha256() throws -> (size: Int64, sha256: String) {
        var hasher = SHA256Hasher()
        var buffer = [UInt8].scratch(count: 1 << 20)
        var offset: Int64 = 0
        while true {
            let n = try buffer.withUnsafeMutableBytes { try pread(into: $0, offset: offset) }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            offset += Int64(n)
        }
        return (offset, hasher.finalizeHex())
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 { if errno == EINTR { continue }; throw PosixError.make(errno, "write", path) }
            done += n
        }
    }

    /// Writes all of `bytes` at `offset` (the file offset is unchanged).
    public func pwrite(_ bytes: UnsafeRawBufferPointer, offset: Int64) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 { if errno == EINTR { continue }; throw PosixError.make(errno, "write", path) }
            done += n
        }
    }

    public func fsync() throws {
        if Glibc.fsync(fd) != 0 { throw PosixError.make(errno, "fsync", path) }
    }

    /// Starts writing back `range` of the file without waiting (sync_file_range(2) with
    /// SYNC_FILE_RANGE_WRITE), so that a later fsync or syncfs has less left to do. Advisory: errors
    /// are ignored (the later sync reports real ones).
    public func startWriteback(offset: Int64, length: Int64) { Self.startWriteback(fd: fd, offset: offset, length: length) }

    static func startWriteback(fd: Int32, offset: Int64, length: Int64) {
        _ = c_sync_file_range(fd, off_t(offset), off_t(length), 2)
    }

    public func truncate(_ size: Int64) throws {
        if ftruncate(fd, off_t(size)) != 0 { throw PosixError.make(errno, "truncate", path) }
    }

    public func close() throws {
        guard fd >= 0 else { return }
        let rc = Glibc.close(fd)
        fd = -1
        if rc != 0 { throw PosixError.make(errno, "close", path) }
    }
}

/// glibc's syncfs(2), which Glibc's module map hides behind _GNU_SOURCE.
@_silgen_name("syncfs") func c_syncfs(_ fd: Int32) -> Int32
/// glibc's sync_file_range(2), likewise hidden behind _GNU_SOURCE.
@_silgen_name("sync_file_range") private func c_sync_file_range(_ fd: Int32, _ offset: off_t, _ nbytes: off_t, _ flags: UInt32) -> Int32

/// POSIX helpers that turn errno into `WaybackError`.
public enum PosixError {
    public static func make(_ err: Int32, _ op: String, _ path: String) -> WaybackError {
        let text = String(cString: strerror(err))
        switch err {
        case ENOENT: return WaybackError(.notFound, "cannot \(op) \(path): \(text)")
        case EACCES, EPERM:
            return WaybackError(.io, "cannot \(op) \(path): \(text); check that the user running wayback may access it")
        case ENOSPC: return WaybackError(.io, "cannot \(op) \(path): \(text); free space on that file system")
        default: return WaybackError(.io, "cannot \(op) \(path): \(text)")
        }
    }
}

/// Small file-system helpers used by the local driver, backup and restore.
public enum FileSystem {
    public struct Status: Sendable {
        public var isDirectory: Bool
        public var isRegular: Bool
        public var isSymlink: Bool
        public var size: Int64
        public var mode: UInt32
        public var mtime: Int64
        public var uid: UInt32
        public var gid: UInt32
        /// The modification time in nanoseconds since 1970.
        public var mtimeNanoseconds: Int64 = 0
        /// Device and inode: the file's identity (two names of one file share them).
        public var device: UInt64 = 0
        public var inode: UInt64 = 0
    }

    /// lstat(2); nil when the path does not exist.
    public static func status(_ path: String, followLinks: Bool = false) throws -> Status? {
        var st = stat()
        let rc = followLinks ? stat(path, &st) : lstat(path, &st)
        if rc != 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw PosixError.make(errno, "stat", path)
        }
        let fmt = st.st_mode & S_IFMT
        return Status(isDirectory: fmt == S_IFDIR, isRegular: fmt == S_IFREG, isSymlink: fmt == S_IFLNK,
                      size: Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777), mtime: Int64(st.st_mtim.tv_sec),
                      uid: st.st_uid, gid: st.st_gid,
                      mtimeNanoseconds: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                      device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Names in a directory (without `.` and `..`), sorted.
    public static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw PosixError.make(errno, "list", path) }
        defer { closedir(dir) }
        var names = [String]()
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Names in a directory (without `.` and `..`), sorted, each with whether the entry itself
    /// (not what a link points to) is a directory, as the directory reports it: nil when it does
    /// not say (`DT_UNKNOWN`: ask `status`). Saves a `stat` per entry on walks that only descend.
    public static func entries(_ path: String) throws -> [(name: String, isDirectory: Bool?)] {
        guard let dir = opendir(path) else { throw PosixError.make(errno, "list", path) }
        defer { closedir(dir) }
        var out = [(name: String, isDirectory: Bool?)]()
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            guard name != "." && name != ".." else { continue }
            let type = Int(entry.pointee.d_type)
            out.append((name, type == Int(DT_UNKNOWN) ? nil : type == Int(DT_DIR)))
        }
        return out.sorted { $0.name < $1.name }
    }

    /// mkdir -p with `mode` for new directories (given to `owner` when set); fsyncs the parent of
    /// each directory it creates.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o750, owner: (uid: UInt32, gid: UInt32)? = nil) throws {
        if try status(path, followLinks: true)?.isDirectory == true { return }
        let parent = parentPath(path)
        if parent != path, !parent.isEmpty { try makeDirectories(parent, mode: mode, owner: owner) }
        if mkdir(path, mode) != 0 {
            if errno == EEXIST, try status(path, followLinks: true)?.isDirectory == true { return }
            throw PosixError.make(errno, "create directory", path)
        }
        if let owner { try chown(path, uid: owner.uid, gid: owner.gid) }
        try syncDirectory(parent.isEmpty ? "/" : parent)
    }

    public static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw PosixError.make(errno, "open directory", path) }
        defer { _ = Glibc.close(fd) }
        if fsync(fd) != 0 { throw PosixError.make(errno, "fsync directory", path) }
    }

    public static func rename(_ from: String, _ to: String) throws {
        if Glibc.rename(from, to) != 0 { throw PosixError.make(errno, "rename \(from) to", to) }
    }

    public static func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw PosixError.make(errno, "remove", path) }
    }

    /// rm -rf (does not follow symlinks).
    public static func removeTree(_ path: String) throws {
        guard let st = try status(path) else { return }
        if st.isDirectory {
            for name in try list(path) { try removeTree(path + "/" + name) }
            if rmdir(path) != 0 && errno != ENOENT { throw PosixError.make(errno, "remove directory", path) }
        } else {
            try remove(path)
        }
    }

    public static func readLink(_ path: String) throws -> String {
        var buf = [CChar](repeating: 0, count: 4097)
        let n = readlink(path, &buf, 4096)
        guard n >= 0 else { throw PosixError.make(errno, "read link", path) }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Where the symbolic link at `path` points (nil: not a link, or it cannot be read).
    public static func linkTarget(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buf, buf.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func symlink(target: String, at path: String) throws {
        if Glibc.symlink(target, path) != 0 { throw PosixError.make(errno, "create link", path) }
    }

    public static func chmod(_ path: String, _ mode: UInt32) throws {
        if Glibc.chmod(path, mode_t(mode)) != 0 { throw PosixError.make(errno, "chmod", path) }
    }

    public static func chown(_ path: String, uid: UInt32, gid: UInt32) throws {
        if lchown(path, uid, gid) != 0 { throw PosixError.make(errno, "chown", path) }
    }

    public static func parentPath(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    public static func lastComponent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// An absolute, normalised version of `path` (relative to the current directory).
    public static func absolute(_ path: String) -> String {
        var p = path
        if !p.hasPrefix("/") {
            var buf = [CChar](repeating: 0, count: 4097)
            if getcwd(&buf, 4096) != nil {
                p = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + p
            }
        }
        var parts = [Substring]()
        for c in p.split(separator: "/") {
            if c == "." { continue }
            if c == ".." { _ = parts.popLast(); continue }
            parts.append(c)
        }
        return "/" + parts.joined(separator: "/")
    }

    public static var currentUID: UInt32 { getuid() }

    /// realpath(3): the absolute path with every symbolic link resolved; nil when it does not
    /// exist or cannot be resolved by this user.
    public static func realPath(_ path: String) -> String? {
        guard let p = Glibc.realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}

