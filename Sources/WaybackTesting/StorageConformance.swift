import WaybackCore
import WaybackStorage

/// The contract every storage driver must honour. Each check throws `ConformanceFailure` naming
/// what broke; a driver's test calls `StorageConformance.run(driver)`.
public enum StorageConformance {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    static func expect(_ ok: Bool, _ what: String) throws {
        if !ok { throw Failure(description: what) }
    }

    static func expectError(_ code: WaybackError.Code, _ what: String, _ body: () async throws -> Void) async throws {
        do { try await body() } catch let e as WaybackError {
            try expect(e.code == code, "\(what): expected \(code), got \(e.code) (\(e.message))")
            return
        }
        throw Failure(description: "\(what): expected \(code), got success")
    }

    /// Runs every check under `prefix` (which must be empty in the driver).
    public static func run(_ d: any StorageDriver, prefix: String = "conformance/") async throws {
        let a = prefix + "dir/a.bin", b = prefix + "dir/sub/b.bin", c = prefix + "other/c.bin"
        try await expect(d.info(a) == nil, "info of a missing object is nil")
        try await expectError(.notFound, "reading a missing object") { _ = try await d.readAll(a) }

        // Round trip, several writes in one object, large enough for several reads.
        var big = [UInt8](repeating: 0, count: 3 << 20)
        for i in big.indices { big[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 9) }
        try await d.withWriter(a, options: WriteOptions()) { w in
            try await w.write(Array(big[0..<1000]))
            try await w.write(Array(big[1000...]))
            try expect(w.bytesWritten == Int64(big.count), "bytesWritten counts every write")
        }
        try await expect(d.readAll(a) == big, "an object reads back as written")
        try await expect(d.info(a)?.size == Int64(big.count), "info reports the size")
        try await expect(d.readRange(a, 5..<70000) == Array(big[5..<70000]), "a range reads back")
        try await expectError(.corrupt, "a range past the end") { _ = try await d.readRange(a, 0..<Int64(big.count + 1)) }

        // A failed write leaves nothing (and never replaces the old object).
        struct Boom: Error {}
        do {
            try await d.withWriter(b, options: WriteOptions()) { w in
                try await w.write([1, 2, 3])
                throw Boom()
            }
        } catch is Boom {}
        try await expect(d.info(b) == nil, "a write whose body throws leaves no object")
        do {
            try await d.withWriter(a, options: WriteOptions()) { w in
                try await w.write([9])
                throw Boom()
            }
        } catch is Boom {}
        try await expect(d.readAll(a) == big, "a failed overwrite keeps the old object")

        // ifAbsent: first writer wins.
        try await d.writeAll(b, [1, 2, 3], options: WriteOptions(ifAbsent: true))
        try await expectError(.conflict, "ifAbsent on an existing key") { try await d.writeAll(b, [4], options: WriteOptions(ifAbsent: true)) }
        try await expect(d.readAll(b) == [1, 2, 3], "a refused ifAbsent write changes nothing")
        try await d.writeAll(b, [4, 5])
        try await expect(d.readAll(b) == [4, 5], "a plain write replaces")

        // Listing: recursive, sorted, prefix-filtered, complete objects only.
        try await d.writeAll(c, [])
        let all = try await d.list(prefix: prefix).map(\.key)
        try expect(all == [a, b, c], "list returns every object sorted: \(all)")
        let dir = try await d.list(prefix: prefix + "dir/").map(\.key)
        try expect(dir == [a, b], "list filters by prefix: \(dir)")
        let partial = try await d.list(prefix: prefix + "dir/a").map(\.key)
        try expect(partial == [a], "a prefix may end inside a name: \(partial)")
        try await expect(d.readAll(c) == [], "an empty object reads back empty")

        // Remove: idempotent.
        for k in [a, b, c] { try await d.remove(k) }
        try await d.remove(a)
        try await expect(d.list(prefix: prefix).isEmpty, "removed objects are gone")
    }
}
