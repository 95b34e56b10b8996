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
        // One decompressor for all versions: they decode one frame at a time, in turn.
        let decompressor = Decompressor()
        var streams = [VersionStream]()
        for (v, frames) in zip(versions, plans) where !frames.isEmpty {
            let s = VersionStream(file: v.file, manifest: v.manifest, frames: frames, driver: driver, keys: keys, decompressor: decompressor)
            if try await s.advance() { streams.append(s) }
        }
        var position: Int64 = 0
        // Counted a MiB at a time: the counter is shared by every worker, and pieces are often a page.
        var uncounted: Int64 = 0
        defer { counter.add(uncounted) }
        while true {
            // The stream whose next piece comes first in the file.
            var best = -1, bestOffset = Int64.max
            for (i, s) in streams.enumerated() where s.nextOffset < bestOffset { best = i; bestOffset = s.nextOffset }
            guard best >= 0 else { break }
            guard bestOffset == position else {
                throw WaybackError(.corrupt, "backup \(versions[0].manifest.id) cannot be restored: the stored pieces of file \(f.path) do not follow each other at offset \(position); restore another backup (--backup ID)")
            }
            let s = streams[best]
            let piece = s.pieces[s.pieceIndex]
            try s.plain.withUnsafeBytes { try out.append(UnsafeRawBufferPointer(rebasing: $0[piece.frameOffset..<(piece.frameOffset + piece.length)])) }
            uncounted += Int64(piece.length)
            if uncounted >= 1 << 20 { counter.add(uncounted); uncounted = 0 }
            position += Int64(piece.length)
            s.pieceIndex += 1
            if s.pieceIndex == s.pieces.count, !(try await s.advance()) { streams.remove(at: best) }
        }
        let (written, sha) = try out.finish()
        guard written == f.size, sha == f.sha256 || !f.digestKnown else {
            throw WaybackError(.corrupt, "backup \(versions[0].manifest.id) is damaged: file \(f.path) rebuilt from backups \(versions.map(\.manifest.id.rawValue).joined(separator: ", ")) fails its \(written == f.size ? "SHA-256" : "size") check; nothing was restored. Restore another backup (--backup ID) or run a new backup")
        }
        var times = [timespec(tv_sec: Int(f.mtime), tv_nsec: 0), timespec(tv_sec: Int(f.mtime), tv_nsec: 0)]
        _ = utimensat(AT_FDCWD, path, &times, 0)
        return sha
    }
}

/// One version of a file in a page-level rebuild: its planned frames, read in batches of
/// consecutive frames (at most `batchBytes` stored bytes, or one frame) and decoded one at a
/// time, so a chain of N versions holds at most N batches and N decoded frames.
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

    /// Where the next piece goes in the file (`Int64.max` when none is left).
    var nextOffset: Int64 { pieceIndex < pieces.count ? pieces[pieceIndex].fileOffset : .max }

    /// Decodes the next planned frame; false when there is none.
    func advance() async throws -> Bool {
        guard next < frames.count else { pieces = []; pieceIndex = 0; return false }
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
        try batch.withUnsafeBytes { all in
            try FrameFormat.decodePayload(UnsafeRawBufferPointer(rebasing: all[start..<end]), header: header, decompressor: decompressor,
                                          object: name, into: &plain)
        }
        batchPosition = end
        pieces = frames[next].pieces
        pieceIndex = 0
        next += 1
        return true
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
