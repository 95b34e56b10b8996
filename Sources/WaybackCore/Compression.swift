import CCodecs
import CZstd

/// Compression algorithms a frame can use. The raw value is stored in every frame header and must
/// never change.
public enum CompressionAlgorithm: UInt8, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case none = 0
    case zstd = 1
    case lz4 = 2
    case gzip = 3

    public init?(name: String) {
        switch name.lowercased() {
        case "none": self = .none
        case "zstd": self = .zstd
        case "lz4": self = .lz4
        case "gzip", "gz": self = .gzip
        default: return nil
        }
    }

    public var description: String {
        switch self { case .none: "none"; case .zstd: "zstd"; case .lz4: "lz4"; case .gzip: "gzip" }
    }

    /// The levels the algorithm accepts (lz4: 1-2 fast, 3-12 LZ4HC).
    public var levels: ClosedRange<Int> {
        switch self { case .none: 0...0; case .zstd: 1...19; case .lz4: 1...12; case .gzip: 1...9 }
    }
}

/// Compression settings chosen by the user.
public struct CompressionSettings: Sendable, Equatable, Codable {
    public var algorithm: CompressionAlgorithm
    public var level: Int
    public init(algorithm: CompressionAlgorithm = .zstd, level: Int = 1) {
        self.algorithm = algorithm
        self.level = level
    }

    enum CodingKeys: String, CodingKey { case algorithm, level }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name = try c.decode(String.self, forKey: .algorithm)
        guard let alg = CompressionAlgorithm(name: name) else {
            throw DecodingError.dataCorruptedError(forKey: .algorithm, in: c, debugDescription: "unknown compression \(name)")
        }
        algorithm = alg
        level = try c.decode(Int.self, forKey: .level)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(algorithm.description, forKey: .algorithm)
        try c.encode(level, forKey: .level)
    }
}

/// A reusable compressor for one worker (not thread-safe: one per task).
public final class Compressor {
    public let settings: CompressionSettings
    private let cctx: OpaquePointer?
    private var out: [UInt8] = []

    public init(_ settings: CompressionSettings) {
        self.settings = settings
        cctx = settings.algorithm == .zstd ? ZSTD_createCCtx() : nil
        if let cctx {
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(settings.level))
            // zstd's own content checksum (XXH64, nearly free) in every frame.
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        }
    }

    deinit { if let cctx { ZSTD_freeCCtx(cctx) } }

    /// Compresses `input` into one independent frame; calls `body` with the compressed bytes (valid
    /// only during the call). With `.none` the input itself is passed.
    public func compress<R>(_ input: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let n: Int
        switch settings.algorithm {
        case .none:
            return try body(input)
        case .zstd:
            let bound = ZSTD_compressBound(input.count)
            if out.count < bound { out = .scratch(count: bound) }
            let r = out.withUnsafeMutableBytes { dst in ZSTD_compress2(cctx, dst.baseAddress, bound, input.baseAddress, input.count) }
            if ZSTD_isError(r) != 0 {
                throw WaybackError(.internal, "zstd compression failed", cause: .decoding(String(cString: ZSTD_getErrorName(r))))
            }
            n = r
        case .lz4:
            let bound = Int(LZ4_compressBound(Int32(input.count)))
            if out.count < bound { out = .scratch(count: bound) }
            let src = input.baseAddress?.assumingMemoryBound(to: CChar.self)
            let level = Int32(settings.level)
            n = Int(out.withUnsafeMutableBytes { dst in
                let d = dst.baseAddress!.assumingMemoryBound(to: CChar.self)
                return level >= 3 ? LZ4_compress_HC(src, d, Int32(input.count), Int32(bound), level)
                                  : LZ4_compress_default(src, d, Int32(input.count), Int32(bound))
            })
            guard n > 0 || input.isEmpty else { throw WaybackError(.internal, "lz4 compression failed") }
        case .gzip:
            let bound = wb_gzip_bound(input.count)
            if out.count < bound { out = .scratch(count: bound) }
            n = out.withUnsafeMutableBytes { dst in wb_gzip_compress(input.baseAddress, input.count, dst.baseAddress, bound, Int32(settings.level)) }
            guard n >= 0 else { throw WaybackError(.internal, "gzip compression failed") }
        }
        return try out.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
    }
}

/// A reusable decompressor for one worker.
public final class Decompressor {
    private let dctx: OpaquePointer?
    private var out: [UInt8] = []

    public init() { dctx = ZSTD_createDCtx() }
    deinit { if let dctx { ZSTD_freeDCtx(dctx) } }

    /// Decompresses one frame of `algorithm` whose plain size is `rawLength`; calls `body` with the
    /// plain bytes. Throws `.corrupt` when the frame does not decode to exactly `rawLength` bytes.
    public func decompress<R>(_ input: UnsafeRawBufferPointer, algorithm: CompressionAlgorithm, rawLength: Int,
                              _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        if algorithm == .none {
            guard input.count == rawLength else { throw WaybackError(.corrupt, "stored frame has \(input.count) bytes, expected \(rawLength)") }
            return try body(input)
        }
        if out.count < rawLength { out = .scratch(count: max(rawLength, 1)) }
        try out.withUnsafeMutableBytes { try decompress(input, algorithm: algorithm, rawLength: rawLength, into: $0) }
        return try out.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<rawLength])) }
    }

    /// Decompresses one frame of `algorithm` into the first `rawLength` bytes of `destination`
    /// (which has at least that many), with no copy in between. Throws `.corrupt` as above.
    public func decompress(_ input: UnsafeRawBufferPointer, algorithm: CompressionAlgorithm, rawLength: Int,
                           into destination: UnsafeMutableRawBufferPointer) throws {
        precondition(destination.count >= rawLength)
        switch algorithm {
        case .none:
            guard input.count == rawLength else { throw WaybackError(.corrupt, "stored frame has \(input.count) bytes, expected \(rawLength)") }
            if rawLength > 0 { destination.baseAddress!.copyMemory(from: input.baseAddress!, byteCount: rawLength) }
        case .zstd:
            let n = ZSTD_decompressDCtx(dctx, destination.baseAddress, rawLength, input.baseAddress, input.count)
            if ZSTD_isError(n) != 0 || n != rawLength {
                let why = ZSTD_isError(n) != 0 ? String(cString: ZSTD_getErrorName(n)) : "decoded \(n) bytes, expected \(rawLength)"
                throw WaybackError(.corrupt, "a compressed frame does not decode", cause: .decoding(why))
            }
        case .lz4, .gzip:
            let n = algorithm == .gzip
                ? wb_gzip_decompress(input.baseAddress, input.count, destination.baseAddress, rawLength)
                : Int(LZ4_decompress_safe(input.baseAddress?.assumingMemoryBound(to: CChar.self),
                                          destination.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(input.count), Int32(rawLength)))
            guard n == rawLength else {
                throw WaybackError(.corrupt, "a \(algorithm) frame does not decode to its \(rawLength) bytes")
            }
        }
    }
}

extension Array where Element == UInt8 {
    /// A byte buffer of `count` bytes that is about to be overwritten (by a read or a codec), so
    /// it is not zeroed first: zeroing megabytes per call shows up in every short-lived command.
    public static func scratch(count: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }
}
