import ArgumentParser
import Foundation
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackStorage

struct RepoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repo",
        abstract: "Work on the configured repositories as a set.",
        subcommands: [RepoSyncCommand.self])
}

struct RepoSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Copy what one repository has and another lacks (backups, logical dumps, WAL), so every copy is complete.",
        discussion: """
            By default every repository is caught up from the others (read in priority order). A backup \
            or dump appears in a repository only once all its objects are there. Every object is checked on the \
            way against the checksum its manifest (or WAL header) records, so damage never spreads; objects \
            that 'wayback verify' found damaged in a repository are replaced by a sound copy from another. Also \
            aborts multipart uploads and removes temporary files that interrupted writes left more than a day ago.

            Examples:
              wayback repo sync                        # every repository from the others
              wayback repo sync --from local --to offsite
              # repair what verify found damaged in 'local'
              wayback repo sync --to local
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Copy only from this repository.") var from: String?
    @Option(help: "Copy only into this repository.") var to: String?
    @Flag(help: "Print JSON.") var json = false

    struct Outcome: Encodable {
        var from: String, to: String, objects: Int, bytes: Int64, backups: [String], repaired: [String]
        /// Backups, dumps and WAL files left out because the source's copy is damaged (or what
        /// they depend on was left out).
        var skipped: [RepositorySync.Skipped]
        var error: String?
    }

    func run() async throws {
        try await CommandRun.with(global.configPath, .sync) { run in try await self.run(run) }
    }

    func run(_ run: CommandRun) async throws {
        let outcomes = try await run.syncRepositories(from: from, to: to)
        if let warning = await run.recordSynced(outcomes) { run.events.emit(.warning, .recordFailed, warning) }
        if json {
            try Context.printJSON(outcomes)
        } else {
            for o in outcomes {
                if let e = o.error { print("\(o.from) -> \(o.to): FAILED: \(e)"); continue }
                let b = o.backups.isEmpty ? "" : "; backups now complete there: \(o.backups.joined(separator: ", "))"
                let r = o.repaired.isEmpty ? "" : "; replaced \(o.repaired.count) object(s) verify had found damaged (run 'wayback verify' to confirm)"
                print("\(o.from) -> \(o.to): copied \(o.objects) object(s), \(Format.bytes(o.bytes))\(b)\(r)")
                for s in o.skipped { print("\(o.from) -> \(o.to): NOT COPIED: \(s.id): \(s.reason)") }
            }
        }
        if let error = Self.failure(outcomes) { throw error }
    }

    /// Why `outcomes` leave a repository behind (exit 15), or nil when every target is up to date.
    static func failure(_ outcomes: [Outcome]) -> WaybackError? {
        let failed = outcomes.filter { $0.error != nil }
        if !failed.isEmpty {
            return WaybackError(.replica, "could not bring \(failed.map { "'\($0.to)'" }.joined(separator: ", ")) up to date: \(failed[0].error!)")
        }
        if let o = outcomes.first(where: { !$0.skipped.isEmpty }), let s = o.skipped.first {
            let more = o.skipped.count > 1 ? " (and \(o.skipped.count - 1) more, listed above)" : ""
            return WaybackError(.replica, "\(s.id)\(more) was not copied into '\(o.to)' (everything else was): \(s.reason). "
                                + "Run 'wayback verify --all --repository \(o.from)'; a backup damaged in every repository cannot be repaired: take a new one")
        }
        return nil
    }
}

extension CommandRun {
    /// `repo sync`: each repository (or `to`) caught up from the others (or `from`), read in
    /// priority order; one outcome per target. Throws only for a wrong name or a single repository.
    func syncRepositories(from: String?, to: String?, clock: any WaybackClock = SystemClock()) async throws -> [RepoSyncCommand.Outcome] {
        let all = try repositoryList()
        for name in [from, to].compactMap({ $0 }) where !all.contains(where: { $0.name == name }) {
            throw WaybackError(.usage, "no repository is named '\(name)'; the configuration has \(all.map(\.name).joined(separator: ", "))")
        }
        guard all.count > 1 else { throw WaybackError(.usage, "the configuration has one repository; repo sync needs two or more") }
        if let from, from == to { throw WaybackError(.usage, "--from and --to name the same repository") }
        var outcomes = [RepoSyncCommand.Outcome]()
        for target in all where to == nil || target.name == to {
            let sources = all.filter { $0.name != target.name && (from == nil || $0.name == from) }
            guard !sources.isEmpty else { continue }
            let source = Repository.combined(sources, events: events)
            do {
                _ = try await target.driver.removeLeftovers(olderThan: clock.now.addingTimeInterval(-86400))
                let r = try await RepositorySync.run(cluster: config.cluster.name, from: source, to: target, parallelism: config.parallelism, logger: logger,
                                                     events: events, clock: clock)
                outcomes.append(.init(from: source.name, to: target.name, objects: r.objects, bytes: r.bytes, backups: r.backups, repaired: r.repaired,
                                      skipped: r.skipped, error: nil))
            } catch {
                let e = WaybackError.wrap(error, as: .io, "sync into \(target.name) failed")
                outcomes.append(.init(from: source.name, to: target.name, objects: 0, bytes: 0, backups: [], repaired: [], skipped: [], error: e.message))
            }
        }
        return outcomes
    }

    /// After a sync that completed backups or dumps somewhere: their `backup_logs` rows (a
    /// `partial` one becomes `complete`, the new location is filled in), as `catalog sync` writes
    /// them, under the cluster's lock. Never fails the sync: what could not be done is returned
    /// as a warning (nil: done, or nothing to do).
    func recordSynced(_ outcomes: [RepoSyncCommand.Outcome], clock: any WaybackClock = SystemClock()) async -> String? {
        guard config.catalog != nil, outcomes.contains(where: { !$0.backups.isEmpty }) else { return nil }
        do {
            let repository = try repository()
            let lock = try await lockByBinding(repository, command: "repo sync")
            defer { lock.release() }
            let catalog = Catalog(repository: repository, cluster: config.cluster.name)
            _ = try await CatalogSync.run(try await statusOverview(repository), log: backupLog(), now: clock.now, logger: logger,
                                          dumpManifest: { try await catalog.dumpManifest($0) })
            return nil
        } catch {
            return "backup_logs was not brought up to date after the sync (\((error as? WaybackError)?.message ?? String(describing: error))); run 'wayback catalog sync'"
        }
    }
}
