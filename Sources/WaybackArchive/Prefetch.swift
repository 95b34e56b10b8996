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
/// Each prefetched segment is also linked into `pg_wal` under its own name (with an
/// `archive_status/NAME.done`, so the restored cluster never archives it again), synced, before it
/// enters the spool. When recovery asks for it, `wal-fetch` finds the spool's file and the `pg_wal`
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
    /// file under the segment's own name) the spool's name is dropped and `.pgWAL` returned;
    /// otherwise the spool's file is renamed to `destination`. Nil when the spool lacks it.
    static func take(_ name: WALFileName, spool: String, destination: String) -> WALArchive.Delivery? {
        let path = spool + "/" + name.description
        guard let st = try? FileSystem.status(path), !st.isDirectory else { return nil }
        let pgWAL = FileSystem.parentPath(FileSystem.absolute(destination))
        if let linked = try? FileSystem.status(pgWAL + "/" + name.description), linked.inode == st.inode, linked.device == st.device {
            try? FileSystem.remove(path)
            return .pgWAL
        }
        return rename(path, FileSystem.absolute(destination)) == 0 ? .destination : nil
    }

    /// Links a fetched (and synced) segment into `pgWAL` under its own name, marked as archived,
    /// and syncs the directory; skipped when `pgWAL` has a file of that name already (then the
    /// segment is delivered through `%p`).
    static func offer(_ file: String, as name: String, pgWAL: String) throws {
        guard link(file, pgWAL + "/" + name) == 0 else { return }
        let done = open(pgWAL + "/archive_status/" + name + ".done", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        if done >= 0 { close(done) }
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

    /// When a segment recovery asks for is being fetched right now, waits (up to `seconds`) for
    /// it to enter the spool rather than fetching it a second time.
    static func awaitInFlight(_ name: WALFileName, spool: String, seconds: Double = 2) {
        let tmp = spool + "/.tmp-" + name.description, done = spool + "/" + name.description
        // A temporary file with no prefetcher running is a leftover of a killed one.
        guard FileManager.default.fileExists(atPath: tmp), !idle(spool) else { return }
        let until = monotonicSeconds() + seconds
        while FileManager.default.fileExists(atPath: tmp) && !FileManager.default.fileExists(atPath: done) && monotonicSeconds() < until {
            usleep(2000)
        }
    }

    /// The prefetcher: keeps the `count` segments after recovery's position (`after`, then what
    /// `wal-fetch` records) in the spool, three fetches at a time, each written to a temporary name,
    /// synced, offered in `pg_wal` and renamed into the spool. It exits at the end of the archive,
    /// when the spool is removed (the end of recovery), or when recovery has not moved for
    /// `idleSeconds` (paused, or stopped). Exits at once if another prefetcher runs, or if the spool
    /// is gone.
    public static func run(after: WALFileName, count: Int, spool: String, configuration: ArchiveConfiguration, logger: Logger,
                           idleSeconds: Double = 5) async throws {
        // `wal-fetch` makes the spool before it starts a prefetcher; a missing spool was removed
        // since (recovery ended), and must not be made again.
        guard (try? FileSystem.status(spool))?.isDirectory == true, let fd = DirectoryLock.hold(spool) else { return }
        defer { close(fd) }
        let segSize = WALFileName.defaultSegmentSize
        var at = after
        var moved = monotonicSeconds()
        // This spool, not one made after it was removed (that one has its own prefetcher).
        let mine = try FileSystem.status(spool)?.inode
        while let current = try? FileSystem.status(spool), current.inode == mine {
            if let p = position(spool), p.kind == .segment, p != at,
               p.timeline != at.timeline || p.segmentNumber(segmentSize: segSize) > at.segmentNumber(segmentSize: segSize) {
                at = p
                moved = monotonicSeconds()
            }
            let first = at.segmentNumber(segmentSize: segSize) + 1
            let wanted = (first..<(first + UInt64(count))).map { WALFileName(timeline: at.timeline, segmentNumber: $0, segmentSize: segSize) }
            let wantedNames = Set(wanted.map(\.description))
            // Drop what recovery has passed (or another timeline's files).
            let listed = (try? FileSystem.list(spool)) ?? []
            for f in listed where !f.hasPrefix(".") && !wantedNames.contains(f) {
                try? FileSystem.remove(spool + "/" + f)
            }
            let present = Set(listed)
            // Three at a time, in order: each segment is synced before it enters the spool, and
            // the waits for the disk overlap; decompressing takes a fraction of a core.
            let next = wanted.filter { !present.contains($0.description) }.prefix(3)
            if next.isEmpty {
                if monotonicSeconds() - moved > idleSeconds { return }
                try await Task.sleep(nanoseconds: 5_000_000)
                continue
            }
            let ended = try await withThrowingTaskGroup(of: Bool.self) { group in
                for name in next {
                    group.addTask { try await fetchIntoSpool(name.description, spool: spool, configuration: configuration, logger: logger) }
                }
                return try await group.reduce(false) { $0 || $1 }
            }
            if ended { return }
        }
    }

    /// Fetches one segment into the spool; true when the archive does not have it (its end).
    static func fetchIntoSpool(_ name: String, spool: String, configuration: ArchiveConfiguration, logger: Logger) async throws -> Bool {
        let tmp = spool + "/.tmp-" + name
        do {
            _ = try await WALArchive.fetch(name: name, destination: tmp, configuration: configuration, logger: logger, durable: true)
            try offer(tmp, as: name, pgWAL: FileSystem.parentPath(spool))
            try FileSystem.rename(tmp, spool + "/" + name)
            return false
        } catch let e as WaybackError where e.code == .notFound {
            try? FileSystem.remove(tmp)
            return true
        }
    }
}
