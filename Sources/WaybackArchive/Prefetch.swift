import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// `wal-fetch` prefetch: while PostgreSQL replays segment N, a background `wal-prefetch` process
/// fetches, verifies and decompresses the next segments, alongside replay, into a spool inside the data
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
    static func idle(_ spool: String) -> Bool { DirectoryLock.isFree(spool) }

    public static func remove(_ spool: String) {
        try? FileSystem.removeTree(spool)
    }

    /// The prefetcher: fetches the `count` segments after `after` (same timeline) that the spool
    /// lacks, one at a time, each written to a temporary name, synced and renamed; stops
    /// at the first segment the archive does not have. Exits at once if another prefetcher runs.
    public static func run(after: WALFileName, count: Int, spool: String, configuration: ArchiveConfiguration, logger: Logger) async throws {
        try FileSystem.makeDirectories(spool, mode: 0o700)
        guard let fd = DirectoryLock.hold(spool) else { return }
        defer { close(fd) }
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
        // One at a time: fetching and decompressing a segment takes a fraction of the time
        // PostgreSQL needs to replay it, and a second worker would take CPU from replay.
        for name in todo {
            let tmp = spool + "/.tmp-" + name.description
            do {
                _ = try await WALArchive.fetch(name: name.description, destination: tmp, configuration: configuration,
                                               logger: logger, durable: true)
                try FileSystem.rename(tmp, spool + "/" + name.description)
            } catch let e as WaybackError where e.code == .notFound {
                return  // the end of the archive
            }
        }
    }
}
