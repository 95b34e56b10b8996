import Foundation
import WaybackCore
import WaybackStorage

/// The read side of the queue `wal-push` keeps for asynchronous repositories (written by
/// `AsyncSpool` in WaybackArchive): one empty file per queued WAL file and repository
/// (`<spool>/<repository>/<wal file>`), and an `.overflow` mark once the queue passed its limit.
public struct WALQueue: Sendable {
    public let path: String
    public init(path: String) { self.path = path }

    public static let overflowMark = ".overflow"

    public func directory(_ repository: String) -> String { path + "/" + repository }

    /// Queued WAL file names for `repository`, oldest name first.
    public func entries(_ repository: String) -> [String] {
        ((try? FileSystem.list(directory(repository))) ?? []).filter { !$0.hasPrefix(".") }
    }

    /// How many WAL files are queued for `repository`: 0 when it has no queue directory yet;
    /// an error when the directory is there but cannot be read (never "nothing queued" then).
    public func count(_ repository: String) -> Result<Int, WaybackError> {
        do {
            // A logical cluster has no WAL, and no queue.
            guard !path.isEmpty, try FileSystem.status(directory(repository), followLinks: true) != nil else { return .success(0) }
            return .success(try FileSystem.list(directory(repository)).filter { !$0.hasPrefix(".") }.count)
        } catch {
            return .failure(WaybackError.wrap(error, as: .io, "cannot read the WAL queue \(directory(repository))"))
        }
    }

    public func overflowed(_ repository: String) -> Bool {
        (try? FileSystem.status(directory(repository) + "/" + Self.overflowMark)) != nil
    }
}

/// Everything `status` shows, gathered by one function for every caller (the command line, the
/// daemon's pages and checks): the combined report, the recoverable window per timeline (the same
/// the restore plan uses), and each repository's own state with its WAL queue.
public struct StatusOverview: Sendable {
    /// One configured repository, as the overview shows it.
    public struct Member: Sendable {
        public var repository: Repository
        public var type: String
        public var location: String
        public var walPush: String
        public init(repository: Repository, type: String, location: String, walPush: String) {
            self.repository = repository; self.type = type; self.location = location; self.walPush = walPush
        }
    }

    public var report: StatusReport
    /// Every complete backup's summary, oldest first (what the report was made from).
    public var summaries: [BackupSummary]
    public var windows: [RecoveryWindow]
    public var repositories: [RepositoryState]
    /// The logical dumps (from the listings of `dumps/`: complete ones, with a manifest).
    public var dumps: [DumpListing] = []

    /// `catalog` reads all repositories as one; `members` are the same repositories one by one.
    ///
    /// The cost is a few requests per repository whatever the number of backups: its binding, one
    /// listing of its backups folder (which checks every backup's objects), its `StatusIndex`,
    /// one listing of its archive, and the last segments of each timeline for the windows.
    /// Manifests are read only for backups the indexes lack (none when every index is current).
    ///
    /// With `timeout`, a repository that does not answer its look in time is unreachable, and the
    /// rest is read from the others alone (`check` must answer while a repository hangs).
    public static func gather(_ catalog: Catalog, members: [Member], queue: WALQueue, timeout: Double? = nil) async throws -> StatusOverview {
        let cluster = catalog.layout.cluster
        // Without a timeout the binding is read first, through all repositories together (its
        // error is the one that says most); with one, only the repositories that answered are asked.
        let early: ClusterBinding? = timeout == nil ? try await catalog.requireBinding() : nil
        let looks = await withTaskGroup(of: (Int, Look).self) { group in
            for (i, m) in members.enumerated() {
                group.addTask {
                    let one = Catalog(repository: m.repository, cluster: cluster)
                    guard let timeout else { return (i, await Look.take(one)) }
                    do {
                        return (i, try await Deadline.run(timeout, what: "repository '\(m.repository.name)'") { await Look.take(one) })
                    } catch {
                        return (i, Look(error: error))
                    }
                }
            }
            var out = [Look?](repeating: nil, count: members.count)
            for await (i, look) in group { out[i] = look }
            return out.compactMap { $0 }
        }
        let seen = looks.filter { $0.error == nil }
        guard !seen.isEmpty else { throw looks.compactMap(\.error).first ?? WaybackError(.internal, "no repository to read") }
        let answered = zip(members, looks).filter { $0.1.error == nil }.map(\.0.repository)
        let catalog = timeout != nil && seen.count < members.count
            ? Catalog(repository: Repository.combined(answered, events: .collecting(.status)), cluster: cluster) : catalog
        let binding: ClusterBinding
        if let early { binding = early } else { binding = try await catalog.requireBinding() }

        // Each backup's summary from an index that matches its repository's listing, else from
        // its manifest (read once, from whichever repository has it).
        var listed = Set<BackupID>(), known = [BackupID: BackupSummary]()
        for look in seen {
            listed.formUnion(look.manifests.keys)
            for (id, summary) in look.index?.matching(look.manifests) ?? [:] where known[id] == nil { known[id] = summary }
        }
        let summaries = try await StatusIndex.resolve(listed: listed, known: known) { BackupSummary(try await catalog.manifest($0)) }.summaries
        let wal = Set(seen.flatMap(\.wal)).sorted()
        let problems = Catalog.objectProblems(summaries.map { ($0.id, $0.objects.map { ($0.name, $0.size) }) }, listings: seen.map(\.backups), layout: catalog.layout)
        let report = StatusReport(repository: catalog.repository.name, cluster: cluster, binding: binding, summaries: summaries,
                                  problems: problems, wal: wal)
        let windows = try await RecoverableWindows.compute(catalog: catalog, backups: summaries, wal: wal)

        var states = [RepositoryState]()
        for (m, look) in zip(members, looks) {
            var s = RepositoryState(name: m.repository.name, type: m.type, location: m.location, reachable: look.error == nil,
                                    error: look.error.map { ($0 as? WaybackError)?.message ?? String(describing: $0) },
                                    backups: look.manifests.keys.sorted().map(\.rawValue), missingBackups: [],
                                    archive: TimelineRange.summarize(look.wal, segmentSize: binding.walSegmentSize))
            s.missingBackups = report.backups.map(\.id).filter { !s.backups.contains($0) }
            s.storedBytes = look.storedBytes
            s.walPush = m.walPush
            if m.walPush == "async" {
                switch queue.count(m.repository.name) {
                case .success(let n): s.queuedWAL = n
                case .failure(let e): s.queueError = e.message
                }
                s.queueOverflowed = queue.overflowed(m.repository.name)
            }
            states.append(s)
        }
        var overview = StatusOverview(report: report, summaries: summaries, windows: windows, repositories: states)
        overview.dumps = DumpListing.from(zip(members, looks).filter { $0.1.error == nil }.map { ($0.0.repository.name, $0.1.dumps) }, layout: catalog.layout)
        return overview
    }

    /// What one look at one repository found.
    struct Look: Sendable {
        /// The listing of the backups folder.
        var backups = [ObjectInfo]()
        /// Complete backups (those with a manifest) and their manifest's size.
        var manifests = [BackupID: Int64]()
        var index: StatusIndex?
        var wal = [WALFileName]()
        /// The listing of the dumps folder.
        var dumps = [ObjectInfo]()
        /// Bytes of the cluster's backups and WAL in this repository (from the listings).
        var storedBytes: Int64?
        /// Why the repository could not be read (then the rest is empty).
        var error: (any Error)?

        static func take(_ catalog: Catalog) async -> Look {
            var look = Look()
            do {
                _ = try await catalog.requireBinding()
                look.backups = try await catalog.driver.list(prefix: catalog.layout.backupsPrefix)
                look.manifests = StatusIndex.manifestSizes(look.backups, layout: catalog.layout)
                let walObjects = try await catalog.driver.list(prefix: catalog.layout.walPrefix)
                look.wal = walObjects.compactMap { o in
                    if case .wal(let name)? = catalog.layout.parse(o.key) { return name }
                    return nil
                }.sorted()
                look.dumps = try await catalog.driver.list(prefix: catalog.layout.dumpsPrefix)
                look.storedBytes = look.backups.reduce(Int64(0)) { $0 + $1.size } + walObjects.reduce(Int64(0)) { $0 + $1.size }
                    + look.dumps.reduce(Int64(0)) { $0 + $1.size }
                if !look.manifests.isEmpty { look.index = await StatusIndex.read(catalog) }
            } catch {
                return Look(error: error)
            }
            return look
        }
    }
}

/// A logical dump as the listings show it: its databases (from its objects' names), its stored
/// bytes (its objects, as the manifest's `repositoryBytes`), and the repositories that hold it
/// whole (its manifest).
public struct DumpListing: Codable, Sendable, Equatable {
    public var id: DumpID
    public var databases: [String]
    public var bytes: Int64
    public var repositories: [String]
    public init(id: DumpID, databases: [String], bytes: Int64, repositories: [String]) {
        self.id = id; self.databases = databases; self.bytes = bytes; self.repositories = repositories
    }

    public static func from(_ listings: [(repository: String, objects: [ObjectInfo])], layout: RepositoryLayout) -> [DumpListing] {
        var out = [DumpID: DumpListing]()
        for (repository, objects) in listings {
            var complete = Set<DumpID>(), dbs = [DumpID: Set<String>](), bytes = [DumpID: Int64]()
            for o in objects {
                guard case .dump(let id, let name)? = layout.parse(o.key) else { continue }
                if name == "manifest.json" { complete.insert(id) }
                if name.hasPrefix("db/"), name.hasSuffix(".dump"), !name.hasSuffix(".platform.dump") { dbs[id, default: []].insert(String(name.dropFirst(3).dropLast(5))) }
                if name.hasPrefix("db/"), name.hasSuffix("/toc.dat") { dbs[id, default: []].insert(String(name.dropFirst(3).dropLast(8))) }
                if !name.hasPrefix("manifest.") { bytes[id, default: 0] += o.size }
            }
            for id in complete {
                var l = out[id] ?? DumpListing(id: id, databases: (dbs[id] ?? []).sorted(), bytes: bytes[id] ?? 0, repositories: [])
                l.repositories.append(repository)
                out[id] = l
            }
        }
        return out.values.sorted { $0.id < $1.id }
    }
}
