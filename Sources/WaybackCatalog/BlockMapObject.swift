import WaybackCore
import WaybackPostgres
import WaybackStorage

/// A backup's WAL block map kept in its folder (object `blockmap`, listed in the manifest), so
/// that a diff can build its map from the maps of the backups since its full instead of decoding
/// all that WAL again. Binary and run-length encoded (blocks as runs, starts as deltas, every
/// number a varint), then stored in frames like a pack: compressed, encrypted with the
/// repository, read by `verify` and copied by `repo sync`.
public enum BlockMapObject {
    public static let name = "blockmap"
    static let magic = Array("WAYBACK-BLOCKMAP-1\n".utf8)

    public static func encode(_ map: WALBlockMap) -> [UInt8] {
        var out = magic
        func put(_ v: UInt64) {
            var v = v
            while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
            out.append(UInt8(v))
        }
        func put(_ f: RelationFork) { put(UInt64(f.tablespace)); put(UInt64(f.database)); put(UInt64(f.relation)); put(UInt64(f.fork)) }
        put(map.from.value); put(map.until?.value ?? 0); put(UInt64(map.records))
        put(UInt64(map.blocks.count))
        for fork in map.blocks.keys.sorted() {
            let sorted = map.blocks[fork]!.sorted()
            var runs = [(UInt32, UInt32)]()
            for b in sorted {
                if let last = runs.last, last.0 &+ last.1 == b { runs[runs.count - 1].1 += 1 } else { runs.append((b, 1)) }
            }
            put(fork); put(UInt64(runs.count))
            var end: UInt32 = 0
            for (start, count) in runs { put(UInt64(start - end)); put(UInt64(count)); end = start + count }
        }
        put(UInt64(map.created.count))
        for f in map.created.sorted() { put(f) }
        put(UInt64(map.truncated.count))
        for f in map.truncated.keys.sorted() { put(f); put(UInt64(map.truncated[f]!)) }
        for set in [map.copiedDatabases, map.droppedDatabases] {
            put(UInt64(set.count))
            for d in set.sorted(by: { $0.lexicographicallyPrecedes($1) }) { put(UInt64(d[0])); put(UInt64(d[1])) }
        }
        return out
    }

    public static func decode(_ bytes: [UInt8]) throws -> WALBlockMap {
        let bad = WaybackError(.corrupt, "the block map is damaged or not a block map")
        guard bytes.starts(with: magic) else { throw bad }
        var at = magic.count
        func get() throws -> UInt64 {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard at < bytes.count, shift < 64 else { throw bad }
                let b = bytes[at]; at += 1
                v |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return v }
                shift += 7
            }
        }
        func u32() throws -> UInt32 {
            let v = try get()
            guard v <= UInt64(UInt32.max) else { throw bad }
            return UInt32(v)
        }
        func fork() throws -> RelationFork {
            let spc = try u32(), db = try u32(), rel = try u32(), f = try u32()
            guard f <= 3 else { throw bad }
            return RelationFork(tablespace: spc, database: db, relation: rel, fork: UInt8(f))
        }
        func count() throws -> Int {
            let n = try get()
            guard n <= UInt64(bytes.count) else { throw bad }  // each item takes a byte at least
            return Int(n)
        }
        var map = WALBlockMap(from: LSN(try get()))
        let until = try get()
        map.until = until == 0 ? nil : LSN(until)
        map.records = Int(clamping: try get())
        for _ in 0..<(try count()) {
            let f = try fork()
            var set = Set<UInt32>(), end: UInt32 = 0
            for _ in 0..<(try count()) {
                let (delta, n) = (try u32(), try u32())
                guard end.addingReportingOverflow(delta).overflow == false, (end + delta).addingReportingOverflow(n).overflow == false else { throw bad }
                let start = end + delta
                for b in start..<(start + n) { set.insert(b) }
                end = start + n
            }
            map.blocks[f] = set
        }
        for _ in 0..<(try count()) { map.created.insert(try fork()) }
        for _ in 0..<(try count()) { let f = try fork(); map.truncated[f] = try u32() }
        for _ in 0..<(try count()) { map.copiedDatabases.insert([try u32(), try u32()]) }
        for _ in 0..<(try count()) { map.droppedDatabases.insert([try u32(), try u32()]) }
        guard at == bytes.count else { throw bad }
        return map
    }

    /// Stores `map` as backup `id`'s `blockmap` object.
    public static func write(_ map: WALBlockMap, backup id: BackupID, catalog: Catalog,
                             compression: CompressionSettings) async throws -> BackupManifest.StoredObject {
        let plain = encode(map)
        let compressor = Compressor(compression)
        let (size, sha): (Int64, String) = try await catalog.repository.driver.withWriter(catalog.layout.objectKey(id, name), options: WriteOptions()) { writer in
            let frames = FrameWriter(writer: writer)
            var start = 0
            repeat {
                let end = min(plain.count, start + FrameFormat.rawChunk)
                let frame = try plain.withUnsafeBytes { try FrameFormat.encode(UnsafeRawBufferPointer(rebasing: $0[start..<end]), compressor: compressor) }
                _ = try await frames.append(frame: frame)
                start = end
            } while start < plain.count
            return (frames.offset, frames.finalizeSHA256())
        }
        return BackupManifest.StoredObject(name: name, size: size, sha256: sha)
    }

    /// The block map backup `m` keeps, checked against the SHA-256 its manifest records.
    public static func read(_ m: BackupManifest, catalog: Catalog) async throws -> WALBlockMap {
        guard let o = m.objects.first(where: { $0.name == name }) else {
            throw WaybackError(.notFound, "backup \(m.id) keeps no block map")
        }
        var plain = [UInt8]()
        let sha = try await catalog.repository.driver.withReader(catalog.layout.objectKey(m.id, name), range: nil) { reader in
            let digest = DigestReader(reader)
            let frames = FrameReader(reader: digest, name: "\(name) of backup \(m.id)")
            while !(try await frames.atEnd()) {
                try await frames.nextFrame { plain.append(contentsOf: $0) }
            }
            return digest.finalizeHex()
        }
        guard sha == o.sha256 else { throw WaybackError(.corrupt, "the block map of backup \(m.id) fails its SHA-256 check") }
        return try decode(plain)
    }
}

