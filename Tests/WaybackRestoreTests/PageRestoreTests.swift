import Foundation
import Testing
@testable import WaybackCatalog
import WaybackCore
import WaybackStorage
import WaybackTesting
@testable import WaybackRestore

/// A file rebuilt through a chain (a full and two incrs) in memory storage, against the pages
/// each version stored; a small file, and a large one (from `Restore.backgroundBytes` on) whose
/// writer hashes and writes on threads of its own.
@Suite struct PageRestoreTests {
    static let page = BlockOwnership.blockSize
    let layout = RepositoryLayout(cluster: "c")
    let driver = MemoryStorage()

    /// Page `block` as version `version` wrote it: compressible, and different per version.
    static func content(_ version: Int, _ block: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: page)
        var x = UInt32(truncatingIfNeeded: version &* 7919 &+ block &* 104_729 &+ 1)
        for i in stride(from: 0, to: page, by: 16) {
            x = x &* 1_664_525 &+ 1_013_904_223
            out[i] = UInt8(truncatingIfNeeded: x >> 24); out[i + 1] = UInt8(truncatingIfNeeded: version); out[i + 2] = UInt8(truncatingIfNeeded: block)
        }
        return out
    }

    /// Stores `blocks` of version `version` in frames of at most 128 pages, in one pack of
    /// backup `id`; returns the file entry (page level when `base` is given) and the manifest.
    func store(_ version: Int, id: String, blocks: [Int], size: Int64, base: String?) async throws -> (BackupManifest.File, BackupManifest) {
        let compressor = Compressor(CompressionSettings())
        var pack = [UInt8](), chunks = [BackupManifest.Chunk]()
        for start in stride(from: 0, to: blocks.count, by: 128) {
            let plain = blocks[start..<min(blocks.count, start + 128)].flatMap { Self.content(version, $0) }
            let frame = try plain.withUnsafeBytes { try FrameFormat.encode($0, compressor: compressor, pages: true) }
            chunks.append(.init(object: 0, offset: Int64(pack.count), length: frame.count, raw: plain.count))
            pack += frame
        }
        let backup = BackupID(id)!
        try await driver.writeAll(layout.objectKey(backup, "pack-0"), pack)
        var runs = [BackupManifest.BlockRun]()
        for b in blocks {
            if let last = runs.last, Int(last.start + last.count) == b { runs[runs.count - 1].count += 1 } else { runs.append(.init(start: UInt32(b), count: 1)) }
        }
        let file = BackupManifest.File(path: "base/5/16384", size: size, mode: 0o600, mtime: 0, sha256: "", chunks: chunks,
                                       base: base.flatMap { BackupID($0) }, blocks: base == nil ? nil : runs)
        let manifest = BackupManifest(
            id: backup, type: base == nil ? .full : .incr, reference: base.flatMap { BackupID($0) }, cluster: "c", systemIdentifier: "42",
            pgVersionNumber: 150004, walSegmentSize: 16 << 20, dataChecksums: true, startTime: Date(), stopTime: Date(),
            startLSN: LSN(0), stopLSN: LSN(0), timeline: 1, startWAL: "", stopWAL: "", backupLabel: "", tablespaceMap: "", tablespaces: [],
            compression: CompressionSettings(), objects: [.init(name: "pack-0", size: Int64(pack.count), sha256: SHA256Hasher.hex(pack))],
            directories: [], files: [file], wal: [], copySeconds: 0)
        return (file, manifest)
    }

    /// The chain, newest first, and the file it rebuilds: `pages` in the full, two more in each
    /// incr, and incr 2 cut to `truncated` blocks when given.
    func chain(pages: Int, truncated: Int? = nil) async throws -> ([(file: BackupManifest.File, manifest: BackupManifest)], [UInt8]) {
        var rng = SystemRandomNumberGenerator()
        let full = try await store(0, id: "20261101-000000F", blocks: Array(0..<pages), size: Int64(pages * Self.page), base: nil)
        // incr 1: a tenth of the pages, a run across the full's first frame boundary (blocks
        // 127-128), and two new pages past the full's end.
        let across: Set<Int> = pages > 129 ? [127, 128] : []
        let b1 = (Set((0..<(pages / 10)).map { _ in Int.random(in: 0..<pages, using: &rng) }).union(across).union([pages, pages + 1])).sorted()
        let i1 = try await store(1, id: "20261101-010000I", blocks: b1, size: Int64((pages + 2) * Self.page), base: "20261101-000000F")
        // incr 2: another tenth, incr 1's first two, and the last page.
        let size2 = truncated ?? (pages + 2)
        let b2 = Set((0..<(pages / 10)).map { _ in Int.random(in: 0..<pages, using: &rng) }).union(b1.prefix(2)).union([pages + 1])
            .subtracting(across).filter { $0 < size2 }.sorted()
        let i2 = try await store(2, id: "20261101-020000I", blocks: b2, size: Int64(size2 * Self.page), base: "20261101-010000I")
        var expected = [UInt8]()
        for b in 0..<size2 {
            expected += Self.content(b2.contains(b) ? 2 : b1.contains(b) ? 1 : 0, b)
        }
        return ([i2, i1, full], expected)
    }

    /// The full's frames are decoded in place and the incrs' pages copied over them; a frame of
    /// the full that reaches past a truncated file's end is merged piece by piece.
    @Test(arguments: [(40, nil), (1536, nil), (300, 297), (300, 250)] as [(Int, Int?)])
    func aChainIsRebuiltPageForPage(pages: Int, truncated: Int?) async throws {
        let (versions, expected) = try await chain(pages: pages, truncated: truncated)
        #expect((Int64(expected.count) >= Restore.backgroundBytes) == (pages == 1536))
        var target = versions[0].file
        target.sha256 = SHA256Hasher.hex(expected)
        let dir = try TestEnvironment.makeTemporaryDirectory("pages")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let counter = ByteCounter()
        let sha = try await Restore.restorePages(target, versions: versions, to: dir + "/f", from: driver, keys: layout, counter: counter)
        #expect(sha == target.sha256)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/f")) == Data(expected))
        #expect(counter.current == Int64(expected.count))
    }

    @Test func piecesAreCutAtTheWholeVersionsFrameBoundaries() {
        typealias Piece = BlockOwnership.Piece
        let p = 8192
        func piece(_ frameOffset: Int, _ block: Int, _ blocks: Int) -> Piece {
            Piece(frameOffset: frameOffset, fileOffset: Int64(block * p), length: blocks * p)
        }
        // Blocks 126-129 (across the boundary at 128), and block 300 (inside a frame).
        let frame = BlockOwnership.FramePlan(chunk: 0, pieces: [piece(0, 126, 4), piece(4 * p, 300, 1)])
        let cut = Restore.cut([frame], at: [Int64(128 * p), Int64(256 * p)])
        let expected: [Piece] = [piece(0, 126, 2), piece(2 * p, 128, 2), piece(4 * p, 300, 1)]
        #expect(cut[0].pieces == expected)
        #expect(Restore.cut([frame], at: []) == [frame])
    }

    @Test(arguments: [40, 1536])
    func aDamagedFrameIsAClearError(pages: Int) async throws {
        let (versions, expected) = try await chain(pages: pages)
        var target = versions[0].file
        target.sha256 = SHA256Hasher.hex(expected)
        #expect(try BlockOwnership.plan(size: target.size, versions: versions.map(\.file))[1].count > 0, "incr 1 is read")
        // Every byte of incr 1's pack inverted past the first frame's header.
        let key = layout.objectKey(versions[1].manifest.id, "pack-0")
        var pack = try await driver.readAll(key, limit: 1 << 30)
        for i in FrameFormat.headerLength..<pack.count { pack[i] ^= 0xFF }
        try await driver.writeAll(key, pack)
        let dir = try TestEnvironment.makeTemporaryDirectory("pages")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            _ = try await Restore.restorePages(target, versions: versions, to: dir + "/f", from: driver, keys: layout, counter: ByteCounter())
            Issue.record("a damaged frame was restored")
        } catch let e as WaybackError {
            #expect(e.code == .corrupt && e.message.contains("20261101-010000I"), "\(e.message)")
        }
    }
}
