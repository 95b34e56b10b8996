import Crypto
import Foundation

/// Lower-case hex of bytes.
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(64)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Bytes of a lower-case or upper-case hex string; nil when malformed.
public func bytesFromHex(_ text: String) -> [UInt8]? {
    let utf8 = Array(text.utf8)
    guard utf8.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c - 48
        case 97...102: c - 87
        case 65...70: c - 55
        default: nil
        }
    }
    var out = [UInt8]()
    out.reserveCapacity(utf8.count / 2)
    var i = 0
    while i < utf8.count {
        guard let h = nibble(utf8[i]), let l = nibble(utf8[i + 1]) else { return nil }
        out.append(h << 4 | l)
        i += 2
    }
    return out
}

/// Incremental SHA-256 returning lower-case hex.
public struct SHA256Hasher: Sendable {
    private var inner = SHA256()
    public init() {}
    public mutating func update(_ bytes: UnsafeRawBufferPointer) { inner.update(bufferPointer: bytes) }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { inner.update(bufferPointer: $0) } }
    public func finalizeHex() -> String { hexString(inner.finalize()) }

    public static func hex(_ bytes: [UInt8]) -> String {
        var h = SHA256Hasher(); h.update(bytes); return h.finalizeHex()
    }
}

/// Incremental MD5 (used only for the backup's MD5 digest, which tools expect next to SHA-256).
public struct MD5Hasher: Sendable {
    private var inner = Insecure.MD5()
    public init() {}
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { inner.update(bufferPointer: $0) } }
    public func finalizeHex() -> String { hexString(inner.finalize()) }
}
