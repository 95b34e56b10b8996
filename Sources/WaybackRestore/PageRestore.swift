import Foundation
import WaybackCatalog
import WaybackCore
import WaybackStorage

extension Restore {
    /// Rebuilds a file stored at page level through a chain of backups in one pass in file order:
    /// each version's frames are read in order (those that hold no needed block are not read),
    /// and their pieces (`BlockOwnership`: each block from the newest backup that stored it) are
    /// merged by file offset, written sequentially and hashed as they are written; there is no
    /// read-back. The size, and the SHA-256 when the target backup's entry knows it, are checked;
    /// returns the SHA-256 (for `backup_manifest` when the entry does not know it).
    static func restorePages(_ f: BackupManifest.File, versions: [(file: BackupManifest.File, manifest: BackupManifest)], to path: String,
                             from driver: any StorageDriver, keys: RepositoryLayout, counter: ByteCounter) async throws -> String {
        let plans: [[BlockOwnership.FramePlan]]
        do {
            plans = try BlockOwnership.plan(size: f.size, versions: versions.map(\.file))
        } catch let e as WaybackError {
            throw WaybackError(.corrupt, "backup \(versions[0].manifest.id) cannot be restored: \(e.message); restore another backup (--backup ID)")
        }
        let out = try writer(for: f, at: path)
        // The version stored whole (the chain's last) has its frames decoded where they are
        // written, as in a full restore, and the newer versions' pages copied over them: its pieces
        // are not copied a second time. So that every copy lands inside one such frame, the newer
        // versions' pieces are cut at its frames' boundaries.
        let whole = versions.last!.file
        var boundaries = [Int64](), at: Int64 = 0
        if whole.blocks == nil { for c in whole.chunks { at += Int64(c.raw); boundaries.append(at) } }
        // One decompressor for all versions: they decode one frame at a time, in turn.
        let decompressor = Decompressor()
        var streams = [VersionStream]()
        var base: VersionStream?
        for (k, (v, frames)) in zip(versions, plans).enumerated() where !frames.isEmpty {
            let isBase = k == versions.count - 1 && whole.blocks == nil
            let s = VersionStream(file: v.file, manifest: v.manifest, frames: isBase ? frames : Self.cut(frames, at: boundaries), driver: driver,
                                  keys: keys, decompressor: decompressor)
            streams.append(s)
            if isBase { base = s }
        }
        var position: Int64 = 0
        // Counted a MiB at a time: the counter is shared by every worker, and pieces are often a page.
        var uncounted: Int64 = 0
        defer { counter.add(uncounted) }
        func count(_ n: Int) {
            uncounted += Int64(n)
            if uncounted >= 1 << 20 { counter.add(uncounted); uncounted = 0 }
        }
        while true {
            if let b = base, let (start, raw) = b.nextWholeFrame, start == position, start + Int64(raw) <= f.size, raw <= SequentialWriter.bufferBytes {
                let end = start + Int64(raw)
                try await b.load(into: out)
                for s in streams where s !== b {
                    while s.nextOffset < end {
                        if !s.loaded { try await s.load() }
                        let piece = s.pieces[s.pieceIndex]
                        guard piece.fileOffset >= start, piece.fileOffset + Int64(piece.length) <= end else {
                            throw WaybackError(.corrupt, "backup \(versions[0].manifest.id) cannot be restored: the stored pieces of file \(f.path) overlap at offset \(piece.fileOffset); restore another backup (--backup ID)")
                        }
                        try s.plain.withUnsafeBytes { try out.patch(at: piece.fileOffset, UnsafeRawBufferPointer(rebasing: $0[piece.frameOffset..<(piece.frameOffset + piece.length)])) }
                        s.consume()
                    }
                }
                count(raw)
                position = end
                continue
            }
            // The stream whose next piece comes first in the file.
            var best = -1, bestOffset = Int64.max
            for (i, s) in streams.enumerated() where s.nextOffset < bestOffset { best = i; bestOffset = s.nextOffset }
            guard best >= 0 else { break }
            guard bestOffset == position else {
                throw WaybackError(.corrupt, "backup \(versions[0].manifest.id) cannot be restored: the stored pieces of file \(f.path) do not follow each other at offset \(position); restore another backup (--backup ID)")
            }
            let s = streams[best]
            if !s.loaded { try await s.load() }
            let piece = s.pieces[s.pieceIndex]
            try s.plain.withUnsafeBytes { try out.append(UnsafeRawBufferPointer(rebasing: $0[piece.frameOffset..<(piece.frameOffset + piece.length)])) }
            count(piece.length)
            position += Int64(piece.length)
            s.consume()
        }
        let (written, sha) = try out.finish()
        guard written == f.size, sha == f.sha256 || !f.digestKnown else {
            throw WaybackError(.corrupt, "backup \(versions[0].manifest.id) is damaged: file \(f.path) rebuilt from backups \(versions.map(\.manifest.id.rawValue).joined(separator: ", ")) fails its \(written == f.size ? "SHA-256" : "size") check; nothing was restored. Restore another backup (--backup ID) or run a new backup")
        }
        var times = [timespec(tv_sec: Int(f.mtime), tv_nsec: 0), timespec(tv_sec: Int(f.mtime), tv_nsec: 0)]
        _ = utimensat(AT_FDCWD, path, &times, 0)
        return sha
    }

    /// `frames` with every piece that crosses one of `boundaries` (sorted file offsets) cut there.
    static func cut(_ frames: [BlockOwnership.FramePlan], at boundaries: [Int64]) -> [BlockOwnership.FramePlan] {
        guard !boundaries.isEmpty else { return frames }
        return frames.map { frame in
            var plan = frame
            plan.pieces = []
            for var p in frame.pieces {
                // The first boundary past the piece's start.
                var lo = 0, hi = boundaries.count
                while lo < hi { let mid = (lo + hi) / 2; if boundaries[mid] <= p.fileOffset { lo = mid + 1 } else { hi = mid } }
                while lo < boundaries.count, boundaries[lo] < p.fileOffset + Int64(p.length) {
                    let head = Int(boundaries[lo] - p.fileOffset)
                    var first = p
                    first.length = head
                    plan.pieces.append(first)
                    p.frameOffset += head; p.fileOffset = boundaries[lo]; p.length -= head
                    lo += 1
                }
                plan.pieces.append(p)
            }
            return plan
        }
    }
}

/// One version of a file in a page-level rebuild: its planned frames, read in batches of
/// consecutive frames (at most `batchBytes` stored bytes, or one frame) and decoded one at a
/// time when the merge reaches them, so a chain of N versions holds at most N batches and N
/// decoded frames.
final class VersionStream {
    static let batchBytes: Int64 = 256 << 10
    let file: BackupManifest.File
    let manifest: BackupManifest
    let frames: [BlockOwnership.FramePlan]
    let driver: any StorageDriver
    let keys: RepositoryLayout
    let decompressor: Decompressor
    private var next = 0
    private var batch = [UInt8]()
    private var batchPosition = 0
    private var batchEnd = 0
    /// The current frame's plain bytes (its first `rawLength`) and the pieces of it to write.
    private(set) var plain = [UInt8]()
    private(set) var pieces = [BlockOwnership.Piece]()
    var pieceIndex = 0

    init(file: BackupManifest.File, manifest: BackupManifest, frames: [BlockOwnership.FramePlan], driver: any StorageDriver, keys: RepositoryLayout,
         decompressor: Decompressor) {
        self.file = file; self.manifest = manifest; self.frames = frames; self.driver = driver; self.keys = keys; self.decompressor = decompressor
    }

    /// Whether a decoded frame has pieces left to write; otherwise the next frame is decoded
    /// only when the merge reaches its first piece.
    var loaded: Bool { pieceIndex < pieces.count }

    /// Where the next piece goes in the file (`Int64.max` when none is left).
    var nextOffset: Int64 {
        if loaded { return pieces[pieceIndex].fileOffset }
        return next < frames.count ? frames[next].pieces[0].fileOffset : .max
    }

    /// For a version stored whole, when no frame is loaded: where the next frame's plain bytes
    /// begin in the file, and how many there are.
    var nextWholeFrame: (start: Int64, raw: Int)? {
        guard !loaded, next < frames.count, file.blocks == nil else { return nil }
        let first = frames[next].pieces[0]
        return (first.fileOffset - Int64(first.frameOffset), file.chunks[frames[next].chunk].raw)
    }

    /// Moves past the piece written.
    func consume() { pieceIndex += 1 }

    /// Decodes the next planned frame into `plain`, its pieces to be written.
    func load() async throws {
        try await withNextFrame { payload, header, name in
            try FrameFormat.decodePayload(payload, header: header, decompressor: decompressor, object: name, into: &plain)
        }
        pieces = frames[next - 1].pieces
        pieceIndex = 0
    }

    /// Decodes the next planned frame, whole, straight into `out` (see `nextWholeFrame`).
    func load(into out: SequentialWriter) async throws {
        try await withNextFrame { payload, header, name in
            try out.append(count: header.rawLength) { try FrameFormat.decodePayload(payload, header: header, decompressor: decompressor, object: name, into: $0) }
        }
        pieces = []
        pieceIndex = 0
    }

    /// Calls `body` with the next planned frame's stored payload, checked against the manifest.
    private func withNextFrame(_ body: (UnsafeRawBufferPointer, FrameFormat.Header, String) throws -> Void) async throws {
        if next >= batchEnd { try await readBatch() }
        let chunk = file.chunks[frames[next].chunk]
        let name = "\(manifest.objects[chunk.object].name) of backup \(manifest.id)"
        let header = try batch.withUnsafeBytes { all -> FrameFormat.Header in
            guard batchPosition + FrameFormat.headerLength <= all.count else { throw WaybackError(.corrupt, "\(name) is truncated: it ends inside a frame") }
            return try FrameFormat.decodeHeader(UnsafeRawBufferPointer(rebasing: all[batchPosition..<(batchPosition + FrameFormat.headerLength)]), object: name)
        }
        let start = batchPosition + FrameFormat.headerLength, end = start + header.storedLength
        guard end <= batch.count, header.rawLength == chunk.raw, FrameFormat.headerLength + header.storedLength == chunk.length else {
            throw WaybackError(.corrupt, "\(name) is damaged: a frame of file \(file.path) is not as the manifest records it")
        }
        try batch.withUnsafeBytes { all in try body(UnsafeRawBufferPointer(rebasing: all[start..<end]), header, name) }
        batchPosition = end
        next += 1
    }

    /// Reads the stored bytes of the next frames that lie back to back in one object.
    private func readBatch() async throws {
        let first = file.chunks[frames[next].chunk]
        var last = next, bytes = Int64(first.length)
        while last + 1 < frames.count {
            let a = file.chunks[frames[last].chunk], b = file.chunks[frames[last + 1].chunk]
            guard b.object == a.object, b.offset == a.offset + Int64(a.length), bytes + Int64(b.length) <= Self.batchBytes else { break }
            bytes += Int64(b.length)
            last += 1
        }
        let object = manifest.objects[first.object]
        let range = first.offset..<(first.offset + bytes)
        var data = [UInt8]()
        do {
            try await driver.withReader(keys.objectKey(manifest.id, object.name), range: range) { reader in
                while true {
                    let chunk = try await reader.read(maxLength: Int(bytes) - data.count + 1)
                    if chunk.isEmpty { break }
                    // Usually the whole batch in one read: kept as it is, not copied.
                    if data.isEmpty { data = chunk } else { data += chunk }
                }
            }
        } catch let e as WaybackError where e.code == .notFound {
            throw WaybackError(.corrupt, "backup \(manifest.id) is damaged: file \(file.path) cannot be read from \(object.name) (\(e.message)); nothing was restored. Restore another backup (--backup ID) or run a new backup")
        }
        guard data.count == Int(bytes) else {
            throw WaybackError(.corrupt, "backup \(manifest.id) is damaged: \(object.name) ends before the frames of file \(file.path) do; restore another backup (--backup ID)")
        }
        batch = data
        batchPosition = 0
        batchEnd = last + 1
    }
}
