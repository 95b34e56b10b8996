/// A PostgreSQL write-ahead log location (`pg_lsn`), written `X/X` in hex.
public struct LSN: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }

    /// Parses `16/B374D848`; nil when malformed.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
              let hi = UInt32(parts[0], radix: 16), let lo = UInt32(parts[1], radix: 16) else { return nil }
        value = UInt64(hi) << 32 | UInt64(lo)
    }

    public var description: String {
        String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    /// Number of the WAL segment that holds this location.
    public func segmentNumber(segmentSize: UInt64 = WALFileName.defaultSegmentSize) -> UInt64 { value / segmentSize }

    public static func < (a: LSN, b: LSN) -> Bool { a.value < b.value }
}

extension LSN: TextCodable {
    public init?(text: String) { self.init(text) }
}

/// A value stored in JSON as its text form (`"16/B374D848"`, `"20261129-004107F"`).
public protocol TextCodable: Codable, CustomStringConvertible {
    init?(text: String)
}

extension TextCodable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(text: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a \(Self.self): \(text)"))
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
