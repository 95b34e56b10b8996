import Foundation

/// A standard five-field cron expression (minute, hour, day of month, month, day of week) with
/// lists, ranges, steps, month and day names, and the nicknames `@hourly`, `@daily`/`@midnight`,
/// `@weekly`, `@monthly`, `@yearly`/`@annually`. When both day fields are restricted, a day
/// matches either (as cron does). Times are wall-clock times of a time zone: `next(after:in:)`
/// runs a time that a daylight-saving change skips once, at the end of the gap, and a time it
/// repeats once, at its first occurrence.
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    let minutes: [Int]
    let hours: [Int]
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    /// 0 = Sunday.
    let daysOfWeek: Set<Int>
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool

    public var description: String { text }

    static let nicknames = ["@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
                            "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Parses `text`; throws `.config` naming the field and what it accepts. `origin` says where
    /// the expression was written (`wayback.yaml: schedule.full`).
    public init(_ text: String, origin: String = "cron expression") throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        self.text = trimmed
        var expanded = trimmed
        if trimmed.hasPrefix("@") {
            guard let e = Self.nicknames[trimmed.lowercased()] else {
                throw WaybackError(.config, "\(origin): '\(trimmed)' is not a cron nickname; use @hourly, @daily, @weekly, @monthly or @yearly, or five fields")
            }
            expanded = e
        }
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw WaybackError(.config, "\(origin): '\(trimmed)' has \(fields.count) field(s); a cron expression has five: minute hour day-of-month month day-of-week (e.g. \"0 2 * * *\")")
        }
        func field(_ i: Int, _ name: String, _ range: ClosedRange<Int>, names: [String] = [], nameBase: Int = 0) throws -> Set<Int> {
            do {
                return try Self.parseField(fields[i], range: range, names: names, nameBase: nameBase)
            } catch let why as FieldError {
                throw WaybackError(.config, "\(origin): cron field '\(name)' is '\(fields[i])': \(why.text)")
            }
        }
        minutes = try field(0, "minute", 0...59).sorted()
        hours = try field(1, "hour", 0...23).sorted()
        daysOfMonth = try field(2, "day of month", 1...31)
        months = try field(3, "month", 1...12, names: Self.monthNames, nameBase: 1)
        daysOfWeek = Set(try field(4, "day of week", 0...7, names: Self.dayNames).map { $0 == 7 ? 0 : $0 })
        dayOfMonthRestricted = !fields[2].hasPrefix("*")
        dayOfWeekRestricted = !fields[4].hasPrefix("*")
    }

    struct FieldError: Error { var text: String }

    static func parseField(_ text: String, range: ClosedRange<Int>, names: [String], nameBase: Int) throws -> Set<Int> {
        let accepts = "values are \(range.lowerBound)-\(range.upperBound)" + (names.isEmpty ? "" : " or \(names.first!)-\(names.last!)")
        func value(_ s: Substring) throws -> Int {
            if let n = Int(s) {
                guard range.contains(n) else { throw FieldError(text: "\(n) is out of range; \(accepts)") }
                return n
            }
            if let i = names.firstIndex(of: s.lowercased()) { return i + nameBase }
            throw FieldError(text: "'\(s)' is not a number or name; \(accepts)")
        }
        var out = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw FieldError(text: "an empty item in a list") }
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw FieldError(text: "more than one '/' in '\(part)'") }
            var step = 1
            if pieces.count == 2 {
                guard let s = Int(pieces[1]), s > 0 else { throw FieldError(text: "the step '\(pieces[1])' is not a positive number") }
                step = s
            }
            var lo: Int, hi: Int
            if pieces[0] == "*" {
                lo = range.lowerBound; hi = range.upperBound
            } else if let dash = pieces[0].firstIndex(of: "-") {
                lo = try value(pieces[0][..<dash]); hi = try value(pieces[0][pieces[0].index(after: dash)...])
                guard lo <= hi else { throw FieldError(text: "the range \(pieces[0]) runs backwards") }
            } else {
                lo = try value(pieces[0]); hi = pieces.count == 2 ? range.upperBound : lo
            }
            out.formUnion(stride(from: lo, through: hi, by: step))
        }
        return out
    }

    func dayMatches(day: Int, weekday: Int) -> Bool {
        let dom = daysOfMonth.contains(day), dow = daysOfWeek.contains(weekday)
        if dayOfMonthRestricted && dayOfWeekRestricted { return dom || dow }
        return dom && dow
    }

    /// The first time after `after` (strictly) that the expression names, in `timeZone`'s wall
    /// clock; nil when none comes within eight years (`0 0 31 2 *`).
    public func next(after: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let start = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: after)
        guard var day = calendar.date(from: DateComponents(year: start.year, month: start.month, day: start.day, hour: 12)) else { return nil }
        for dayIndex in 0..<(8 * 366) {
            if dayIndex > 0 { day = calendar.date(byAdding: .day, value: 1, to: day)! }
            let c = calendar.dateComponents([.year, .month, .day, .weekday], from: day)
            guard months.contains(c.month!), dayMatches(day: c.day!, weekday: c.weekday! - 1) else { continue }
            for h in hours {
                if dayIndex == 0 && h < start.hour! { continue }
                for m in minutes {
                    if dayIndex == 0 && h == start.hour! && m < start.minute! { continue }
                    guard let t = Self.resolve(calendar, year: c.year!, month: c.month!, day: c.day!, hour: h, minute: m), t > after else { continue }
                    return t
                }
            }
        }
        return nil
    }

    /// The instant of a wall-clock time: its first occurrence when a DST change repeats it; the end
    /// of the gap when a change skips it.
    static func resolve(_ calendar: Calendar, year: Int, month: Int, day: Int, hour: Int, minute: Int) -> Date? {
        guard let t = calendar.date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute)) else { return nil }
        let back = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: t)
        if back.hour == hour && back.minute == minute && back.day == day { return t }
        // Skipped: the transition that made the gap is the first instant after it.
        if let gapEnd = calendar.timeZone.nextDaylightSavingTimeTransition(after: t.addingTimeInterval(-3 * 3600)), gapEnd <= t {
            return gapEnd
        }
        return t
    }
}
