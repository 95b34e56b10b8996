#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WaybackCore

/// Runs external programs (initdb, pg_ctl, psql, pgbench, pg_dump) with posix_spawn and
/// close-on-exec pipes (so a daemon the child starts never holds them open).
public enum Command {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Starts `arguments` (absolute path first) in a new session with standard streams on
    /// /dev/null and does not wait for it: a background helper that may outlive its caller. While
    /// the caller lives, a thread of its own waits for the child, so an ended helper never stays
    /// a zombie in a long-running process (the thread ends with the child). Returns its pid.
    @discardableResult
    public static func spawnDetached(_ arguments: [String]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        cleanSignals(&attr, extraFlags: 0x80)  // POSIX_SPAWN_SETSID (glibc, _GNU_SOURCE)
        let cArgs = arguments.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, &attr, cArgs, environ)
        guard rc == 0 else { throw WaybackError(.io, "cannot start \(arguments[0]): \(String(cString: strerror(rc)))") }
        let child = pid
        Thread.detachNewThread { _ = waitStatus(child) }
        return pid
    }

    /// A child starts with no signal blocked and every signal at its default action. Without this
    /// it inherits the mask of the thread that spawns it, and Swift's cooperative threads block
    /// most signals: a `pgbench -T` (SIGALRM) never ends, and a child ignores the SIGTERM that asks
    /// it to stop. Ignored signals (SIGPIPE) are reset too.
    static func cleanSignals(_ attr: inout posix_spawnattr_t, extraFlags: Int32 = 0) {
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        sigdelset(&all, SIGKILL)
        sigdelset(&all, SIGSTOP)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        // POSIX_SPAWN_SETSIGDEF (0x04) | POSIX_SPAWN_SETSIGMASK (0x08), glibc's values.
        posix_spawnattr_setflags(&attr, Int16(0x04 | 0x08 | extraFlags))
    }

    /// A started child with pipes on its standard streams (the parent's ends).
    struct Child {
        var pid: pid_t
        var stdin: Int32
        var stdout: Int32
        var stderr: Int32
    }

    /// Starts `arguments[0]` (a path, or a name looked up on PATH) with pipes on stdout and stderr,
    /// and on stdin when `input` (else /dev/null). With `asUser`, when running as root, the command
    /// runs through `runuser -u USER --`. Secrets go in `environment`, never in the arguments.
    static func start(_ arguments: [String], asUser: String?, environment: [String: String], input: Bool,
                      captureOutput: Bool = true) throws -> Child {
        var args = arguments
        if let asUser, getuid() == 0, asUser != "root" {
            args = ["/usr/sbin/runuser", "-u", asUser, "--"] + args
        }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }

        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1], inPipe: [Int32] = [-1, -1]
        for i in 0..<3 {
            var p: [Int32] = [-1, -1]
            guard pipe(&p) == 0 else { throw WaybackError.system(.io, "cannot create pipes", call: "pipe", errno: errno) }
            _ = fcntl(p[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(p[1], F_SETFD, FD_CLOEXEC)
            switch i { case 0: outPipe = p; case 1: errPipe = p; default: inPipe = p }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if input {
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
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        cleanSignals(&attr)
        let cArgs = args.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgs.forEach { free($0) }; cEnv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = args[0].hasPrefix("/") ? posix_spawn(&pid, args[0], &actions, &attr, cArgs, cEnv)
                                        : posix_spawnp(&pid, args[0], &actions, &attr, cArgs, cEnv)
        close(outPipe[1]); close(errPipe[1]); close(inPipe[0])
        guard rc == 0 else {
            close(outPipe[0]); close(errPipe[0]); close(inPipe[1])
            throw WaybackError(.io, "cannot run \(arguments[0]): \(String(cString: strerror(rc))); is it installed?")
        }
        if !input { close(inPipe[1]); inPipe[1] = -1 }
        return Child(pid: pid, stdin: inPipe[1], stdout: outPipe[0], stderr: errPipe[0])
    }

    /// Waits for `pid`; its exit status, or 128 + the signal that ended it.
    static func waitStatus(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// The error of a child that ended with `status`, with the last lines of what it said.
    static func failure(_ arguments: [String], status: Int32, stderr: String) -> WaybackError {
        let tail = stderr.split(separator: "\n").suffix(3).joined(separator: " | ")
        let name = arguments[0].split(separator: "/").last.map(String.init) ?? arguments[0]
        return WaybackError(.io, "\(name) failed with status \(status): \(tail)")
    }

    /// Runs `arguments[0]` (a path, or a name looked up on PATH) and waits, blocking the calling
    /// thread (from async code, use `execute`). With `asUser`, when running as root, the command
    /// runs through `runuser -u USER --`.
    @discardableResult
    public static func run(_ arguments: [String], asUser: String? = nil, environment: [String: String] = [:],
                           input: String? = nil, check: Bool = true, captureOutput: Bool = true) throws -> Result {
        let child = try start(arguments, asUser: asUser, environment: environment, input: input != nil, captureOutput: captureOutput)
        if let input {
            let bytes = Array(input.utf8)
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(child.stdin, $0.baseAddress! + done, bytes.count - done) }
                if n <= 0 { if errno == EINTR { continue }; break }
                done += n
            }
            close(child.stdin)
        }
        var out = [UInt8](), err = [UInt8]()
        var fds = [pollfd(fd: child.stdout, events: Int16(POLLIN), revents: 0), pollfd(fd: child.stderr, events: Int16(POLLIN), revents: 0)]
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
        let r = Result(status: waitStatus(child.pid), stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
        if check && r.status != 0 { throw failure(arguments, status: r.status, stderr: r.stderr) }
        return r
    }

    /// `run`, from async code: the child's whole run (its pipes polled, then `waitpid`) happens on
    /// a thread of its own (`Blocking`), not on a cooperative thread.
    @discardableResult
    public static func execute(_ arguments: [String], asUser: String? = nil, environment: [String: String] = [:],
                               input: String? = nil, check: Bool = true, captureOutput: Bool = true) async throws -> Result {
        try await Blocking.run {
            try run(arguments, asUser: asUser, environment: environment, input: input, check: check, captureOutput: captureOutput)
        }
    }

    // MARK: streaming

    /// What `stream` reports once the child has ended.
    public struct StreamResult: Sendable {
        public var status: Int32
        /// The last `stderrLimit` bytes the child wrote to stderr.
        public var stderr: String
        /// Bytes the child wrote to stdout (all handed to the sink).
        public var bytes: Int64
    }

    /// Runs a child whose standard output is too large to hold (a `pg_dump` of a database) and
    /// hands it to `sink` in chunks of at most `chunkSize` bytes, in order, as it comes: memory
    /// stays bounded at `chunkSize * (buffered + 1)` whatever the output's size. When the sink is
    /// slower than the child, the child waits on its full pipe (back-pressure), nothing piles up.
    /// The pipes are read and the child waited for on a thread of its own, never on a cooperative
    /// thread. If the sink throws (or the task is cancelled, even while the child is silent), the
    /// child is sent SIGTERM, then
    /// SIGKILL after `killAfter` seconds, waited for, and the sink's error is rethrown: the child
    /// never outlives the call. With `check`, a non-zero exit status is an `.io` error naming the
    /// program and the end of its stderr.
    public static func stream(_ arguments: [String], asUser: String? = nil, environment: [String: String] = [:],
                              chunkSize: Int = 1 << 20, buffered: Int = 2, stderrLimit: Int = 64 << 10, killAfter: Double = 10,
                              check: Bool = true, into sink: ([UInt8]) async throws -> Void) async throws -> StreamResult {
        let child = try start(arguments, asUser: asUser, environment: environment, input: false)
        let channel = ChunkChannel(capacity: max(1, buffered))
        let chunk = max(4096, chunkSize), limit = stderrLimit
        Thread.detachNewThread { pump(child, channel: channel, chunkSize: chunk, stderrLimit: limit) }
        var sinkError: (any Error)?
        let pid = child.pid, grace = killAfter
        // Cancelled while the child is silent: it is asked to end, and its end ends the wait.
        await withTaskCancellationHandler {
            do {
                while case .chunk(let bytes) = await channel.next() {
                    try Task.checkCancellation()
                    try await sink(bytes)
                }
                try Task.checkCancellation()
            } catch {
                sinkError = error
                channel.cancel()
                channel.signal(pid, SIGTERM)
                Thread.detachNewThread {
                    let until = monotonicSeconds() + grace
                    while monotonicSeconds() < until {
                        if channel.isEnded { return }
                        usleep(20_000)
                    }
                    channel.signal(pid, SIGKILL)
                }
            }
        } onCancel: {
            channel.signal(pid, SIGTERM)
        }
        // The end: the pump has read both pipes to their end and waited for the child.
        let end = await channel.ended()
        if let sinkError { throw sinkError }
        if check && end.status != 0 { throw failure(arguments, status: end.status, stderr: end.stderr) }
        return end
    }

    /// The reading thread of `stream`: stdout in chunks into the channel (blocking while it is
    /// full), stderr's tail kept, then `waitpid`.
    static func pump(_ child: Child, channel: ChunkChannel, chunkSize: Int, stderrLimit: Int) {
        var fds = [pollfd(fd: child.stdout, events: Int16(POLLIN), revents: 0), pollfd(fd: child.stderr, events: Int16(POLLIN), revents: 0)]
        var open = 2
        var err = [UInt8]()
        var total: Int64 = 0
        var buf = [UInt8](repeating: 0, count: chunkSize)
        var filled = 0
        while open > 0 {
            if poll(&fds, 2, -1) < 0 { if errno == EINTR { continue }; break }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                if i == 0 {
                    let n = buf.withUnsafeMutableBytes { read(fds[0].fd, $0.baseAddress! + filled, chunkSize - filled) }
                    if n > 0 {
                        filled += n
                        total += Int64(n)
                        if filled == chunkSize {
                            // A cancelled consumer takes nothing more: read on to the end, so the
                            // child is never stuck on a full pipe before it sees its signal.
                            _ = channel.put(Array(buf[0..<filled]))
                            filled = 0
                        }
                    } else if n == 0 || errno != EINTR {
                        close(fds[0].fd); fds[0].fd = -1; open -= 1
                    }
                } else {
                    var small = [UInt8](repeating: 0, count: 8192)
                    let n = small.withUnsafeMutableBytes { read(fds[1].fd, $0.baseAddress, 8192) }
                    if n > 0 {
                        err += small[0..<n]
                        if err.count > stderrLimit { err.removeFirst(err.count - stderrLimit) }
                    } else if n == 0 || errno != EINTR {
                        close(fds[1].fd); fds[1].fd = -1; open -= 1
                    }
                }
            }
        }
        if filled > 0 { _ = channel.put(Array(buf[0..<filled])) }
        // Wait for the exit without reaping, mark it, then reap: a signal sent through the channel
        // can never reach a reaped pid that the system has given to another process.
        var info = siginfo_t()
        while waitid(P_PID, id_t(child.pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        channel.markExited()
        let status = waitStatus(child.pid)
        channel.finish(StreamResult(status: status, stderr: String(decoding: err, as: UTF8.self), bytes: total))
    }
}

/// A bounded hand-over of chunks from one producer thread to one async consumer: `put` blocks
/// the producer while `capacity` chunks wait; `next` suspends the consumer (no thread held) until
/// a chunk or the end arrives.
final class ChunkChannel: @unchecked Sendable {
    enum Item { case chunk([UInt8]), end }

    private let condition = NSCondition()
    private let capacity: Int
    // Guarded by `condition`.
    private var items: [[UInt8]] = []
    private var waiter: CheckedContinuation<Item, Never>?
    private var endWaiter: CheckedContinuation<Command.StreamResult, Never>?
    private var result: Command.StreamResult?
    private var cancelled = false
    private var exited = false

    init(capacity: Int) { self.capacity = capacity }

    /// Producer: hands a chunk over, waiting while the channel is full. False once cancelled
    /// (the chunk is dropped).
    func put(_ chunk: [UInt8]) -> Bool {
        condition.lock()
        while items.count >= capacity && !cancelled { condition.wait() }
        if cancelled { condition.unlock(); return false }
        if let w = waiter {
            waiter = nil
            condition.unlock()
            w.resume(returning: .chunk(chunk))
            return true
        }
        items.append(chunk)
        condition.unlock()
        return true
    }

    /// Producer: the child has exited and is about to be reaped; no signal is sent to it from now on.
    func markExited() {
        condition.lock()
        exited = true
        condition.unlock()
    }

    /// Sends `sig` to the child while it has not exited (under the lock `markExited` takes, so
    /// never to a pid that was reaped and reused).
    func signal(_ pid: pid_t, _ sig: Int32) {
        condition.lock()
        if !exited { kill(pid, sig) }
        condition.unlock()
    }

    /// Producer: the child has ended.
    func finish(_ r: Command.StreamResult) {
        condition.lock()
        result = r
        let w = waiter, e = endWaiter
        waiter = nil; endWaiter = nil
        condition.broadcast()
        condition.unlock()
        w?.resume(returning: .end)
        e?.resume(returning: r)
    }

    /// Consumer: stop taking chunks; the producer drops the rest without waiting.
    func cancel() {
        condition.lock()
        cancelled = true
        items = []
        condition.broadcast()
        condition.unlock()
    }

    var isEnded: Bool {
        condition.lock()
        defer { condition.unlock() }
        return result != nil
    }

    /// Consumer: the next chunk, or `.end` once every chunk is taken and the child has ended.
    func next() async -> Item {
        await withCheckedContinuation { (c: CheckedContinuation<Item, Never>) in
            condition.lock()
            if !items.isEmpty {
                let first = items.removeFirst()
                condition.broadcast()
                condition.unlock()
                c.resume(returning: .chunk(first))
            } else if result != nil {
                condition.unlock()
                c.resume(returning: .end)
            } else {
                waiter = c
                condition.unlock()
            }
        }
    }

    /// Consumer: waits for the child's end.
    func ended() async -> Command.StreamResult {
        await withCheckedContinuation { (c: CheckedContinuation<Command.StreamResult, Never>) in
            condition.lock()
            if let r = result {
                condition.unlock()
                c.resume(returning: r)
            } else {
                endWaiter = c
                condition.unlock()
            }
        }
    }
}
