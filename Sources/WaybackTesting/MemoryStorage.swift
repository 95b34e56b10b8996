import Synchronization
import WaybackCore
import WaybackStorage

/// An in-memory storage driver for unit tests of pure logic. It follows the same contract as the
/// real drivers (and passes the same conformance suite), but is never the only test of a feature.
public final class MemoryStorage: StorageDriver {
    private let objects = Mutex<[String: [UInt8]]>([:])
    public init() {}

    public var description: String { "memory storage" }
    public var capabilities: StorageCapabilities { [.atomicCreate] }

    public func info(_ key: String) async throws -> ObjectInfo? {
        objects.withLock { $0[key].map { ObjectInfo(key: key, size: Int64($0.count)) } }
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        objects.withLock { all in
            all.filter { $0.key.hasPrefix(prefix) }.map { ObjectInfo(key: $0.key, size: Int64($0.value.count)) }.sorted { $0.key < $1.key }
        }
    }

    public func withReader<R>(_ key: String, range: Range<Int64>?, _ body: (any ObjectReader) async throws -> R) async throws -> R {
        guard let data = objects.withLock({ $0[key] }) else { throw WaybackError(.notFound, "object \(key) is not in memory storage") }
        let r = range ?? 0..<Int64(data.count)
        guard r.lowerBound >= 0, r.upperBound <= Int64(data.count) else {
            throw WaybackError(.corrupt, "object \(key) has \(data.count) bytes, fewer than the \(r.upperBound) expected")
        }
        return try await body(MemoryReader(Array(data[Int(r.lowerBound)..<Int(r.upperBound)])))
    }

    public func withWriter<R>(_ key: String, options: WriteOptions, _ body: (any ObjectWriter) async throws -> R) async throws -> R {
        if options.ifAbsent, try await info(key) != nil { throw WaybackError(.conflict, "object \(key) already exists in memory storage") }
        let w = MemoryWriter()
        let result = try await body(w)
        let conflict = objects.withLock { all -> Bool in
            if options.ifAbsent && all[key] != nil { return true }
            all[key] = w.data
            return false
        }
        if conflict { throw WaybackError(.conflict, "object \(key) already exists in memory storage") }
        return result
    }

    public func remove(_ key: String) async throws { _ = objects.withLock { $0.removeValue(forKey: key) } }
}

final class MemoryReader: ObjectReader {
    var data: [UInt8]
    var position = 0
    init(_ data: [UInt8]) { self.data = data }
    func read(maxLength: Int) async throws -> [UInt8] {
        let n = min(maxLength, data.count - position)
        defer { position += n }
        return Array(data[position..<(position + n)])
    }
}

final class MemoryWriter: ObjectWriter {
    var data: [UInt8] = []
    var bytesWritten: Int64 { Int64(data.count) }
    func write(_ bytes: [UInt8]) async throws { data += bytes }
}
