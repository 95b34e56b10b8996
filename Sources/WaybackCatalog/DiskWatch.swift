import Foundation
import WaybackCore
import WaybackStorage

/// The space left where Wayback and PostgreSQL write: the file systems of the local repositories,
/// of PGDATA and of pg_wal, and the S3 repositories against their `quota_gb`. Used by `status`,
/// the daemon's minute check, and the backup's check before it writes.
public enum DiskWatch {
    public enum Level: String, Sendable, Codable, Comparable {
        case ok, warning, critical
        /// Could not be looked at: never reported as fine.
        case unknown
        static let order: [Level] = [.ok, .unknown, .warning, .critical]
        public static func < (a: Level, b: Level) -> Bool { order.firstIndex(of: a)! < order.firstIndex(of: b)! }
    }

    public struct Thresholds: Sendable, Equatable {
        public var warnPercent: Double
        public var criticalPercent: Double
        public init(warnPercent: Double = 80, criticalPercent: Double = 90) { self.warnPercent = warnPercent; self.criticalPercent = criticalPercent }

        public func level(_ percent: Double) -> Level {
            percent >= criticalPercent ? .critical : percent >= warnPercent ? .warning : .ok
        }
    }

    /// A place to watch: a local path, or an S3 repository with its quota.
    public struct Target: Sendable {
        public enum Kind: Sendable { case path(String), quota(usedBytes: Int64?, quotaBytes: Int64) }
        public var label: String
        public var kind: Kind
        public init(label: String, path: String) { self.label = label; self.kind = .path(path) }
        public init(label: String, usedBytes: Int64?, quotaBytes: Int64) { self.label = label; self.kind = .quota(usedBytes: usedBytes, quotaBytes: quotaBytes) }
    }

    /// One file system (every label on it), or one S3 repository's quota.
    public struct Entry: Sendable, Codable, Equatable {
        public var labels: [String]
        /// The first path looked at on this file system; `s3` for a quota.
        public var path: String
        public var totalBytes: Int64?
        public var availableBytes: Int64?
        public var usedPercent: Double?
        public var level: Level
        /// Days until full at the current growth (nil: not growing, or unknown).
        public var daysUntilFull: Double?
        /// Why it could not be looked at.
        public var error: String?

        public var text: String {
            let what = labels.joined(separator: ", ")
            guard let percent = usedPercent, let available = availableBytes else { return "\(what) (\(path)): UNKNOWN: \(error ?? "not looked at")" }
            let flag = level == .ok ? "" : "\(level.rawValue.uppercased()): "
            let forecast = daysUntilFull.map { $0 < 1000 ? ", full in about \(Int($0.rounded(.down))) day(s)" : "" } ?? ""
            return "\(flag)\(what) (\(path)): \(Int(percent.rounded()))% used, \(Format.bytes(available)) free\(forecast)"
        }
    }

    /// Looks at every target: paths on one file system are one entry. `growthPerDay`: bytes the
    /// repositories grow by per day (for the forecast; nil: no forecast).
    public static func check(_ targets: [Target], thresholds: Thresholds, growthPerDay: Double? = nil) -> [Entry] {
        var out = [Entry]()
        var byDevice = [UInt64: Int]()
        for t in targets {
            switch t.kind {
            case .path(let path):
                do {
                    let u = try FileSystemUsage.of(path)
                    if let i = byDevice[u.device] { out[i].labels.append(t.label); continue }
                    byDevice[u.device] = out.count
                    out.append(Entry(labels: [t.label], path: path, totalBytes: u.totalBytes, availableBytes: u.availableBytes,
                                     usedPercent: u.usedPercent, level: thresholds.level(u.usedPercent),
                                     daysUntilFull: forecast(availableBytes: u.availableBytes, growthPerDay: growthPerDay), error: nil))
                } catch {
                    out.append(Entry(labels: [t.label], path: path, level: .unknown, error: (error as? WaybackError)?.message ?? String(describing: error)))
                }
            case .quota(let used, let quota):
                guard let used else {
                    out.append(Entry(labels: [t.label], path: "s3", totalBytes: quota, level: .unknown, error: "the repository could not be listed"))
                    continue
                }
                let percent = quota > 0 ? Double(used) / Double(quota) * 100 : 100
                let available = max(0, quota - used)
                out.append(Entry(labels: [t.label], path: "s3", totalBytes: quota, availableBytes: available, usedPercent: percent,
                                 level: thresholds.level(percent), daysUntilFull: forecast(availableBytes: available, growthPerDay: growthPerDay), error: nil))
            }
        }
        return out
    }

    /// Days until `availableBytes` are used at `growthPerDay` (nil when not growing).
    public static func forecast(availableBytes: Int64, growthPerDay: Double?) -> Double? {
        guard let g = growthPerDay, g > 0 else { return nil }
        return Double(availableBytes) / g
    }

    /// Growth per day from samples of used bytes (least squares; nil with fewer than two samples
    /// an hour apart).
    public static func growthPerDay(_ samples: [(time: Date, usedBytes: Int64)]) -> Double? {
        guard let first = samples.first, let last = samples.last, last.time.timeIntervalSince(first.time) >= 3600 else { return nil }
        let xs = samples.map { $0.time.timeIntervalSince(first.time) / 86400 }, ys = samples.map { Double($0.usedBytes) }
        let mx = xs.reduce(0, +) / Double(xs.count), my = ys.reduce(0, +) / Double(ys.count)
        let sxx = zip(xs, xs).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - mx) }
        guard sxx > 0 else { return nil }
        return zip(xs, ys).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - my) } / sxx
    }

    /// What the repositories grew by per day over the last `days` days: the bytes the backups of
    /// that time stored (expiry not subtracted, so the forecast errs on the early side).
    public static func growthPerDay(backups: [BackupSummary], now: Date, days: Double = 7) -> Double? {
        let since = now.addingTimeInterval(-days * 86400)
        let recent = backups.filter { $0.stopTime > since }
        guard !recent.isEmpty else { return nil }
        return Double(recent.reduce(Int64(0)) { $0 + $1.sizes.repository }) / days
    }

    /// The size a new backup of `type` will likely store: the newest backup of that type (a
    /// diff/incr: the newest diff/incr), or, for a first full, `firstFullBytes`.
    public static func expectedSize(type: BackupType, backups: [BackupSummary], firstFullBytes: @autoclosure () -> Int64) -> Int64 {
        let sameKind = backups.filter { type == .full ? $0.type == .full : $0.type != .full }
        if let newest = sameKind.max(by: { $0.stopTime < $1.stopTime }) { return newest.sizes.repository }
        return type == .full ? firstFullBytes() : 0
    }
}
