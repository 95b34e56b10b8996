import Foundation
import WaybackCore
import WaybackPostgres

/// Diff and incr backups depend on earlier ones: the decisions about those dependencies (which
/// backup a new one builds on, which backups a restore reads, what may be expired) are pure
/// functions of the manifests, here.
public enum BackupChains {
    /// What the cluster looks like now, for choosing a reference.
    public struct Current: Sendable {
        public var timeline: UInt32
        /// The history of `timeline` (nil on timeline 1 or when the archive has none).
        public var history: TimelineHistory?
        public var dataChecksums: Bool
        public var pgVersionNumber: Int
        public init(timeline: UInt32, history: TimelineHistory?, dataChecksums: Bool, pgVersionNumber: Int) {
            self.timeline = timeline; self.history = history; self.dataChecksums = dataChecksums; self.pgVersionNumber = pgVersionNumber
        }
    }

    public struct Decision: Sendable, Equatable {
        /// The type the backup will have (a diff or incr falls back to diff or full).
        public var type: BackupType
        public var reference: BackupID?
        /// Why the type differs from the one asked for (nil when it does not).
        public var note: String?
        public init(type: BackupType, reference: BackupID?, note: String?) { self.type = type; self.reference = reference; self.note = note }
    }

    /// The backup a new backup of `requested` type builds on: for `incr` the newest backup of any
    /// type, for `diff` the newest full. A reference must be usable: same PostgreSQL version and
    /// data-checksum setting (enabling checksums rewrites every page without changing its LSN), and
    /// taken on the cluster's present history (its timeline, or an ancestor it stopped on before
    /// the switch): page LSNs compare only along one history. A backup whose restore chain would
    /// exceed `maxChainLength` backups becomes a diff (or a full).
    public static func decide<M: ChainCandidate>(_ requested: BackupType, backups: [M], current: Current, maxChainLength: Int) -> Decision {
        guard requested != .full else { return Decision(type: .full, reference: nil, note: nil) }
        let byID = Dictionary(backups.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        func usable(_ m: M) -> Bool {
            guard let (version, checksums) = m.candidacy,
                  version / 10000 == current.pgVersionNumber / 10000, checksums == current.dataChecksums else { return false }
            guard (try? chain(m.id, in: byID)) != nil else { return false }
            if m.timeline == current.timeline { return true }
            guard let h = current.history, h.contains(m.timeline), let leave = h.switchPoint(leaving: m.timeline) else { return false }
            return m.stopLSN <= leave
        }
        let candidates = backups.sorted { $0.id < $1.id }.filter(usable)
        let newestFull = candidates.last { $0.type == .full }
        guard let full = newestFull else {
            return Decision(type: .full, reference: nil,
                            note: "no usable full backup to build on (none yet, or taken on another timeline, PostgreSQL version or data-checksum setting); taking a full backup")
        }
        if requested == .incr, let last = candidates.last {
            let length = ((try? chain(last.id, in: byID))?.count ?? 0) + 1
            if length <= maxChainLength { return Decision(type: .incr, reference: last.id, note: nil) }
            if maxChainLength >= 2 {
                return Decision(type: .diff, reference: full.id,
                                note: "an incr on \(last.id) would make a restore chain of \(length) backups (backup.max_chain_length: \(maxChainLength)); taking a diff on \(full.id)")
            }
            return Decision(type: .full, reference: nil, note: "backup.max_chain_length is \(maxChainLength); taking a full backup")
        }
        if maxChainLength < 2 {
            return Decision(type: .full, reference: nil, note: "backup.max_chain_length is \(maxChainLength); taking a full backup")
        }
        return Decision(type: .diff, reference: full.id, note: nil)
    }

    /// The restore chain of a backup (manifests or summaries): the backup first, then its reference, and so on to a full.
    /// Throws `.corrupt` naming the missing backup when a link is absent.
    public static func chain<M: ChainMember>(_ id: BackupID, in byID: [BackupID: M]) throws -> [M] {
        var out = [M]()
        var next: BackupID? = id
        while let n = next {
            guard let m = byID[n] else {
                let child = out.last.map { "backup \($0.id) depends on backup \(n), which" } ?? "backup \(n)"
                throw WaybackError(.corrupt, "\(child) is not in the repository; restore an earlier full backup, or copy the missing backup back with 'wayback repo sync'")
            }
            guard out.count < 10_000, !out.contains(where: { $0.id == n }) else {
                throw WaybackError(.corrupt, "backup \(id) has a circular chain of references at \(n)")
            }
            out.append(m)
            next = m.reference
        }
        return out
    }

    /// Backups that depend on `id`, directly or through others.
    public static func dependents(of id: BackupID, in backups: [BackupManifest]) -> [BackupID] {
        var found = Set<BackupID>([id])
        var changed = true
        while changed {
            changed = false
            for m in backups where !found.contains(m.id) {
                if let r = m.reference, found.contains(r) { found.insert(m.id); changed = true }
            }
        }
        found.remove(id)
        return found.sorted()
    }

    /// Backups of `remove` that cannot be expired because a kept backup depends on them, each with
    /// one such dependent. Retention must keep these (or expire the dependents too).
    public static func expiryBlockers(remove: Set<BackupID>, backups: [BackupManifest]) -> [(backup: BackupID, keptDependent: BackupID)] {
        var out = [(backup: BackupID, keptDependent: BackupID)]()
        for id in remove.sorted() {
            if let kept = dependents(of: id, in: backups).first(where: { !remove.contains($0) }) { out.append((id, kept)) }
        }
        return out
    }

    /// Where a file's content comes from when restoring a backup.
    public enum Source: Sendable {
        /// The whole file in one backup's packs (`file` is that backup's entry, `manifest` the backup).
        case whole(file: BackupManifest.File, manifest: BackupManifest)
        /// Versions newest first: page-level entries, then the version stored whole at the bottom.
        case pages([(file: BackupManifest.File, manifest: BackupManifest)])
    }

    /// Resolves the entry `file` of `chain[0]` through the chain (as returned by `chain`).
    public static func source(of file: BackupManifest.File, chain: [BackupManifest]) throws -> Source {
        var versions = [(file: BackupManifest.File, manifest: BackupManifest)]()
        var current = file
        var level = 0
        while true {
            let m = chain[level]
            if current.blocks != nil {
                versions.append((current, m))
            } else if current.base == nil {
                if versions.isEmpty { return .whole(file: current, manifest: m) }
                versions.append((current, m))
                return .pages(versions)
            }
            guard let base = current.base else {
                throw WaybackError(.corrupt, "backup \(m.id) is damaged: file \(file.path) has blocks but no base backup")
            }
            guard level + 1 < chain.count, chain[level + 1].id == base else {
                throw WaybackError(.corrupt, "backup \(m.id) is damaged: file \(file.path) refers to backup \(base), which is not its reference")
            }
            level += 1
            guard let older = chain[level].file(file.path) else {
                throw WaybackError(.corrupt, "backup \(base) has no file \(file.path), which backup \(m.id) builds on; the chain cannot be restored")
            }
            current = older
        }
    }

    /// The plain bytes a restore of the chain reads (every stored piece of the files, at most once).
    public static func bytesToRead(_ chain: [BackupManifest]) -> Int64 {
        guard let top = chain.first else { return 0 }
        var total: Int64 = 0
        for f in top.files {
            switch try? source(of: f, chain: chain) {
            case .whole(let file, _): total += file.storedPlainBytes
            case .pages(let versions): total += versions.reduce(Int64(0)) { $0 + $1.file.storedPlainBytes }
            case nil: break
            }
        }
        return total
    }
}

/// Which blocks of a file a page-level rebuild takes from each version (pure; for restore).
public struct BlockOwnership: Sendable {
    public static let blockSize = 8192

    /// One frame (chunk) of a version to read, and the pieces of it to write:
    /// (offset in the frame's plain bytes, offset in the file, length).
    public struct FramePlan: Sendable, Equatable {
        public var chunk: Int
        public var pieces: [Piece]
    }
    public struct Piece: Sendable, Equatable {
        public var frameOffset: Int
        public var fileOffset: Int64
        public var length: Int
    }

    /// For versions newest first (`versions.last` stored whole), the frames each must read.
    /// Throws `.corrupt` when the chain leaves a part of the file uncovered.
    public static func plan(size: Int64, versions: [BackupManifest.File]) throws -> [[FramePlan]] {
        let bs = Int64(blockSize)
        let blocks = Int((size + bs - 1) / bs)
        var covered = [UInt64](repeating: 0, count: (blocks + 63) / 64)
        var remaining = blocks
        func take(_ b: Int) -> Bool {
            guard b < blocks, covered[b >> 6] & (1 << UInt64(b & 63)) == 0 else { return false }
            covered[b >> 6] |= 1 << UInt64(b & 63)
            remaining -= 1
            return true
        }
        var out = [[FramePlan]]()
        for v in versions {
            var frames = [FramePlan]()
            if let runs = v.blocks {
                // Pages back to back: page i of the list is block runs-flattened[i].
                var list = [UInt32]()
                for r in runs { list += (0..<r.count).map { r.start + $0 } }
                var page = 0
                for (ci, c) in v.chunks.enumerated() {
                    var pieces = [Piece]()
                    var off = 0
                    while off < c.raw {
                        guard page < list.count else {
                            throw WaybackError(.corrupt, "file \(v.path): stored pages do not match the block list")
                        }
                        let b = Int(list[page])
                        let len = min(blockSize, c.raw - off)
                        if take(b) { pieces.append(Piece(frameOffset: off, fileOffset: Int64(b) * bs, length: min(len, Int(size - Int64(b) * bs)))) }
                        off += len; page += 1
                    }
                    if !pieces.isEmpty { frames.append(FramePlan(chunk: ci, pieces: pieces)) }
                }
            } else {
                var fileOffset: Int64 = 0
                for (ci, c) in v.chunks.enumerated() {
                    var pieces = [Piece]()
                    var off = 0
                    while off < c.raw {
                        let b = Int((fileOffset + Int64(off)) / bs)
                        let len = min(blockSize - Int((fileOffset + Int64(off)) % bs), c.raw - off)
                        if take(b) { pieces.append(Piece(frameOffset: off, fileOffset: fileOffset + Int64(off), length: min(len, Int(size - (fileOffset + Int64(off)))))) }
                        off += len
                    }
                    // Merge adjacent pieces into one write.
                    var merged = [Piece]()
                    for p in pieces {
                        if let last = merged.last, last.frameOffset + last.length == p.frameOffset, last.fileOffset + Int64(last.length) == p.fileOffset {
                            merged[merged.count - 1].length += p.length
                        } else { merged.append(p) }
                    }
                    if !merged.isEmpty { frames.append(FramePlan(chunk: ci, pieces: merged)) }
                    fileOffset += Int64(c.raw)
                }
            }
            out.append(frames)
        }
        guard remaining == 0 else {
            throw WaybackError(.corrupt, "file \(versions.first?.path ?? "?"): \(remaining) block\(remaining == 1 ? "" : "s") are in no backup of the chain")
        }
        return out
    }
}

/// A link of a backup chain: a backup and the one it depends on (nil for a full).
public protocol ChainMember: Sendable {
    var id: BackupID { get }
    var reference: BackupID? { get }
}

extension BackupManifest: ChainMember {}

/// What `BackupChains.decide` reads of a backup: a manifest, or its summary in the status index.
public protocol ChainCandidate: ChainMember {
    var type: BackupType { get }
    var timeline: UInt32 { get }
    var stopLSN: LSN { get }
    /// The PostgreSQL version and data-checksum setting (nil: not known, never a reference).
    var candidacy: (pgVersionNumber: Int, dataChecksums: Bool)? { get }
}

extension BackupManifest: ChainCandidate {
    public var candidacy: (pgVersionNumber: Int, dataChecksums: Bool)? { (pgVersionNumber, dataChecksums) }
}

extension BackupSummary: ChainCandidate {
    public var candidacy: (pgVersionNumber: Int, dataChecksums: Bool)? {
        guard let pgVersionNumber, let dataChecksums else { return nil }
        return (pgVersionNumber, dataChecksums)
    }
}
