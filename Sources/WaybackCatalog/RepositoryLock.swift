#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WaybackCore
import WaybackStorage

/// An exclusive lock per cluster and repositories, so two commands that change a repository for
/// the same cluster never run at once. A `flock(2)` on `<directory>/<cluster>-<system
/// identifier>-<repositories' digest>.lock` (see `fileName`); the holder writes what it is into
/// the file so that the refused command can name it. Released when the process ends, even by kill -9.
///
/// The lock directory and file are trusted only when no other user can have planted them:
/// - the directory is a real directory (not a symbolic link), owned by this user or root (root
///   accepts a directory of any owner), and writable by its owner only; one made here is mode 0700
///   and, when made by root, given to `owner` (or to the owner of its parent directory), so that
///   the PostgreSQL OS user and root share it;
/// - the file is opened without following a symbolic link, must be a regular file with one link,
///   owned by this user (root: by the directory's owner or root), and is mode 0600;
/// - it is written (truncated) only once the lock is held.
public final class RepositoryLock: @unchecked Sendable {
    let fd: Int32
    public let path: String

    private init(fd: Int32, path: String) { self.fd = fd; self.path = path }
    deinit { release() }

    /// The lock of what must not change twice at once: one PostgreSQL cluster (its system
    /// identifier) in one set of repositories, so that two unrelated clusters that share a name on
    /// one host (Debian names every cluster `main`) never block each other.
    /// `role` "daemon" is the daemon's own lock (`...daemon.lock`): one daemon per cluster and
    /// repositories, beside the lock its jobs take like any command.
    public static func acquire(directory: String, cluster: String, systemIdentifier: UInt64, repository: Repository, command: String,
                               owner: (uid: UInt32, gid: UInt32)? = nil, role: String? = nil) throws -> RepositoryLock {
        var name = fileName(cluster: cluster, systemIdentifier: systemIdentifier, repositories: repository.members.map(\.description))
        if let role { name = String(name.dropLast(".lock".count)) + ".\(role).lock" }
        return try acquire(directory: directory, file: name, cluster: cluster, command: command, owner: owner)
    }

    /// `<cluster>-<system identifier>-<12 hex digits of the repositories' SHA-256>.lock`.
    public static func fileName(cluster: String, systemIdentifier: UInt64, repositories: [String]) -> String {
        "\(cluster)-\(systemIdentifier)-\(repositoriesDigest(repositories)).lock"
    }

    static func repositoriesDigest(_ repositories: [String]) -> Substring {
        SHA256Hasher.hex(Array(repositories.sorted().joined(separator: "\n").utf8)).prefix(12)
    }

    /// Whether `file` is named after the lock of `cluster` in `repositories` (whatever the system
    /// identifier), with `suffix` in place of `.lock`: the daemon's `.schedule.json` of this
    /// configuration, and not that of a cluster whose name starts the same (`main-2`).
    public static func isNamed(_ file: String, cluster: String, repositories: [String], suffix: String) -> Bool {
        let tail = "-\(repositoriesDigest(repositories))\(suffix)"
        guard file.hasPrefix(cluster + "-"), file.hasSuffix(tail), file.count > cluster.count + 1 + tail.count else { return false }
        return file.dropFirst(cluster.count + 1).dropLast(tail.count).allSatisfy { $0.isASCII && $0.isNumber }
    }

    static func acquire(directory: String, file: String, cluster: String, command: String,
                        owner: (uid: UInt32, gid: UInt32)?) throws -> RepositoryLock {
        let dir = FileSystem.absolute(directory)
        let dirStatus = try safeDirectory(dir, owner: owner)
        let path = dir + "/" + file
        var created = true
        var fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 && errno == EEXIST {
            created = false
            fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        }
        guard fd >= 0 else {
            if errno == ELOOP {
                throw WaybackError(.io, "lock file \(path) is a symbolic link, which Wayback never follows; remove it (someone may have planted it) and try again")
            }
            throw PosixError.make(errno, "open lock file", path)
        }
        do {
            try checkFile(fd, path: path, directoryOwner: dirStatus.uid, created: created)
        } catch {
            close(fd)
            throw error
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            var buf = [UInt8](repeating: 0, count: 512)
            let n = pread(fd, &buf, 512, 0)
            close(fd)
            let holder = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "another wayback command"
            throw WaybackError(.locked, "cluster '\(cluster)' is locked by \(holder); wait for it to finish and try again (lock file \(path))")
        }
        let text = "'wayback \(command)' (pid \(getpid()), since \(Format.timestamp(Date())))\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        return RepositoryLock(fd: fd, path: path)
    }

    /// The lock directory, made if missing, checked as the type's comment says.
    static func safeDirectory(_ dir: String, owner: (uid: UInt32, gid: UInt32)?) throws -> FileSystem.Status {
        let euid = geteuid()
        if try FileSystem.status(dir) == nil {
            let parent = FileSystem.parentPath(dir)
            try FileSystem.makeDirectories(parent, mode: 0o755)
            if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw PosixError.make(errno, "create lock directory", dir) }
            if euid == 0, let st = try FileSystem.status(dir), st.uid == 0, !st.isSymlink {
                let parentOwner = try FileSystem.status(parent, followLinks: true).map { (uid: $0.uid, gid: $0.gid) }
                let give = owner ?? parentOwner
                if let give, give.0 != 0 { try FileSystem.chown(dir, uid: give.0, gid: give.1) }
            }
        }
        guard let st = try FileSystem.status(dir) else { throw WaybackError(.io, "lock directory \(dir) vanished while it was made; try again") }
        let fix = "set lock_path to a directory owned by the PostgreSQL OS user with mode 0700 (or remove \(dir): Wayback makes it so)"
        if st.isSymlink { throw WaybackError(.io, "lock directory \(dir) is a symbolic link, which Wayback never follows; \(fix)") }
        guard st.isDirectory else { throw WaybackError(.io, "lock directory \(dir) is not a directory; \(fix)") }
        guard st.uid == euid || st.uid == 0 || euid == 0 else {
            throw WaybackError(.io, "lock directory \(dir) belongs to another user (uid \(st.uid)), who could block or redirect Wayback's lock; \(fix)")
        }
        if st.mode & 0o022 != 0 {
            // Its owner may tighten it (an older Wayback made /tmp/wayback mode 1777).
            guard st.uid == euid, Glibc.chmod(dir, 0o700) == 0 else {
                throw WaybackError(.io, "lock directory \(dir) can be written by other users (mode \(String(st.mode, radix: 8))), who could block or redirect Wayback's lock; \(fix)")
            }
        }
        return st
    }

    static func checkFile(_ fd: Int32, path: String, directoryOwner: UInt32, created: Bool) throws {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw PosixError.make(errno, "stat lock file", path) }
        let euid = geteuid()
        guard st.st_mode & S_IFMT == S_IFREG, st.st_nlink == 1 else {
            throw WaybackError(.io, "lock file \(path) is not a plain file of its own (it has \(st.st_nlink) links); remove it and try again")
        }
        if created {
            if euid == 0 && directoryOwner != 0 {
                _ = fchown(fd, directoryOwner, UInt32.max)
            }
            return
        }
        guard st.st_uid == euid || (euid == 0 && (st.st_uid == directoryOwner || st.st_uid == 0)) else {
            throw WaybackError(.io, "lock file \(path) belongs to another user (uid \(st.st_uid)); remove it and try again")
        }
        if st.st_mode & 0o077 != 0 { _ = fchmod(fd, 0o600) }
    }

    private var released = false
    public func release() {
        guard !released else { return }
        released = true
        _ = ftruncate(fd, 0)
        _ = flock(fd, LOCK_UN)
        close(fd)
    }
}
