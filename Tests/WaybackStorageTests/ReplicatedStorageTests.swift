import Foundation
import Testing
import WaybackCore
import WaybackStorage
import WaybackTesting

/// The 3-2-1 facade's rules, on in-memory replicas (the end-to-end tests use local + S3).
@Suite struct ReplicatedStorageTests {
    /// Fails every write after `failAfter` bytes, or every read of `badKey` as corrupt.
    final class Flaky: StorageDriver, @unchecked Sendable {
        let inner = MemoryStorage()
        var failWrites = false
        var badKey: String?
        var down = false
        var reads = 0
        var description: String { "flaky" }
        var capabilities: StorageCapabilities { [.atomicCreate] }
        func info(_ key: String) async throws -> ObjectInfo? {
            reads += 1
            if down { throw WaybackError(.io, "connection refused") }
            return try await inner.info(key)
        }
        func list(prefix: String) async throws -> [ObjectInfo] {
            reads += 1
            if down { throw WaybackError(.io, "connection refused") }
            return try await inner.list(prefix: prefix)
        }
        func withReader<R>(_ key: String, range: Range<Int64>?, _ body: (any ObjectReader) async throws -> R) async throws -> R {
            reads += 1
            if down { throw WaybackError(.io, "connection refused") }
            if key == badKey { throw WaybackError(.corrupt, "damaged") }
            return try await inner.withReader(key, range: range, body)
        }
        func withWriter<R>(_ key: String, options: WriteOptions, _ body: (any ObjectWriter) async throws -> R) async throws -> R {
            try await inner.withWriter(key, options: options) { w in
                try await body(FailingWriter(inner: w, fail: failWrites))
            }
        }
        func remove(_ key: String) async throws { try await inner.remove(key) }
    }

    final class FailingWriter: ObjectWriter {
        let inner: any ObjectWriter
        let fail: Bool
        init(inner: any ObjectWriter, fail: Bool) { self.inner = inner; self.fail = fail }
        var bytesWritten: Int64 { inner.bytesWritten }
        func write(_ bytes: [UInt8]) async throws {
            if fail { throw WaybackError(.io, "disk on fire") }
            try await inner.write(bytes)
        }
    }

    @Test func passesConformance() async throws {
        let r = ReplicatedStorage([Repository(name: "a", driver: MemoryStorage()), Repository(name: "b", driver: MemoryStorage())], events: EventLog.collecting(.backup))
        try await StorageConformance.run(r)
    }

    @Test func aFailingReplicaIsDroppedAndTheOthersKeepEverything() async throws {
        let a = MemoryStorage(), b = Flaky()
        let events = EventLog.collecting(.backup, cluster: "main")
        let r = ReplicatedStorage([Repository(name: "a", driver: a), Repository(name: "b", driver: b)], events: events)
        try await r.writeAll("k1", [1, 2, 3])
        b.failWrites = true
        try await r.writeAll("k2", [4])        // b fails: dropped, a keeps it
        b.failWrites = false
        try await r.writeAll("k3", [5])        // b gets nothing more in this run
        #expect(try await a.list(prefix: "").map(\.key) == ["k1", "k2", "k3"])
        #expect(try await b.list(prefix: "").map(\.key) == ["k1"], "no partial object, nothing after the failure")
        #expect(r.failures.map(\.repository) == ["b"])
        // The drop is an event (a value the daemon routes), once, naming the repository.
        let drops = events.events.filter { $0.kind == .repositoryDropped }
        #expect(drops.count == 1 && drops.first?.repository == "b" && drops.first?.severity == .error && drops.first?.cluster == "main")
        #expect(drops.first?.message.contains("disk on fire") == true)
        // The next job builds its own set: the repository that failed in this one is written again.
        let next = ReplicatedStorage(r.replicas, events: EventLog.collecting(.backup))
        try await next.writeAll("k5", [6])
        #expect(try await b.info("k5") != nil && next.failures.isEmpty)
        // A body that throws leaves nothing anywhere.
        struct Boom: Error {}
        await #expect(throws: Boom.self) { try await r.withWriter("k4", options: WriteOptions()) { _ in throw Boom() } }
        #expect(try await a.info("k4") == nil)
    }

    @Test func readsFallBackOnMissingOrDamagedObjects() async throws {
        let a = Flaky(), b = MemoryStorage()
        let r = ReplicatedStorage([Repository(name: "a", driver: a), Repository(name: "b", driver: b)], events: EventLog.collecting(.backup))
        try await r.writeAll("x", [7, 7])
        try await a.remove("x")
        #expect(try await r.readAll("x") == [7, 7], "missing in a: read from b")
        try await r.writeAll("y", [8])
        a.badKey = "y"
        #expect(try await r.readAll("y") == [8], "damaged in a: read from b")
        // A body that finds the data bad starts over with the next replica.
        try await a.inner.writeAll("z", [0])
        try await b.writeAll("z", [1])
        var calls = 0
        let got: [UInt8] = try await r.withReader("z", range: nil) { reader in
            calls += 1
            let bytes = try await reader.read(maxLength: 10)
            if bytes == [0] { throw WaybackError(.corrupt, "checksum") }
            return bytes
        }
        #expect(got == [1] && calls == 2)
        await #expect(throws: WaybackError.self) { _ = try await r.readAll("none") }
        #expect(try await r.list(prefix: "").map(\.key) == ["x", "y", "z"])
    }

    @Test func anUnreachableReplicaIsAskedOncePerRunWhileAnotherAnswers() async throws {
        let a = Flaky(), b = MemoryStorage()
        let r = ReplicatedStorage([Repository(name: "a", driver: a), Repository(name: "b", driver: b)], events: EventLog.collecting(.backup))
        try await r.writeAll("k", [1])
        a.down = true
        a.reads = 0
        #expect(try await r.readAll("k") == [1])
        #expect(try await r.readAll("k") == [1])
        #expect(try await r.info("missing") == nil)
        #expect(try await r.list(prefix: "").map(\.key) == ["k"])
        #expect(a.reads == 1, "the unreachable replica was asked \(a.reads) times")
    }

    @Test func notFoundOnlyWhenEveryReplicaSaysSoOtherwiseTheReasonOfTheOneThatCouldNotBeRead() async throws {
        let a = MemoryStorage(), b = Flaky()
        let r = ReplicatedStorage([Repository(name: "a", driver: a), Repository(name: "b", driver: b)], events: EventLog.collecting(.backup))
        func code(_ key: String) async -> WaybackError.Code? {
            do { _ = try await r.readAll(key); return nil } catch let e as WaybackError { return e.code } catch { return .internal }
        }
        #expect(await code("none") == .notFound, "both answered: not there")
        b.down = true
        #expect(await code("none") == .io, "b could not be asked: its reason, not 'not found'")
        b.down = false
        try await b.inner.writeAll("bad", [1])
        b.badKey = "bad"
        #expect(await code("bad") == .corrupt, "missing in a, damaged in b: damaged")
    }
}
