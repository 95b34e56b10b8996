import WaybackCore
import WaybackStorage

/// A frame: the unit of compression (and, later, encryption) in every data object.
///
/// ```
/// offset size  field
///  0     4     magic "WBF1"
///  4     1     compression (CompressionAlgorithm raw value: 0 none, 1 zstd)
///  5     1     encryption (0 none; reserved for AES-256-GCM)
///  6     2     flags (0; reserved)
///  8     4     raw (plain) length, little endian
/// 12     4     stored (payload) length, little endian
/// 16     ...   payload
/// ```
/// Frames hold at most `FrameFormat.maxRawLength` plain bytes, so a reader can fetch and decode any
/// frame alone with one ranged read.
public enum FrameFormat {
    public static let headerLength = 16
    public static let rawChunk = 1 << 20
    public static let maxRawLength = 8 << 20
    static let magic: [UInt8] = Array("WBF1".utf8)

    public struct Header: Sendable, Equatable {
        public var compression: CompressionAlgorithm
        public var encryption: UInt8
        public var rawLength: Int
        public var storedLength: Int
    }

    public static func encodeHeader(_ h: Header) -> [UInt8] {
        var b = magic
        b.append(h.compression.rawValue)
        b.append(h.encryption)
        b += [0, 0]
        b += le32(UInt32(h.rawLength)) + le32(UInt32(h.storedLength))
        return b
    }

    public static func decodeHeader(_ b: UnsafeRawBufferPointer, object: String) throws -> Header {
        guard b.count >= headerLength, Array(b[0..<4]) == magic else {
            throw WaybackError(.corrupt, "\(object) is damaged: no frame header where one should be")
        }
        guard let alg = CompressionAlgorithm(rawValue: b[4]) else {
            throw WaybackError(.corrupt, "\(object) uses compression \(b[4]), unknown to this wayback")
        }
        guard b[5] == 0 else { throw WaybackError(.repository, "\(object) is encrypted; this wayback does not support encryption yet") }
        let raw = Int(readLE32(b, 8)), stored = Int(readLE32(b, 12))
        guard raw <= maxRawLength, stored <= maxRawLength + 65536 else {
            throw WaybackError(.corrupt, "\(object) is damaged: a frame claims \(raw) bytes")
        }
        return Header(compression: alg, encryption: b[5], rawLength: raw, storedLength: stored)
    }

    /// Compresses `plain` into one frame (header + payload). Data that does not compress is stored
    /// plain, so a frame is never much larger than its input.
    public static func encode(_ plain: UnsafeRawBufferPointer, compressor: Compressor) throws -> [UInt8] {
        try compressor.compress(plain) { out in
            let alg: CompressionAlgorithm = (compressor.settings.algorithm != .none && out.count < plain.count) ? compressor.settings.algorithm : .none
            let payload = alg == .none ? plain : out
            var frame = encodeHeader(.init(compression: alg, encryption: 0, rawLength: plain.count, storedLength: payload.count))
            frame.append(contentsOf: payload)
            return frame
        }
    }

    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func readLE32(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
    static func readLE64(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * $1) } }
}

/// Appends frames to one object and keeps the SHA-256 of everything stored, for the manifest.
public final class FrameWriter {
    let writer: any ObjectWriter
    public private(set) var offset: Int64 = 0
    private var hasher = SHA256Hasher()

    public init(writer: any ObjectWriter) {
        self.writer = writer
    }

    /// Appends one encoded frame (see `FrameFormat.encode`); returns its location.
    @discardableResult
    public func append(frame: [UInt8]) async throws -> (offset: Int64, length: Int) {
        let start = offset
        try await write(frame)
        return (start, frame.count)
    }

    /// Raw bytes (object headers and trailers).
    public func write(_ bytes: [UInt8]) async throws {
        try await writer.write(bytes)
        hasher.update(bytes)
        offset += Int64(bytes.count)
    }

    public func finalizeSHA256() -> String { hasher.finalizeHex() }
}

/// Reads frames sequentially from a reader positioned at a frame header.
public final class FrameReader {
    let reader: any ObjectReader
    let name: String
    let decompressor = Decompressor()
    private var buffer: [UInt8] = []
    private var position = 0

    public init(reader: any ObjectReader, name: String) { self.reader = reader; self.name = name }

    /// Exactly `count` bytes, or `.corrupt` when the object ends first.
    public func readExactly(_ count: Int) async throws -> [UInt8] {
        while buffer.count - position < count {
            let chunk = try await reader.read(maxLength: max(1 << 20, count))
            if chunk.isEmpty { throw WaybackError(.corrupt, "\(name) is truncated: it ends inside a frame") }
            if position > 0 { buffer.removeFirst(position); position = 0 }
            buffer += chunk
        }
        let out = Array(buffer[position..<(position + count)])
        position += count
        return out
    }

    /// Reads to the end of the object; returns how many bytes were left (0 for a well-formed object).
    public func readRemainder() async throws -> Int {
        var n = buffer.count - position
        buffer = []; position = 0
        while true {
            let chunk = try await reader.read(maxLength: 1 << 16)
            if chunk.isEmpty { return n }
            n += chunk.count
        }
    }

    /// Decodes the next frame and passes its plain bytes to `body`.
    public func nextFrame<R>(_ body: (UnsafeRawBufferPointer) throws -> R) async throws -> R {
        let hb = try await readExactly(FrameFormat.headerLength)
        let h = try hb.withUnsafeBytes { try FrameFormat.decodeHeader($0, object: name) }
        let payload = try await readExactly(h.storedLength)
        return try payload.withUnsafeBytes { p in
            do {
                return try decompressor.decompress(p, algorithm: h.compression, rawLength: h.rawLength, body)
            } catch let e as WaybackError where e.code == .corrupt {
                throw WaybackError(.corrupt, "\(name) is damaged: \(e.message)")
            }
        }
    }
}
