import ArgumentParser
import Foundation
import WaybackCatalog
import WaybackCore

struct CatalogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalog",
        abstract: "Work on the backup_logs table (docs/schema.md).",
        subcommands: [CatalogSyncCommand.self])
}

struct CatalogSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Bring backup_logs in line with the repositories.",
        discussion: """
            For after the table was lost, the database that holds it was restored to an earlier point, \
            or writes to it failed (a backup warns and goes on). Creates the table if it is missing. Every \
            backup and logical dump the repositories hold gets its row (complete, or partial when some repository lacks it); \
            rows of backups no repository holds become expired; rows left running by a backup that never \
            finished become failed. Verification and drill columns are kept. Takes the cluster's lock, and \
            refuses while a repository cannot be read (a backup only it holds would look expired).

            Examples:
              wayback catalog sync
              wayback catalog sync --json
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON: {recorded, expired, interrupted} (backup ids), unreadable (dump id: why).") var json = false

    func run() async throws {
        try await CommandRun.with(global.configPath, .catalogSync) { run in try await self.run(run) }
    }

    func run(_ run: CommandRun) async throws {
        let config = run.config
        let repository = try run.repository()
        let binding = try await Catalog(repository: repository, cluster: config.cluster.name).requireBinding()
        let lock = try RepositoryLock.acquire(directory: config.lockPath, cluster: config.cluster.name, systemIdentifier: binding.systemID,
                                              repository: repository, command: "catalog sync")
        defer { lock.release() }
        let catalog = Catalog(repository: repository, cluster: config.cluster.name)
        let result = try await CatalogSync.run(try await run.statusOverview(repository), log: run.backupLog(), now: Date(), logger: run.logger,
                                               dumpManifest: { try await catalog.dumpManifest($0) })
        for (id, why) in result.unreadable.sorted(by: { $0.key < $1.key }) {
            run.events.emit(.warning, .recordFailed, "logical dump \(id) is recorded without checksums: its manifest cannot be read (\(why)); run 'wayback verify --all'")
        }
        if json { try Context.printJSON(result); return }
        print("backup_logs: \(result.recorded.count) row(s) written, \(result.expired.count) marked expired, \(result.interrupted.count) interrupted backup(s) marked failed")
        for (what, ids) in [("written", result.recorded), ("expired", result.expired), ("failed", result.interrupted)] where !ids.isEmpty {
            print("  \(what): \(ids.joined(separator: ", "))")
        }
    }
}
