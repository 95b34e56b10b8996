import WaybackCore
import WaybackStorage

/// A WAL file in the archive: a 48-byte header, then frames of at most 1 MiB of plain WAL.
///
/// ```
/// offset size  field
///  0     4     magic "WBW1"
///  4     1     format version (1)
///  5     3     reserved (0)
///  8     8     plain size, little endian
/// 16     32    SHA-256 of the stored frames (every byte after this header)
/// 48     ...   frames (see FrameFormat; zstd frames carry zstd's content checksum)
/// ```
/// The checksum covers the stored bytes, so `wal-fetch` verifies the object as it reads it and
/// `wal-push` hashes about a tenth of the data it would hash for the plain file (a push runs once per
/// 16 MiB segment, and its latency holds up the archiver). The plain content is guarded in
/// addition by zstd's per-frame content checksum and the plain size.
public enum WALObject {
    public static let headerLength = 48
    static let magic: [UInt8] = Array("WBW1".utf8)

    public struct Header: Sendable, Equatable {
        public var size: Int64
        /// SHA-256 of the stored frames.
        public var sha256: String
    }

    public static func encodeHeader(size: Int64, sha256 hex: String) -> [UInt8] {
        magic + [1, 0, 0, 0] + FrameFormat.le64(UInt64(size)) + (bytesFromHex(hex) ?? [])
    }

    /// The whole object for `plain` content given its encoded frames.
    public static func encode(size: Int64, frames: [[UInt8]]) -> [UInt8] {
        var hasher = SHA256Hasher()
        for f in frames { hasher.update(f) }
        var out = encodeHeader(size: size, sha256: hasher.finalizeHex())
        out.reserveCapacity(out.count + frames.reduce(0) { $0 + $1.count })
        for f in frames { out += f }
        return out
    }

    public static func decodeHeader(_ b: [UInt8], name: String) throws -> Header {
        guard b.count >= headerLength, Array(b[0..<4]) == magic else {
            throw WaybackError(.corrupt, "archived WAL file \(name) is damaged (no Wayback header); remove it from the archive if PostgreSQL still has the file, so wal-push can store it again")
        }
        guard b[4] == 1 else { throw WaybackError(.repository, "archived WAL file \(name) has format \(b[4]); upgrade wayback") }
        return b.withUnsafeBytes { p in
            Header(size: Int64(FrameFormat.readLE64(p, 8)), sha256: hexString(b[16..<48]))
        }
    }

    /// Reads the header of a stored WAL object; nil when the object does not exist.
    public static func storedHeader(_ driver: any StorageDriver, key: String, name: String) async throws -> Header? {
        guard let info = try await driver.info(key) else { return nil }
        guard info.size >= Int64(headerLength) else {
            throw WaybackError(.corrupt, "archived WAL file \(name) in \(driver.description) is truncated (\(info.size) bytes)")
        }
        return try decodeHeader(try await driver.readRange(key, 0..<Int64(headerLength)), name: name)
    }

    /// Streams the plain content of a stored WAL object to `sink` with the offset of each piece,
    /// verifying the checksum of the stored bytes and the plain size. Throws `.notFound` when
    /// missing and `.corrupt` (naming the file) when it does not verify; `sink` may have received
    /// data by then. With a `ReplicatedStorage` the read may start over from offset 0 with another
    /// repository, so sinks write by offset.
    @discardableResult
    public static func read(_ driver: any StorageDriver, key: String, name: String,
                            sink: (UnsafeRawBufferPointer, Int64) throws -> Void) async throws -> Header {
        try await driver.withReader(key, range: nil) { raw in
            let reader = HashingReader(raw)
            let frames = FrameReader(reader: reader, name: "archived WAL file \(name)")
            let header = try decodeHeader(try await frames.readExactly(headerLength), name: name)
            reader.startHashing(afterConsumed: headerLength)
            var done: Int64 = 0
            while done < header.size {
                done += Int64(try await frames.nextFrame { plain -> Int in
                    try sink(plain, done)
                    return plain.count
                })
            }
            let extra = try await frames.readRemainder()
            guard done == header.size, extra == 0, reader.finalizeHex() == header.sha256 else {
                throw WaybackError(.corrupt, "archived WAL file \(name) in \(driver.description) fails its checksum; it is damaged")
            }
            return header
        }
    }
}

/// An ObjectReader that hashes what passes through it after a given number of bytes.
final class HashingReader: ObjectReader {
    let inner: any ObjectReader
    private var hasher = SHA256Hasher()
    private var delivered = 0
    private var skip = Int.max
    private var pending: [UInt8] = []

    init(_ inner: any ObjectReader) { self.inner = inner }

    /// Hash every byte delivered from offset `n` on (including any already delivered past `n`).
    func startHashing(afterConsumed n: Int) {
        skip = n
        if delivered > n { hasher.update(Array(pending.suffix(delivered - n))) }
        pending = []
    }

    func read(maxLength: Int) async throws -> [UInt8] {
        let chunk = try await inner.read(maxLength: maxLength)
        if skip == Int.max {
            pending += chunk
        } else {
            let start = max(0, skip - delivered)
            if start < chunk.count { chunk.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[start...])) } }
        }
        delivered += chunk.count
        return chunk
    }

    func finalizeHex() -> String { hasher.finalizeHex() }
}
