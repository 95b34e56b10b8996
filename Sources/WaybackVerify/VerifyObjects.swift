import Foundation
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// Reading one object whole and checking everything it can be checked against.
extension RepositoryVerifier {
    func verify(_ item: Item, binding: ClusterBinding, findings: Findings, counter: ByteCounter) async {
        let layout = RepositoryLayout(cluster: config.cluster)
        switch item {
        case .packDigest(let m, let i):
            let o = m.objects[i]
            let key = layout.objectKey(m.id, o.name)
            await reading(key, size: o.size, sha256: o.sha256, backup: m.id, findings: findings) {
                try await driver.withReader(key, range: nil) { raw in
                    let reader = DigestReader(raw)
                    while !(try await reader.read(maxLength: 1 << 20)).isEmpty {}
                    guard reader.count == o.size, reader.finalizeHex() == o.sha256 else {
                        throw WaybackError(.corrupt, "\(o.name) of backup \(m.id) fails its SHA-256 check: the object is damaged")
                    }
                }
            }
        case .pack(let m, let i), .packRange(let m, let i, _, _):
            var range: Range<Int64>?
            if case .packRange(_, _, let r, _) = item { range = r }
            let key = layout.objectKey(m.id, m.objects[i].name)
            await reading(key, size: m.objects[i].size, sha256: m.objects[i].sha256, backup: m.id, findings: findings) {
                try await verifyPack(m, object: i, key: key, range: range, counter: counter)
            }
        case .walCopy(let m, let i):
            let o = m.objects[i]
            let key = layout.objectKey(m.id, o.name)
            await reading(key, size: o.size, sha256: o.sha256, backup: m.id, findings: findings) {
                let bytes = try await driver.readAll(key, limit: Int(o.size) + 1)
                guard Int64(bytes.count) == o.size, SHA256Hasher.hex(bytes) == o.sha256 else {
                    throw WaybackError(.corrupt, "\(o.name) of backup \(m.id) fails its SHA-256 check")
                }
                let name = String(o.name.dropFirst("wal/".count))
                try await checkWAL(key: key, name: WALFileName(name), binding: binding)
                counter.add(o.size)
            }
        case .archived(let name, let key, let size):
            await reading(key, size: size, sha256: nil, segment: name.description, findings: findings) {
                try await checkWAL(key: key, name: name, binding: binding)
                counter.add(size)
            }
        case .dumpObject(let m, let i):
            let o = m.objects[i]
            let key = layout.dumpObjectKey(m.id, o.name)
            do {
                try await verifyDumpObject(o, id: m.id, key: key, counter: counter)
                findings.read(key, size: o.size, sha256: o.sha256, sound: true, at: now)
            } catch let e as WaybackError where e.code == .notFound {
                // Expired since the listing (its manifest goes first), or lost.
                if (try? await driver.info(layout.dumpManifestKey(m.id))) == nil { findings.state.withLock { _ = $0.gone.insert(key) }; return }
                findings.add(problem(.missing, "\(key) disappeared while it was read: \(e.message)", object: key, dump: m.id))
            } catch {
                findings.read(key, size: o.size, sha256: o.sha256, sound: false, at: now)
                findings.add(problem(.damaged, Self.text(error), object: key, dump: m.id))
            }
        }
    }

    /// A dump's object read once: the SHA-256 and size of its stored bytes, every frame decoded,
    /// and the SHA-256 and size of the plain bytes `pg_dump` wrote.
    func verifyDumpObject(_ o: DumpManifest.Object, id: DumpID, key: String, counter: ByteCounter) async throws {
        var plain = SHA256Hasher(), plainSize: Int64 = 0
        let stored = try await driver.withReader(key, range: nil) { raw in
            let reader = DigestReader(raw)
            let frames = FrameReader(reader: reader, name: "\(o.name) of dump \(id)")
            while !(try await frames.atEnd()) {
                try await frames.nextFrame { bytes in
                    plain.update(bytes)
                    plainSize += Int64(bytes.count)
                    counter.add(Int64(bytes.count))
                }
            }
            return (reader.count, reader.finalizeHex())
        }
        guard stored.0 == o.size, stored.1 == o.sha256 else {
            throw WaybackError(.corrupt, "\(o.name) of dump \(id) fails its SHA-256 check: the stored object is damaged")
        }
        guard plainSize == o.plainSize, plain.finalizeHex() == o.plainSHA256 else {
            throw WaybackError(.corrupt, "\(o.name) of dump \(id) decodes to other bytes than pg_dump wrote (size or SHA-256)")
        }
    }

    /// Runs `body` and records the outcome: sound, a problem, or gone (expired meanwhile: no
    /// record, no problem).
    func reading(_ key: String, size: Int64, sha256: String?, backup: BackupID? = nil, segment: String? = nil, findings: Findings,
                 _ body: () async throws -> Void) async {
        do {
            try await body()
            findings.read(key, size: size, sha256: sha256, sound: true, at: now)
        } catch let e as WaybackError where e.code == .notFound {
            // Removed since the listing: an expiry (its manifest goes first) or damage.
            if let backup, (try? await driver.info(RepositoryLayout(cluster: config.cluster).manifestKey(backup))) == nil {
                findings.state.withLock { _ = $0.gone.insert(key) }
                return
            }
            if backup == nil { findings.state.withLock { _ = $0.gone.insert(key) }; return }
            findings.add(problem(.missing, "\(key) disappeared while it was read: \(e.message)", object: key, backup: backup))
        } catch {
            findings.read(key, size: size, sha256: sha256, sound: false, at: now)
            let kind: VerifyProblem.Kind = segment != nil ? .wal : (error is FileMismatch ? .file : .damaged)
            findings.add(problem(kind, (error as? FileMismatch)?.message ?? Self.text(error), object: key, backup: backup, segment: segment))
        }
    }

    /// An archived WAL file (or a backup's copy of one): its checksum, frames, size, and that it
    /// is what its name says (a segment of this cluster, at its position, on its timeline; a
    /// history file that parses).
    func checkWAL(key: String, name: WALFileName?, binding: ClusterBinding) async throws {
        guard let name else { throw WaybackError(.corrupt, "\(key) is not named after a WAL file") }
        var head = [UInt8](), text = [UInt8]()
        let header = try await WALObject.read(driver, key: key, name: name.description) { plain, offset in
            if name.kind == .segment || name.kind == .partial {
                if head.count < WALSegmentHeader.length, offset == Int64(head.count) {
                    head += plain.prefix(WALSegmentHeader.length - head.count)
                }
            } else if text.count < ArchivedTextFile.maximumSize {
                text += plain.prefix(ArchivedTextFile.maximumSize - text.count)
            }
        }
        switch name.kind {
        case .segment, .partial:
            let size = UInt64(binding.walSegmentSize)
            guard name.kind == .partial || header.size == Int64(size) else {
                throw WaybackError(.corrupt, "archived segment \(name) has \(header.size) bytes, not \(size)")
            }
            guard let h = head.withUnsafeBytes({ WALSegmentHeader.parse($0) }) else {
                throw WaybackError(.corrupt, "archived segment \(name) does not start with a WAL page header")
            }
            guard h.systemIdentifier == binding.systemID, h.timeline == name.timeline,
                  h.pageAddress == name.segmentNumber(segmentSize: size) * size else {
                throw WaybackError(.corrupt, "archived segment \(name) holds WAL of system \(h.systemIdentifier), timeline \(h.timeline), position \(LSN(h.pageAddress)): not what its name says")
            }
        case .history:
            try ArchivedTextFile.validateHistory(text, timeline: name.timeline)
        case .backupHistory:
            try ArchivedTextFile.validateBackupHistory(text, name: name, segmentSize: binding.walSegmentSize)
        }
    }

    /// A pack (or, with `range`, a part of it at file boundaries), read once from start to end:
    /// its SHA-256 and size as recorded (whole packs), every frame decoded (zstd's content
    /// checksums), and the SHA-256 of every file it stores whole.
    func verifyPack(_ m: BackupManifest, object index: Int, key: String, range: Range<Int64>?, counter: ByteCounter) async throws {
        let o = m.objects[index]
        var owners = [Int64: (file: Int, chunk: Int)]()
        var hashed = Set<Int>()
        for (fi, f) in m.files.enumerated() where !f.chunks.isEmpty {
            for (ci, c) in f.chunks.enumerated() where c.object == index && range.map({ $0.contains(c.offset) }) ?? true { owners[c.offset] = (fi, ci) }
            // Hashed here when stored whole, in this pack alone, in order.
            if f.base == nil, f.blocks == nil, f.chunks.allSatisfy({ $0.object == index }),
               zip(f.chunks, f.chunks.dropFirst()).allSatisfy({ $0.offset < $1.offset }) { hashed.insert(fi) }
        }
        var running = [Int: (hasher: SHA256Hasher, next: Int, bytes: Int64)]()
        let base = range?.lowerBound ?? 0
        try await driver.withReader(key, range: range) { raw in
            let reader = DigestReader(raw)
            let frames = FrameReader(reader: reader, name: "\(o.name) of backup \(m.id)")
            while !(try await frames.atEnd()) {
                let owner = owners[base + frames.consumed]
                let n = try await frames.nextFrame { plain -> Int in
                    guard let (fi, ci) = owner else { return plain.count }
                    let f = m.files[fi]
                    guard plain.count == f.chunks[ci].raw else {
                        throw FileMismatch("file \(f.path) of backup \(m.id): a frame of \(o.name) holds \(plain.count) bytes, \(f.chunks[ci].raw) recorded")
                    }
                    guard hashed.contains(fi) else { return plain.count }
                    var r = running[fi] ?? (SHA256Hasher(), 0, 0)
                    guard r.next == ci else {
                        throw FileMismatch("file \(f.path) of backup \(m.id): the frames of \(o.name) are not in the recorded order")
                    }
                    r.hasher.update(plain)
                    r.next += 1; r.bytes += Int64(plain.count)
                    if r.next == f.chunks.count {
                        running[fi] = nil
                        let digest = r.hasher.finalizeHex()
                        guard r.bytes == f.size, digest == f.sha256 else {
                            throw FileMismatch("file \(f.path) of backup \(m.id) fails its SHA-256 check (read from \(o.name))")
                        }
                    } else {
                        running[fi] = r
                    }
                    return plain.count
                }
                counter.add(Int64(n))
            }
            guard range != nil || (reader.count == o.size && reader.finalizeHex() == o.sha256) else {
                throw WaybackError(.corrupt, "\(o.name) of backup \(m.id) fails its SHA-256 check: the object is damaged")
            }
        }
        if let (fi, _) = running.first {
            throw FileMismatch("file \(m.files[fi].path) of backup \(m.id): \(o.name) ends before the file does")
        }
    }
}

/// A file of a backup that does not come out as its manifest records it.
struct FileMismatch: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

