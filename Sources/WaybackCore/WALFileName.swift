import Foundation

/// The name of a file PostgreSQL archives: a WAL segment (`000000010000000A000000FF`), a partial
/// segment (`...FF.partial`), a timeline history file (`00000002.history`) or a backup history file
/// (`000000010000000A000000FF.00000028.backup`).
public struct WALFileName: Hashable, Sendable, CustomStringConvertible, Comparable {
    public static let defaultSegmentSize: UInt64 = 16 * 1024 * 1024

    public enum Kind: String, Sendable { case segment, partial, history, backupHistory }

    public var kind: Kind
    public var timeline: UInt32
    /// Log id and segment of a segment-like name (zero for history files).
    public var log: UInt32
    public var seg: UInt32
    /// The text after the segment name of a `.backup` file (`00000028`).
    public var backupOffset: String

    public init(timeline: UInt32, segmentNumber: UInt64, segmentSize: UInt64 = WALFileName.defaultSegmentSize) {
        let perLog = 0x1_0000_0000 / segmentSize
        kind = .segment
        self.timeline = timeline
        log = UInt32(segmentNumber / perLog)
        seg = UInt32(segmentNumber % perLog)
        backupOffset = ""
    }

    public static func history(timeline: UInt32) -> WALFileName {
        var n = WALFileName(timeline: timeline, segmentNumber: 0)
        n.kind = .history
        return n
    }

    /// Parses a name as PostgreSQL passes it in `%f`; nil for anything else (including paths).
    public init?(_ name: String) {
        // Byte-wise: a listing of a large archive parses a million names.
        func hex8(_ s: Substring) -> UInt32? {
            var v: UInt32 = 0, n = 0
            for b in s.utf8 {
                n += 1
                guard n <= 8 else { return nil }
                switch b {
                case 48...57: v = v << 4 | UInt32(b - 48)
                case 65...70: v = v << 4 | UInt32(b - 55)
                default: return nil
                }
            }
            return n == 8 ? v : nil
        }
        backupOffset = ""
        if name.hasSuffix(".history") {
            let base = name.dropLast(".history".count)
            guard let tli = hex8(base) else { return nil }
            kind = .history; timeline = tli; log = 0; seg = 0
            return
        }
        var base = Substring(name)
        if name.hasSuffix(".partial") {
            kind = .partial
            base = base.dropLast(".partial".count)
        } else if name.hasSuffix(".backup") {
            kind = .backupHistory
            let parts = base.dropLast(".backup".count).split(separator: ".")
            guard parts.count == 2, hex8(parts[1]) != nil else { return nil }
            base = parts[0]
            backupOffset = String(parts[1])
        } else {
            kind = .segment
        }
        let u = base.utf8
        guard u.count == 24 else { return nil }
        let i8 = u.index(u.startIndex, offsetBy: 8), i16 = u.index(i8, offsetBy: 8)
        guard let t = hex8(base[..<i8]), let l = hex8(base[i8..<i16]), let s = hex8(base[i16...]) else { return nil }
        timeline = t; log = l; seg = s
    }

    public func segmentNumber(segmentSize: UInt64 = WALFileName.defaultSegmentSize) -> UInt64 {
        UInt64(log) * (0x1_0000_0000 / segmentSize) + UInt64(seg)
    }

    /// The 24-character segment part (`TTTTTTTTLLLLLLLLSSSSSSSS`).
    public var segmentName: String { Self.hex(timeline) + Self.hex(log) + Self.hex(seg) }

    public var description: String {
        switch kind {
        case .segment: return segmentName
        case .partial: return segmentName + ".partial"
        case .history: return Self.hex(timeline) + ".history"
        case .backupHistory: return segmentName + "." + backupOffset + ".backup"
        }
    }

    /// The next segment on the same timeline.
    public func next(segmentSize: UInt64 = WALFileName.defaultSegmentSize) -> WALFileName {
        WALFileName(timeline: timeline, segmentNumber: segmentNumber(segmentSize: segmentSize) + 1, segmentSize: segmentSize)
    }

    public static func hex(_ v: UInt32) -> String {
        let s = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: 8 - s.count) + s
    }

    public static func < (a: WALFileName, b: WALFileName) -> Bool { a.description < b.description }
}

/// Where `wal-fetch` keeps prefetched segments during recovery: inside the restored cluster's
/// pg_wal (PostgreSQL ignores a directory there), so it goes away with the cluster.
public enum PrefetchSpool {
    public static let directoryName = "wayback-prefetch"
    public static func path(dataDirectory: String) -> String { dataDirectory + "/pg_wal/" + directoryName }

    /// The spool's record of the boot its files were written in (`/proc/sys/kernel/random/boot_id`).
    /// Prefetched segments are handed over without being synced first (see `Prefetch` in
    /// WaybackArchive); after a reboot they may not be whole, and are not used.
    public static let bootFile = ".boot"
    public static let bootIDPath = "/proc/sys/kernel/random/boot_id"
    /// The last segment recovery needs for its target (none for `--to-latest`), written by the
    /// restore: the prefetcher fetches nothing beyond it.
    public static let lastFile = ".last"
    /// Present when the restored copy archives nothing (archive mode off, chosen by the restore):
    /// only then are prefetched segments linked into `pg_wal` and marked archived there. Without
    /// it (a standby's own `restore_command`, a restore that keeps archiving) segments go through
    /// `%p`, and PostgreSQL marks them as its own `archive_mode` says (`.ready` with `always`).
    public static let handOverFile = ".hand-over"

    public static func bootID() -> String {
        guard let f = fopen(bootIDPath, "r") else { return "" }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 64)
        guard fgets(&buf, 64, f) != nil else { return "" }
        return String(decoding: buf.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Marks `name` in `pgWAL` as archived (`archive_status/NAME.done`), as PostgreSQL does for the
    /// segments it restores, so that the restored cluster never archives it again. False on failure.
    public static func markArchived(_ name: String, pgWAL: String) -> Bool {
        let fd = open(pgWAL + "/archive_status/" + name + ".done", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    /// Records this boot in `spool` (`.boot`, written under a temporary name and renamed, so a
    /// reader never sees half of it). False on failure.
    public static func recordBoot(_ spool: String) -> Bool {
        let tmp = spool + "/" + bootFile + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        let line = Array((bootID() + "\n").utf8)
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == line.count, rename(tmp, spool + "/" + bootFile) == 0 else { unlink(tmp); return false }
        return true
    }

    /// The `restore_command` of a restored cluster: `fetch` (`wayback ... wal-fetch %f %p`), with a
    /// shell fast path in front for a segment the prefetcher has already placed in `pg_wal`: the
    /// spool and `pg_wal` hold one file under its name, written in this boot. The shell records
    /// recovery's position for the prefetcher and exits 1 ("not restored"), and PostgreSQL reads the
    /// segment from `pg_wal`, as it does whenever `restore_command` has nothing; no process is
    /// started. Everything else goes to `fetch`. PostgreSQL runs the command in the data directory.
    ///
    /// PostgreSQL takes any exit status from 1 to 125 for "not in the archive" and may end recovery
    /// there, early; only statuses above 125 stop it. So every status of `fetch` but 0 and 1 (an
    /// unreadable repository, a damaged segment, a failed sync) becomes 126.
    public static func restoreCommand(fetch: String) -> String {
        let s = "pg_wal/" + directoryName
        return "if [ \"\(s)/%f\" -ef \"pg_wal/%f\" ] && read b < \(bootIDPath) && read o < \(s)/\(bootFile) && [ \"$b\" = \"$o\" ]; "
            + "then echo %f > \(s)/.position; exit 1; fi; " + stoppingOnError(fetch)
    }

    /// `fetch` with every exit status but 0 and 1 turned into 126, so that PostgreSQL stops
    /// recovery on a real error instead of taking it for the end of the archive: the form `init`
    /// prints for a hand-made `restore_command` (a standby).
    public static func stoppingOnError(_ fetch: String) -> String {
        "\(fetch); r=$?; [ $r -le 1 ] && exit $r; exit 126"
    }
}
