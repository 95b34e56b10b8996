import Foundation

/// The kind of a physical backup: whole, or page level on the newest full (`diff`) or the
/// newest backup (`incr`).
public enum BackupType: String, Codable, Sendable, CaseIterable {
    case full, diff, incr

    public var letter: Character {
        switch self { case .full: "F"; case .diff: "D"; case .incr: "I" }
    }
}

/// How a diff/incr finds the changed pages of relation files (`backup.incr_method`): `wal` reads
/// only the blocks the WAL since the reference's start names; `scan` reads every page and compares
/// its LSN; `both` does both and fails when the WAL method missed a page the scan found.
public enum IncrementalMethod: String, Codable, Sendable, CaseIterable {
    case wal, scan, both
}

/// A backup's id: the UTC start time and the type letter, e.g. `20261129-004100F`. Ids sort by
/// start time, so the newest backup is the largest id.
public struct BackupID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ raw: String) {
        let chars = Array(raw)
        guard chars.count == 16, chars[8] == "-", "FDI".contains(chars[15]),
              chars[0..<8].allSatisfy(\.isNumber), chars[9..<15].allSatisfy(\.isNumber) else { return nil }
        rawValue = raw
    }

    public init(startTime: Date, type: BackupType) {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second], from: startTime)
        func p(_ v: Int?, _ w: Int) -> String { let s = String(v ?? 0); return String(repeating: "0", count: max(0, w - s.count)) + s }
        rawValue = p(c.year, 4) + p(c.month, 2) + p(c.day, 2) + "-" + p(c.hour, 2) + p(c.minute, 2) + p(c.second, 2) + String(type.letter)
    }

    public var description: String { rawValue }
    public static func < (a: BackupID, b: BackupID) -> Bool { a.rawValue < b.rawValue }
}

extension BackupID: TextCodable {
    public init?(text: String) { self.init(text) }
}

/// A logical dump's id: the UTC start time and `L`, e.g. `20261206-020000L`. Its own type, so
/// that no physical path (a restore's `--backup`, a chain) ever takes a dump for a base backup.
public struct DumpID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let rawValue: String

    public init?(_ raw: String) {
        let chars = Array(raw)
        guard chars.count == 16, chars[8] == "-", chars[15] == "L",
              chars[0..<8].allSatisfy(\.isNumber), chars[9..<15].allSatisfy(\.isNumber) else { return nil }
        rawValue = raw
    }

    public init(startTime: Date) {
        rawValue = String(BackupID(startTime: startTime, type: .full).rawValue.dropLast()) + "L"
    }

    public var description: String { rawValue }
    public static func < (a: DumpID, b: DumpID) -> Bool { a.rawValue < b.rawValue }

    /// The type of a dump in `backup_logs`, `status` and retention plans.
    public static let typeName = "logical"

    /// The start time (the epoch for digits that name no date; ids Wayback makes always do).
    public var time: Date { startTime ?? Date(timeIntervalSince1970: 0) }

    /// When the dump started (UTC, to the second), from the id.
    public var startTime: Date? {
        let c = Array(rawValue)
        func n(_ r: Range<Int>) -> Int? { Int(String(c[r])) }
        guard let y = n(0..<4), let mo = n(4..<6), let d = n(6..<8), let h = n(9..<11), let mi = n(11..<13), let s = n(13..<15) else { return nil }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        return cal.date(from: DateComponents(year: y, month: mo, day: d, hour: h, minute: mi, second: s))
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = DumpID(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a dump id: \(text)"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}
