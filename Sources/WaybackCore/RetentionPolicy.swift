import Foundation

/// Which backups `expire` keeps (docs/retention.md): the newest backup of each of the N most recent
/// periods that hold one (hours over every backup; days, ISO weeks, months and quarters over full
/// backups only), at least `minFull` full backups, every point of the last `pitrWindow` seconds
/// restorable, in `timeZone`'s calendar. A plain value: the configuration reads it (`retention:`,
/// and per repository), the planner (WaybackRetention) applies it.
public struct RetentionPolicy: Sendable, Equatable, Codable {
    public var hourly: Int
    public var daily: Int
    public var weekly: Int
    public var monthly: Int
    public var quarterly: Int
    public var minFull: Int
    /// Seconds back from now in which every point stays restorable.
    public var pitrWindow: Double
    /// Where hours, days, weeks, months and quarters begin (an IANA zone name).
    public var timeZone: String
    /// When the newest complete backup is older than this (seconds), backups have stopped and
    /// nothing is expired.
    public var staleAfter: Double

    public init(hourly: Int = 24, daily: Int = 30, weekly: Int = 12, monthly: Int = 12, quarterly: Int = 28, minFull: Int = 2,
                pitrWindow: Double = 7 * 86400, timeZone: String = "UTC", staleAfter: Double = 3 * 86400) {
        self.hourly = hourly; self.daily = daily; self.weekly = weekly; self.monthly = monthly; self.quarterly = quarterly
        self.minFull = minFull; self.pitrWindow = pitrWindow; self.timeZone = timeZone; self.staleAfter = staleAfter
    }

    public static let `default` = RetentionPolicy()

    /// Throws `.config` for a policy that keeps nothing or names an unknown zone; `origin` says
    /// where it was written (a file and key).
    public func validate(origin: String) throws {
        if [hourly, daily, weekly, monthly, quarterly, minFull].allSatisfy({ $0 == 0 }) {
            throw WaybackError(.config, "\(origin): a retention policy with every bucket at 0 and min_full: 0 keeps nothing; set at least min_full (e.g. 2)")
        }
        if TimeZone(identifier: timeZone) == nil {
            throw WaybackError(.config, "\(origin): timezone '\(timeZone)' is not an IANA time zone name (e.g. UTC, Europe/Berlin, America/New_York)")
        }
    }

    /// Parses a duration: a number and a unit, `s`, `m`, `h`, `d` or `w` (`7d`, `36h`); nil if
    /// it is not one.
    public static func parseDuration(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        guard let unit = t.last, let n = Double(t.dropLast()), n >= 0, n.isFinite else { return nil }
        switch unit {
        case "s": return n
        case "m": return n * 60
        case "h": return n * 3600
        case "d": return n * 86400
        case "w": return n * 7 * 86400
        default: return nil
        }
    }

    /// `7d`, `36h`: the shortest exact form of a duration.
    public static func formatDuration(_ seconds: Double) -> String {
        for (unit, size) in [("w", 604_800.0), ("d", 86400.0), ("h", 3600.0), ("m", 60.0)] where seconds >= size && seconds.truncatingRemainder(dividingBy: size) == 0 {
            return "\(Int(seconds / size))\(unit)"
        }
        return "\(Int(seconds))s"
    }
}
