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
        var streams = [VersionStream]()
        for (v, frames) in zip(versions, plans) where !frames.isEmpty {
            streams.append(VersionStream(file: v.file, manifest: v.manifest, frames: frames, driver: driver, keys: keys))
        }
        // Every frame in the order the merge needs it: by the file offset of its first piece.
        // The merge moves forward through the file, so it loads frames in exactly this order, and
        // the decoder works through them a few frames ahead (on a thread of its own for a large
        // file, so that decoding, merging and hashing take a core each where there are cores).
        var schedule = [(stream: Int, frame: Int)]()
        for (i, s) in streams.enumerated() { for k in s.frames.indices { schedule.append((i, k)) } }
        schedule.sort { streams[$0.stream].frames[$0.frame].pieces[0].fileOffset < streams[$1.stream].frames[$1.frame].pieces[0].fileOffset }
        let decoder = FrameDecoder(threaded: f.size >= backgroundBytes)
        defer { decoder.close() }
        var submitted = 0, taken = 0
        func topUp() async throws {
            while submitted < schedule.count, submitted - taken < FrameDecoder.ahead {
                let (i, k) = schedule[submitted]
                try decoder.submit(try await streams[i].stored(frame: k))
                submitted += 1
            }
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
            if s.needsFrame {
                try await topUp()
                s.load(try decoder.take())
                taken += 1
                try await topUp()
            }
            let piece = s.frames[s.loaded].pieces[s.pieceIndex]
            try out.append(UnsafeRawBufferPointer(rebasing: s.plain[piece.frameOffset..<(piece.frameOffset + piece.length)]))
            uncounted += Int64(piece.length)
            if uncounted >= 1 << 20 { counter.add(uncounted); uncounted = 0 }
            position += Int64(piece.length)
            s.pieceIndex += 1
            if s.needsFrame { decoder.recycle(s.unload()) }
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

/// One version of a file in a page-level rebuild: its planned frames, whose stored bytes are read
/// in batches of consecutive frames (at most `batchBytes` stored bytes, or one frame), and the
/// frame being merged, decoded.
final class VersionStream {
    static let batchBytes: Int64 = 256 << 10
    let file: BackupManifest.File
    let manifest: BackupManifest
    let frames: [BlockOwnership.FramePlan]
    let driver: any StorageDriver
    let keys: RepositoryLayout
    /// The stored bytes of the frames up to `batchEnd` (exclusive), and where the next one starts.
    private var batch = [UInt8]()
    private var batchEnd = 0
    private var batchPosition = 0
    /// The frame being merged (-1: none yet), its plain bytes, and its next piece.
    private(set) var loaded = -1
    private(set) var plain = UnsafeRawBufferPointer(start: nil, count: 0)
    var pieceIndex = 0

    init(file: BackupManifest.File, manifest: BackupManifest, frames: [BlockOwnership.FramePlan], driver: any StorageDriver, keys: RepositoryLayout) {
        self.file = file; self.manifest = manifest; self.frames = frames; self.driver = driver; self.keys = keys
    }

    /// Whether the next piece is in a frame not loaded yet.
    var needsFrame: Bool { loaded < 0 || pieceIndex == frames[loaded].pieces.count }

    /// Where the next piece goes in the file (`Int64.max` when none is left).
    var nextOffset: Int64 {
        if loaded >= 0 && pieceIndex < frames[loaded].pieces.count { return frames[loaded].pieces[pieceIndex].fileOffset }
        return loaded + 1 < frames.count ? frames[loaded + 1].pieces[0].fileOffset : .max
    }

    /// Makes `plain` (frame `loaded + 1`, decoded) the frame being merged.
    func load(_ plain: UnsafeRawBufferPointer) { self.plain = plain; loaded += 1; pieceIndex = 0 }

    /// Lets go of the merged frame's bytes.
    func unload() -> UnsafeRawBufferPointer { defer { plain = UnsafeRawBufferPointer(start: nil, count: 0) }; return plain }

    /// The stored bytes of frame `k`, checked against the manifest; frames are asked for in order.
    func stored(frame k: Int) async throws -> FrameDecoder.Job {
        if k >= batchEnd { try await readBatch(from: k) }
        let chunk = file.chunks[frames[k].chunk]
        let name = "\(manifest.objects[chunk.object].name) of backup \(manifest.id)"
        let header = try batch.withUnsafeBytes { all -> FrameFormat.Header in
            guard batchPosition + FrameFormat.headerLength <= all.count else { throw WaybackError(.corrupt, "\(name) is truncated: it ends inside a frame") }
            return try FrameFormat.decodeHeader(UnsafeRawBufferPointer(rebasing: all[batchPosition..<(batchPosition + FrameFormat.headerLength)]), object: name)
        }
        let start = batchPosition + FrameFormat.headerLength, end = start + header.storedLength
        guard end <= batch.count, header.rawLength == chunk.raw, FrameFormat.headerLength + header.storedLength == chunk.length else {
            throw WaybackError(.corrupt, "\(name) is damaged: a frame of file \(file.path) is not as the manifest records it")
        }
        batchPosition = end
        return FrameDecoder.Job(bytes: batch, payload: start..<end, header: header, name: name)
    }

    /// Reads the stored bytes of frame `k` and the next ones that lie back to back in one object.
    private func readBatch(from k: Int) async throws {
        let first = file.chunks[frames[k].chunk]
        var last = k, bytes = Int64(first.length)
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
