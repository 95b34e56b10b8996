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
/// 16     32    SHA-256 of the plain file
/// 48     ...   frames (see FrameFormat)
/// ```
/// The header lets `wal-push` compare a stored file with a new one by reading 48 bytes, and lets
/// `wal-fetch` verify what it decoded.
public enum WALObject {
    public static let headerLength = 48
    static let magic: [UInt8] = Array("WBW1".utf8)

    public struct Header: Sendable, Equatable {
        public var size: Int64
        public var sha256: String
    }

    public static func encodeHeader(size: Int64, sha256 hex: String) -> [UInt8] {
        magic + [1, 0, 0, 0] + FrameFormat.le64(UInt64(size)) + (bytesFromHex(hex) ?? [])
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

    /// Streams the plain content of a stored WAL object to `sink`, verifying size and SHA-256.
    /// Throws `.notFound` when missing and `.corrupt` (naming the file) when it does not verify.
    public static func read(_ driver: any StorageDriver, key: String, name: String,
                            sink: (UnsafeRawBufferPointer) throws -> Void) async throws -> Header {
        try await driver.withReader(key, range: nil) { reader in
            let frames = FrameReader(reader: reader, name: "archived WAL file \(name)")
            let header = try decodeHeader(try await frames.readExactly(headerLength), name: name)
            var hasher = SHA256Hasher()
            var done: Int64 = 0
            while done < header.size {
                let n = try await frames.nextFrame { plain -> Int in
                    hasher.update(plain)
                    try sink(plain)
                    return plain.count
                }
                done += Int64(n)
            }
            guard done == header.size, hasher.finalizeHex() == header.sha256 else {
                throw WaybackError(.corrupt, "archived WAL file \(name) in \(driver.description) fails its checksum; it is damaged")
            }
            return header
        }
    }
}
