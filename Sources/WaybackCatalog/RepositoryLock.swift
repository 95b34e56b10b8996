#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WaybackCore
import WaybackStorage

/// An exclusive lock per cluster, so two commands that change a repository for the same cluster
/// never run at once. A `flock(2)` on `<directory>/<cluster>.lock`; the holder writes what it is into
/// the file so that the refused command can name it. Released when the process ends, even by kill -9.
public final class RepositoryLock: @unchecked Sendable {
    let fd: Int32
    public let path: String

    private init(fd: Int32, path: String) { self.fd = fd; self.path = path }
    deinit { release() }

    public static func acquire(directory: String, cluster: String, command: String) throws -> RepositoryLock {
        if try FileSystem.status(directory, followLinks: true) == nil {
            try FileSystem.makeDirectories(directory, mode: 0o1777)
            try? FileSystem.chmod(directory, 0o1777)
        }
        let path = directory + "/" + cluster + ".lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw PosixError.make(errno, "open lock file", path) }
        _ = fchmod(fd, 0o666)
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

    private var released = false
    public func release() {
        guard !released else { return }
        released = true
        _ = ftruncate(fd, 0)
        _ = flock(fd, LOCK_UN)
        close(fd)
    }
}
