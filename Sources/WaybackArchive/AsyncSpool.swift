import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// The queue of WAL files on their way to asynchronous repositories (`wal_push: async`).
///
/// The spool holds no WAL data: `wal-push` returns once the file is durable in the synchronous
/// repositories (the first one at least), and queues only its name here, one empty file per
/// repository (`<spool>/<repository>/<wal file>`). So an unreachable S3 can never fill pg_wal.
/// A background `wal-drain` (started by `wal-push`, one at a time under `<spool>/.lock`) copies
/// each queued file from the synchronous repositories and removes its entry.
///
/// The spool is bounded: when the WAL queued for one repository reaches `limitBytes`, `wal-push`
/// logs a warning on every push and queues no more names for it, but leaves an `.overflow` mark;
/// the drainer then catches that repository up by comparing listings (as `wayback repo sync` does)
/// once it can reach it. A warning is also logged when the queue passes half the limit.
public struct AsyncSpool: Sendable {
    public let path: String
    public let limitBytes: Int64

    public init(path: String, limitBytes: Int64) {
        self.path = path
        self.limitBytes = limitBytes
    }

    static let overflowMark = WALQueue.overflowMark

    /// The queue's read side (`status` reads it through the same type).
    var queue: WALQueue { WALQueue(path: path) }
    func directory(_ repository: String) -> String { queue.directory(repository) }
    public func entries(_ repository: String) -> [String] { queue.entries(repository) }
    public func overflowed(_ repository: String) -> Bool { queue.overflowed(repository) }

    /// Queues `fileName` for each repository and starts the drainer if none runs. Never throws:
    /// the file is already safe in the synchronous repositories, and `repo sync` is the backstop.
    func enqueue(_ fileName: String, repositories: [String], segmentSize: Int64, drainCommand: [String], events: EventLog) {
        for repo in repositories {
            let dir = directory(repo)
            do {
                try FileSystem.makeDirectories(dir, mode: 0o700)
                let queued = Int64(entries(repo).count)
                let lag = queued * segmentSize
                if lag >= limitBytes || overflowed(repo) {
                    if !overflowed(repo) {
                        let f = try PosixFile.create(dir + "/" + Self.overflowMark, mode: 0o600)
                        try f.close()
                    }
                    events.emit(.error, .walQueueBehind, "repository '\(repo)' is \(Format.bytes(lag)) of WAL behind, over archive.spool_limit_mb (\(Format.bytes(limitBytes))): it is unreachable or too slow. WAL stays safe in the first repository; wal-drain catches '\(repo)' up by comparing listings when it can reach it, or run 'wayback repo sync' now",
                                repository: repo, segment: fileName)
                    continue
                }
                if lag * 2 >= limitBytes {
                    events.emit(.warning, .walQueueBehind, "repository '\(repo)' is \(Format.bytes(lag)) of WAL behind (half of archive.spool_limit_mb); check that it is reachable",
                                repository: repo)
                }
                let entry = dir + "/" + fileName
                if (try? FileSystem.status(entry)) == nil {
                    let f = try PosixFile.create(entry, mode: 0o600)
                    try f.close()
                    try FileSystem.syncDirectory(dir)
                }
            } catch {
                events.emit(.error, .walQueueFailed, "cannot queue \(fileName) for repository '\(repo)' in \(dir): \(error); run 'wayback repo sync' to copy it",
                            repository: repo, segment: fileName)
            }
        }
        if !drainCommand.isEmpty, DirectoryLock.isFree(path) {
            do { try Command.spawnDetached(drainCommand) } catch { events.emit(.warning, .walQueueFailed, "cannot start wal-drain: \(error)") }
        }
    }

    /// The drainer: copies every queued file to its repository (from `source`, the synchronous
    /// repositories with fallback), removes the entry, and repeats until a round makes no
    /// progress. A repository that fails is left for the next run. Returns at once when another
    /// drainer holds the lock.
    public func drain(cluster: String, source: Repository, targets: [Repository], parallelism: Int, events: EventLog, logger: Logger) async throws {
        try FileSystem.makeDirectories(path, mode: 0o700)
        guard let lock = DirectoryLock.hold(path) else { return }
        defer { close(lock) }
        try await drainHeld(cluster: cluster, source: source, targets: targets, parallelism: parallelism, events: events, logger: logger)
    }

    /// The drainer's rounds, for a caller that holds the spool's lock (`hold()`: the daemon holds
    /// it for as long as it runs, so `wal-push` starts no drainer of its own meanwhile).
    public func drainHeld(cluster: String, source: Repository, targets: [Repository], parallelism: Int, events: EventLog, logger: Logger) async throws {
        let layout = RepositoryLayout(cluster: cluster)
        var progress = true
        while progress {
            progress = false
            for target in targets {
                do {
                    for name in entries(target.name) {
                        guard let wal = WALFileName(name) else { try? FileSystem.remove(directory(target.name) + "/" + name); continue }
                        do {
                            _ = try await RepositorySync.copy(layout.walKey(wal), from: source.driver, to: target.driver, layout: layout)
                        } catch let e as WaybackError where e.code == .notFound {
                            events.emit(.warning, .walQueueFailed, "queued WAL file \(name) is in no synchronous repository; dropping it from the queue of '\(target.name)'",
                                        repository: target.name, segment: name)
                        }
                        try FileSystem.remove(directory(target.name) + "/" + name)
                        progress = true
                    }
                    if overflowed(target.name) {
                        let r = try await RepositorySync.run(cluster: cluster, from: source, to: target, scope: .wal, parallelism: parallelism, logger: logger)
                        if let damaged = r.skipped.first {
                            // The mark stays: the next drain tries again (another copy may be sound by then).
                            events.emit(.warning, .walQueueFailed, "cannot catch '\(target.name)' up: \(r.skipped.count) WAL file(s) are damaged in the synchronous repositories (\(damaged.id): \(damaged.reason))",
                                        repository: target.name)
                        } else {
                            try FileSystem.remove(directory(target.name) + "/" + Self.overflowMark)
                            progress = true
                        }
                    }
                } catch {
                    events.emit(.warning, .walQueueFailed, "cannot copy queued WAL to '\(target.name)' (\(error)); it stays queued for the next wal-drain",
                                repository: target.name)
                }
            }
        }
    }
}

extension AsyncSpool {
    /// Takes the spool's lock (the drainer's) without waiting: the descriptor to close, or nil
    /// when a drainer holds it.
    public func hold() throws -> Int32? {
        try FileSystem.makeDirectories(path, mode: 0o700)
        return DirectoryLock.hold(path)
    }

    /// Waits until an entry is queued for one of `repositories` (inotify on their queue
    /// directories), `timeout` seconds pass, or the task is cancelled; on a thread of its own,
    /// woken through a pipe at cancellation. Returns at once when something is queued already.
    public func waitForEntries(_ repositories: [String], timeout: Double) async throws {
        for r in repositories { try FileSystem.makeDirectories(directory(r), mode: 0o700) }
        if repositories.contains(where: { !entries($0).isEmpty || overflowed($0) }) { return }
        let dirs = repositories.map(directory)
        let wake = try WakePipe()
        defer { wake.close() }
        try await withTaskCancellationHandler {
            try await Blocking.run {
                let fd = inotify_init1(Int32(IN_CLOEXEC))
                guard fd >= 0 else { throw PosixError.make(errno, "inotify_init1", dirs.first ?? "") }
                defer { Glibc.close(fd) }
                for d in dirs where inotify_add_watch(fd, d, UInt32(IN_CREATE) | UInt32(IN_MOVED_TO)) < 0 {
                    throw PosixError.make(errno, "inotify_add_watch", d)
                }
                // Entries queued between the check above and the watch.
                if dirs.contains(where: { ((try? FileSystem.list($0)) ?? []).contains { !$0.hasPrefix(".") || $0 == Self.overflowMark } }) { return }
                var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.readEnd, events: Int16(POLLIN), revents: 0)]
                _ = poll(&fds, 2, Int32(timeout * 1000))
            }
        } onCancel: {
            wake.signal()
        }
        try Task.checkCancellation()
    }
}

/// A pipe that wakes a thread blocked in `poll` (at cancellation); its ends are closed once,
/// and never written after.
final class WakePipe: @unchecked Sendable {
    let readEnd: Int32
    private let writeEnd: Int32
    private let state = NSLock()
    private var closed = false

    init() throws {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw PosixError.make(errno, "pipe", "wake-up pipe") }
        readEnd = fds[0]; writeEnd = fds[1]
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
    }

    func signal() {
        state.lock(); defer { state.unlock() }
        guard !closed else { return }
        var one: UInt8 = 1
        _ = write(writeEnd, &one, 1)
    }

    func close() {
        state.lock(); defer { state.unlock() }
        guard !closed else { return }
        closed = true
        Glibc.close(readEnd); Glibc.close(writeEnd)
    }
}

/// An advisory lock on `<dir>/.lock` (flock), held by one background process at a time.
enum DirectoryLock {
    /// True when nobody holds the lock.
    static func isFree(_ dir: String) -> Bool {
        guard let fd = hold(dir) else { return false }
        _ = flock(fd, LOCK_UN)
        close(fd)
        return true
    }

    /// Takes the lock without waiting; the descriptor to close, or nil when it is held.
    static func hold(_ dir: String) -> Int32? {
        let fd = open(dir + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return nil }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { close(fd); return nil }
        return fd
    }
}
