import Foundation
import WaybackCatalog
import WaybackCore
import WaybackStorage

extension Restore {
    /// Rebuilds a file stored at page level through a chain of backups in one pass: each block is
    /// read once, from the newest backup that stored it (`BlockOwnership`), and written at its
    /// offset; frames that hold no needed block are not read. The rebuilt file is then checked
    /// against the size and SHA-256 of the target backup's entry.
    static func restorePages(_ f: BackupManifest.File, versions: [(file: BackupManifest.File, manifest: BackupManifest)], to path: String,
                             from driver: any StorageDriver, keys: RepositoryLayout, counter: ByteCounter) async throws -> String {
        let plans: [[BlockOwnership.FramePlan]]
        do {
            plans = try BlockOwnership.plan(size: f.size, versions: versions.map(\.file))
        } catch let e as WaybackError {
            throw WaybackError(.corrupt, "backup \(versions[0].manifest.id) cannot be restored: \(e.message); restore another backup (--backup ID)")
        }
        let out = try PosixFile.create(path, mode: mode_t(f.mode & 0o777 == 0 ? 0o600 : f.mode & 0o777), readable: true)
        let sha: String
        do {
            try out.truncate(f.size)
            // Newer versions first (scattered pages), then the whole version in file order: the
            // disk write-back is started behind that pass every 8 MiB, as `restoreOne` does.
            var writtenBack: Int64 = 0
            for (v, frames) in zip(versions, plans) where !frames.isEmpty {
                // Consecutive frames of one pack are read with one request.
                var i = 0
                while i < frames.count {
                    let first = v.file.chunks[frames[i].chunk]
                    var j = i
                    while j + 1 < frames.count {
                        let a = v.file.chunks[frames[j].chunk], b = v.file.chunks[frames[j + 1].chunk]
                        guard b.object == a.object, b.offset == a.offset + Int64(a.length) else { break }
                        j += 1
                    }
                    let last = v.file.chunks[frames[j].chunk]
                    let object = v.manifest.objects[first.object]
                    let range = first.offset..<(last.offset + Int64(last.length))
                    do {
                        try await driver.withReader(keys.objectKey(v.manifest.id, object.name), range: range) { reader in
                            let decoder = FrameReader(reader: reader, name: "\(object.name) of backup \(v.manifest.id)")
                            for k in i...j {
                                let chunk = v.file.chunks[frames[k].chunk]
                                try await decoder.nextFrame { plain in
                                    guard plain.count == chunk.raw else { throw WaybackError(.corrupt, "frame size mismatch") }
                                    for p in frames[k].pieces {
                                        try out.pwrite(UnsafeRawBufferPointer(rebasing: plain[p.frameOffset..<(p.frameOffset + p.length)]), offset: p.fileOffset)
                                        counter.add(Int64(p.length))
                                    }
                                }
                                if v.file.blocks == nil, let end = frames[k].pieces.last.map({ $0.fileOffset + Int64($0.length) }),
                                   end / writebackStep > writtenBack / writebackStep {
                                    let upTo = end / writebackStep * writebackStep
                                    out.startWriteback(offset: writtenBack, length: upTo - writtenBack)
                                    writtenBack = upTo
                                }
                            }
                        }
                    } catch let e as WaybackError where e.code == .corrupt || e.code == .notFound {
                        throw WaybackError(.corrupt, "backup \(v.manifest.id) is damaged: file \(f.path) cannot be read from \(object.name) (\(e.message)); nothing was restored. Restore another backup (--backup ID) or run a new backup")
                    }
                    i = j + 1
                }
            }
            let size: Int64
            (size, sha) = try out.sha256()
            guard size == f.size, sha == f.sha256 || !f.digestKnown else {
                throw WaybackError(.corrupt, "backup \(versions[0].manifest.id) is damaged: file \(f.path) rebuilt from backups \(versions.map(\.manifest.id.rawValue).joined(separator: ", ")) fails its SHA-256 check; nothing was restored. Restore another backup (--backup ID) or run a new backup")
            }
            try out.close()
        } catch {
            try? out.close()
            throw error
        }
        var times = [timespec(tv_sec: Int(f.mtime), tv_nsec: 0), timespec(tv_sec: Int(f.mtime), tv_nsec: 0)]
        _ = utimensat(AT_FDCWD, path, &times, 0)
        return sha
    }
}

