import ArgumentParser
import Foundation
import WaybackCatalog
import WaybackCore
import WaybackStorage
import WaybackVerify

extension CommandRun {
    /// What `verify` (the command and the daemon's job) reads, from the configuration.
    func verifyConfiguration(all: Bool, backup: BackupID?, repository name: String?) throws -> VerifyConfiguration {
        var repositories = try repositoryList()
        if let name {
            repositories = repositories.filter { $0.name == name }
            guard !repositories.isEmpty else {
                throw WaybackError(.usage, "--repository '\(name)' is not in the configuration; it has \(config.repositories.map { "'\($0.name)'" }.joined(separator: ", "))")
            }
        }
        return VerifyConfiguration(repositories: repositories, cluster: config.cluster.name, parallelism: config.parallelism,
                                   resamplePercent: config.verifyResamplePercent, all: all, backup: backup,
                                   pitrWindowSeconds: config.retention.pitrWindow, backupLog: backupLog(), events: events)
    }
}

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Re-read the backups, logical dumps and WAL archive of each repository and check every checksum (docs/verification.md).",
        discussion: """
            Read-only, without the cluster's lock: it runs next to backups and wal-push. By default it reads \
            what is new since the last run plus verify.resample_percent of the rest (the objects read longest \
            ago), so that everything is read again over a cycle; --all reads everything. Exit 0 when all is \
            sound, 7 when something is damaged or missing (each problem names the object, the backups it \
            breaks and the part of the recoverable window it costs).

            Examples:
              wayback verify                    # what is new, damaged before, or due
              wayback verify --all              # every object (before an audit)
              wayback verify --repository offsite --json
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Read every object, not only the new ones and the resampled share.") var all = false
    @Option(help: ArgumentHelp("Verify this backup (its whole chain, read in full) and the WAL it needs.", valueName: "id")) var backup: String?
    @Option(help: ArgumentHelp("Verify this repository only.", valueName: "name")) var repository: String?
    @Flag(help: "Print JSON (docs/verification.md).") var json = false

    func run() async throws {
        try await CommandRun.with(global.configPath, .verify) { run in try await self.run(run) }
    }

    func run(_ run: CommandRun) async throws {
        var id: BackupID?
        if let backup {
            guard let b = BackupID(backup) else { throw WaybackError(.usage, "--backup '\(backup)' is not a backup id; 'wayback status' lists them") }
            id = b
        }
        let config = try run.verifyConfiguration(all: all, backup: id, repository: repository)
        let report = await Verify.run(config, now: SystemClock().now, logger: run.logger,
                                      progress: json ? nil : Context.progressHandler(logger: run.logger))
        if json { try Context.printJSON(report) } else { Self.print(report) }
        if report.repositories.allSatisfy({ r in r.problems.contains { $0.kind == .unreachable } }) {
            throw WaybackError(.repository, "no repository could be verified: \(report.problems.first?.message ?? "")")
        }
        if !report.sound {
            // With another repository to copy from, repo sync replaces what is damaged or missing.
            let damagedIn = report.problems.filter { [.damaged, .wal, .missing].contains($0.kind) }.map(\.repository).min()
            let fix = damagedIn.flatMap { report.repositories.count < 2 ? nil : $0 }
                .map { "; restores read what is damaged from another repository, and 'wayback repo sync --to \($0)' replaces it with a sound copy" } ?? ""
            throw WaybackError(.corrupt, "verify found \(report.problems.count) problem\(report.problems.count == 1 ? "" : "s") (listed above)\(fix)")
        }
    }

    static func print(_ report: VerifyReport) {
        for r in report.repositories {
            Swift.print("repository '\(r.name)': \(r.objectsRead) object(s) read (\(Format.bytes(r.bytesRead))), \(r.objectsNotDue) verified before and not due, \(r.walFiles) WAL file(s) archived")
            for b in r.backups {
                Swift.print("  backup \(b.id): \(b.sound ? "sound" : "NOT SOUND") (\(b.objectsRead) of \(b.objects) object(s) read now)")
            }
            for d in r.dumps {
                Swift.print("  dump \(d.id): \(d.sound ? "sound" : "NOT SOUND") (\(d.objectsRead) of \(d.objects) object(s) read now)")
            }
            for w in r.windows { Swift.print("  recoverable: \(w.text)") }
            for n in r.notes { Swift.print("  note: \(n)") }
            for p in r.problems {
                Swift.print("  PROBLEM (\(p.kind.rawValue)): \(p.message)")
                if !p.breaks.isEmpty {
                    let what = p.breaks.allSatisfy { DumpID($0) != nil } ? "dump" : "backup"
                    Swift.print("    breaks \(what)\(p.breaks.count == 1 ? "" : "s") \(p.breaks.joined(separator: ", "))")
                }
                if let w = p.window { Swift.print("    costs: \(w)") }
            }
        }
        Swift.print(report.sound ? "verify: all sound" : "verify: \(report.problems.count) problem(s)")
    }
}
