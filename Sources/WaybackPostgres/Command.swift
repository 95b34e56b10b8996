#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WaybackCore

/// Runs external programs (initdb, pg_ctl, psql, pgbench) and captures their output, with
/// posix_spawn and close-on-exec pipes (so a daemon the child starts never holds them open).
public enum Command {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Starts `arguments` (absolute path first) in a new session with standard streams on
    /// /dev/null and does not wait: a background helper that outlives its caller.
    public static func spawnDetached(_ arguments: [String]) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, 0x80)  // POSIX_SPAWN_SETSID (glibc, _GNU_SOURCE)
        let cArgs = arguments.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, &attr, cArgs, environ)
        guard rc == 0 else { throw WaybackError(.io, "cannot start \(arguments[0]): \(String(cString: strerror(rc)))") }
    }

    /// Runs `arguments[0]` (a path, or a name looked up on PATH) and waits. With `asUser`, when
    /// running as root, the command runs through `runuser -u USER --`.
    @discardableResult
    public static func run(_ arguments: [String], asUser: String? = nil, environment: [String: String] = [:],
                           input: String? = nil, check: Bool = true, captureOutput: Bool = true) throws -> Result {
        var args = arguments
        if let asUser, getuid() == 0, asUser != "root" {
            args = ["/usr/sbin/runuser", "-u", asUser, "--"] + args
        }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }

        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1], inPipe: [Int32] = [-1, -1]
        for i in 0..<3 {
            var p: [Int32] = [-1, -1]
            guard pipe(&p) == 0 else { throw WaybackError(.io, "cannot create pipes: \(String(cString: strerror(errno)))") }
            _ = fcntl(p[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(p[1], F_SETFD, FD_CLOEXEC)
            switch i { case 0: outPipe = p; case 1: errPipe = p; default: inPipe = p }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if input != nil {
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if captureOutput {
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        let cArgs = args.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgs.forEach { free($0) }; cEnv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = args[0].hasPrefix("/") ? posix_spawn(&pid, args[0], &actions, nil, cArgs, cEnv)
                                        : posix_spawnp(&pid, args[0], &actions, nil, cArgs, cEnv)
        close(outPipe[1]); close(errPipe[1]); close(inPipe[0])
        guard rc == 0 else {
            close(outPipe[0]); close(errPipe[0]); close(inPipe[1])
            throw WaybackError(.io, "cannot run \(arguments[0]): \(String(cString: strerror(rc))); is it installed?")
        }
        if let input {
            let bytes = Array(input.utf8)
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(inPipe[1], $0.baseAddress! + done, bytes.count - done) }
                if n <= 0 { if errno == EINTR { continue }; break }
                done += n
            }
        }
        close(inPipe[1])
        var out = [UInt8](), err = [UInt8]()
        var fds = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0), pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0)]
        var open = 2
        var buf = [UInt8](repeating: 0, count: 65536)
        while open > 0 {
            if poll(&fds, 2, -1) < 0 { if errno == EINTR { continue }; break }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                let n = buf.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, 65536) }
                if n > 0 {
                    if i == 0 { out += buf[0..<n] } else { err += buf[0..<n] }
                } else if n == 0 || errno != EINTR {
                    close(fds[i].fd); fds[i].fd = -1; open -= 1
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exitStatus: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let r = Result(status: exitStatus, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
        if check && r.status != 0 {
            let tail = r.stderr.split(separator: "\n").suffix(3).joined(separator: " | ")
            let name = arguments[0].split(separator: "/").last.map(String.init) ?? arguments[0]
            throw WaybackError(.io, "\(name) failed with status \(r.status): \(tail)")
        }
        return r
    }
}
