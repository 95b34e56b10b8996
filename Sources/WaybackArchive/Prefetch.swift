import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// `wal-fetch` prefetch: while PostgreSQL replays segment N, a background `wal-prefetch` process
/// fetches, verifies and decompresses the next segments, alongside replay, into a spool inside the data
/// directory (`pg_wal/wayback-prefetch/`), so that the next `wal-fetch` has nothing left to fetch.
/// The spool holds at most `count` segments; it is removed when recovery asks for a segment the
/// archive does not have (the end of recovery) and when `restore --start` sees the server promoted.
///
/// When the restore made the copy not to archive (`PrefetchSpool.handOverFile` in the spool), each
/// prefetched segment is also linked into `pg_wal` under its own name (with an
/// `archive_status/NAME.done`, as the copy never archives anything), before it enters the spool;
/// otherwise (a standby's own `restore_command`, a restore that archives) it is delivered through
/// `%p`, and PostgreSQL marks it as its `archive_mode` says (`.ready` with `always`). When
/// recovery asks for a linked segment, `wal-fetch` finds the spool's file and the `pg_wal`
/// name to be one file, drops the spool's name and exits 1: PostgreSQL then reads the segment from
/// `pg_wal`, as it does for any segment `restore_command` does not deliver. A segment delivered
/// through `%p` PostgreSQL would rename and sync itself (a journal commit or two per segment on
/// its critical path: about a third of the replay time of pgbench WAL here); this way all the
/// syncing happens in the prefetcher, alongside replay.
public enum Prefetch {
    /// The spool that belongs to a `restore_command` destination (`pg_wal/RECOVERYXLOG`).
    public static func spool(forDestination destination: String) -> String {
        FileSystem.parentPath(FileSystem.absolute(destination)) + "/" + PrefetchSpool.directoryName
    }

    /// Hands `name` over from the spool: when the prefetcher linked it into `pgWAL` (the same
    /// file under the segment's own name) in this boot, `.pgWAL` is returned (the spool's name is
    /// dropped); otherwise the spool's file is renamed to `destination`. Nil when the spool lacks it.
    static func take(_ name: WALFileName, spool: String, destination: String) -> WALArchive.Delivery? {
        let path = spool + "/" + name.description
        guard let st = try? FileSystem.status(path), !st.isDirectory, ofThisBoot(spool) else { return nil }
        let pgWAL = FileSystem.parentPath(FileSystem.absolute(destination))
        if let linked = try? FileSystem.status(pgWAL + "/" + name.description), linked.inode == st.inode, linked.device == st.device {
            try? FileSystem.remove(path)
            return .pgWAL
        }
        return rename(path, FileSystem.absolute(destination)) == 0 ? .destination : nil
    }

    /// Links a fetched segment into `pgWAL` under its own name, marked as archived; skipped when
    /// `pgWAL` has a file of that name already (then the segment is delivered through `%p`). Not
    /// synced here: `syncPGWAL` does that before the cluster leaves recovery.
    static func offer(_ file: String, as name: String, pgWAL: String) {
        guard link(file, pgWAL + "/" + name) == 0 else { return }
        _ = PrefetchSpool.markArchived(name, pgWAL: pgWAL)
    }

    /// True when the spool's files were written in this boot.
    static func ofThisBoot(_ spool: String) -> Bool {
        let recorded = (try? String(contentsOfFile: spool + "/" + PrefetchSpool.bootFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        return recorded != nil && recorded == PrefetchSpool.bootID()
    }

    /// Before recovery uses the spool: a spool of an earlier boot is removed (its unsynced files
    /// may have been lost with the page cache; those segments are fetched again); with `create`,
    /// the spool is made, recording this boot.
    static func prepare(_ spool: String, create: Bool) {
        if FileManager.default.fileExists(atPath: spool) && !ofThisBoot(spool) {
            // Renamed aside first, atomically: a prefetcher of the old spool that still writes
            // can make a removal in place fail half-way, leaving old files under the spool's name.
            let aside = spool + ".old-" + RunID.make()
            if rename(spool, aside) == 0 { remove(aside) } else { remove(spool) }
        }
        guard create, !FileManager.default.fileExists(atPath: spool) else { return }
        try? FileSystem.makeDirectories(spool, mode: 0o700)
        _ = PrefetchSpool.recordBoot(spool)
    }

    /// Makes every segment in `pgWAL` durable, with the directory entries and archive-status marks.
    /// PostgreSQL asks `restore_command` for timeline history files before it picks the new
    /// timeline, at every end of archive recovery, before it writes anything that crash recovery
    /// could need these segments for: `wal-fetch` calls this then. Segments already synced cost a
    /// flush each.
    public static func syncPGWAL(_ pgWAL: String) throws {
        for name in try FileSystem.list(pgWAL) where WALFileName(name)?.kind == .segment {
            let fd = open(pgWAL + "/" + name, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }  // recycled or removed meanwhile
            defer { close(fd) }
            guard fdatasync(fd) == 0 else { throw PosixError.make(errno, "sync", pgWAL + "/" + name) }
        }
        try FileSystem.syncDirectory(pgWAL + "/archive_status")
        try FileSystem.syncDirectory(pgWAL)
    }

    /// True when no prefetcher holds the spool's lock.
    static func idle(_ spool: String) -> Bool { DirectoryLock.isFree(spool) }

    public static func remove(_ spool: String) {
        try? FileSystem.removeTree(spool)
    }

    /// Where recovery is: `wal-fetch` records each segment PostgreSQL asks for (`.position`).
    static func record(position name: WALFileName, spool: String) {
        let fd = open(spool + "/.position", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let bytes = Array(name.description.utf8)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        close(fd)
    }

    static func position(_ spool: String) -> WALFileName? {
        (try? String(contentsOfFile: spool + "/.position", encoding: .utf8)).flatMap { WALFileName(String($0.prefix(24))) }
    }

    static func limit(_ spool: String) -> WALFileName? {
        (try? String(contentsOfFile: spool + "/" + PrefetchSpool.lastFile, encoding: .utf8)).flatMap { WALFileName(String($0.prefix(24))) }
    }

    /// Waits (up to `seconds`) for `name` to enter the spool while a prefetcher fetches it. The
    /// prefetcher fetches its window in order from recovery's position, which the caller has just
    /// set to `name`: a segment neither in the spool nor in flight within `grace` is not coming
    /// (the prefetcher is busy elsewhere, or ends). False when it does not arrive: the caller
    /// fetches it itself.
    static func waitFor(_ name: WALFileName, spool: String, seconds: Double = 30, grace: Double = 0.2) async -> Bool {
        let done = spool + "/" + name.description, tmp = spool + "/.tmp-" + name.description
        func arrived() -> Bool { FileManager.default.fileExists(atPath: done) }
        let began = monotonicSeconds()
        while monotonicSeconds() - began < seconds {
            if arrived() { return true }
            if idle(spool) || (!FileManager.default.fileExists(atPath: tmp) && monotonicSeconds() - began > grace) { return arrived() }
            try? await Task.sleep(nanoseconds: 1_000_000)
        }
        return arrived()
    }

    /// Starts a prefetcher for `spool` from `name` unless one runs, and waits (briefly) until it
    /// holds the spool's lock, so that `await` can tell a starting prefetcher from none.
    static func start(_ command: [String], from name: WALFileName, count: Int, spool: String) async {
        guard idle(spool), (try? Command.spawnDetached(command + [name.description, String(count), spool])) != nil else { return }
        let until = monotonicSeconds() + 0.5
        while idle(spool) && monotonicSeconds() < until { try? await Task.sleep(nanoseconds: 500_000) }
    }

    /// The prefetcher: keeps recovery's position and the `count` segments after it (`from`, then what
    /// `wal-fetch` and the `restore_command` fast path record) in the spool, up to three fetches in
    /// flight, each started as soon as one ends; each segment is written to a temporary name,
    /// offered in `pg_wal`, renamed into the spool, and synced in the background (`SegmentSyncer`).
    /// Nothing beyond the target's last segment (`.last`, written by the restore). It exits at the
    /// end of the archive, once it holds that last segment, when the spool is removed (the end of
    /// recovery), or when recovery has not moved for `idleSeconds` (paused, or stopped), once its
    /// syncs are done. Exits at once if another prefetcher runs, or if the spool is gone.
    public static func run(from: WALFileName, count: Int, spool: String, configuration: ArchiveConfiguration, logger: Logger,
                           idleSeconds: Double = 5) async throws {
        // `wal-fetch` makes the spool before it starts a prefetcher; a missing spool was removed
        // since (recovery ended), and must not be made again.
        guard (try? FileSystem.status(spool))?.isDirectory == true, let fd = DirectoryLock.hold(spool) else { return }
        defer { close(fd) }
        // This spool, not one made after it was removed (that one has its own prefetcher).
        let mine = try FileSystem.status(spool)?.inode
        let syncer = SegmentSyncer(), pgWAL = FileSystem.parentPath(spool)
        let handOver = FileManager.default.fileExists(atPath: spool + "/" + PrefetchSpool.handOverFile)
        do {
            try await fetchWindow(from: from, count: count, spool: spool, mine: mine, syncer: syncer, pgWAL: pgWAL, handOver: handOver,
                                  configuration: configuration, logger: logger, idleSeconds: idleSeconds)
        } catch {
            await syncer.finish()
            throw error
        }
        await syncer.finish()
    }

    static func fetchWindow(from: WALFileName, count: Int, spool: String, mine: UInt64?, syncer: SegmentSyncer, pgWAL: String,
                            handOver: Bool, configuration: ArchiveConfiguration, logger: Logger, idleSeconds: Double) async throws {
        let segSize = WALFileName.defaultSegmentSize
        var at = from
        var moved = monotonicSeconds()
        try await withThrowingTaskGroup(of: (name: String, ended: Bool)?.self) { group in
            var inFlight = Set<String>(), ticking = false, ended = false
            while let current = try? FileSystem.status(spool), current.inode == mine {
                if let p = position(spool), p.kind == .segment, p != at,
                   p.timeline != at.timeline || p.segmentNumber(segmentSize: segSize) > at.segmentNumber(segmentSize: segSize) {
                    at = p
                    moved = monotonicSeconds()
                }
                // Nothing beyond the last segment the target needs (`.last`, on its timeline).
                let first = at.segmentNumber(segmentSize: segSize)
                var upTo = first + UInt64(count), capped = false
                if let last = limit(spool), last.timeline == at.timeline, last.segmentNumber(segmentSize: segSize) <= upTo {
                    upTo = last.segmentNumber(segmentSize: segSize)
                    capped = true
                }
                let wanted = first > upTo ? [] : (first...upTo).map { WALFileName(timeline: at.timeline, segmentNumber: $0, segmentSize: segSize).description }
                // Drop what recovery has passed (or another timeline's files), but the segment just
                // before its position: PostgreSQL reads the last segment of recovery once more at the
                // end, after its read-ahead has asked for the next.
                let listed = (try? FileSystem.list(spool)) ?? []
                let previous = first > 0 ? WALFileName(timeline: at.timeline, segmentNumber: first - 1, segmentSize: segSize).description : ""
                for f in listed where !f.hasPrefix(".") && !wanted.contains(f) && f != previous {
                    try? FileSystem.remove(spool + "/" + f)
                }
                // Up to three in flight, in order: the reads from the repository overlap, and
                // decompressing takes a fraction of a core.
                let present = Set(listed)
                for name in wanted where !ended && inFlight.count < 3 && !present.contains(name) && !inFlight.contains(name) {
                    inFlight.insert(name)
                    group.addTask { (name, try await fetchIntoSpool(name, spool: spool, handOver: handOver, configuration: configuration, logger: logger)) }
                }
                // Done: the archive ends, everything up to the target's last segment is here, or
                // recovery does not move.
                if inFlight.isEmpty && (ended || capped || monotonicSeconds() - moved > idleSeconds) { return }
                // Wake on a finished fetch, or after 5 ms to look at recovery's position again.
                if !ticking {
                    ticking = true
                    group.addTask { try await Task.sleep(nanoseconds: 5_000_000); return nil }
                }
                guard let next = try await group.next() else { return }
                if let finished = next {
                    inFlight.remove(finished.name)
                    if !finished.ended { syncer.enqueue((handOver ? pgWAL : spool) + "/" + finished.name) }
                    ended = ended || finished.ended
                } else {
                    ticking = false
                }
            }
            group.cancelAll()
        }
    }

    /// Fetches one segment into the spool; true when the archive does not have it (its end).
    static func fetchIntoSpool(_ name: String, spool: String, handOver: Bool, configuration: ArchiveConfiguration, logger: Logger) async throws -> Bool {
        let tmp = spool + "/.tmp-" + name
        do {
            _ = try await WALArchive.fetch(name: name, destination: tmp, configuration: configuration, logger: logger, startWriteback: true)
            if handOver { offer(tmp, as: name, pgWAL: FileSystem.parentPath(spool)) }
            try FileSystem.rename(tmp, spool + "/" + name)
            return false
        } catch let e as WaybackError where e.code == .notFound {
            try? FileSystem.remove(tmp)
            return true
        }
    }
}

/// Syncs the segments the prefetcher has handed over, in order, on a thread of its own, while
/// replay goes on: by the time recovery ends (and `wal-fetch` syncs all of `pg_wal` before the
/// new timeline), little is left to wait for. Its owner (the prefetcher) ends it with `finish`,
/// which waits, without holding a cooperative thread, until every segment queued is synced and
/// the thread has ended.
final class SegmentSyncer: @unchecked Sendable {
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var queue: [String] = []
    private var finishing = false
    private var ended: CheckedContinuation<Void, Never>?
    private var exited = false

    init() { Thread.detachNewThread { [self] in run() } }

    func enqueue(_ path: String) {
        condition.lock()
        queue.append(path)
        condition.broadcast()
        condition.unlock()
    }

    /// Syncs what is queued, then ends the thread; returns once it has ended. Idempotent.
    func finish() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            condition.lock()
            if exited {
                condition.unlock()
                c.resume()
                return
            }
            finishing = true
            ended = c
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Whether the thread has ended (tests).
    var hasEnded: Bool {
        condition.lock()
        defer { condition.unlock() }
        return exited
    }

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty && !finishing { condition.wait() }
            if queue.isEmpty {
                exited = true
                let c = ended
                ended = nil
                condition.unlock()
                c?.resume()
                return
            }
            let path = queue.removeFirst()
            condition.unlock()
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { _ = fdatasync(fd); close(fd) }  // gone: recovery passed it, and PostgreSQL recycled it
        }
    }
}
