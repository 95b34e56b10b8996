import Foundation
import Logging
import Synchronization
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// WAL pushed ahead of PostgreSQL: the daemon's half, and the checks `wal-push` makes.
///
/// While the daemon runs it holds `pg_wal/wayback-ahead/.lock`, watches `pg_wal/archive_status`
/// for `*.ready` segments (inotify) and stores each one in every synchronous repository, several at
/// a time, then queues it for the asynchronous ones. Only once the object is durable in each
/// synchronous repository does it write a marker `pg_wal/wayback-ahead/<segment>` naming the file
/// it read (device, inode, size, modification time, SHA-256 of its first page), the configuration
/// it stored it under (the file's identity and a digest of the `WAYBACK_*` environment), and the
/// object in each repository (its size, and for a local repository its path).
///
/// `wal-push` of that segment then checks the marker and returns: no compression, no write.
/// - Before it reads the configuration (`takeBeforeConfiguration`): when every synchronous
///   repository is local, the configuration file and the environment are those of the marker, the
///   file is the one the daemon read, and each object is there with its size (`stat`).
/// - Otherwise, with the configuration read (`take`): each synchronous repository's driver must
///   report the object with the size the marker has.
/// Anything that does not match sends `wal-push` down its usual path, which stores or compares
/// exactly as without the daemon: nothing is acknowledged that is not durable in the first
/// repository.
///
/// While the daemon stores a segment it holds `<segment>.lock` (flock). A `wal-push` that arrives
/// meanwhile waits for it rather than storing the same file a second time; a `wal-push` that
/// stores a segment itself holds the same lock, so the daemon leaves that one alone.
public struct PushAhead: Sendable {
    public let directory: String

    /// `pgWAL`: the directory of the WAL files (`pg_wal`; for `wal-push`, that of `%p`).
    public init(pgWAL: String) { directory = pgWAL + "/wayback-ahead" }

    /// How long `wal-push` waits for the daemon to finish a segment it is storing before it stores
    /// the segment itself.
    static let waitSeconds = 60.0
    /// The part of the file whose SHA-256 the marker keeps (the first page: header, system id).
    static let headLength = 8192
    /// Whether this process has waited for the daemon already (`wal-push` pushes one file).
    static let waited = Atomic<Bool>(false)

    func markerPath(_ name: WALFileName) -> String { directory + "/" + name.description }
    func claimPath(_ name: WALFileName) -> String { directory + "/" + name.description + ".lock" }

    /// True while a daemon pushes ahead (holds `<ahead>/.lock`). No daemon, no marker directory:
    /// false, and `wal-push` takes today's path untouched.
    public var daemonRunning: Bool {
        let fd = open(directory + "/.lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 { _ = flock(fd, LOCK_UN); return false }
        return true
    }

    /// The daemon takes `<ahead>/.lock` for as long as it pushes ahead: the descriptor to close,
    /// or nil when another process holds it.
    public func hold() throws -> Int32? {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        return DirectoryLock.hold(directory)
    }

    // MARK: - The marker

    /// What the daemon read, under which configuration, and where it stored it.
    struct Marker: Equatable {
        struct Configuration: Equatable {
            var device: UInt64, inode: UInt64, size: Int64, mtimeNanoseconds: Int64
            /// `environmentDigest` of the daemon's environment.
            var environment: String
        }
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var mtimeNanoseconds: Int64
        var headSHA256: String
        var configuration: Configuration?
        /// Repository name → size of the stored object as its driver reports it.
        var stored: [String: Int64]
        /// Local repositories: path of the object file → its size.
        var objects: [String: Int64] = [:]

        /// Plain lines (no JSON decoder on `wal-push`'s fast path): a version line, the file, the
        /// configuration, one line per repository and per local object.
        var text: String {
            var s = "wayback-ahead 1\nfile \(device) \(inode) \(size) \(mtimeNanoseconds) \(headSHA256)\n"
            if let c = configuration { s += "config \(c.device) \(c.inode) \(c.size) \(c.mtimeNanoseconds) \(c.environment)\n" }
            for (name, bytes) in stored.sorted(by: { $0.key < $1.key }) { s += "stored \(bytes) \(name)\n" }
            for (path, bytes) in objects.sorted(by: { $0.key < $1.key }) { s += "object \(bytes) \(path)\n" }
            return s
        }

        init(device: UInt64, inode: UInt64, size: Int64, mtimeNanoseconds: Int64, headSHA256: String,
             configuration: Configuration?, stored: [String: Int64], objects: [String: Int64]) {
            self.device = device; self.inode = inode; self.size = size; self.mtimeNanoseconds = mtimeNanoseconds
            self.headSHA256 = headSHA256; self.configuration = configuration; self.stored = stored; self.objects = objects
        }

        init?(text: String) {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
            guard lines.first == "wayback-ahead 1", lines.count >= 2 else { return nil }
            let f = lines[1].split(separator: " ")
            guard f.count == 6, f[0] == "file", let d = UInt64(f[1]), let i = UInt64(f[2]), let s = Int64(f[3]), let m = Int64(f[4]) else { return nil }
            self.init(device: d, inode: i, size: s, mtimeNanoseconds: m, headSHA256: String(f[5]), configuration: nil, stored: [:], objects: [:])
            for line in lines.dropFirst(2) {
                if line.hasPrefix("config ") {
                    let c = line.split(separator: " ")
                    guard c.count == 6, let d = UInt64(c[1]), let i = UInt64(c[2]), let s = Int64(c[3]), let m = Int64(c[4]) else { return nil }
                    configuration = Configuration(device: d, inode: i, size: s, mtimeNanoseconds: m, environment: String(c[5]))
                    continue
                }
                let p = line.split(separator: " ", maxSplits: 2)
                guard p.count == 3, let n = Int64(p[1]) else { return nil }
                switch p[0] {
                case "stored": stored[String(p[2])] = n
                case "object": objects[String(p[2])] = n
                default: return nil
                }
            }
        }
    }

    /// A digest of the `WAYBACK_*` variables that can change the configuration: name and value,
    /// except for secrets (`*_SECRET_ACCESS_KEY`, `*_SESSION_TOKEN`, `WAYBACK_ENCRYPTION_PASSPHRASE`),
    /// whose names only count. `WAYBACK_CONFIG` is left out: the file's identity is checked itself.
    public static func environmentDigest(_ environment: [String: String]) -> String {
        var hasher = SHA256Hasher()
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix("WAYBACK_") && name != "WAYBACK_CONFIG" {
            hasher.update(Array((isSecretVariable(name) ? name : name + "=" + value).utf8) + [0])
        }
        return hasher.finalizeHex()
    }

    /// Whether a `WAYBACK_*` variable holds a secret (its value never leaves the process).
    public static func isSecretVariable(_ name: String) -> Bool {
        name == "WAYBACK_ENCRYPTION_PASSPHRASE" || name.hasSuffix("_SECRET_ACCESS_KEY") || name.hasSuffix("_SESSION_TOKEN")
    }

    static func configurationIdentity(_ path: String, environment: [String: String]) -> Marker.Configuration? {
        guard let st = try? FileSystem.status(path, followLinks: true) else { return nil }
        return Marker.Configuration(device: st.device, inode: st.inode, size: st.size, mtimeNanoseconds: st.mtimeNanoseconds,
                                    environment: environmentDigest(environment))
    }

    /// The SHA-256 of the file's first page.
    static func headDigest(_ file: PosixFile, size: Int64) throws -> String {
        let n = Int(min(Int64(headLength), size))
        var head = [UInt8](repeating: 0, count: n)
        let got = try head.withUnsafeMutableBytes { try file.pread(into: $0, offset: 0) }
        guard got == n else { throw WaybackError(.io, "\(file.path) changed size while it was read") }
        return SHA256Hasher.hex(head)
    }

    static func identity(_ fd: Int32, path: String) throws -> (device: UInt64, inode: UInt64, size: Int64, mtime: Int64) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw PosixError.make(errno, "stat", path) }
        return (UInt64(st.st_dev), UInt64(st.st_ino), Int64(st.st_size), Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec))
    }

    // MARK: - wal-push's side

    /// `wal-push`'s fastest path, before the configuration is read (which costs more than the
    /// whole check): true when the daemon stored `walPath` ahead under the configuration file
    /// `configPath` and this environment, in local repositories only, and every object is there
    /// with the size it was written with; the marker is consumed. False in every other case,
    /// without side effects: the caller goes on as usual.
    public static func takeBeforeConfiguration(walPath: String, configPath: String, environment: [String: String]) -> Bool {
        guard let name = WALFileName(FileSystem.lastComponent(walPath)), name.kind == .segment else { return false }
        let ahead = PushAhead(pgWAL: FileSystem.parentPath(walPath))
        guard ahead.daemonRunning else { return false }
        let path = ahead.markerPath(name)
        if (try? FileSystem.status(path)) == nil { try? ahead.waitForClaimBlocking(name, timeout: waitSeconds) }
        guard let text = readSmall(path), let marker = Marker(text: text), let stored = marker.configuration,
              stored == configurationIdentity(configPath, environment: environment),
              !marker.objects.isEmpty, marker.objects.count == marker.stored.count,
              let file = try? PosixFile.openForReading(walPath), marker.matches(file) else { return false }
        for (object, bytes) in marker.objects {
            guard let st = try? FileSystem.status(object), st.isRegular, st.size == bytes else { return false }
        }
        return (try? FileSystem.remove(path)) != nil
    }

    /// `wal-push`'s path with the configuration read: waits while the daemon stores `name`, then
    /// checks its marker against the open file and every synchronous repository's driver. Returns
    /// the outcome when the segment is durably stored as the marker says (the marker is consumed),
    /// nil when `wal-push` must store it itself (no marker, or one that does not match: removed).
    func take(_ name: WALFileName, file: PosixFile, configuration: ArchiveConfiguration, logger: Logger) async throws -> PushOutcome? {
        let path = markerPath(name)
        if (try? FileSystem.status(path)) == nil {
            let me = self
            try await Blocking.run { try me.waitForClaimBlocking(name, timeout: Self.waitSeconds) }
        }
        guard let text = Self.readSmall(path) else { return nil }
        defer { try? FileSystem.remove(path) }
        guard let marker = Marker(text: text) else {
            logger.warning("ignoring a damaged push-ahead marker \(path); storing \(name) now")
            return nil
        }
        guard marker.matches(file) else {
            logger.warning("\(file.path) is not the file the daemon stored ahead; storing it now")
            return nil
        }
        let key = RepositoryLayout(cluster: configuration.cluster).walKey(name)
        for repo in configuration.syncRepositories {
            guard let want = marker.stored[repo.name], let info = try await repo.driver.info(key), info.size == want else {
                logger.warning("\(name) is not in repository '\(repo.name)' as the daemon stored it ahead; storing it now")
                return nil
            }
        }
        return .storedAhead(bytes: marker.stored[configuration.syncRepositories[0].name] ?? 0)
    }

    /// Waits until nobody holds `<segment>.lock` (the daemon finished or gave up on it), or
    /// `timeout` seconds pass. Inotify on the directory, so no polling while the daemon works (a
    /// daemon killed meanwhile frees the lock without an event: it is looked at each second).
    func waitForClaimBlocking(_ name: WALFileName, timeout: Double) throws {
        let lockFD = open(claimPath(name), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard lockFD >= 0 else { return }
        defer { close(lockFD) }
        // One wait per process: after the fast path gave up waiting, the usual path does not wait again.
        guard !Self.waited.exchange(true, ordering: .relaxed) else { return }
        let watch = inotify_init1(Int32(IN_CLOEXEC))
        guard watch >= 0 else { throw PosixError.make(errno, "inotify_init1", directory) }
        defer { close(watch) }
        _ = inotify_add_watch(watch, directory, UInt32(IN_MOVED_TO) | UInt32(IN_DELETE))
        let deadline = monotonicSeconds() + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if (try? FileSystem.status(markerPath(name))) != nil { return }
            if flock(lockFD, LOCK_SH | LOCK_NB) == 0 { _ = flock(lockFD, LOCK_UN); return }
            let left = deadline - monotonicSeconds()
            if left <= 0 { return }
            var p = pollfd(fd: watch, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(min(left, 1) * 1000)) > 0 { _ = read(watch, &buffer, buffer.count) }
        }
    }

    static func readSmall(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 16384)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0, n < buffer.count else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }
}

extension PushAhead.Marker {
    /// Whether `file` is the file the daemon read: same device, inode, size, modification time
    /// and first page.
    func matches(_ file: PosixFile) -> Bool {
        guard let id = try? PushAhead.identity(file.fd, path: file.path),
              id.device == device, id.inode == inode, id.size == size, id.mtime == mtimeNanoseconds,
              let head = try? PushAhead.headDigest(file, size: id.size) else { return false }
        return head == headSHA256
    }
}

/// The lock on one segment (`<ahead>/<segment>.lock`), held by whoever stores it: the daemon or
/// a `wal-push`. Released by removing the file while still holding it.
final class SegmentClaim: @unchecked Sendable {
    let fd: Int32
    let path: String

    private init(fd: Int32, path: String) { self.fd = fd; self.path = path }

    /// Takes the lock without waiting (creating its file); nil when someone else holds it.
    static func take(_ path: String) -> SegmentClaim? {
        for _ in 0..<3 {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { return nil }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { close(fd); return nil }
            // Its last holder may have removed the file between our open and flock: that lock
            // is on a file nobody else can find, so try again with the file now at the path.
            var a = stat(), b = stat()
            if fstat(fd, &a) == 0, lstat(path, &b) == 0, a.st_dev == b.st_dev, a.st_ino == b.st_ino {
                return SegmentClaim(fd: fd, path: path)
            }
            close(fd)
        }
        return nil
    }

    func release() {
        unlink(path)
        close(fd)
    }
}

// MARK: - The daemon's side

extension PushAhead {
    /// The segments PostgreSQL has marked ready to archive, oldest first.
    public static func readySegments(pgWAL: String) throws -> [WALFileName] {
        try FileSystem.list(pgWAL + "/archive_status").compactMap { entry -> WALFileName? in
            guard entry.hasSuffix(".ready"), let name = WALFileName(String(entry.dropLast(6))), name.kind == .segment else { return nil }
            return name
        }.sorted { $0.description < $1.description }
    }

    /// What the daemon stores under: one configuration, with what it takes to read once (the
    /// repositories' binding, the identity of the configuration file). Made again at a reload.
    public struct Session: Sendable {
        let ahead: PushAhead
        let pgWAL: String
        let configuration: ArchiveConfiguration
        let binding: ClusterBinding
        let identity: Marker.Configuration?
        let localRoots: [String: String]

        /// `configPath` and `environment` are what the daemon read its configuration from (they
        /// go into each marker), `localRoots` the root directory of each local repository.
        public init(pgWAL: String, configuration: ArchiveConfiguration, configPath: String, environment: [String: String],
                    localRoots: [String: String]) async throws {
            ahead = PushAhead(pgWAL: pgWAL)
            self.pgWAL = pgWAL
            self.configuration = configuration
            binding = try await Catalog(repository: configuration.syncRepositories[0], cluster: configuration.cluster).requireBinding()
            identity = PushAhead.configurationIdentity(configPath, environment: environment)
            self.localRoots = localRoots
        }

        /// One round: stores every ready segment but the oldest that has no marker and is not
        /// being stored by someone else, `workers` at a time; removes the markers of segments PostgreSQL has
        /// archived since (it never asked: `wal-push` ran before the daemon was done). `done`
        /// remembers the segments stored in earlier rounds until PostgreSQL has archived them, so
        /// that a segment whose marker `wal-push` consumed is not stored again. Returns the
        /// segments it tried (for `waitForReady`: one that failed, or that a `wal-push` was
        /// storing, waits for the next event).
        @discardableResult
        public func storeReady(workers: Int, done: inout Set<String>, events: EventLog, logger: Logger) async throws -> Set<String> {
            let directory = ahead.directory
            try FileSystem.makeDirectories(directory, mode: 0o700)
            let markers = Set(try FileSystem.list(directory).filter { !$0.hasPrefix(".") && !$0.hasSuffix(".lock") && !$0.hasSuffix(".tmp") })
            let ready = try PushAhead.readySegments(pgWAL: pgWAL)
            let readyNames = Set(ready.map(\.description))
            for stale in markers.subtracting(readyNames) { try? FileSystem.remove(directory + "/" + stale) }
            done.formIntersection(readyNames)
            // The oldest ready segment is the one PostgreSQL's archiver is on, or starts on this
            // very moment: racing it for that one only adds a hand-over to the wait (measured),
            // so `wal-push` stores it and the daemon goes ahead from the next one.
            let todo = ready.dropFirst().filter { !done.contains($0.description) && !markers.contains($0.description) }
            guard !todo.isEmpty else { return [] }
            var stored = 0
            try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                var next = todo.makeIterator()
                func add() -> Bool {
                    guard let name = next.next() else { return false }
                    group.addTask {
                        do {
                            let started = monotonicSeconds()
                            let ok = try await ahead.store(name, path: pgWAL + "/" + name.description, binding: binding,
                                                           configuration: configuration, identity: identity, localRoots: localRoots)
                            logger.debug("\(name) \(ok ? "stored ahead" : "left to wal-push") in \(Int((monotonicSeconds() - started) * 1000)) ms")
                            return (name.description, ok)
                        } catch is CancellationError {
                            throw CancellationError()
                        } catch {
                            events.emit(.warning, .walAhead, "could not store \(name) ahead of PostgreSQL (\((error as? WaybackError)?.message ?? String(describing: error))); wal-push stores it itself",
                                        segment: name.description)
                            return (name.description, false)
                        }
                    }
                    return true
                }
                for _ in 0..<max(1, workers) where add() {}
                while let (name, ok) = try await group.next() {
                    if ok { done.insert(name); stored += 1 }
                    _ = add()
                }
            }
            return Set(todo.map(\.description))
        }
    }

    /// Stores one segment in every synchronous repository, queues it for the asynchronous ones,
    /// and writes its marker. False when someone else is storing it, or it is gone (archived and
    /// recycled meanwhile).
    func store(_ name: WALFileName, path: String, binding: ClusterBinding, configuration: ArchiveConfiguration,
               identity: Marker.Configuration?, localRoots: [String: String]) async throws -> Bool {
        guard let claim = SegmentClaim.take(claimPath(name)) else { return false }
        defer { claim.release() }
        if (try? FileSystem.status(markerPath(name))) != nil { return true }
        let file: PosixFile
        do { file = try PosixFile.openForReading(path) } catch let e as WaybackError where e.code == .notFound { return false }
        let id = try Self.identity(file.fd, path: path)
        try WALArchive.checkSegmentHeader(file, path: path, binding: binding, configuration: configuration)
        let key = RepositoryLayout(cluster: configuration.cluster).walKey(name)
        var object: [UInt8]?
        var stored = [String: Int64](), objects = [String: Int64]()
        for repo in configuration.syncRepositories {
            _ = try await WALArchive.store(file: file, size: Int(id.size), name: name, in: repo, cluster: configuration.cluster,
                                           object: &object, configuration: configuration)
            guard let info = try await repo.driver.info(key) else {
                throw WaybackError(.repository, "\(name) is not in \(repo.description) right after it was stored")
            }
            stored[repo.name] = info.size
            if let root = localRoots[repo.name], let st = try FileSystem.status(root + "/" + key), st.isRegular {
                objects[root + "/" + key] = st.size
            }
        }
        WALArchive.queueForAsyncRepositories(name.description, configuration: configuration, segmentSize: id.size)
        let marker = Marker(device: id.device, inode: id.inode, size: id.size, mtimeNanoseconds: id.mtime,
                            headSHA256: try Self.headDigest(file, size: id.size), configuration: identity, stored: stored, objects: objects)
        let tmp = markerPath(name) + ".tmp"
        try? FileSystem.remove(tmp)
        let out = try PosixFile.create(tmp, mode: 0o600)
        try Array(marker.text.utf8).withUnsafeBytes { try out.write($0) }
        try out.close()
        try FileSystem.rename(tmp, markerPath(name))
        return true
    }

    /// Waits until something changes in `archive_status` (a segment marked ready, or archived:
    /// inotify), `timeout` seconds pass, or the task is cancelled. Returns at once when a ready
    /// segment but the oldest (`wal-push`'s) is not in `skip` (stored, or tried in the last round).
    public func waitForReady(pgWAL: String, skip: Set<String>, timeout: Double) async throws {
        let status = pgWAL + "/archive_status"
        let pending = { @Sendable () -> Bool in
            ((try? Self.readySegments(pgWAL: pgWAL)) ?? []).dropFirst().contains { !skip.contains($0.description) }
        }
        if pending() { return }
        let wake = try WakePipe()
        defer { wake.close() }
        try await withTaskCancellationHandler {
            try await Blocking.run {
                let fd = inotify_init1(Int32(IN_CLOEXEC))
                guard fd >= 0 else { throw PosixError.make(errno, "inotify_init1", status) }
                defer { Glibc.close(fd) }
                guard inotify_add_watch(fd, status, UInt32(IN_CREATE) | UInt32(IN_MOVED_TO)) >= 0 else {
                    throw PosixError.make(errno, "inotify_add_watch", status)
                }
                if pending() { return }
                var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.readEnd, events: Int16(POLLIN), revents: 0)]
                _ = poll(&fds, 2, Int32(timeout * 1000))
            }
        } onCancel: {
            wake.signal()
        }
        try Task.checkCancellation()
    }
}
