import Foundation

/// The kind of a physical backup. Only `full` exists so far; `diff` and `incr` are reserved in the
/// repository format for page-level incremental backups.
public enum BackupType: String, Codable, Sendable, CaseIterable {
    case full, diff, incr

    public var letter: Character {
        switch self { case .full: "F"; case .diff: "D"; case .incr: "I" }
    }
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
