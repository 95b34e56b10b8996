import Foundation
import Testing
import WaybackCore
import WaybackStorage
import WaybackTesting
@testable import WaybackCatalog

@Suite struct SealedJSONTests {
    struct Thing: Codable, Equatable { var a: Int; var b: String; var when: Date }

    @Test func roundTripAndTamper() throws {
        let v = Thing(a: 1, b: "x", when: Date(timeIntervalSince1970: 1_800_000_000.25))
        var bytes = try SealedJSON.encode(v, kind: "thing")
        #expect(try SealedJSON.decode(Thing.self, from: bytes, kind: "thing", name: "t") == v)
        #expect(throws: WaybackError.self) { try SealedJSON.decode(Thing.self, from: bytes, kind: "other", name: "t") }
        let i = bytes.lastIndex(of: UInt8(ascii: "x"))!
        bytes[i] = UInt8(ascii: "y")
        do {
            _ = try SealedJSON.decode(Thing.self, from: bytes, kind: "thing", name: "t")
            Issue.record("a changed body must fail")
        } catch let e as WaybackError {
            #expect(e.code == .corrupt)
        }
        #expect(throws: WaybackError.self) { try SealedJSON.decode(Thing.self, from: Array(bytes.prefix(40)), kind: "thing", name: "t") }
    }

    @Test func newerFormatIsRefused() throws {
        let body = Array("{}".utf8)
        let header = "{\"format\":99,\"sha256\":\"\(SHA256Hasher.hex(body))\",\"size\":2,\"wayback\":\"thing\"}\n"
        do {
            _ = try SealedJSON.decode([String: Int].self, from: Array(header.utf8) + body, kind: "thing", name: "t")
            Issue.record("format 99 must be refused")
        } catch let e as WaybackError {
            #expect(e.code == .repository)
        }
    }
}

@Suite struct FrameAndWALObjectTests {
    @Test func walObjectRoundTripAndCorruption() async throws {
        let storage = MemoryStorage()
        var plain = [UInt8](repeating: 0, count: 2_500_000)
        for i in plain.indices { plain[i] = UInt8(truncatingIfNeeded: (i / 100) &* 7) }
        let c = Compressor(CompressionSettings())
        var frames = [[UInt8]]()
        var offset = 0
        while offset < plain.count {
            let end = min(plain.count, offset + FrameFormat.rawChunk)
            frames.append(try plain.withUnsafeBytes { try FrameFormat.encode(UnsafeRawBufferPointer(rebasing: $0[offset..<end]), compressor: c) })
            offset = end
        }
        var object = WALObject.encode(size: Int64(plain.count), frames: frames)
        let sha = SHA256Hasher.hex(Array(object[WALObject.headerLength...]))
        try await storage.writeAll("w", object)
        var back = [UInt8]()
        let h = try await WALObject.read(storage, key: "w", name: "seg") { p, _ in back += Array(p) }
        #expect(back == plain && h.sha256 == sha)
        #expect(try await WALObject.storedHeader(storage, key: "w", name: "seg") == h)

        // A flipped payload byte, a truncated object and trailing garbage are all caught.
        for damage in [{ (o: inout [UInt8]) in o[WALObject.headerLength + FrameFormat.headerLength + 20] ^= 0x01 },
                       { (o: inout [UInt8]) in o.removeLast(5) },
                       { (o: inout [UInt8]) in o += [0, 0, 0] }] {
            var bad = object
            damage(&bad)
            try await storage.writeAll("w", bad)
            do {
                _ = try await WALObject.read(storage, key: "w", name: "seg") { _, _ in }
                Issue.record("corruption must be detected")
            } catch let e as WaybackError {
                #expect(e.code == .corrupt)
            }
        }
        object[WALObject.headerLength - 1] ^= 0x01
        try await storage.writeAll("w", object)
        await #expect(throws: WaybackError.self) { try await WALObject.read(storage, key: "w", name: "seg") { _, _ in } }
    }

    @Test(arguments: [CompressionSettings(algorithm: .zstd, level: 3), CompressionSettings(algorithm: .lz4, level: 1),
                      CompressionSettings(algorithm: .lz4, level: 9), CompressionSettings(algorithm: .gzip, level: 6)])
    func everyAlgorithmRoundTripsAndCatchesDamage(_ settings: CompressionSettings) async throws {
        var plain = [UInt8](repeating: 0, count: 1 << 20)
        for i in plain.indices { plain[i] = UInt8(truncatingIfNeeded: (i / 64) &* 13) }
        let frame = try plain.withUnsafeBytes { try FrameFormat.encode($0, compressor: Compressor(settings)) }
        #expect(frame[4] == settings.algorithm.rawValue, "the algorithm is recorded in the frame")
        #expect(frame.count < plain.count / 4)
        let storage = MemoryStorage()
        try await storage.writeAll("f", frame)
        let back = try await storage.withReader("f", range: nil) { r in
            try await FrameReader(reader: r, name: "f").nextFrame { Array($0) }
        }
        #expect(back == plain)
        // A damaged payload never decodes to the same bytes silently.
        var bad = frame
        bad[FrameFormat.headerLength + 10] ^= 0x40
        bad[bad.count - 3] ^= 0x40
        try await storage.writeAll("f", bad)
        do {
            let got = try await storage.withReader("f", range: nil) { r in
                try await FrameReader(reader: r, name: "f").nextFrame { Array($0) }
            }
            // lz4's block format has no checksum of its own: the file SHA-256 (or the WAL
            // object's) catches what decodes.
            #expect(settings.algorithm == .lz4 && got != plain)
        } catch let e as WaybackError {
            #expect(e.code == .corrupt)
        }
    }

    /// Pages that look like B-tree leaves (16-byte items with growing keys, a 16-byte special space).
    static func indexPages(_ count: Int) -> [UInt8] {
        var out = [UInt8]()
        var key: UInt32 = 1000
        for _ in 0..<count {
            var page = [UInt8](repeating: 0, count: 8192)
            page[16] = UInt8((8192 - 16) & 0xFF); page[17] = UInt8((8192 - 16) >> 8)
            for item in stride(from: 1024, to: 8176, by: 16) {
                key &+= 1
                for k in 0..<4 { page[item + 8 + k] = UInt8(truncatingIfNeeded: key >> (8 * k)) }
                page[item + 2] = UInt8(truncatingIfNeeded: key / 61); page[item + 4] = UInt8(truncatingIfNeeded: key % 61); page[item + 6] = 16
            }
            out += page
        }
        return out
    }

    @Test func pageDeltaRoundTripsAndShrinksIndexPages() async throws {
        // Any bytes round-trip, including a short last page (shorter than a vector, too).
        for size in [3 * 8192 + 100, 8192 + 7, 5, 2 * 8192] {
            let random = (0..<size).map { _ in UInt8.random(in: 0...255) }
            var filtered = [UInt8](repeating: 0, count: random.count), back = filtered
            random.withUnsafeBytes { r in filtered.withUnsafeMutableBytes { PageDelta.encode(r, into: $0) } }
            filtered.withUnsafeBytes { f in back.withUnsafeMutableBytes { PageDelta.decode(f, into: $0) } }
            #expect(back == random, "size \(size)")
            #expect(size <= 16 || filtered != random)
        }
        // Index pages: filtered frames are far smaller, flagged, and read back exactly.
        let index = Self.indexPages(128)
        let c = Compressor(CompressionSettings())
        let plainFrame = try index.withUnsafeBytes { try FrameFormat.encode($0, compressor: c) }
        let pageFrame = try index.withUnsafeBytes { try FrameFormat.encode($0, compressor: c, pages: true) }
        #expect(pageFrame[6] == 1 && plainFrame[6] == 0)
        #expect(pageFrame.count * 3 < plainFrame.count, "\(pageFrame.count) vs \(plainFrame.count)")
        let storage = MemoryStorage()
        try await storage.writeAll("f", pageFrame)
        let decoded = try await storage.withReader("f", range: nil) { r in try await FrameReader(reader: r, name: "f").nextFrame { Array($0) } }
        #expect(decoded == index)
        // Heap-like data is left alone.
        let heap = [UInt8](repeating: 0x20, count: 1 << 20)
        #expect(try heap.withUnsafeBytes { try FrameFormat.encode($0, compressor: c, pages: true) }[6] == 0)
        // A flag this version does not know is refused with "upgrade", not misread.
        var future = pageFrame
        future[6] = 3
        try await storage.writeAll("f", future)
        do {
            _ = try await storage.withReader("f", range: nil) { r in try await FrameReader(reader: r, name: "f").nextFrame { Array($0) } }
            Issue.record("an unknown flag must be refused")
        } catch let e as WaybackError {
            #expect(e.code == .repository && e.message.contains("upgrade"))
        }
    }

    @Test func incompressibleFramesAreStoredPlain() throws {
        var random = SystemRandomNumberGenerator()
        let plain = (0..<100_000).map { _ in UInt8.random(in: 0...255, using: &random) }
        let frame = try plain.withUnsafeBytes { try FrameFormat.encode($0, compressor: Compressor(CompressionSettings())) }
        let h = try frame.withUnsafeBytes { try FrameFormat.decodeHeader($0, object: "x") }
        #expect(h.compression == .none && h.storedLength == plain.count && frame.count == plain.count + FrameFormat.headerLength)
    }
}

@Suite struct CatalogTests {
    func manifest(_ id: String) -> BackupManifest {
        let files = [BackupManifest.File(path: "base/1/1", size: 3, mode: 0o600, mtime: 1, sha256: String(repeating: "a", count: 64), chunks: [.init(object: 0, offset: 0, length: 19, raw: 3)])]
        return BackupManifest(id: BackupID(id)!, type: .full, reference: nil, cluster: "c", systemIdentifier: "42", pgVersionNumber: 150000,
                              walSegmentSize: 16 << 20, dataChecksums: true, startTime: Date(), stopTime: Date(), startLSN: LSN(0x2000028),
                              stopLSN: LSN(0x2000100), timeline: 1, startWAL: "000000010000000000000002", stopWAL: "000000010000000000000002",
                              backupLabel: "label", tablespaceMap: "", tablespaces: [], compression: CompressionSettings(),
                              objects: [.init(name: "pack/00-0000.pack", size: 19, sha256: "b")], directories: [], files: files, wal: [],
                              copySeconds: 0.1)
    }

    @Test func manifestsBindingAndIncompleteBackups() async throws {
        let catalog = Catalog(repository: Repository(name: "m", driver: MemoryStorage()), cluster: "c")
        #expect(try await catalog.binding() == nil)
        await #expect(throws: WaybackError.self) { _ = try await catalog.requireBinding() }
        let b = ClusterBinding(cluster: "c", systemIdentifier: 42, pgMajorVersion: 15, pgVersionNumber: 150018, walSegmentSize: 16 << 20,
                               blockSize: 8192, dataChecksums: true, created: Date(timeIntervalSince1970: 0))
        try await catalog.writeBinding(b)
        #expect(try await catalog.requireBinding(systemIdentifier: 42) == b)
        do {
            _ = try await catalog.requireBinding(systemIdentifier: 43)
            Issue.record("another system identifier must be refused")
        } catch let e as WaybackError { #expect(e.code == .repository) }

        // The primary binding damaged: the copy serves.
        try await catalog.repository.driver.writeAll(catalog.layout.bindingKey, Array("garbage".utf8))
        #expect(try await catalog.binding() == b)

        let m = manifest("20261129-010000F")
        try await catalog.writeManifest(m)
        // An interrupted backup: objects but no manifest.
        try await catalog.repository.driver.writeAll("c/backups/20261129-020000F/pack/00-0000.pack", [1, 2, 3])
        #expect(try await catalog.backupIDs() == [m.id])
        #expect(try await catalog.manifest(m.id).digests == m.digests)
        #expect(try await catalog.removeIncompleteBackups(logger: .init(label: "t")) == 1)
        #expect(try await catalog.repository.driver.list(prefix: "c/backups/20261129-020000F/").isEmpty)
        #expect(try await catalog.backupIDs() == [m.id])
    }

    @Test func digestsCoverEveryFile() {
        let m = manifest("20261129-010000F")
        var files = m.files
        files[0].sha256 = String(repeating: "b", count: 64)
        let other = BackupManifest.digests(files: files, wal: [], backupLabel: "label", tablespaceMap: "")
        #expect(other.sha256 != m.digests.sha256 && other.md5 != m.digests.md5)
        #expect(BackupManifest.digests(files: m.files, wal: [], backupLabel: "label", tablespaceMap: "") == m.digests)
    }

    @Test func timelineSummaryFindsGaps() {
        let names = ["000000010000000000000001", "000000010000000000000002", "000000010000000000000005",
                     "000000020000000000000005", "00000002.history"].compactMap(WALFileName.init)
        let s = TimelineRange.summarize(names, segmentSize: 16 << 20)
        #expect(s.count == 2)
        #expect(s[0].gaps == ["000000010000000000000003", "000000010000000000000004"])
        #expect(s[0].segments == 3 && s[1].segments == 1 && s[1].gaps.isEmpty)
    }

    @Test func layoutKeys() {
        let l = RepositoryLayout(cluster: "main")
        #expect(l.walKey(WALFileName("000000010000000A000000FF")!) == "main/wal/000000010000000A/000000010000000A000000FF")
        #expect(l.walKey(WALFileName("00000002.history")!) == "main/wal/history/00000002.history")
        #expect(RepositoryLayout.packName(worker: 1, sequence: 12) == "pack/01-0012.pack")
    }
}

@Suite struct LayoutKeyTests {
    let layout = RepositoryLayout(cluster: "main")

    @Test func everyKeyTheLayoutWritesParsesBackToWhatItIs() throws {
        let id = try #require(BackupID("20261206-020000F"))
        let seg = try #require(WALFileName("000000010000000A000000FF"))
        let history = try #require(WALFileName("00000002.history"))
        #expect(layout.parse(layout.bindingKey) == .binding && layout.parse(layout.bindingCopyKey) == .bindingCopy)
        #expect(layout.parse(layout.walKey(seg)) == .wal(seg) && layout.parse(layout.walKey(history)) == .wal(history))
        #expect(layout.parse(layout.manifestKey(id)) == .backup(id, "manifest.json") && layout.parse(layout.manifestKey(id))?.isManifest == true)
        #expect(layout.parse(layout.manifestCopyKey(id))?.isManifest == true)
        let pack = layout.objectKey(id, RepositoryLayout.packName(worker: 1, sequence: 2, run: 1))
        #expect(layout.parse(pack) == .backup(id, "pack/r1-01-0002.pack") && layout.parse(pack)?.isManifest == false)
        #expect(layout.parse(layout.objectKey(id, RepositoryLayout.backupWALName(seg)))?.backupID == id)
        #expect(layout.parse(layout.restoreRecordKey(Date(timeIntervalSince1970: 0), run: "1-ab")) == .restoreRecord("00000000000000-1-ab.json"))
    }

    @Test func foreignAndMalformedKeysAreNothing() {
        for key in ["other/cluster.json", "main/backups/notanid/manifest.json", "main/backups/20261206-020000F/", "main/backups/20261206-020000F",
                    "main/wal/000000010000000B/000000010000000A000000FF", "main/wal/x/junk", "main/cluster.json/x", "mainx/cluster.json",
                    "main/restores/note.txt", "main/backups/20261206-020000F//manifest.json"] {
            #expect(layout.parse(key) == nil, "\(key)")
        }
    }
}

/// The daemon's state file is found by the name of its lock, never by a prefix another cluster
/// shares (`main` and `main-2`).
@Suite struct LockFileNameTests {
    @Test func aFileNamedAfterTheLockOfThisClusterAndRepositoriesOnly() {
        let repos = ["local (/srv/wayback)", "offsite (s3://bucket/prefix)"]
        let lock = RepositoryLock.fileName(cluster: "main", systemIdentifier: 7_716_143_406_864_573_845, repositories: repos)
        let state = lock.replacingOccurrences(of: ".lock", with: ".schedule.json")
        #expect(RepositoryLock.isNamed(state, cluster: "main", repositories: repos, suffix: ".schedule.json"))
        #expect(RepositoryLock.isNamed(state, cluster: "main", repositories: repos.reversed(), suffix: ".schedule.json"), "order matters")
        // Another cluster whose name starts with this one's, the same repositories.
        let other = RepositoryLock.fileName(cluster: "main-2", systemIdentifier: 42, repositories: repos)
            .replacingOccurrences(of: ".lock", with: ".schedule.json")
        #expect(!RepositoryLock.isNamed(other, cluster: "main", repositories: repos, suffix: ".schedule.json"))
        #expect(RepositoryLock.isNamed(other, cluster: "main-2", repositories: repos, suffix: ".schedule.json"))
        // The same cluster with other repositories, another suffix, a mangled identifier.
        #expect(!RepositoryLock.isNamed(state, cluster: "main", repositories: ["local (/srv/wayback)"], suffix: ".schedule.json"))
        #expect(!RepositoryLock.isNamed(lock, cluster: "main", repositories: repos, suffix: ".schedule.json"))
        #expect(!RepositoryLock.isNamed(state.replacingOccurrences(of: "7716143406864573845", with: "77x6"), cluster: "main",
                                        repositories: repos, suffix: ".schedule.json"))
    }
}
