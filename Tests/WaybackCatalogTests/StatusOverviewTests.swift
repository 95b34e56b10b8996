import Foundation
import Synchronization
import Testing
import WaybackCatalog
import WaybackCore
import WaybackStorage
import WaybackTesting

/// `status`'s gathering reads each manifest once and lists the archive once, for the report and
/// the recoverable windows both.
@Suite struct StatusOverviewTests {
    /// Counts whole reads and listings by key or prefix.
    final class Counting: StorageDriver, Sendable {
        let inner = MemoryStorage()
        let reads = Mutex([String: Int]())
        let lists = Mutex([String: Int]())
        var description: String { "counting" }
        var capabilities: StorageCapabilities { inner.capabilities }
        func info(_ key: String) async throws -> ObjectInfo? { try await inner.info(key) }
        func list(prefix: String) async throws -> [ObjectInfo] {
            lists.withLock { $0[prefix, default: 0] += 1 }
            return try await inner.list(prefix: prefix)
        }
        func withReader<R>(_ key: String, range: Range<Int64>?, _ body: (any ObjectReader) async throws -> R) async throws -> R {
            reads.withLock { $0[key, default: 0] += 1 }
            return try await inner.withReader(key, range: range, body)
        }
        func withWriter<R>(_ key: String, options: WriteOptions, _ body: (any ObjectWriter) async throws -> R) async throws -> R {
            try await inner.withWriter(key, options: options, body)
        }
        func remove(_ key: String) async throws { try await inner.remove(key) }
    }

    @Test func everyManifestIsReadOnceAndTheArchiveListedOnce() async throws {
        let driver = Counting()
        let repository = Repository(name: "mem", driver: driver)
        let catalog = Catalog(repository: repository, cluster: "c")
        try await catalog.writeBinding(ClusterBinding(cluster: "c", systemIdentifier: 42, pgMajorVersion: 15, pgVersionNumber: 150004,
                                                      walSegmentSize: 16 << 20, blockSize: 8192, dataChecksums: true, created: Date()))
        var ids = [BackupID]()
        for i in 0..<5 {
            let id = BackupID("2026110\(i + 1)-010000F")!
            ids.append(id)
            try await catalog.writeManifest(BackupManifest(
                id: id, type: .full, reference: nil, cluster: "c", systemIdentifier: "42", pgVersionNumber: 150004,
                walSegmentSize: 16 << 20, dataChecksums: true, startTime: Date(timeIntervalSince1970: Double(1000 * i)),
                stopTime: Date(timeIntervalSince1970: Double(1000 * i + 10)), startLSN: LSN(UInt64(i + 2) << 24 + 0x28),
                stopLSN: LSN(UInt64(i + 2) << 24 + 0x100), timeline: 1, startWAL: "", stopWAL: "", backupLabel: "", tablespaceMap: "",
                tablespaces: [], compression: CompressionSettings(), objects: [], directories: [], files: [], wal: [], copySeconds: 1))
        }
        driver.reads.withLock { $0 = [:] }
        driver.lists.withLock { $0 = [:] }
        let overview = try await StatusOverview.gather(
            catalog, members: [.init(repository: repository, type: "local", location: "/mem", walPush: "sync")], queue: WALQueue(path: "/nonexistent"))
        #expect(overview.report.backups.map(\.id) == ids.map(\.rawValue))
        let reads = driver.reads.withLock { $0 }
        for id in ids {
            #expect(reads[RepositoryLayout(cluster: "c").manifestKey(id)] == 1, "manifest of \(id) read \(reads[RepositoryLayout(cluster: "c").manifestKey(id)] ?? 0) times")
        }
        // The combined archive is listed once for the report and the windows (the member's own
        // state lists it again: it is one repository's view).
        #expect(driver.lists.withLock { $0["c/wal/"] } == 2)
    }
}
