import WaybackCore

/// A strict pull reader of JSON bytes, for the few members that `JSONDecoder` decodes too slowly
/// (a manifest's file list: tens of thousands of entries in a day's chain). It reads what Wayback
/// writes; anything else (a fraction, an exponent, a number out of range) throws
/// `JSONReader.Unexpected`, and the caller falls back to `JSONDecoder`, which decides.
struct JSONReader {
    struct Unexpected: Error { let offset: Int }

    let bytes: UnsafeRawBufferPointer
    private(set) var offset: Int

    init(_ bytes: UnsafeRawBufferPointer, at offset: Int = 0) { self.bytes = bytes; self.offset = offset }

    private func fail() -> Unexpected { Unexpected(offset: offset) }

    mutating func skipSpace() {
        while offset < bytes.count {
            switch bytes[offset] { case 0x20, 0x0A, 0x0D, 0x09: offset += 1; default: return }
        }
    }

    /// The next byte after white space (nil at the end).
    mutating func peek() -> UInt8? { skipSpace(); return offset < bytes.count ? bytes[offset] : nil }

    mutating func expect(_ byte: UInt8) throws {
        guard peek() == byte else { throw fail() }
        offset += 1
    }

    /// `{ "key": value, ... }`: `member` is called with each key and must read its value.
    mutating func readObject(_ member: (inout JSONReader, String) throws -> Void) throws {
        try expect(UInt8(ascii: "{"))
        if peek() == UInt8(ascii: "}") { offset += 1; return }
        while true {
            let key = try readString()
            try expect(UInt8(ascii: ":"))
            try member(&self, key)
            guard let next = peek() else { throw fail() }
            offset += 1
            if next == UInt8(ascii: "}") { return }
            guard next == UInt8(ascii: ",") else { throw fail() }
        }
    }

    /// `[ value, ... ]`: `element` is called for each element and must read it.
    mutating func readArray(_ element: (inout JSONReader) throws -> Void) throws {
        try expect(UInt8(ascii: "["))
        if peek() == UInt8(ascii: "]") { offset += 1; return }
        while true {
            try element(&self)
            guard let next = peek() else { throw fail() }
            offset += 1
            if next == UInt8(ascii: "]") { return }
            guard next == UInt8(ascii: ",") else { throw fail() }
        }
    }

    /// True (and consumed) when the next value is `null`.
    mutating func readNull() -> Bool {
        guard peek() == UInt8(ascii: "n"), offset + 4 <= bytes.count, bytes[offset + 1] == UInt8(ascii: "u"),
              bytes[offset + 2] == UInt8(ascii: "l"), bytes[offset + 3] == UInt8(ascii: "l") else { return false }
        offset += 4
        return true
    }

    /// An integer: `-?[0-9]+`, within Int64.
    mutating func readInt64() throws -> Int64 {
        guard var c = peek() else { throw fail() }
        let negative = c == UInt8(ascii: "-")
        if negative { offset += 1; guard offset < bytes.count else { throw fail() }; c = bytes[offset] }
        guard c >= 0x30 && c <= 0x39 else { throw fail() }
        // JSON allows no leading zero.
        if c == 0x30, offset + 1 < bytes.count, bytes[offset + 1] >= 0x30 && bytes[offset + 1] <= 0x39 { throw fail() }
        var value: Int64 = 0
        while offset < bytes.count, case let d = bytes[offset], d >= 0x30 && d <= 0x39 {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = negative ? m.subtractingReportingOverflow(Int64(d - 0x30)) : m.addingReportingOverflow(Int64(d - 0x30))
            guard !o1, !o2 else { throw fail() }
            value = s
            offset += 1
        }
        if offset < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[offset]) { throw fail() }
        return value
    }

    mutating func readInteger<T: FixedWidthInteger>(_: T.Type) throws -> T {
        guard let v = T(exactly: try readInt64()) else { throw fail() }
        return v
    }

    /// A string, escapes decoded; invalid UTF-8 or a control character throws.
    mutating func readString() throws -> String {
        try expect(UInt8(ascii: "\""))
        let start = offset
        var ascii = true
        while offset < bytes.count {
            let c = bytes[offset]
            if c == UInt8(ascii: "\"") {
                let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<offset])
                offset += 1
                if ascii { return String(decoding: raw, as: UTF8.self) }
                guard let s = String(validating: raw, as: UTF8.self) else { throw fail() }
                return s
            }
            if c == UInt8(ascii: "\\") { offset = start; return try readEscapedString() }
            if c < 0x20 { throw fail() }
            if c >= 0x80 { ascii = false }
            offset += 1
        }
        throw fail()
    }

    /// The slow path of `readString`, from just after the opening quote.
    private mutating func readEscapedString() throws -> String {
        var utf8 = [UInt8]()
        while offset < bytes.count {
            let c = bytes[offset]
            offset += 1
            switch c {
            case UInt8(ascii: "\""):
                guard let s = String(validating: utf8, as: UTF8.self) else { throw fail() }
                return s
            case UInt8(ascii: "\\"):
                guard offset < bytes.count else { throw fail() }
                let e = bytes[offset]
                offset += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(e)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try readHex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard offset + 2 <= bytes.count, bytes[offset] == UInt8(ascii: "\\"), bytes[offset + 1] == UInt8(ascii: "u") else { throw fail() }
                        offset += 2
                        let low = try readHex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail() }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw fail() }
                    utf8.append(contentsOf: String(Character(u)).utf8)
                default: throw fail()
                }
            default:
                guard c >= 0x20 else { throw fail() }
                utf8.append(c)
            }
        }
        throw fail()
    }

    private mutating func readHex4() throws -> UInt32 {
        guard offset + 4 <= bytes.count else { throw fail() }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[offset]
            let d: UInt8
            switch c {
            case 0x30...0x39: d = c - 0x30
            case 0x61...0x66: d = c - 0x61 + 10
            case 0x41...0x46: d = c - 0x41 + 10
            default: throw fail()
            }
            v = v << 4 | UInt32(d)
            offset += 1
        }
        return v
    }

    /// Reads any value without keeping it; nesting deeper than `JSONDecoder` allows (512) throws.
    mutating func skipValue(depth: Int = 0) throws {
        guard let c = peek(), depth < 512 else { throw fail() }
        switch c {
        case UInt8(ascii: "{"): try readObject { r, _ in try r.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["): try readArray { try $0.skipValue(depth: depth + 1) }
        case UInt8(ascii: "\""): _ = try readString()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default:
            // A number: JSON's grammar, loosely; `JSONDecoder` checks the members skipped here.
            let start = offset
            while offset < bytes.count, case let d = bytes[offset],
                  (d >= 0x30 && d <= 0x39) || [UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(d) {
                offset += 1
            }
            guard offset > start else { throw fail() }
        }
    }

    private mutating func literal(_ word: String) throws {
        for c in word.utf8 {
            guard offset < bytes.count, bytes[offset] == c else { throw fail() }
            offset += 1
        }
    }
}
