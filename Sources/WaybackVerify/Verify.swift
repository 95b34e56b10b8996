import Foundation
import Logging
import Synchronization
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What `wayback verify` needs.
public struct VerifyConfiguration: Sendable {
    /// Each repository is verified on its own (a copy that is damaged in one is still damaged).
    public var repositories: [Repository]
    public var cluster: String
    public var parallelism: Int
    /// The share of already verified objects read again each run (`verify.resample_percent`).
    public var resamplePercent: Int
    /// Read every object (`--all`).
    public var all: Bool
    /// Only this backup (its chain's objects, read whole) and the WAL it needs (`--backup`).
    public var backup: BackupID?
    /// Holes in the archive older than this are retention's doing (`retention.pitr_window`), not damage.
    public var pitrWindowSeconds: Double
    public var backupLog: BackupLog?
    public var events: EventLog

    public init(repositories: [Repository], cluster: String, parallelism: Int, resamplePercent: Int, all: Bool, backup: BackupID?,
                pitrWindowSeconds: Double, backupLog: BackupLog?, events: EventLog) {
        self.repositories = repositories; self.cluster = cluster; self.parallelism = max(1, parallelism)
        self.resamplePercent = resamplePercent; self.all = all; self.backup = backup; self.pitrWindowSeconds = pitrWindowSeconds
        self.backupLog = backupLog; self.events = events
    }
}

/// One thing found wrong, as data: where, what, and what it costs.
public struct VerifyProblem: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// The repository could not be read at all (nothing is reported absent then).
        case unreachable
        /// A manifest (or its copy) cannot be read or decoded.
        case manifest
        /// A backup's chain lacks a member.
        case chain
        /// An object the manifest names is not in the repository.
        case missing
        /// An object has another size than recorded (truncated, or grown).
        case size
        /// An object's SHA-256, a frame, its decompression or its decryption fails.
        case damaged
        /// A file of a backup does not come out as recorded (size, SHA-256, unchanged entry).
        case file
        /// An archived WAL file is damaged, or is not what its name says.
        case wal
        /// Segments missing from the archive where recovery needs them.
        case walGap = "wal-gap"
        /// A timeline's history file is missing.
        case history
    }
    public var repository: String
    public var kind: Kind
    /// The object's key in the repository.
    public var object: String?
    public var backup: String?
    public var segment: String?
    public var message: String
    /// Backups that cannot be restored from this repository because of it.
    public var breaks: [String]
    /// The part of the recoverable window it costs.
    public var window: String?
}

public struct VerifyBackupResult: Codable, Sendable, Equatable {
    public var id: String
    /// No problem breaks it, and every one of its objects was found sound when last read.
    public var sound: Bool
    public var objects: Int
    public var objectsRead: Int
}

public struct VerifyRepositoryReport: Codable, Sendable {
    public var name: String
    public var backups: [VerifyBackupResult]
    /// The logical dumps (their objects: stored SHA-256, frames, plain SHA-256), as backups are.
    public var dumps: [VerifyBackupResult] = []
    public var walFiles: Int
    public var objectsRead: Int
    public var bytesRead: Int64
    /// Objects verified sound before and not due this run.
    public var objectsNotDue: Int
    public var windows: [RecoveryWindow]
    /// What is worth knowing and is not damage (holes retention made, backups half expired).
    public var notes: [String]
    public var problems: [VerifyProblem]
}

public struct VerifyReport: Codable, Sendable {
    public var repositories: [VerifyRepositoryReport]
    public var problems: [VerifyProblem] { repositories.flatMap(\.problems) }
    public var sound: Bool { problems.isEmpty }
}

/// `wayback verify`: re-reads a repository's backups and WAL archive and checks every checksum,
/// frame and chain, read-only and without the cluster's lock.
public enum Verify {
    public static func run(_ config: VerifyConfiguration, now: Date, logger: Logger, progress: ProgressHandler? = nil) async -> VerifyReport {
        var reports = [VerifyRepositoryReport]()
        var manifests = [String: [BackupManifest]]()
        for repo in config.repositories {
            let v = RepositoryVerifier(repository: repo, config: config, now: now, logger: logger)
            let (report, found) = await v.run(progress: progress)
            reports.append(report)
            manifests[repo.name] = found
        }
        let report = VerifyReport(repositories: reports)
        if let log = config.backupLog { await record(report, manifests: manifests, log: log, now: now) }
        for p in report.problems {
            config.events.emit(.error, .verifyProblem, "repository '\(p.repository)': \(p.message)", repository: p.repository, backup: p.backup, segment: p.segment)
        }
        return report
    }

    /// `verified_at` for each backup found sound (in every repository that holds it and was
    /// read); `failed` with the problem for one damaged in every repository that holds it, and
    /// `partial` with the problem for one damaged in some.
    static func record(_ report: VerifyReport, manifests: [String: [BackupManifest]], log: BackupLog, now: Date) async {
        var byID = [BackupID: BackupManifest]()
        var holders = [BackupID: [String]](), soundIn = [BackupID: [String]]()
        for r in report.repositories {
            for m in manifests[r.name] ?? [] { byID[m.id] = m; holders[m.id, default: []].append(r.name) }
            for b in r.backups where b.sound { if let id = BackupID(b.id) { soundIn[id, default: []].append(r.name) } }
        }
        let readable = report.repositories.filter { r in !r.problems.contains { $0.kind == .unreachable } }.count
        /// The row of one backup or dump, nil when it was not verified in every copy this time.
        func verdict(_ id: String, held: [String], sound: [String], base: BackupLogRow) -> BackupLogRow? {
            let problem = report.problems.first { $0.breaks.contains(id) }
            guard sound.count == held.count || problem != nil else { return nil }
            var row = base
            if let problem {
                row.status = sound.isEmpty ? .failed : .partial
                row.errorMessage = "verify: repository '\(problem.repository)': \(problem.message)"
            } else {
                row.verifiedAt = now
                // Where it is stored is known only when every configured repository was read
                // (then a status a past problem set is put right); otherwise the status stays.
                row.keepsStatus = readable < log.repositories.count
            }
            return row
        }
        var rows = byID.sorted(by: { $0.key < $1.key }).compactMap { id, m in
            verdict(id.rawValue, held: holders[id] ?? [], sound: soundIn[id] ?? [], base: log.row(BackupSummary(m), holders: holders[id] ?? []))
        }
        // Dumps the same way.
        var dumpHolders = [DumpID: [String]](), dumpSound = [DumpID: [String]]()
        for r in report.repositories {
            for d in r.dumps { if let id = DumpID(d.id) { dumpHolders[id, default: []].append(r.name); if d.sound { dumpSound[id, default: []].append(r.name) } } }
        }
        rows += dumpHolders.sorted(by: { $0.key < $1.key }).compactMap { id, held in
            verdict(id.rawValue, held: held, sound: dumpSound[id] ?? [], base: log.row(dump: id, bytes: nil, digests: nil, holders: held))
        }
        await log.write(rows)
    }
}

/// The verification of one repository.
struct RepositoryVerifier: Sendable {
    let repository: Repository
    let config: VerifyConfiguration
    let now: Date
    let logger: Logger

    var driver: any StorageDriver { repository.driver }

    /// Everything found while reading, shared by the workers.
    final class Findings: Sendable {
        struct State {
            var problems = [VerifyProblem]()
            var records = [String: VerifyRecord]()
            var bytesRead: Int64 = 0
            var objectsRead = 0
            var gone = Set<String>()
            /// Objects read in parts: parts still to come, and whether every part was sound.
            var parts = [String: (left: Int, sound: Bool)]()
        }
        let state = Mutex(State())
        /// One problem per damaged object: a pack read in ranges and then for its digest is reported once.
        func add(_ p: VerifyProblem) {
            state.withLock { s in
                if p.kind == .damaged, let o = p.object, s.problems.contains(where: { $0.kind == .damaged && $0.object == o }) { return }
                s.problems.append(p)
            }
        }
        func expect(_ key: String, parts: Int) { state.withLock { $0.parts[key] = (parts, true) } }
        /// One part of an object was read; the object's record is made when its last part is.
        func read(_ key: String, size: Int64, sha256: String?, sound: Bool, at: Date) {
            state.withLock {
                var p = $0.parts[key] ?? (1, true)
                p.left -= 1; p.sound = p.sound && sound
                $0.parts[key] = p
                guard p.left == 0 else { return }
                $0.records[key] = VerifyRecord(size: size, sha256: sha256, verifiedAt: at, sound: p.sound)
                $0.objectsRead += 1
                $0.bytesRead += size
            }
        }
    }

    /// A piece of work: one object to read, or a part of a large pack.
    enum Item: Sendable {
        /// A pack read whole: its SHA-256, and (`range` nil) its frames and files too.
        case pack(BackupManifest, Int)
        /// Only the SHA-256 of a pack whose frames are verified in `packRange`s.
        case packDigest(BackupManifest, Int)
        /// The frames and files of a part of a pack (whole files, at file boundaries), so that
        /// the workers share one large pack (compression can put most of a database in one).
        case packRange(BackupManifest, Int, Range<Int64>, plain: Int64)
        case walCopy(BackupManifest, Int)
        case archived(WALFileName, key: String, size: Int64)
        /// An object of a logical dump, read whole.
        case dumpObject(DumpManifest, Int)
        /// The work it stands for (plain bytes to decode; what sorts the largest first).
        var weight: Int64 {
            switch self {
            case .pack(let m, let i): return m.files.reduce(Int64(0)) { $0 + $1.chunks.filter { $0.object == i }.reduce(Int64(0)) { $0 + Int64($1.raw) } }
            case .packDigest(let m, let i), .walCopy(let m, let i): return m.objects[i].size
            case .packRange(_, _, _, let plain): return plain
            case .archived(_, _, let size): return size
            case .dumpObject(let m, let i): return m.objects[i].plainSize
            }
        }
    }

    /// The parts of a pack for the workers: a pack whose files hold more than `partBytes` of
    /// plain data is read once for its SHA-256 and in parts, each a run of whole files.
    static func items(_ m: BackupManifest, object i: Int, partBytes: Int64) -> [Item] {
        var files = [(start: Int64, end: Int64, plain: Int64)]()
        for f in m.files {
            let chunks = f.chunks.filter { $0.object == i }
            guard let first = chunks.map(\.offset).min(), let last = chunks.map({ $0.offset + Int64($0.length) }).max() else { continue }
            files.append((first, last, chunks.reduce(Int64(0)) { $0 + Int64($1.raw) }))
        }
        files.sort { $0.start < $1.start }
        let total = files.reduce(Int64(0)) { $0 + $1.plain }
        // Parts must not cut a file, and files must not overlap (they never do when written).
        guard total > partBytes, zip(files, files.dropFirst()).allSatisfy({ $0.end <= $1.start }) else { return [.pack(m, i)] }
        var out: [Item] = [.packDigest(m, i)]
        var start: Int64 = 0, plain: Int64 = 0
        for (n, f) in files.enumerated() {
            plain += f.plain
            let isLast = n == files.count - 1
            if plain >= partBytes || isLast {
                let end = isLast ? m.objects[i].size : files[n + 1].start
                out.append(.packRange(m, i, start..<end, plain: plain))
                start = end; plain = 0
            }
        }
        return out
    }

    func problem(_ kind: VerifyProblem.Kind, _ message: String, object: String? = nil, backup: BackupID? = nil, segment: String? = nil) -> VerifyProblem {
        VerifyProblem(repository: repository.name, kind: kind, object: object, backup: backup?.rawValue, segment: segment, message: message, breaks: [], window: nil)
    }

    /// A problem of a logical dump: it breaks that dump alone.
    func problem(_ kind: VerifyProblem.Kind, _ message: String, object: String? = nil, dump: DumpID) -> VerifyProblem {
        VerifyProblem(repository: repository.name, kind: kind, object: object, backup: dump.rawValue, segment: nil, message: message,
                      breaks: [dump.rawValue], window: nil)
    }

    func run(progress: ProgressHandler?) async -> (VerifyRepositoryReport, [BackupManifest]) {
        var report = VerifyRepositoryReport(name: repository.name, backups: [], walFiles: 0, objectsRead: 0, bytesRead: 0, objectsNotDue: 0,
                                            windows: [], notes: [], problems: [])
        let catalog = Catalog(repository: repository, cluster: config.cluster)
        let layout = catalog.layout
        // Never "absent" without looking: a repository that cannot be read is one problem, and
        // nothing in it is reported missing.
        let binding: ClusterBinding, backupListing: [ObjectInfo], walListing: [ObjectInfo], dumpListing: [ObjectInfo]
        do {
            binding = try await catalog.requireBinding()
            backupListing = try await driver.list(prefix: layout.backupsPrefix)
            walListing = try await driver.list(prefix: layout.walPrefix)
            dumpListing = config.backup == nil ? try await driver.list(prefix: layout.dumpsPrefix) : []
        } catch {
            report.problems.append(problem(.unreachable, "cannot read \(repository.description): \(Self.text(error)); nothing in it was verified"))
            return (report, [])
        }
        let findings = Findings()

        // The backups: folders with a manifest (a folder without one is a backup in progress).
        var folders = [BackupID: [String: Int64]]()
        for o in backupListing { if case .backup(let id, let name)? = layout.parse(o.key) { folders[id, default: [:]][name] = o.size } }
        var manifests = [BackupID: BackupManifest]()
        for (id, files) in folders.sorted(by: { $0.key < $1.key }) {
            guard files["manifest.json"] != nil else {
                if files["manifest.copy.json"] != nil {
                    report.notes.append("backup \(id): only its manifest copy is left (an expiry was interrupted; the next 'wayback expire' removes the rest)")
                }
                continue
            }
            var good: BackupManifest?
            for name in ["manifest.json", "manifest.copy.json"] {
                let key = layout.objectKey(id, name)
                guard files[name] != nil else {
                    findings.add(problem(.manifest, "backup \(id) has no \(name); its other copy is used", object: key, backup: id))
                    continue
                }
                do {
                    let m = try SealedJSON.decode(BackupManifest.self, from: try await driver.readAll(key, limit: 1 << 30),
                                                  kind: BackupManifest.kind, name: "\(repository.name):\(key)")
                    if good == nil { good = m }
                } catch {
                    findings.add(problem(.manifest, "\(name) of backup \(id) cannot be read: \(Self.text(error))", object: key, backup: id))
                }
            }
            if let good { manifests[id] = good }
        }
        let all = manifests.values.sorted { $0.id < $1.id }

        // Which backups this run looks at: one chain (`--backup`), or all.
        var scope = all
        if let only = config.backup {
            guard manifests[only] != nil else {
                findings.add(problem(.manifest, "backup \(only) is not in \(repository.description) (or its manifest cannot be read)", backup: only))
                return (finish(report, findings: findings, all: all, scope: [], windows: []), all)
            }
            scope = (try? BackupChains.chain(only, in: manifests)) ?? [manifests[only]!]
        }
        for m in scope {
            do { _ = try BackupChains.chain(m.id, in: manifests) } catch {
                findings.add(problem(.chain, Self.text(error), backup: m.id))
            }
            checkEntries(m, manifests: manifests, findings: findings)
        }

        // The objects: listed sizes first (missing and truncated objects need no reading).
        var candidates = [VerifyCandidate](), items = [String: [Item]]()
        for m in scope {
            let files = folders[m.id] ?? [:]
            for (i, o) in m.objects.enumerated() {
                let key = layout.objectKey(m.id, o.name)
                guard let size = files[o.name] else {
                    findings.add(problem(.missing, "\(o.name) of backup \(m.id) is missing", object: key, backup: m.id)); continue
                }
                guard size == o.size else {
                    findings.add(problem(.size, "\(o.name) of backup \(m.id) has \(size) bytes, \(o.size) recorded (truncated or overwritten)", object: key, backup: m.id))
                    continue
                }
                candidates.append(VerifyCandidate(key: key, group: "backups/\(m.id)", size: size, sha256: o.sha256))
                items[key] = o.name.hasPrefix("wal/") ? [.walCopy(m, i)] : Self.items(m, object: i, partBytes: 64 << 20)
            }
        }
        let dumps = await dumpCandidates(dumpListing, layout: layout, findings: findings)
        for (c, item) in dumps.candidates { candidates.append(c); items[c.key] = [item] }
        var archived = [WALFileName: Int64]()
        for o in walListing { if case .wal(let name)? = layout.parse(o.key) { archived[name] = o.size } }
        report.walFiles = archived.count
        let neededWAL = config.backup.map { _ in Set(scope.flatMap { ownSegments($0) }.map(\.description)) }
        for (name, size) in archived where neededWAL == nil || neededWAL!.contains(name.description) || name.kind == .history {
            let key = layout.walKey(name)
            candidates.append(VerifyCandidate(key: key, group: VerifyRecordStore.group(of: key, layout: layout) ?? "wal", size: size, sha256: nil))
            items[key] = [.archived(name, key: key, size: size)]
        }

        // What is due: new and changed objects, a share of the old (all of one backup's chain with --backup).
        let store = VerifyRecordStore(driver: driver, cluster: config.cluster)
        var records = [String: VerifyRecord]()
        for group in Set(candidates.map(\.group)) { records.merge(await store.load(group).records) { a, _ in a } }
        let due = VerifySelection.choose(candidates, records: records, resamplePercent: config.resamplePercent, all: config.all || config.backup != nil)
        let dueCandidates = candidates.filter { due.contains($0.key) }
        let work = dueCandidates.flatMap { items[$0.key] ?? [] }.sorted { $0.weight > $1.weight }
        report.objectsNotDue = candidates.count - dueCandidates.count
        for c in dueCandidates { findings.expect(c.key, parts: items[c.key]?.count ?? 1) }

        let counter = ByteCounter()
        let total = work.reduce(Int64(0)) { $0 + $1.weight }
        let cursor = WorkCursor(limit: work.count)
        do {
            try await withProgress(phase: "verify \(repository.name)", total: total, counter: counter, interval: 2, handler: progress) {
                await withTaskGroup(of: Void.self) { group in
                    for _ in 0..<config.parallelism {
                        group.addTask {
                            while let n = cursor.next() { await self.verify(work[n], binding: binding, findings: findings, counter: counter) }
                        }
                    }
                }
            }
        } catch {
            findings.add(problem(.unreachable, "verification stopped: \(Self.text(error))"))
        }

        // The WAL: history files, holes where recovery needs WAL, each backup's own WAL.
        let damagedWAL = Set(findings.state.withLock { s in s.problems.filter { $0.kind == .wal }.compactMap(\.segment) })
        let gone = findings.state.withLock { $0.gone }
        let sound = archived.keys.filter { !damagedWAL.contains($0.description) && !gone.contains(layout.walKey($0)) }
        checkWAL(scope: scope, all: all, archive: Set(sound), binding: binding, findings: findings, report: &report)
        var windows = [RecoveryWindow]()
        if let newest = all.last {
            let restorable = RecoverableWindows.restorable(all).filter { m in !findings.state.withLock { $0.problems.contains { $0.backup == m.id.rawValue && $0.kind != .manifest } } }
            if let contents = try? await catalog.archiveContents(segmentSize: newest.walSegmentSize, listed: sound.sorted()) {
                windows = (try? await RecoverableWindows.compute(facts: restorable.map(BackupFacts.init), archive: contents, catalog: catalog)) ?? []
            }
        }

        // Remember what was read (a repository that cannot take the records still was verified).
        let read = findings.state.withLock { $0.records }
        for group in Set(candidates.filter { read[$0.key] != nil }.map(\.group)) {
            var file = await store.load(group)
            for c in candidates where c.group == group { if let r = read[c.key] { file.records[c.key] = r } }
            file.records = file.records.filter { k, _ in candidates.contains { $0.key == k } }
            do { try await store.save(group, file) } catch {
                report.notes.append("the verification records of \(group) could not be written (\(Self.text(error))); the next run reads those objects again")
            }
        }
        if config.backup == nil {
            try? await store.removeStale(keeping: Set(candidates.map(\.group)))
        }
        var done = finish(report, findings: findings, all: all, scope: scope, windows: windows, records: records.merging(read) { _, b in b },
                          candidates: candidates)
        let merged = records.merging(read) { _, b in b }
        done.dumps = dumps.manifests.map { m in
            let keys = candidates.filter { $0.group == "dumps/\(m.id)" }.map(\.key)
            let allSound = keys.count == m.objects.count && keys.allSatisfy { merged[$0]?.sound == true }
            return VerifyBackupResult(id: m.id.rawValue, sound: allSound && !done.problems.contains { $0.breaks.contains(m.id.rawValue) },
                                      objects: m.objects.count, objectsRead: keys.filter { read[$0] != nil }.count)
        }
        return (done, all)
    }

    /// The dumps with a manifest (either copy), and their objects as candidates: a missing or
    /// truncated object is a problem without reading it.
    func dumpCandidates(_ listing: [ObjectInfo], layout: RepositoryLayout,
                        findings: Findings) async -> (manifests: [DumpManifest], candidates: [(VerifyCandidate, Item)]) {
        var folders = [DumpID: [String: Int64]]()
        for o in listing { if case .dump(let id, let name)? = layout.parse(o.key) { folders[id, default: [:]][name] = o.size } }
        var manifests = [DumpManifest](), out = [(VerifyCandidate, Item)]()
        for (id, files) in folders.sorted(by: { $0.key < $1.key }) where files["manifest.json"] != nil {
            var good: DumpManifest?
            for name in ["manifest.json", "manifest.copy.json"] {
                let key = layout.dumpObjectKey(id, name)
                guard files[name] != nil else {
                    findings.add(problem(.manifest, "dump \(id) has no \(name); its other copy is used", object: key, dump: id)); continue
                }
                do {
                    let m = try SealedJSON.decode(DumpManifest.self, from: try await driver.readAll(key, limit: 64 << 20), kind: DumpManifest.kind,
                                                  name: "\(repository.name):\(key)")
                    if good == nil { good = m }
                } catch {
                    findings.add(problem(.manifest, "\(name) of dump \(id) cannot be read: \(Self.text(error))", object: key, dump: id))
                }
            }
            guard let m = good else { continue }
            manifests.append(m)
            for (i, o) in m.objects.enumerated() {
                let key = layout.dumpObjectKey(id, o.name)
                guard let size = files[o.name] else {
                    findings.add(problem(.missing, "\(o.name) of dump \(id) is missing", object: key, dump: id)); continue
                }
                guard size == o.size else {
                    findings.add(problem(.size, "\(o.name) of dump \(id) has \(size) bytes, \(o.size) recorded (truncated or overwritten)", object: key, dump: id))
                    continue
                }
                out.append((VerifyCandidate(key: key, group: "dumps/\(id)", size: size, sha256: o.sha256), .dumpObject(m, i)))
            }
        }
        return (manifests, out)
    }

    /// Fills in the results: what each problem breaks and costs, and each backup's verdict.
    func finish(_ base: VerifyRepositoryReport, findings: Findings, all: [BackupManifest], scope: [BackupManifest], windows: [RecoveryWindow],
                records: [String: VerifyRecord] = [:], candidates: [VerifyCandidate] = []) -> VerifyRepositoryReport {
        var report = base
        let s = findings.state.withLock { $0 }
        report.objectsRead = s.objectsRead
        report.bytesRead = s.bytesRead
        report.windows = windows
        report.problems = s.problems.map { p in
            var p = p
            if let b = p.backup.flatMap({ BackupID($0) }), p.kind != .manifest || all.allSatisfy({ $0.id != b }) {
                p.breaks = ([b] + BackupChains.dependents(of: b, in: all)).map(\.rawValue)
            }
            if p.kind == .walGap || p.kind == .wal || p.kind == .history, p.breaks.isEmpty, let seg = p.segment.flatMap(WALFileName.init) {
                p.window = windowCost(seg, all: all)
            }
            return p
        }.sorted { ($0.kind.rawValue, $0.object ?? "", $0.segment ?? "") < ($1.kind.rawValue, $1.object ?? "", $1.segment ?? "") }
        let broken = Set(report.problems.flatMap(\.breaks))
        report.backups = scope.map { m in
            let keys = candidates.filter { $0.group == "backups/\(m.id)" }.map(\.key)
            let allSound = keys.count == m.objects.count && keys.allSatisfy { records[$0]?.sound == true }
            return VerifyBackupResult(id: m.id.rawValue, sound: !broken.contains(m.id.rawValue) && allSound, objects: m.objects.count,
                                      objectsRead: keys.filter { s.records[$0] != nil }.count)
        }
        return report
    }

    /// The segments a backup needs from its start to its end, on its timeline.
    func ownSegments(_ m: BackupManifest) -> [WALFileName] {
        let size = UInt64(m.walSegmentSize)
        let first = m.startLSN.segmentNumber(segmentSize: size), last = LSN(m.stopLSN.value - 1).segmentNumber(segmentSize: size)
        guard first <= last else { return [] }
        return (first...last).map { WALFileName(timeline: m.timeline, segmentNumber: $0, segmentSize: size) }
    }

    /// What a hole or a damaged file at `segment` costs: the points between the last backup
    /// before it and the first backup after it on its timeline.
    func windowCost(_ segment: WALFileName, all: [BackupManifest]) -> String {
        let size = all.first.map { UInt64($0.walSegmentSize) } ?? 16 << 20
        let n = segment.segmentNumber(segmentSize: size)
        let same = all.filter { $0.timeline == segment.timeline }
        let before = same.filter { $0.stopLSN.segmentNumber(segmentSize: size) <= n }.max { $0.stopLSN < $1.stopLSN }
        let after = same.filter { $0.startLSN.segmentNumber(segmentSize: size) > n }.min { $0.startLSN < $1.startLSN }
        let from = before.map { "the end of backup \($0.id) (\(Format.timestamp($0.stopTime)))" } ?? "the start of the archive"
        let to = after.map { "the end of backup \($0.id) (\(Format.timestamp($0.stopTime)))" } ?? "the end of the archive"
        return "timeline \(segment.timeline): no point from \(from) to \(to) can be recovered from this repository"
    }

    /// Static checks of a manifest's entries: an unchanged file must be its base's version; a
    /// page-level entry must store whole pages for the blocks it lists.
    func checkEntries(_ m: BackupManifest, manifests: [BackupID: BackupManifest], findings: Findings) {
        for f in m.files {
            if let base = f.base, f.chunks.isEmpty, f.blocks == nil {
                guard let b = manifests[base] else { continue }  // the chain check names it
                if let stored = b.file(f.path), stored.size != f.size || stored.sha256 != f.sha256 {
                    findings.add(problem(.file, "file \(f.path) of backup \(m.id) is recorded as unchanged since backup \(base), but with another size or checksum",
                                         backup: m.id))
                }
            } else if let blocks = f.blocks {
                let pages = blocks.reduce(Int64(0)) { $0 + Int64($1.count) }
                if pages * 8192 != f.storedPlainBytes {
                    findings.add(problem(.file, "file \(f.path) of backup \(m.id) lists \(pages) pages but stores \(f.storedPlainBytes) bytes", backup: m.id))
                }
            }
        }
    }

    /// History files, holes where recovery needs WAL, and each backup's own WAL.
    func checkWAL(scope: [BackupManifest], all: [BackupManifest], archive: Set<WALFileName>, binding: ClusterBinding, findings: Findings,
                  report: inout VerifyRepositoryReport) {
        let size = UInt64(binding.walSegmentSize)
        let histories = Set(archive.filter { $0.kind == .history }.map(\.timeline))
        var segments = [UInt32: Set<UInt64>]()
        for n in archive where n.kind == .segment { segments[n.timeline, default: []].insert(n.segmentNumber(segmentSize: size)) }
        for tli in Set(segments.keys).union(all.map(\.timeline)).sorted() where tli > 1 && !histories.contains(tli) {
            let name = WALFileName.history(timeline: tli)
            findings.add(problem(.history, "the history file of timeline \(tli) (\(name)) is not archived; recovery cannot follow timeline \(tli)",
                                 segment: name.description))
        }
        // Each backup reaches consistency from its own WAL copies, or from the archive.
        for m in scope {
            let copies = Set(m.wal.map(\.name))
            let lacking = ownSegments(m).filter { !copies.contains($0.description) && !archive.contains($0) }
            if let first = lacking.first {
                findings.add(problem(.walGap, "backup \(m.id) lacks its own WAL \(first)\(lacking.count > 1 ? " and \(lacking.count - 1) more" : ""): neither copied into the backup nor archived",
                                     backup: m.id, segment: first.description))
            }
        }
        guard config.backup == nil else { return }
        // Holes inside a timeline's archived range: damage when recovery through them is still
        // wanted (after the oldest backup, within the PITR window), retention's doing otherwise.
        for (tli, present) in segments {
            guard let lo = present.min(), let hi = present.max(), hi > lo else { continue }
            var n = lo + 1
            while n < hi {
                guard !present.contains(n) else { n += 1; continue }
                var end = n
                while end + 1 < hi && !present.contains(end + 1) { end += 1 }
                let name = WALFileName(timeline: tli, segmentNumber: n, segmentSize: size)
                let next = all.filter { $0.timeline == tli && $0.startLSN.segmentNumber(segmentSize: size) > end }.min { $0.startLSN < $1.startLSN }
                let recent = next.map { now.timeIntervalSince($0.stopTime) < config.pitrWindowSeconds } ?? true
                let count = end - n + 1
                if recent {
                    findings.add(problem(.walGap, "\(count) WAL segment\(count == 1 ? "" : "s") missing from the archive from \(name) on timeline \(tli)",
                                         segment: name.description))
                } else {
                    report.notes.append("timeline \(tli): \(count) segment(s) from \(name) are not archived, before the PITR window (retention keeps only the WAL of older backups)")
                }
                n = end + 1
            }
        }
    }

    static func text(_ error: any Error) -> String { (error as? WaybackError)?.message ?? String(describing: error) }
}
