import Foundation
import Testing
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting
@testable import WaybackCatalog

/// The kept block map: what is encoded comes back, a damaged map is refused, and maps of
/// consecutive ranges merge into the map of the whole range.
@Suite struct BlockMapObjectTests {
    static func randomMap(_ rng: inout SeededGenerator, from: UInt64, until: UInt64) -> WALBlockMap {
        var map = WALBlockMap(from: LSN(from), until: LSN(until))
        map.records = Int.random(in: 0...100_000, using: &rng)
        for _ in 0..<Int.random(in: 0...40, using: &rng) {
            let fork = RelationFork(tablespace: [1663, 1664, 16_500].randomElement(using: &rng)!, database: UInt32.random(in: 0...20_000, using: &rng),
                                    relation: UInt32.random(in: 1...UInt32.max, using: &rng), fork: UInt8.random(in: 0...3, using: &rng))
            var blocks = Set<UInt32>()
            // Runs and scattered blocks, up to the largest block number.
            for _ in 0..<Int.random(in: 1...30, using: &rng) {
                let start = [UInt32.random(in: 0...1000, using: &rng), UInt32.random(in: 0...UInt32.max - 500, using: &rng), UInt32.max - 3].randomElement(using: &rng)!
                for b in start..<(start + UInt32.random(in: 1...3, using: &rng)) { blocks.insert(b) }
            }
            map.blocks[fork] = blocks
            if Bool.random(using: &rng) { map.created.insert(fork) }
            if Bool.random(using: &rng) { map.truncated[fork] = UInt32.random(in: 0...UInt32.max, using: &rng) }
        }
        for _ in 0..<Int.random(in: 0...3, using: &rng) { map.copiedDatabases.insert([1663, UInt32.random(in: 1...99_999, using: &rng)]) }
        for _ in 0..<Int.random(in: 0...3, using: &rng) { map.droppedDatabases.insert([16_500, UInt32.random(in: 1...99_999, using: &rng)]) }
        return map
    }

    @Test func roundTripAndDamage() throws {
        var rng = SeededGenerator.fromEnvironment(label: "block maps")
        for _ in 0..<200 {
            let map = Self.randomMap(&rng, from: UInt64.random(in: 0...1 << 40, using: &rng), until: 1 << 41)
            let bytes = BlockMapObject.encode(map)
            var back = try BlockMapObject.decode(bytes)
            back.first = map.first; back.last = map.last
            #expect(back == map)
            // Cut short, or a byte changed in the numbers: refused, never a different map taken as good.
            #expect(throws: WaybackError.self) { try BlockMapObject.decode(Array(bytes.dropLast(Int.random(in: 1...min(8, bytes.count - 20), using: &rng)))) }
            var spoiled = bytes
            spoiled[Int.random(in: 0..<19, using: &rng)] ^= 0x20
            #expect(throws: WaybackError.self) { try BlockMapObject.decode(spoiled) }
        }
        // Runs keep a dense map small: a million consecutive blocks take a few bytes.
        var dense = WALBlockMap(from: LSN(0), until: LSN(1))
        dense.blocks[RelationFork(tablespace: 1663, database: 5, relation: 16_384, fork: 0)] = Set(0..<1_000_000)
        #expect(BlockMapObject.encode(dense).count < 64)
    }

    @Test func consecutiveMapsMerge() throws {
        var rng = SeededGenerator.fromEnvironment(label: "block map merge")
        let a = Self.randomMap(&rng, from: 100, until: 200), b = Self.randomMap(&rng, from: 200, until: 300)
        var merged = a
        merged.append(b)
        #expect(merged.from == LSN(100) && merged.until == LSN(300) && merged.records == a.records + b.records)
        for fork in Set(a.blocks.keys).union(b.blocks.keys) {
            #expect(merged.blocks[fork] == (a.blocks[fork] ?? []).union(b.blocks[fork] ?? []))
        }
        for (fork, n) in b.truncated { #expect(merged.truncated[fork] == min(a.truncated[fork] ?? n, n)) }
        #expect(merged.created == a.created.union(b.created))
        #expect(merged.copiedDatabases == a.copiedDatabases.union(b.copiedDatabases))
    }

    @Test func storedInFramesAndChecked() async throws {
        let storage = MemoryStorage()
        let catalog = Catalog(repository: Repository(name: "m", driver: storage), cluster: "c")
        var rng = SeededGenerator.fromEnvironment(label: "stored block map")
        let map = Self.randomMap(&rng, from: 1000, until: 5000)
        let id = BackupID("20261206-120000I")!
        let object = try await BlockMapObject.write(map, backup: id, catalog: catalog, compression: CompressionSettings())
        var m = BackupChainTests.manifest(id.rawValue, reference: "20261206-110000F")
        m.objects = [object]
        var back = try await BlockMapObject.read(m, catalog: catalog)
        back.first = map.first; back.last = map.last
        #expect(back == map)
        // A manifest that records another digest: the map is not used.
        m.objects[0].sha256 = String(repeating: "0", count: 64)
        await #expect(throws: WaybackError.self) { _ = try await BlockMapObject.read(m, catalog: catalog) }
    }
}
