import Foundation
import Testing
import WaybackCore
@testable import WaybackStorage
import WaybackTesting

@Suite struct EncryptedStorageTests {
    static let key = EncryptionKeySource.keyFile(path: "/k", key: (0..<32).map { UInt8($0) })

    static func encrypted(_ inner: any StorageDriver, _ source: EncryptionKeySource = key) async throws -> EncryptedStorage {
        let e = EncryptedStorage(inner: inner, source: source, repositoryName: "r")
        try await e.initialize()
        return e
    }

    @Test func passesConformanceWithKeyFileAndPassphrase() async throws {
        try await StorageConformance.run(try await Self.encrypted(MemoryStorage()))
        try await StorageConformance.run(try await Self.encrypted(MemoryStorage(), .passphrase("correct horse battery", variable: "V")))
        let dir = NSTemporaryDirectory() + "wayback-enc-\(UUID().uuidString)"
        defer { try? FileSystem.removeTree(dir) }
        try await StorageConformance.run(try await Self.encrypted(LocalStorage(root: dir)))
    }

    /// A failed key load is not kept: once the repository can be read (or its settings are
    /// there), the same driver works, as a daemon's next job needs.
    @Test func aFailedKeyLoadIsTriedAgain() async throws {
        let inner = MemoryStorage()
        let e = EncryptedStorage(inner: inner, source: Self.key, repositoryName: "r")
        await #expect(throws: WaybackError.self) { try await e.writeAll("obj", [1, 2, 3]) }
        #expect(await !e.keysCached)
        try await e.initialize()
        try await e.writeAll("obj", [1, 2, 3])
        #expect(try await e.readAll("obj") == [1, 2, 3])
        #expect(await e.keysCached)
    }

    @Test func storedBytesHoldNoPlaintextAndRangesDecrypt() async throws {
        let inner = MemoryStorage()
        let e = try await Self.encrypted(inner)
        let marker = Array("MARKER-7f3a9c".utf8)
        var plain = [UInt8]()
        while plain.count < 300_000 { plain += marker + Array(repeating: UInt8(plain.count % 251), count: 100) }
        try await e.writeAll("obj", plain)
        let stored = try await inner.readAll("obj")
        #expect(stored.count > plain.count)
        #expect(!Self.contains(stored, marker), "the marker must not appear in the stored bytes")
        #expect(try await e.info("obj")?.size == Int64(plain.count))
        // Ranges inside one chunk, across chunk borders, at the very end.
        for r in [0..<10, 65_530..<65_600, 131_000..<200_000, Int64(plain.count - 7)..<Int64(plain.count)] as [Range<Int64>] {
            #expect(try await e.readRange("obj", r) == Array(plain[Int(r.lowerBound)..<Int(r.upperBound)]))
        }
        // Equal plaintexts give different stored bytes (random nonces).
        try await e.writeAll("obj2", plain)
        #expect(try await inner.readAll("obj2") != stored)
        // The settings object is not an object of the repository.
        #expect(try await e.list(prefix: "").map(\.key) == ["obj", "obj2"])
    }

    @Test func tamperingIsDetected() async throws {
        let inner = MemoryStorage()
        let e = try await Self.encrypted(inner)
        let plain = (0..<200_000).map { UInt8($0 % 253) }
        try await e.writeAll("a", plain)
        try await e.writeAll("b", Array(plain.reversed()))
        let stored = try await inner.readAll("a")
        func expectDamaged(_ bytes: [UInt8], _ what: String, key: String = "a") async throws {
            try await inner.writeAll(key, bytes)
            do {
                _ = try await e.readAll(key)
                Issue.record("\(what) must be detected")
            } catch let err as WaybackError {
                #expect(err.code == .corrupt, "\(what): \(err.message)")
            }
        }
        var flipped = stored
        flipped[100_000] ^= 0x01
        try await expectDamaged(flipped, "a flipped bit")
        // Cut at a chunk border: the remaining last chunk is not marked as the last one.
        try await expectDamaged(Array(stored.prefix(24 + 2 * (65_536 + 16))), "a truncation at a chunk border")
        try await expectDamaged(Array(stored.prefix(stored.count - 5)), "a truncation inside a chunk")
        // An object moved under another name.
        try await expectDamaged(stored, "an object copied to another key", key: "b")
    }

    @Test func wrongKeyAndMixingAreClearErrors() async throws {
        let inner = MemoryStorage()
        _ = try await Self.encrypted(inner)
        let wrong = EncryptedStorage(inner: inner, source: .keyFile(path: "/other", key: Array(repeating: 7, count: 32)), repositoryName: "r")
        do {
            _ = try await wrong.list(prefix: "")
            Issue.record("a wrong key must be refused")
        } catch let err as WaybackError {
            #expect(err.code == .access && err.message.contains("/other") && err.message.contains("key check"))
        }
        // A passphrase for a key-file repository, and an encrypted repository used as a plain one.
        let pass = EncryptedStorage(inner: inner, source: .passphrase("correct horse battery", variable: "V"), repositoryName: "r")
        await #expect(throws: WaybackError.self) { _ = try await pass.list(prefix: "") }
        await #expect(throws: WaybackError.self) { try await EncryptedStorage.requirePlain(inner, name: "r") }
        // A plain repository that already holds data cannot become encrypted.
        let plain = MemoryStorage()
        try await plain.writeAll("x", [1])
        do {
            _ = try await Self.encrypted(plain)
            Issue.record("encrypting a repository with plain data must be refused")
        } catch let err as WaybackError {
            #expect(err.code == .repository && err.message.contains("unencrypted"))
        }
        let notInitialized = EncryptedStorage(inner: MemoryStorage(), source: Self.key, repositoryName: "r")
        await #expect(throws: WaybackError.self) { _ = try await notInitialized.info("x") }
    }

    static func contains(_ hay: [UInt8], _ needle: [UInt8]) -> Bool {
        guard hay.count >= needle.count else { return false }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle { return true }
        return false
    }
}
