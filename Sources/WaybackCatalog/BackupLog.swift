import Foundation
import Logging
import WaybackCore
import WaybackPostgres

/// Where a repository is, for the `location_local` and `location_s3` columns.
public struct RepositoryAddress: Sendable, Equatable {
    public var name: String
    public var isS3: Bool
    /// The directory of a local repository; `s3://bucket/prefix` of an S3 one (never a secret).
    public var base: String
    public init(name: String, isS3: Bool, base: String) { self.name = name; self.isS3 = isS3; self.base = base }

    /// The address of a backup's folder.
    public func location(of id: BackupID, layout: RepositoryLayout) -> String {
        (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/" + layout.backupPrefix(id)
    }

    /// The address of a dump's folder.
    public func location(of id: DumpID, layout: RepositoryLayout) -> String {
        (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/" + layout.dumpPrefix(id)
    }
}

/// The one writer of `backup_logs`: `backup` (and the daemon's backup job), `expire`, `catalog
/// sync`, and the verifications and drills to come all record through it, so the mapping from a
/// backup to its row is in one place. The repository is the truth: a row that cannot be written
/// never fails the operation; it is a `record-failed` warning naming the problem and the fix
/// (`wayback catalog sync` brings the table in line later). A nil `settings` (`catalog.enabled:
/// false`) writes nothing.
public struct BackupLog: Sendable {
    public let settings: CatalogSettings?
    public let repositories: [RepositoryAddress]
    public let layout: RepositoryLayout
    let events: EventLog
    let logger: Logger

    public init(settings: CatalogSettings?, repositories: [RepositoryAddress], cluster: String, events: EventLog, logger: Logger) {
        self.settings = settings; self.repositories = repositories; self.layout = RepositoryLayout(cluster: cluster)
        self.events = events; self.logger = logger
    }

    /// The row of a backup stored in the repositories named `holders`: complete when every
    /// configured repository has it, else partial.
    public func row(_ s: BackupSummary, holders: [String]) -> BackupLogRow {
        let complete = repositories.allSatisfy { holders.contains($0.name) }
        var r = BackupLogRow(backupID: s.id.rawValue, backupType: s.type.rawValue, backupTimestamp: s.startTime, status: complete ? .complete : .partial)
        r.sizeBytes = s.sizes.repository
        r.md5 = s.digests.md5
        r.sha256 = s.digests.sha256
        let held = repositories.filter { holders.contains($0.name) }
        r.locationLocal = held.first { !$0.isS3 }?.location(of: s.id, layout: layout)
        r.locationS3 = held.first { $0.isS3 }?.location(of: s.id, layout: layout)
        return r
    }

    /// The row of a logical dump (type `logical`) stored in the repositories named `holders`;
    /// nil `digests` leaves the table's checksums as they are.
    public func row(dump id: DumpID, bytes: Int64?, digests: BackupManifest.Digests?, holders: [String]) -> BackupLogRow {
        let complete = repositories.allSatisfy { holders.contains($0.name) }
        var r = BackupLogRow(backupID: id.rawValue, backupType: DumpID.typeName, backupTimestamp: id.time, status: complete ? .complete : .partial)
        r.sizeBytes = bytes
        r.md5 = digests?.md5
        r.sha256 = digests?.sha256
        let held = repositories.filter { holders.contains($0.name) }
        r.locationLocal = held.first { !$0.isS3 }?.location(of: id, layout: layout)
        r.locationS3 = held.first { $0.isS3 }?.location(of: id, layout: layout)
        return r
    }

    /// A dump began, finished (its manifest stored in `holders`), or failed.
    public func dumpStarted(_ id: DumpID) async {
        await write([BackupLogRow(backupID: id.rawValue, backupType: DumpID.typeName, backupTimestamp: id.time, status: .running)])
    }

    public func dumpFinished(_ m: DumpManifest, holders: [String]) async {
        await write([row(dump: m.id, bytes: m.repositoryBytes, digests: m.digests, holders: holders)])
    }

    public func dumpFailed(_ id: DumpID, error: String) async {
        var r = BackupLogRow(backupID: id.rawValue, backupType: DumpID.typeName, backupTimestamp: id.time, status: .failed)
        r.errorMessage = error
        await write([r])
    }

    /// Dumps removed by an expiry.
    public func expired(dumps: [DumpID], at time: Date) async {
        await write(dumps.map { id in
            var r = BackupLogRow(backupID: id.rawValue, backupType: DumpID.typeName, backupTimestamp: id.time, status: .expired)
            r.purgedAt = time
            return r
        })
    }

    /// A backup began (its folder and id are known).
    public func started(_ id: BackupID, type: BackupType, at start: Date) async {
        await write([BackupLogRow(backupID: id.rawValue, backupType: type.rawValue, backupTimestamp: start, status: .running)])
    }

    /// A backup's manifest is stored in `holders`.
    public func finished(_ m: BackupManifest, holders: [String]) async {
        await write([row(BackupSummary(m), holders: holders)])
    }

    /// A backup failed; `error` is the message the command printed (never holds a secret).
    public func failed(_ id: BackupID, type: BackupType, at start: Date, error: String) async {
        var r = BackupLogRow(backupID: id.rawValue, backupType: type.rawValue, backupTimestamp: start, status: .failed)
        r.errorMessage = error
        await write([r])
    }

    /// Backups removed by an expiry.
    public func expired(_ backups: [BackupSummary], at time: Date) async {
        await write(backups.map { s in
            var r = BackupLogRow(backupID: s.id.rawValue, backupType: s.type.rawValue, backupTimestamp: s.startTime, status: .expired)
            r.purgedAt = time
            return r
        })
    }

    /// A restore drill of the backup ran: `recovery_tested` says whether it passed; the test's
    /// time and recovery time are those of the last drill. The status stays as the repositories say.
    public func drilled(_ m: BackupManifest, passed: Bool, at time: Date, recoverySeconds: Double) async {
        var r = row(BackupSummary(m), holders: repositories.map(\.name))
        r.sizeBytes = nil; r.locationLocal = nil; r.locationS3 = nil
        r.recoveryTested = passed
        r.testTimestamp = time
        r.recoveryTimeSeconds = Int(recoverySeconds.rounded(.up))
        r.keepsStatus = true
        await write([r])
    }

    /// A drill of a dump ran (the same columns as `drilled`).
    public func drilled(dump id: DumpID, passed: Bool, at time: Date, recoverySeconds: Double) async {
        var r = row(dump: id, bytes: nil, digests: nil, holders: repositories.map(\.name))
        r.locationLocal = nil; r.locationS3 = nil
        r.recoveryTested = passed
        r.testTimestamp = time
        r.recoveryTimeSeconds = Int(recoverySeconds.rounded(.up))
        r.keepsStatus = true
        await write([r])
    }

    /// Writes `rows` in one session; false (and a warning) when the catalog cannot be written.
    @discardableResult
    public func write(_ rows: [BackupLogRow]) async -> Bool {
        guard let settings, !rows.isEmpty else { return true }
        do {
            let store = try await CatalogStore.open(settings, logger: logger)
            do {
                for r in rows { try await store.record(r) }
                await store.close()
            } catch {
                await store.close()
                throw error
            }
            return true
        } catch {
            let reason = (error as? WaybackError)?.message ?? String(describing: error)
            let which = rows.count == 1 ? "the row of backup \(rows[0].backupID)" : "\(rows.count) rows"
            events.emit(.warning, .recordFailed,
                        "backup_logs: \(which) not written (\(reason)); the repository is unaffected; fix the catalog (catalog.connection, or 'wayback init' to create the table) and run 'wayback catalog sync'",
                        backup: rows.count == 1 ? rows[0].backupID : nil)
            return false
        }
    }
}

/// `wayback catalog sync`: brings `backup_logs` in line with the repositories, after the table
/// was lost, the database that holds it was restored to an earlier point, or writes failed.
public enum CatalogSync {
    public struct Result: Sendable, Equatable, Codable {
        /// Rows written for backups the repositories hold (new, or differing from the table).
        public var recorded = [String]()
        /// Rows of backups no repository holds any more, marked expired.
        public var expired = [String]()
        /// Rows left `running` by a backup that never finished, marked failed.
        public var interrupted = [String]()
        /// Dumps whose manifest cannot be read (damaged or gone in every repository): their rows
        /// are written without checksums, and the next sync tries again. Id and why.
        public var unreadable = [String: String]()
        public init() {}
    }

    /// Pure: the rows to write, given the table and what the repositories hold (`holders`: the
    /// repositories that hold each backup). Verification and drill columns are never touched.
    /// Dumps count as backups (type `logical`); `dumpDigests` are those read from the manifests of
    /// dumps the table lacks checksums for (a nil digest keeps the table's).
    public static func plan(table: [BackupLogRow], backups: [BackupSummary], holders: [BackupID: [String]], dumps: [DumpListing] = [],
                            dumpDigests: [DumpID: BackupManifest.Digests] = [:], log: BackupLog,
                            now: Date) -> (rows: [BackupLogRow], result: Result) {
        var out = [BackupLogRow](), result = Result()
        let existing = Dictionary(table.map { ($0.backupID, $0) }, uniquingKeysWith: { a, _ in a })
        let wanted = backups.map { log.row($0, holders: holders[$0.id] ?? []) }
            + dumps.map { log.row(dump: $0.id, bytes: $0.bytes, digests: dumpDigests[$0.id], holders: $0.repositories) }
        for want in wanted {
            if let have = existing[want.backupID], have.status == want.status, have.sizeBytes == want.sizeBytes,
               want.md5 == nil || have.md5 == want.md5, want.sha256 == nil || have.sha256 == want.sha256,
               have.locationLocal == want.locationLocal, have.locationS3 == want.locationS3,
               have.backupType == want.backupType, have.errorMessage == nil {
                continue
            }
            out.append(want)
            result.recorded.append(want.backupID)
        }
        let held = Set(wanted.map(\.backupID))
        for r in table where !held.contains(r.backupID) {
            switch r.status {
            case .complete, .partial:
                var e = r
                e.status = .expired
                e.purgedAt = r.purgedAt ?? now
                e.errorMessage = nil
                out.append(e)
                result.expired.append(r.backupID)
            case .running:
                var f = r
                f.status = .failed
                f.errorMessage = "interrupted: the backup never finished (no manifest in any repository); found by 'wayback catalog sync'"
                out.append(f)
                result.interrupted.append(r.backupID)
            case .failed, .expired:
                continue
            }
        }
        return (out, result)
    }

    /// Reads the table (creating it if missing) and writes the plan. Run under the cluster's lock,
    /// so that no backup is running. Throws when the catalog cannot be read or written.
    /// `dumpManifest` reads a dump's manifest, for the checksums of dumps the table lacks them for.
    public static func run(_ overview: StatusOverview, log: BackupLog, now: Date, logger: Logger,
                           dumpManifest: @Sendable (DumpID) async throws -> DumpManifest) async throws -> Result {
        guard let settings = log.settings else {
            throw WaybackError(.config, "the catalog is switched off (catalog.enabled: false); switch it on to sync backup_logs")
        }
        // A backup that only an unreadable repository holds would look expired: never guess.
        if let down = overview.repositories.first(where: { !$0.reachable }) {
            throw WaybackError(.repository, "repository '\(down.name)' cannot be read (\(down.error ?? "unknown error")), so catalog sync cannot tell which backups it holds; fix it (or remove it from the configuration) and run 'wayback catalog sync' again")
        }
        var holders = [BackupID: [String]]()
        for repo in overview.repositories {
            for id in repo.backups { if let b = BackupID(id) { holders[b, default: []].append(repo.name) } }
        }
        let backups = overview.summaries
        let store = try await CatalogStore.open(settings, logger: logger)
        do {
            try await store.migrate()
            let table = try await store.rows()
            let checked = Set(table.filter { $0.sha256 != nil }.map(\.backupID))
            var digests = [DumpID: BackupManifest.Digests]()
            var unreadable = [String: String]()
            for d in overview.dumps where !checked.contains(d.id.rawValue) {
                // One damaged dump leaves its checksums unknown; it does not stop the sync of the rest.
                do { digests[d.id] = try await dumpManifest(d.id).digests } catch let e as WaybackError where e.code == .corrupt || e.code == .notFound {
                    unreadable[d.id.rawValue] = e.message
                }
            }
            let (rows, planned) = plan(table: table, backups: backups, holders: holders, dumps: overview.dumps, dumpDigests: digests,
                                      log: log, now: now)
            for r in rows { try await store.record(r) }
            await store.close()
            var result = planned
            result.unreadable = unreadable
            return result
        } catch {
            await store.close()
            throw error
        }
    }
}
