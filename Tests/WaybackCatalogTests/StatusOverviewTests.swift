import Foundation
import Logging
import Synchronization
import Testing
import WaybackCatalog
import WaybackCore
import WaybackStorage
import WaybackTesting

/// `status`'s gathering: each manifest read at most once, the archive listed once, and with a
/// current `StatusIndex` no manifest at all; an index that does not match is never believed.
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

    static let layout = RepositoryLayout(cluster: "c")

    static func manifest(_ i: Int, objects: [BackupManifest.StoredObject] = []) -> BackupManifest {
        BackupManifest(
            id: BackupID("202611\(String(format: "%02d", i + 1))-010000F")!, type: .full, reference: nil, cluster: "c", systemIdentifier: "42",
            pgVersionNumber: 150004, walSegmentSize: 16 << 20, dataChecksums: true, startTime: Date(timeIntervalSince1970: Double(1000 * i)),
            stopTime: Date(timeIntervalSince1970: Double(1000 * i + 10)), startLSN: LSN(UInt64(i + 2) << 24 + 0x28),
            stopLSN: LSN(UInt64(i + 2) << 24 + 0x100), timeline: 1, startWAL: "", stopWAL: "", backupLabel: "", tablespaceMap: "",
            tablespaces: [], compression: CompressionSettings(), objects: objects, directories: [], files: [], wal: [], copySeconds: 1)
    }

    /// A repository with `count` backups (each with one pack object, present).
    static func repository(_ count: Int, driver: Counting = Counting()) async throws -> (Catalog, [BackupID]) {
        let repository = Repository(name: "mem", driver: driver)
        let catalog = Catalog(repository: repository, cluster: "c")
        try await catalog.writeBinding(ClusterBinding(cluster: "c", systemIdentifier: 42, pgMajorVersion: 15, pgVersionNumber: 150004,
                                                      walSegmentSize: 16 << 20, blockSize: 8192, dataChecksums: true, created: Date()))
        var ids = [BackupID]()
        for i in 0..<count { ids.append(try await add(i, to: catalog)) }
        return (catalog, ids)
    }

    @discardableResult
    static func add(_ i: Int, to catalog: Catalog) async throws -> BackupID {
        let m = manifest(i, objects: [.init(name: "pack/00-0000.pack", size: 3, sha256: "")])
        try await catalog.repository.driver.writeAll(layout.objectKey(m.id, "pack/00-0000.pack"), [1, 2, 3])
        try await catalog.writeManifest(m)
        return m.id
    }

    static func gather(_ catalog: Catalog) async throws -> StatusOverview {
        try await StatusOverview.gather(catalog, members: [.init(repository: catalog.repository, type: "local", location: "/mem", walPush: "sync")],
                                        queue: WALQueue(path: "/nonexistent"))
    }

    static func manifestReads(_ driver: Counting) -> Int {
        driver.reads.withLock { $0.filter { layout.parse($0.key)?.isManifest == true }.values.reduce(0, +) }
    }

    static func reset(_ driver: Counting) {
        driver.reads.withLock { $0 = [:] }
        driver.lists.withLock { $0 = [:] }
    }

    /// The report as JSON (to compare a report made from the index with one made from manifests).
    static func json(_ o: StatusOverview) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return String(decoding: try e.encode(o.report), as: UTF8.self) + String(decoding: try e.encode(o.windows), as: UTF8.self)
    }

    @Test func withoutAnIndexEveryManifestIsReadOnceAndTheArchiveListedOnce() async throws {
        let driver = Counting()
        let (catalog, ids) = try await Self.repository(5, driver: driver)
        Self.reset(driver)
        let overview = try await Self.gather(catalog)
        #expect(overview.report.backups.map(\.id) == ids.map(\.rawValue))
        let reads = driver.reads.withLock { $0 }
        for id in ids {
            #expect(reads[Self.layout.manifestKey(id)] == 1, "manifest of \(id) read \(reads[Self.layout.manifestKey(id)] ?? 0) times")
        }
        // One listing of the archive and of the backups folder, shared by the report, the windows
        // and the repository's own state.
        #expect(driver.lists.withLock { $0["c/wal/"] } == 1)
        #expect(driver.lists.withLock { $0["c/backups/"] } == 1)
    }

    @Test func aCurrentIndexMeansNoManifestIsReadAndTheSameReport() async throws {
        let driver = Counting()
        let (catalog, _) = try await Self.repository(40, driver: driver)
        let fromManifests = try Self.json(try await Self.gather(catalog))
        try await StatusIndex.refresh(catalog)
        Self.reset(driver)
        let overview = try await Self.gather(catalog)
        #expect(Self.manifestReads(driver) == 0, "status read manifests although the index is current")
        #expect(driver.reads.withLock { $0[Self.layout.indexKey] } == 1)
        #expect(try Self.json(overview) == fromManifests, "the index gives another report than the manifests")
        // A few requests in all, whatever the number of backups: binding (twice: combined and the
        // repository's own), the index, two listings.
        let requests = driver.reads.withLock { $0.values.reduce(0, +) } + driver.lists.withLock { $0.values.reduce(0, +) }
        #expect(requests <= 6, "\(requests) requests: \(driver.reads.withLock { $0 }) \(driver.lists.withLock { $0 })")
    }

    @Test func aStaleOrDamagedIndexCostsReadsNeverAWrongAnswer() async throws {
        let driver = Counting()
        let (catalog, ids) = try await Self.repository(6, driver: driver)
        try await StatusIndex.refresh(catalog)

        // A backup the index does not know yet: only its manifest is read.
        let added = try await Self.add(6, to: catalog)
        Self.reset(driver)
        var overview = try await Self.gather(catalog)
        #expect(overview.report.backups.map(\.id) == (ids + [added]).map(\.rawValue))
        #expect(Self.manifestReads(driver) == 1)
        #expect(driver.reads.withLock { $0[Self.layout.manifestKey(added)] } == 1)

        // A backup whose manifests are gone is not shown, though the index still has it.
        try await driver.remove(Self.layout.manifestKey(ids[2]))
        try await driver.remove(Self.layout.manifestCopyKey(ids[2]))
        overview = try await Self.gather(catalog)
        #expect(!overview.report.backups.map(\.id).contains(ids[2].rawValue), "status shows a backup that has no manifest")

        // A manifest replaced by another of a different size is read again, not taken from the index.
        var changed = Self.manifest(3, objects: [.init(name: "pack/00-0000.pack", size: 3, sha256: ""), .init(name: "pack/00-0001.pack", size: 9, sha256: "")])
        changed.note = "rewritten"
        try await catalog.writeManifest(changed)
        overview = try await Self.gather(catalog)
        #expect(overview.report.backups.first { $0.id == ids[3].rawValue }?.problems == ["pack/00-0001.pack is missing"],
                "status used the index's summary of a manifest that changed")

        // A damaged index is ignored: every manifest is read, and the report is right.
        try await driver.writeAll(Self.layout.indexKey, Array("not an index".utf8))
        let truth = try await Self.json(try await Self.gather(Catalog(repository: Repository(name: "mem", driver: driver.inner), cluster: "c")))
        Self.reset(driver)
        overview = try await Self.gather(catalog)
        #expect(Self.manifestReads(driver) == overview.report.backups.count)
        #expect(try Self.json(overview) == truth)

        // The next writer rebuilds it.
        let rebuilt = try await StatusIndex.refresh(catalog)
        #expect(rebuilt.entries.map(\.summary.id) == overview.report.backups.compactMap { BackupID($0.id) })
        Self.reset(driver)
        _ = try await Self.gather(catalog)
        #expect(Self.manifestReads(driver) == 0)
    }

    @Test func syncBuildsTheTargetsOwnIndexAndNeverCopiesTheSource() async throws {
        let (source, ids) = try await Self.repository(3)
        try await StatusIndex.refresh(source)
        // A source index that lies (claims a backup that does not exist) must not reach the target.
        var lie = try #require(await StatusIndex.read(source))
        var ghost = lie.entries[0]
        ghost.summary.id = BackupID("20261231-010000F")!
        lie = StatusIndex(entries: lie.entries + [ghost])
        try await source.repository.driver.writeAll(Self.layout.indexKey, try SealedJSON.encode(lie, kind: StatusIndex.kind))

        let target = Repository(name: "target", driver: MemoryStorage())
        try await RepositorySync.run(cluster: "c", from: source.repository, to: target, parallelism: 2, logger: Logger(label: "test"))
        let index = try #require(await StatusIndex.read(Catalog(repository: target, cluster: "c")))
        #expect(index.entries.map(\.summary.id) == ids, "the target's index is not its own")
        #expect(RepositorySync.plan(layout: Self.layout, source: [ObjectInfo(key: Self.layout.indexKey, size: 1)], target: [], scope: .all).isEmpty)
    }

    @Test func aWALQueueThatCannotBeReadIsUnknownNeverEmpty() async throws {
        let (catalog, _) = try await Self.repository(1)
        let spool = NSTemporaryDirectory() + "wayback-queue-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: spool) }
        let queue = WALQueue(path: spool)
        #expect(try queue.count("mem").get() == 0, "no queue directory yet: nothing queued")
        // The repository's queue is a file, not a directory: it cannot be listed.
        FileManager.default.createFile(atPath: spool + "/mem", contents: Data("x".utf8))
        guard case .failure = queue.count("mem") else { Issue.record("an unreadable queue counted as a number"); return }
        let overview = try await StatusOverview.gather(
            catalog, members: [.init(repository: catalog.repository, type: "s3", location: "s3://b/p", walPush: "async")], queue: queue)
        let state = try #require(overview.repositories.first)
        #expect(state.queuedWAL == nil && state.queueError?.contains(spool + "/mem") == true, "\(state)")
        #expect(state.text.contains("WAL queue UNKNOWN"))
    }
}
