import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// `wal-fetch` prefetch: while PostgreSQL replays segment N, a background `wal-prefetch` process
/// fetches, verifies and decompresses the next segments in parallel into a spool inside the data
/// directory (`pg_wal/wayback-prefetch/`), so that the next `wal-fetch` only renames a file. The
/// spool holds at most `count` segments; it is removed when recovery asks for a segment the
/// archive does not have (the end of recovery) and when `restore --start` sees the server promoted.
public enum Prefetch {
    /// The spool that belongs to a `restore_command` destination (`pg_wal/RECOVERYXLOG`).
    public static func spool(forDestination destination: String) -> String {
        FileSystem.parentPath(FileSystem.absolute(destination)) + "/" + PrefetchSpool.directoryName
    }

    /// Takes `name` from the spool into `destination` if it is there (complete and verified when
    /// it was written); returns false otherwise.
    static func take(_ name: WALFileName, spool: String, destination: String) -> Bool {
        let path = spool + "/" + name.description
        guard (try? FileSystem.status(path))?.isDirectory == false else { return false }
        return rename(path, FileSystem.absolute(destination)) == 0
    }

    /// True when no prefetcher holds the spool's lock.
    static func idle(_ spool: String) -> Bool {
        let fd = open(spool + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        _ = flock(fd, LOCK_UN)
        return true
    }

    public static func remove(_ spool: String) {
        try? FileSystem.removeTree(spool)
    }

    /// The prefetcher: fetches the `count` segments after `after` (same timeline) that the spool
    /// lacks, `parallelism` at a time, each written to a temporary name, synced and renamed; stops
    /// at the first segment the archive does not have. Exits at once if another prefetcher runs.
    public static func run(after: WALFileName, count: Int, spool: String, configuration: ArchiveConfiguration, logger: Logger) async throws {
        try FileSystem.makeDirectories(spool, mode: 0o700)
        let fd = open(spool + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PosixError.make(errno, "open", spool + "/.lock") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return }
        let segSize = WALFileName.defaultSegmentSize
        let first = after.segmentNumber(segmentSize: segSize) + 1
        let wanted = (first..<(first + UInt64(count))).map { WALFileName(timeline: after.timeline, segmentNumber: $0, segmentSize: segSize) }
        let wantedNames = Set(wanted.map(\.description))
        // Drop what recovery has passed (or another timeline's files).
        for f in (try? FileSystem.list(spool)) ?? [] where !f.hasPrefix(".") && !wantedNames.contains(f) {
            try? FileSystem.remove(spool + "/" + f)
        }
        let present = Set((try? FileSystem.list(spool)) ?? [])
        let todo = wanted.filter { !present.contains($0.description) }
        let cursor = WorkCursor(limit: todo.count)
        let stopAt = StopMark()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<min(configuration.parallelism, max(1, todo.count)) {
                group.addTask {
                    while let i = cursor.next() {
                        if stopAt.isBefore(i) { return }
                        let name = todo[i]
                        let tmp = spool + "/.tmp-" + name.description
                        do {
                            _ = try await WALArchive.fetch(name: name.description, destination: tmp, configuration: configuration,
                                                           logger: logger, durable: true)
                            if stopAt.isBefore(i) { try? FileSystem.remove(tmp); return }
                            try FileSystem.rename(tmp, spool + "/" + name.description)
                        } catch let e as WaybackError where e.code == .notFound {
                            stopAt.mark(i)
                            return
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}

/// The first index at which the archive ran out: later segments are not fetched.
final class StopMark: @unchecked Sendable {
    private let lock = NSLock()
    private var index = Int.max
    func mark(_ i: Int) { lock.withLock { index = min(index, i) } }
    func isBefore(_ i: Int) -> Bool { lock.withLock { index < i } }
}
