import Foundation
import Logging
import WaybackCatalog
import WaybackCore
import WaybackStorage

/// The leftover of an interrupted backup, which the next backup of the same type and reference
/// continues: it keeps the folder (and id), reuses every file whose copy is still valid
/// (`PackIndex.Entry.stillValid`) from packs that are complete in every repository and whose
/// SHA-256 checks again, and copies the rest into packs of a new run.
struct ResumePoint: Sendable {
    var id: BackupID
    /// The packs that passed their checks, in the order their files refer to them.
    var packs: [BackupManifest.StoredObject]
    /// By path: the pack (index into `packs`) and the entry.
    var entries: [String: (pack: Int, entry: PackIndex.Entry)]
    /// The run number for the new packs' names.
    var run: Int

    /// The newest interrupted backup, if it matches `decision`; nil otherwise (the caller removes it).
    static func find(catalog: Catalog, decision: BackupChains.Decision, events: EventLog, logger: Logger) async throws -> ResumePoint? {
        guard let id = try await catalog.incompleteBackupIDs().last else { return nil }
        guard id.rawValue.last == decision.type.letter else {
            logger.info("not resuming interrupted backup \(id): this backup is a \(decision.type)")
            return nil
        }
        let indexes = await catalog.packIndexes(id)
        let names = try await catalog.repository.driver.list(prefix: catalog.layout.objectKey(id, "pack/")).compactMap { o -> String? in
            guard case .backup(id, let name)? = catalog.layout.parse(o.key), name.hasPrefix("pack/") else { return nil }
            return String(name.dropFirst("pack/".count))
        }
        let run = 1 + names.compactMap { n -> Int? in
            guard n.hasPrefix("r"), let dash = n.firstIndex(of: "-") else { return 0 }
            return Int(n[n.index(after: n.startIndex)..<dash])
        }.max()!
        var point = ResumePoint(id: id, packs: [], entries: [:], run: run)
        for index in indexes.sorted(by: { $0.pack.name < $1.pack.name }) {
            guard index.type == decision.type, index.reference == decision.reference else {
                logger.info("not resuming interrupted backup \(id): it was a \(index.type) on \(index.reference?.rawValue ?? "nothing")")
                return nil
            }
            guard await verify(index.pack, backup: id, catalog: catalog, events: events, logger: logger) else { continue }
            let n = point.packs.count
            point.packs.append(index.pack)
            for e in index.entries { point.entries[e.file.path] = (n, e) }
        }
        guard !point.packs.isEmpty else { return nil }
        return point
    }

    /// A pack is reused only when every repository has it whole and its bytes hash to the
    /// SHA-256 its index recorded (read from the first repository that has it).
    static func verify(_ pack: BackupManifest.StoredObject, backup: BackupID, catalog: Catalog, events: EventLog, logger: Logger) async -> Bool {
        let key = catalog.layout.objectKey(backup, pack.name)
        for member in catalog.repository.members {
            guard let info = try? await member.driver.info(key), info.size == pack.size else {
                logger.info("not reusing \(pack.name) of interrupted backup \(backup): incomplete in \(member.description)")
                return false
            }
        }
        do {
            let sha = try await catalog.repository.driver.withReader(key, range: nil) { reader in
                var h = SHA256Hasher()
                while true {
                    let chunk = try await reader.read(maxLength: 1 << 20)
                    if chunk.isEmpty { break }
                    h.update(chunk)
                }
                return h.finalizeHex()
            }
            if sha == pack.sha256 { return true }
            events.emit(.warning, .resumeSkipped, "not reusing \(pack.name) of interrupted backup \(backup): it fails its SHA-256 check", backup: backup.rawValue)
        } catch {
            events.emit(.warning, .resumeSkipped, "not reusing \(pack.name) of interrupted backup \(backup): \(error)", backup: backup.rawValue)
        }
        return false
    }

    /// Splits the scanned files into those reused (entries with chunks naming `packs` indices)
    /// and those to copy.
    func split(_ files: [DataDirectoryScan.FileItem]) -> (reused: [PackIndex.Entry], copy: [DataDirectoryScan.FileItem]) {
        var reused = [PackIndex.Entry](), copy = [DataDirectoryScan.FileItem]()
        for f in files {
            if let (pack, e) = entries[f.path], e.stillValid(size: f.size, mtimeNanoseconds: f.mtimeNanoseconds) {
                var entry = e
                entry.file.mode = f.mode
                entry.file.chunks = e.file.chunks.map { var c = $0; c.object = pack; return c }
                reused.append(entry)
            } else {
                copy.append(f)
            }
        }
        return (reused, copy)
    }
}
