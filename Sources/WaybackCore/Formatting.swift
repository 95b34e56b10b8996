import Foundation

/// Human-readable sizes and durations for reports and progress lines.
public enum Format {
    public static func bytes(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n)
        var u = 0
        while v >= 1024, u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
    }

    /// A `server_version_num` as people write it: 150018 -> "15.18", 90624 -> "9.6.24".
    public static func postgresVersion(_ n: Int) -> String {
        n >= 100000 ? "\(n / 10000).\(n % 10000)" : "\(n / 10000).\(n / 100 % 100).\(n % 100)"
    }

    public static func seconds(_ s: Double) -> String {
        if s < 60 { return String(format: "%.2fs", s) }
        let m = Int(s) / 60
        return String(format: "%dm%02ds", m, Int(s) % 60)
    }

    /// An age or a threshold at a glance: `45s`, `12m`, `3h05m`, `2d04h`.
    public static func age(_ s: Double) -> String {
        let n = Int(max(0, s).rounded())
        if n < 60 { return "\(n)s" }
        if n < 3600 { return "\(n / 60)m" }
        if n < 86400 { return String(format: "%dh%02dm", n / 3600, n % 3600 / 60) }
        return String(format: "%dd%02dh", n / 86400, n % 86400 / 3600)
    }

    /// RFC 3339 UTC with milliseconds (`2026-11-29T00:41:07.123Z`). Hand-written with gmtime_r:
    /// Foundation's ISO8601DateFormatter costs milliseconds to create, and `wal-push` reads a
    /// timestamp on every call.
    public static func timestamp(_ d: Date) -> String {
        let t = d.timeIntervalSince1970
        var secs = time_t(t.rounded(.down))
        var ms = Int(((t - Double(secs)) * 1000).rounded())
        if ms == 1000 { secs += 1; ms = 0 }
        var tm = tm()
        gmtime_r(&secs, &tm)
        func p(_ v: Int32, _ w: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s }
        return "\(p(tm.tm_year + 1900, 4))-\(p(tm.tm_mon + 1, 2))-\(p(tm.tm_mday, 2))T\(p(tm.tm_hour, 2)):\(p(tm.tm_min, 2)):\(p(tm.tm_sec, 2)).\(p(Int32(ms), 3))Z"
    }

    /// Parses RFC 3339 (`2026-11-29T00:41:07Z`, fractional seconds and `+hh:mm` offsets allowed).
    public static func parseTimestamp(_ s: String) -> Date? {
        parseInstant(s, zoneRequired: true).map { Date(timeIntervalSince1970: Double($0) / 1_000_000) }
    }

    /// Microseconds since 1970-01-01 UTC of an RFC 3339 time or a PostgreSQL timestamptz literal:
    /// `2026-11-29T03:10:11Z`, `2026-11-29 03:10:11.123456+01`, `2026-11-29 03:10:11 +05:30`,
    /// `2026-11-29 03:10:11 UTC`, `2026-11-29 03:10` or `2026-11-29`. Without a zone the time is
    /// UTC (unless `zoneRequired`). Nil when malformed.
    public static func parseInstant(_ s: String, zoneRequired: Bool = false) -> Int64? {
        let c = Array(s.utf8)
        var i = 0
        func digits(_ n: Int) -> Int64? {
            guard i + n <= c.count else { return nil }
            var v: Int64 = 0
            for k in i..<(i + n) { guard c[k] >= 48 && c[k] <= 57 else { return nil }; v = v * 10 + Int64(c[k] - 48) }
            i += n
            return v
        }
        func expect(_ ch: UInt8) -> Bool { if i < c.count && c[i] == ch { i += 1; return true }; return false }
        guard let y = digits(4), expect(45), let mo = digits(2), expect(45), let d = digits(2),
              (1...12).contains(mo), (1...31).contains(d) else { return nil }
        var h: Int64 = 0, mi: Int64 = 0, se: Int64 = 0, micros: Int64 = 0
        if i < c.count, c[i] == 84 || c[i] == 116 || c[i] == 32 {
            i += 1
            guard let hh = digits(2), expect(58), let mm = digits(2), hh < 24, mm < 60 else { return nil }
            h = hh; mi = mm
            if expect(58) {
                guard let ss = digits(2), ss < 61 else { return nil }
                se = ss
                if expect(46) {
                    var n = 0, roundUp = false
                    while i < c.count, c[i] >= 48, c[i] <= 57 {
                        if n < 6 { micros = micros * 10 + Int64(c[i] - 48) } else if n == 6 { roundUp = c[i] >= 53 }
                        n += 1; i += 1
                    }
                    guard n > 0 else { return nil }
                    for _ in min(n, 6)..<6 { micros *= 10 }
                    if roundUp { micros += 1 }
                }
            }
        }
        var offset: Int64 = 0
        var zoned = false
        if i < c.count, c[i] == 32 { i += 1 }
        if i < c.count {
            let rest = String(decoding: c[i...], as: UTF8.self)
            if rest == "Z" || rest == "z" || rest == "UTC" || rest == "GMT" {
                i = c.count
            } else if c[i] == 43 || c[i] == 45 {
                let sign: Int64 = c[i] == 43 ? 1 : -1
                i += 1
                guard let oh = digits(2), oh <= 15 else { return nil }
                var om: Int64 = 0
                if expect(58) { guard let m = digits(2) else { return nil }; om = m } else if let m = digits(2) { om = m }
                guard om < 60 else { return nil }
                offset = sign * (oh * 3600 + om * 60)
            } else {
                return nil
            }
            zoned = true
        }
        guard i == c.count, zoned || !zoneRequired else { return nil }
        var t = tm()
        t.tm_year = Int32(y - 1900); t.tm_mon = Int32(mo - 1); t.tm_mday = Int32(d)
        t.tm_hour = Int32(h); t.tm_min = Int32(mi); t.tm_sec = Int32(se)
        let secs = Int64(timegm(&t))
        return (secs - offset) * 1_000_000 + micros
    }

    /// A PostgreSQL timestamptz literal in UTC with microseconds (`2026-11-29 03:10:11.123456+00`),
    /// for recovery settings.
    public static func postgresTimestamp(micros: Int64) -> String {
        var secs = time_t(micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000)
        let frac = micros - Int64(secs) * 1_000_000
        var t = tm()
        gmtime_r(&secs, &t)
        func p(_ v: Int64, _ w: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s }
        return "\(p(Int64(t.tm_year) + 1900, 4))-\(p(Int64(t.tm_mon) + 1, 2))-\(p(Int64(t.tm_mday), 2)) \(p(Int64(t.tm_hour), 2)):\(p(Int64(t.tm_min), 2)):\(p(Int64(t.tm_sec), 2)).\(p(frac, 6))+00"
    }
}
