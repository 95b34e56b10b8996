import WaybackCore
import WaybackStorage

/// A frame: the unit of compression (and, later, encryption) in every data object.
///
/// ```
/// offset size  field
///  0     4     magic "WBF1"
///  4     1     compression (CompressionAlgorithm raw value: 0 none, 1 zstd)
///  5     1     encryption (0; encryption is a layer under whole objects)
///  6     2     flags, little endian: bit 0 = page delta filter (see `PageDelta`); others reserved
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

    /// Flag: the plain bytes were passed through `PageDelta` before compression.
    public static let pageDeltaFlag: UInt16 = 1

    public struct Header: Sendable, Equatable {
        public var compression: CompressionAlgorithm
        public var encryption: UInt8
        public var rawLength: Int
        public var storedLength: Int
        public var flags: UInt16 = 0
    }

    public static func encodeHeader(_ h: Header) -> [UInt8] {
        var b = magic
        b.append(h.compression.rawValue)
        b.append(h.encryption)
        b += [UInt8(truncatingIfNeeded: h.flags), UInt8(truncatingIfNeeded: h.flags >> 8)]
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
        guard b[5] == 0 else { throw WaybackError(.repository, "\(object) uses frame encryption \(b[5]), unknown to this wayback; upgrade wayback") }
        let flags = UInt16(b[6]) | UInt16(b[7]) << 8
        guard flags & ~pageDeltaFlag == 0 else {
            throw WaybackError(.repository, "\(object) uses frame features (flags \(flags)) unknown to this wayback; upgrade wayback")
        }
        let raw = Int(readLE32(b, 8)), stored = Int(readLE32(b, 12))
        guard raw <= maxRawLength, stored <= maxRawLength + 65536 else {
            throw WaybackError(.corrupt, "\(object) is damaged: a frame claims \(raw) bytes")
        }
        return Header(compression: alg, encryption: b[5], rawLength: raw, storedLength: stored, flags: flags)
    }

    /// Compresses `plain` into one frame (header + payload). Data that does not compress is stored
    /// plain, so a frame is never much larger than its input. With `pages` (relation file data),
    /// index pages go through `PageDelta` first.
    public static func encode(_ plain: UnsafeRawBufferPointer, compressor: Compressor, pages: Bool = false) throws -> [UInt8] {
        if pages, compressor.settings.algorithm != .none, PageDelta.suits(plain) {
            var filtered = [UInt8].scratch(count: plain.count)
            filtered.withUnsafeMutableBytes { PageDelta.encode(plain, into: $0) }
            let frame = try filtered.withUnsafeBytes { f in
                try compressor.compress(f) { out -> [UInt8]? in
                    guard out.count < plain.count else { return nil }
                    var frame = encodeHeader(.init(compression: compressor.settings.algorithm, encryption: 0, rawLength: plain.count,
                                                   storedLength: out.count, flags: pageDeltaFlag))
                    frame.append(contentsOf: out)
                    return frame
                }
            }
            if let frame { return frame }
        }
        return try compressor.compress(plain) { out in
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
    private var unfiltered: [UInt8] = []
    private var buffer: [UInt8] = []
    private var position = 0
    /// Bytes consumed so far: the offset of the next frame from where the reader started.
    public private(set) var consumed: Int64 = 0

    public init(reader: any ObjectReader, name: String) { self.reader = reader; self.name = name }

    /// Whether the object ends here (no byte left to read).
    public func atEnd() async throws -> Bool {
        if position < buffer.count { return false }
        let chunk = try await reader.read(maxLength: 1 << 20)
        buffer = chunk; position = 0
        return chunk.isEmpty
    }

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
        consumed += Int64(count)
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
        return try payload.withUnsafeBytes { try FrameFormat.decodePayload($0, header: h, decompressor: decompressor, scratch: &unfiltered, object: name, body) }
    }

    /// Reads the next frame and passes its header and its decoder to `body`: the decoder writes
    /// the frame's `rawLength` plain bytes into the space it is given, where they are to go.
    public func nextFrame<R>(decodingWith body: (FrameFormat.Header, (UnsafeMutableRawBufferPointer) throws -> Void) throws -> R) async throws -> R {
        let hb = try await readExactly(FrameFormat.headerLength)
        let h = try hb.withUnsafeBytes { try FrameFormat.decodeHeader($0, object: name) }
        let payload = try await readExactly(h.storedLength)
        return try payload.withUnsafeBytes { p in
            try body(h) { try FrameFormat.decodePayload(p, header: h, decompressor: decompressor, object: name, into: $0) }
        }
    }
}

extension FrameFormat {
    /// The plain bytes of one frame's payload (`header` decoded from its first bytes), passed to
    /// `body`; `scratch` holds the page-delta filter's output between calls.
    public static func decodePayload<R>(_ p: UnsafeRawBufferPointer, header h: Header, decompressor: Decompressor, scratch: inout [UInt8],
                                        object name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        do {
            guard h.flags & FrameFormat.pageDeltaFlag != 0 else {
                return try decompressor.decompress(p, algorithm: h.compression, rawLength: h.rawLength, body)
            }
            if scratch.count < h.rawLength { scratch = .scratch(count: h.rawLength) }
            try decompressor.decompress(p, algorithm: h.compression, rawLength: h.rawLength) { filtered in
                scratch.withUnsafeMutableBytes { PageDelta.decode(filtered, into: $0) }
            }
            return try scratch.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<h.rawLength])) }
        } catch let e as WaybackError where e.code == .corrupt {
            throw WaybackError(.corrupt, "\(name) is damaged: \(e.message)")
        }
    }

    /// `decodePayload` into the first `rawLength` bytes of `plain` (grown when shorter).
    public static func decodePayload(_ p: UnsafeRawBufferPointer, header h: Header, decompressor: Decompressor, object name: String,
                                     into plain: inout [UInt8]) throws {
        if plain.count < max(h.rawLength, 1) { plain = .scratch(count: max(h.rawLength, 1)) }
        try plain.withUnsafeMutableBytes { try decodePayload(p, header: h, decompressor: decompressor, object: name, into: $0) }
    }

    /// `decodePayload` into the first `rawLength` bytes of `destination` (which has at least that
    /// many), with no copy after the decompression (the page-delta filter is undone from the
    /// decompressor's buffer).
    public static func decodePayload(_ p: UnsafeRawBufferPointer, header h: Header, decompressor: Decompressor, object name: String,
                                     into destination: UnsafeMutableRawBufferPointer) throws {
        do {
            if h.flags & FrameFormat.pageDeltaFlag != 0 {
                try decompressor.decompress(p, algorithm: h.compression, rawLength: h.rawLength) { PageDelta.decode($0, into: destination) }
            } else {
                try decompressor.decompress(p, algorithm: h.compression, rawLength: h.rawLength, into: destination)
            }
        } catch let e as WaybackError where e.code == .corrupt {
            throw WaybackError(.corrupt, "\(name) is damaged: \(e.message)")
        }
    }
}

/// An object reader that hashes and counts every byte passing through it.
public final class DigestReader: ObjectReader {
    let inner: any ObjectReader
    private var hasher = SHA256Hasher()
    public private(set) var count: Int64 = 0

    public init(_ inner: any ObjectReader) { self.inner = inner }

    public func read(maxLength: Int) async throws -> [UInt8] {
        let chunk = try await inner.read(maxLength: maxLength)
        hasher.update(chunk)
        count += Int64(chunk.count)
        return chunk
    }

    public func finalizeHex() -> String { hasher.finalizeHex() }
}
