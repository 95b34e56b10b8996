import Foundation
import Testing
import WaybackCore
@testable import WaybackS3
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// The S3 driver against a real S3 server process (moto, SigV4 checking on).
@Suite(.serialized) struct S3StorageTests {
    /// The suite's clients (a command or the daemon owns its own and shuts it down).
    static let clients = HTTPClientPool()

    static func driver(_ server: S3TestServer, prefix: String, secret: String? = nil, partSize: Int = 5 << 20,
                       configure: (inout S3Settings) -> Void = { _ in }) throws -> S3Storage {
        var s = S3Settings(endpoint: server.endpoint, bucket: server.buckets[0], region: "us-east-1", prefix: prefix, pathStyle: true,
                           credentials: S3Credentials(accessKeyID: server.accessKeyID, secretAccessKey: secret ?? server.secretAccessKey, source: "the test"),
                           partSize: partSize, uploadConcurrency: 3, requestTimeout: 20, deadline: 60, maxAttempts: 4)
        configure(&s)
        return try S3Storage(settings: s, clients: clients)
    }

    @Test func passesConformanceWithSignaturesChecked() async throws {
        let server = try S3TestServer()
        defer { server.stop() }
        // A prefix with characters that must be percent-encoded in paths and queries.
        let d = try Self.driver(server, prefix: "team a/prod+1=x/")
        try await StorageConformance.run(d)
        try await StorageConformance.run(d, prefix: "keys with spaces+plus=eq/")
        // Client-side encryption over S3 (multipart objects and ranged reads included).
        let encrypted = EncryptedStorage(inner: try Self.driver(server, prefix: "encrypted/"),
                                         source: .keyFile(path: "/k", key: Array(repeating: 9, count: 32)), repositoryName: "s3")
        try await encrypted.initialize()
        try await StorageConformance.run(encrypted)
    }

    @Test func largeObjectsGoUpInParallelPartsAndReadBackInRanges() async throws {
        let server = try S3TestServer()
        defer { server.stop() }
        let d = try Self.driver(server, prefix: "mp/") { $0.encryption = .s3; $0.storageClass = "STANDARD_IA" }
        var big = [UInt8](repeating: 0, count: 23 << 20 + 12345)
        for i in stride(from: 0, to: big.count, by: 7) { big[i] = UInt8(truncatingIfNeeded: i >> 3) }
        try await d.withWriter("big.bin", options: WriteOptions(ifAbsent: true)) { w in
            var o = 0
            while o < big.count { let n = min(1 << 20, big.count - o); try await w.write(Array(big[o..<o + n])); o += n }
        }
        #expect(try await d.info("big.bin")?.size == Int64(big.count))
        // Server-side encryption and the storage class reach the store (single PUT and multipart).
        try await d.writeAll("small.bin", [1, 2, 3])
        for key in ["big.bin", "small.bin"] {
            let head = try await d.transport.send(S3Request(method: .HEAD, key: key, what: "look up \(key)"), limit: 0)
            #expect(head.headers.first(name: "x-amz-server-side-encryption") == "AES256", "\(key): \(head.headers)")
            #expect(head.headers.first(name: "x-amz-storage-class") == "STANDARD_IA", "\(key): \(head.headers)")
        }
        #expect(try await d.readAll("big.bin", limit: 64 << 20) == big)
        #expect(try await d.readRange("big.bin", 5 << 20 - 3..<10 << 20 + 7) == Array(big[5 << 20 - 3..<10 << 20 + 7]))
        // ifAbsent on a multipart object.
        await #expect(throws: WaybackError.self) {
            try await d.writeAll("big.bin", [1], options: WriteOptions(ifAbsent: true))
        }
        // A body that fails after several parts leaves no object and no unfinished upload.
        struct Boom: Error {}
        do {
            try await d.withWriter("failed.bin", options: WriteOptions()) { w in
                for _ in 0..<3 { try await w.write([UInt8](repeating: 1, count: 5 << 20)) }
                throw Boom()
            }
        } catch is Boom {}
        #expect(try await d.info("failed.bin") == nil)
        #expect(try await d.removeLeftovers(olderThan: Date().addingTimeInterval(60)) == 0)
    }

    @Test func staleUploadsAreAbortedAndBatchDeleteWorks() async throws {
        let server = try S3TestServer()
        defer { server.stop() }
        let d = try Self.driver(server, prefix: "stale/")
        // A crash between parts, as a killed process leaves it: an upload started, a part stored,
        // never completed nor aborted. (Made with the driver's own calls: a cancelled task may
        // still manage its abort, which made this test a race.)
        let upload = try await d.createUpload("crashed.bin")
        _ = try await d.uploadPart("crashed.bin", uploadID: upload, part: Part(number: 1, bytes: [UInt8](repeating: 2, count: 5 << 20)))
        // It is invisible.
        #expect(try await d.info("crashed.bin") == nil)
        #expect(try await d.list(prefix: "").isEmpty)
        // (moto reports every upload as started in 2010, so the age filter cannot be seen here.)
        #expect(try await d.removeLeftovers(olderThan: Date().addingTimeInterval(60)) == 1)
        #expect(try await d.removeLeftovers(olderThan: Date().addingTimeInterval(60)) == 0)
        let keys = (0..<1500).map { "many/k\($0)" }
        try await withThrowingTaskGroup(of: Void.self) { g in
            for chunk in stride(from: 0, to: keys.count, by: 100) {
                g.addTask { for k in keys[chunk..<min(keys.count, chunk + 100)] { try await d.writeAll(k, [1]) } }
            }
            try await g.waitForAll()
        }
        #expect(try await d.list(prefix: "many/").count == 1500, "listing pages through 1000-key answers")
        try await d.remove(keys: keys)
        #expect(try await d.list(prefix: "many/").isEmpty)
    }

    @Test func wrongSecretKeyIsAClearAuthenticationError() async throws {
        let server = try S3TestServer()
        defer { server.stop() }
        let d = try Self.driver(server, prefix: "x/", secret: "not-the-secret")
        do {
            _ = try await d.list(prefix: "")
            Issue.record("a wrong secret key was accepted")
        } catch let e as WaybackError {
            #expect(e.code == .access)
            #expect(e.message.contains("SignatureDoesNotMatch") && e.message.contains("secret key"))
            #expect(!e.message.contains("not-the-secret") && !e.message.contains(server.secretAccessKey))
        }
        let missing = try S3Storage(settings: S3Settings(endpoint: server.endpoint, bucket: "no-such-bucket", region: "us-east-1", pathStyle: true,
            credentials: S3Credentials(accessKeyID: server.accessKeyID, secretAccessKey: server.secretAccessKey, source: "the test")), clients: Self.clients)
        await #expect(throws: WaybackError.self) { _ = try await missing.list(prefix: "") }
    }

    @Test func thePoolsOwnerShutsItsClientsDown() async throws {
        let server = try S3TestServer()
        defer { server.stop() }
        let settings = S3Settings(endpoint: server.endpoint, bucket: server.buckets[0], region: "us-east-1", prefix: "pool/", pathStyle: true,
                                  credentials: S3Credentials(accessKeyID: server.accessKeyID, secretAccessKey: server.secretAccessKey, source: "the test"))
        var leaked: HTTPClientPool?
        try await HTTPClientPool.with { pool in
            leaked = pool
            let d = try S3Storage(settings: settings, clients: pool)
            try await d.writeAll("a", [1, 2, 3])
            #expect(try await d.readAll("a") == [1, 2, 3])
            #expect(pool.openClients == 1)
            // Two repositories of one trust configuration share one client.
            _ = try S3Storage(settings: settings, clients: pool)
            #expect(pool.openClients == 1)
        }
        // Once its owner is done, no client is left open, and none can be made.
        #expect(leaked?.openClients == 0)
        #expect(throws: WaybackError.self) { _ = try S3Storage(settings: settings, clients: leaked!) }
    }

    @Test func httpsWithAPrivateCAFile() async throws {
        let dir = try TestEnvironment.makeTemporaryDirectory("tls")
        defer { try? FileSystem.removeTree(dir) }
        func openssl(_ args: String) throws {
            let r = try Command.run(["/bin/sh", "-c", "cd \(dir) && openssl \(args)"], check: false)
            if r.status != 0 { throw WaybackError(.io, "openssl \(args): \(r.stderr)") }
        }
        try openssl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=wayback-test-ca")
        try openssl("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1")
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: dir + "/ext", atomically: true, encoding: .utf8)
        try openssl("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext")
        let server = try S3TestServer(tls: (dir + "/server.pem", dir + "/server.key"))
        defer { server.stop() }
        #expect(server.endpoint.hasPrefix("https://"))
        let trusted = try Self.driver(server, prefix: "tls/") { $0.caFile = dir + "/ca.pem" }
        try await trusted.writeAll("a", [1, 2, 3])
        #expect(try await trusted.readAll("a") == [1, 2, 3])
        // Without the CA file the server's certificate is not trusted: a clear failure, no retry loop forever.
        let untrusted = try Self.driver(server, prefix: "tls/") { $0.deadline = 5 }
        do {
            _ = try await untrusted.list(prefix: "")
            Issue.record("a certificate from an unknown CA was accepted")
        } catch let e as WaybackError {
            #expect(e.code == .io && e.message.contains("set ca_file"), "\(e.message)")
        }
    }
}
