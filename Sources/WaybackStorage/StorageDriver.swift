import Foundation
import WaybackCore

/// What a storage backend can do beyond the common contract.
public struct StorageCapabilities: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// Objects live in a POSIX file system (the repository path is a local directory).
    public static let posix = StorageCapabilities(rawValue: 1 << 0)
    /// `WriteOptions.ifAbsent` is enforced atomically by the backend (link(2), `If-None-Match: *`).
    public static let atomicCreate = StorageCapabilities(rawValue: 1 << 1)
}

/// One stored object as a listing or `info` reports it.
public struct ObjectInfo: Sendable, Equatable {
    /// The key relative to the driver's root, with `/` separators.
    public var key: String
    public var size: Int64
    public init(key: String, size: Int64) { self.key = key; self.size = size }
}

public struct WriteOptions: Sendable {
    /// Fail with `.conflict` if an object with this key exists (first writer wins).
    public var ifAbsent: Bool
    public init(ifAbsent: Bool = false) { self.ifAbsent = ifAbsent }
}

/// A sequential reader of one object (or a byte range of it), handed out by `withReader`.
public protocol ObjectReader: AnyObject {
    /// Reads up to `maxLength` bytes; returns an empty array only at the end of the object/range.
    func read(maxLength: Int) async throws -> [UInt8]
}

/// A sequential writer of one new object, handed out by `withWriter`.
public protocol ObjectWriter: AnyObject {
    func write(_ bytes: [UInt8]) async throws
    /// Bytes written so far.
    var bytesWritten: Int64 { get }
}

/// The small storage protocol every backend implements (local directory, S3, in-memory).
///
/// Keys are relative paths with `/` separators and no `..`. Every requirement documents which
/// `WaybackError` it throws; any other failure is `.io`. Code above the driver never relies on
/// rename or append: an object becomes visible only when `withWriter`'s body returns.
public protocol StorageDriver: Sendable {
    /// A description for messages and logs (never contains credentials).
    var description: String { get }
    var capabilities: StorageCapabilities { get }

    /// Size of the object, or nil when it does not exist.
    func info(_ key: String) async throws -> ObjectInfo?

    /// Every complete object whose key starts with `prefix`, sorted by key. Objects being written
    /// are never listed.
    func list(prefix: String) async throws -> [ObjectInfo]

    /// Calls `body` with a reader of the object (or `range` of it). Throws `.notFound` when the
    /// object does not exist, `.corrupt` when `range` reaches past its end.
    func withReader<R>(_ key: String, range: Range<Int64>?, _ body: (any ObjectReader) async throws -> R) async throws -> R

    /// Creates or replaces an object with what `body` writes. The object becomes visible, complete
    /// and durable only when `body` returns; if `body` throws, nothing is left behind. With
    /// `options.ifAbsent`, throws `.conflict` when the key exists (and leaves it unchanged).
    func withWriter<R>(_ key: String, options: WriteOptions, _ body: (any ObjectWriter) async throws -> R) async throws -> R

    /// Removes the object; removing a missing object is not an error.
    func remove(_ key: String) async throws

    /// Removes many objects (in batches where the backend has a batch call); missing ones are not
    /// an error.
    func remove(keys: [String]) async throws

    /// Removes what interrupted writes left behind before `date` (temporary files, unfinished
    /// multipart uploads) under `prefix` ("" for everything); never touches complete objects.
    /// Returns how many it removed.
    func removeLeftovers(olderThan date: Date, prefix: String) async throws -> Int
}

extension StorageDriver {
    public func remove(keys: [String]) async throws {
        for k in keys { try await remove(k) }
    }

    public func removeLeftovers(olderThan date: Date, prefix: String) async throws -> Int { 0 }

    public func removeLeftovers(olderThan date: Date) async throws -> Int { try await removeLeftovers(olderThan: date, prefix: "") }
}

extension StorageDriver {
    /// Reads a whole (small) object; throws `.notFound` when missing and `.corrupt` when it is
    /// larger than `limit`.
    public func readAll(_ key: String, limit: Int = 64 << 20) async throws -> [UInt8] {
        try await withReader(key, range: nil) { reader in
            var out = [UInt8]()
            while true {
                let chunk = try await reader.read(maxLength: 1 << 20)
                if chunk.isEmpty { break }
                out += chunk
                if out.count > limit {
                    throw WaybackError(.corrupt, "object \(key) in \(description) is larger than \(limit) bytes")
                }
            }
            return out
        }
    }

    /// Reads exactly `range` of an object.
    public func readRange(_ key: String, _ range: Range<Int64>) async throws -> [UInt8] {
        try await withReader(key, range: range) { reader in
            var out = [UInt8]()
            out.reserveCapacity(range.count)
            while out.count < range.count {
                let chunk = try await reader.read(maxLength: range.count - out.count)
                if chunk.isEmpty { break }
                out += chunk
            }
            guard out.count == range.count else {
                throw WaybackError(.corrupt, "object \(key) in \(description) ended early: read \(out.count) of \(range.count) bytes")
            }
            return out
        }
    }

    /// Writes a whole (small) object.
    public func writeAll(_ key: String, _ bytes: [UInt8], options: WriteOptions = WriteOptions()) async throws {
        try await withWriter(key, options: options) { writer in
            try await writer.write(bytes)
        }
    }

    public func exists(_ key: String) async throws -> Bool { try await info(key) != nil }
}
