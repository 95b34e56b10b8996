import ArgumentParser
import Foundation
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackRetention
import WaybackStorage

extension CommandRun {
    /// Each repository with the policy it is kept by.
    func expiryMembers(_ repository: Repository) -> [ExpiryConfiguration.Member] {
        zip(repository.members, config.repositories).map { ExpiryConfiguration.Member(repository: $0, policy: $1.retention) }
    }

    /// The cluster's lock, keyed by the system identifier of the repositories' binding.
    func lockByBinding(_ repository: Repository, command: String) async throws -> RepositoryLock {
        let binding = try await Catalog(repository: repository, cluster: config.cluster.name).requireBinding()
        return try RepositoryLock.acquire(directory: config.lockPath, cluster: config.cluster.name, systemIdentifier: binding.systemID,
                                          repository: repository, command: command)
    }
}

struct ExpireCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "expire",
        abstract: "Remove the backups and WAL the retention policy no longer keeps (docs/retention.md).",
        discussion: """
            Prints the plan: for each backup and logical dump, kept (with every reason) or expired; the WAL removed; the \
            bytes freed per repository. Then applies it under the cluster's lock: each expired backup's \
            manifest goes before its data, so an interrupted expiry never leaves a backup that looks \
            complete; the next run removes what is left. An expiry that would remove more than half of a \
            repository's complete backups needs --force.

            Examples:
              wayback expire --dry-run      # why each backup is kept or would go
              wayback expire
              wayback expire --at 2027-01-01 --dry-run    # what goes by then
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print the plan; remove nothing.") var dryRun = false
    @Flag(help: "Print JSON (docs/retention.md).") var json = false
    @Flag(help: "Apply an expiry that removes more than half of a repository's complete backups.") var force = false
    @Option(help: ArgumentHelp("Plan as if it were this time (with --dry-run): '2027-01-01 03:00', ISO 8601, or a time with a zone.", valueName: "time"))
    var at: String?

    func validate() throws {
        if at != nil && !dryRun { throw ValidationError("--at plans as if it were another time, so it needs --dry-run") }
    }

    func run() async throws {
        try await CommandRun.with(global.configPath, .expire) { run in try await self.run(run) }
    }

    func run(_ run: CommandRun) async throws {
        var now = Date()
        if let at {
            guard let micros = Format.parseInstant(at) else {
                throw WaybackError(.usage, "--at '\(at)' is not a time; write e.g. '2027-01-01 03:00:00+00'")
            }
            now = Date(timeIntervalSince1970: Double(micros) / 1_000_000)
        }
        let repository = try run.repository()
        let lock = try await run.lockByBinding(repository, command: dryRun ? "expire --dry-run" : "expire")
        defer { lock.release() }
        let config = ExpiryConfiguration(members: run.expiryMembers(repository), cluster: run.config.cluster.name,
                                         lockDirectory: run.config.lockPath, dryRun: dryRun, force: force, events: run.events,
                                         backupLog: run.backupLog())
        let report = await Expiry.run(config, now: now, logger: run.logger)
        if json {
            try Context.printJSON(ExpireOutput(report))
        } else {
            Self.print(report)
        }
        let failed = report.repositories.filter { $0.error != nil }
        if failed.count == report.repositories.count, let first = failed.first?.error {
            throw WaybackError(report.repositories.count == 1 && first.contains("--force") ? .expiryRefused : .repository, first)
        }
        if let refused = failed.first(where: { $0.error?.contains("--force") == true }) {
            throw WaybackError(.expiryRefused, refused.error!)
        }
        if let f = failed.first {
            throw WaybackError(.replica, "expire ran in \(report.repositories.filter { $0.error == nil }.map { "'\($0.name)'" }.joined(separator: ", ")) but not in '\(f.name)': \(f.error!)")
        }
    }

    static func print(_ report: ExpiryReport) {
        let verb = report.dryRun ? "would expire" : "expired"
        Swift.print("expire at \(Format.timestamp(report.at))\(report.dryRun ? " (dry run: nothing removed)" : "")")
        for r in report.repositories {
            Swift.print("repository '\(r.name)':")
            if let e = r.error { Swift.print("  NOT EXPIRED: \(e)"); continue }
            guard let plan = r.plan else { continue }
            if plan.decisions.isEmpty { Swift.print("  no backups") }
            for d in plan.decisions + (r.dumps?.decisions ?? []) {
                let what = d.action == .keep ? "keep   " : "EXPIRE "
                let when = d.type == DumpID.typeName ? "started" : "ended"
                Swift.print("  \(what) \(d.id)  \(d.type)  \(when) \(Format.timestamp(d.stopTime))\(d.reasons.isEmpty ? "" : "  (\(d.reasons.joined(separator: "; ")))")")
            }
            if plan.needsForce { Swift.print("  NEEDS --force: it removes \(plan.expired.count) of \(plan.decisions.count) complete backups (more than half)") }
            if let p = r.dumps, p.needsForce { Swift.print("  NEEDS --force: it removes \(p.expired.count) of \(p.decisions.count) logical dumps (more than half)") }
            for w in r.wal { Swift.print("  \(verb) WAL timeline \(w.timeline): \(w.first) .. \(w.last) (\(w.files) files)") }
            if r.leftovers > 0 { Swift.print("  \(verb) \(r.leftovers) objects an interrupted expiry left") }
            Swift.print("  \(report.dryRun ? "would free" : "freed") \(Format.bytes(r.freedBytes))")
        }
    }
}

/// `expire --json`: every backup once (expired when no repository keeps it; reasons prefixed
/// by repository when there are several), the WAL ranges, bytes freed per repository, and each
/// repository's own plan.
struct ExpireOutput: Encodable {
    struct Backup: Encodable { var id: String; var action: String; var reasons: [String] }
    struct WAL: Encodable { var repository: String; var timeline: UInt32; var first: String; var last: String; var files: Int }
    var at: Date
    var dryRun: Bool
    var backups: [Backup]
    var wal: [WAL]
    var freedBytes: [String: Int64]
    var repositories: [ExpiryReport.PerRepository]

    init(_ report: ExpiryReport) {
        at = report.at
        dryRun = report.dryRun
        repositories = report.repositories
        let several = report.repositories.count > 1
        var byID = [String: Backup]()
        var order = [String]()
        for r in report.repositories {
            for d in (r.plan?.decisions ?? []) + (r.dumps?.decisions ?? []) {
                if byID[d.id] == nil { order.append(d.id); byID[d.id] = Backup(id: d.id, action: "expire", reasons: []) }
                if d.action == .keep { byID[d.id]!.action = "keep" }
                byID[d.id]!.reasons += d.reasons.map { several ? "\(r.name): \($0)" : $0 }
            }
        }
        backups = order.sorted().map { byID[$0]! }
        wal = report.repositories.flatMap { r in r.wal.map { WAL(repository: r.name, timeline: $0.timeline, first: $0.first, last: $0.last, files: $0.files) } }
        freedBytes = Dictionary(report.repositories.map { ($0.name, $0.freedBytes) }, uniquingKeysWith: { a, _ in a })
    }
}

struct PinCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pin",
        abstract: "Keep a backup or a logical dump whatever the retention policy says (for ever, or until a time).",
        discussion: """
            expire keeps a pinned backup and what it needs (its chain, its WAL), or a pinned logical \
            dump; with --until, only until then.

            Examples:
              wayback pin 20261206-020000F
              wayback pin 20261206-020000F --until 2027-06-30
              wayback pin 20261206-030000L     # a logical dump, before a migration
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The backup or dump id ('wayback status' lists them).") var id: String
    @Option(help: ArgumentHelp("Keep it until this time ('2027-06-30', '2027-06-30 12:00:00+00').", valueName: "time")) var until: String?

    func run() async throws {
        try await CommandRun.with(global.configPath, .expire) { run in
            let target = try PinTarget(id)
            var untilDate: Date?
            if let until {
                guard let micros = Format.parseInstant(until) else { throw WaybackError(.usage, "--until '\(until)' is not a time; write e.g. '2027-06-30 00:00:00+00'") }
                untilDate = Date(timeIntervalSince1970: Double(micros) / 1_000_000)
            }
            let repository = try run.repository()
            let lock = try await run.lockByBinding(repository, command: "pin")
            defer { lock.release() }
            let catalog = Catalog(repository: repository, cluster: run.config.cluster.name)
            switch target {
            case .backup(let backup): try await catalog.pin(backup, until: untilDate, now: Date())
            case .dump(let dump): try await catalog.pin(dump, until: untilDate, now: Date())
            }
            try Context.requireEveryRepository(repository, what: "the pin of \(target)")
            print("pinned \(id)" + (untilDate.map { " until \(Format.timestamp($0))" } ?? ""))
        }
    }
}

struct UnpinCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unpin", abstract: "Let the retention policy decide about a pinned backup or logical dump again.",
        discussion: """
            The next expire applies the policy to it as to any other backup or dump.

            Examples:
              wayback unpin 20261206-020000F
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The backup or dump id.") var id: String

    func run() async throws {
        try await CommandRun.with(global.configPath, .expire) { run in
            let target = try PinTarget(id)
            let repository = try run.repository()
            let lock = try await run.lockByBinding(repository, command: "unpin")
            defer { lock.release() }
            let catalog = Catalog(repository: repository, cluster: run.config.cluster.name)
            switch target {
            case .backup(let backup): try await catalog.unpin(backup)
            case .dump(let dump): try await catalog.unpin(dump)
            }
            print("unpinned \(id)")
        }
    }
}

/// What `pin` and `unpin` name: a backup (`...F`, `...D`, `...I`) or a logical dump (`...L`).
enum PinTarget: CustomStringConvertible {
    case backup(BackupID)
    case dump(DumpID)

    init(_ id: String) throws {
        if let b = BackupID(id) { self = .backup(b) } else if let d = DumpID(id) { self = .dump(d) } else {
            throw WaybackError(.usage, "'\(id)' is not a backup id (like 20261206-020000F) or a logical dump id (like 20261206-030000L)")
        }
    }

    var description: String {
        switch self {
        case .backup(let b): "backup \(b)"
        case .dump(let d): "logical dump \(d)"
        }
    }
}
