import ArgumentParser
import Foundation
import Logging
import Synchronization
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackS3
import WaybackStorage

struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Configuration file (also WAYBACK_CONFIG).", valueName: "path"))
    var config: String?

    var configPath: String { Self.configPath(config) }

    static func configPath(_ option: String?) -> String {
        FileSystem_absolute(option ?? ProcessInfo.processInfo.environment["WAYBACK_CONFIG"] ?? ConfigLoader.defaultPath)
    }

    func load() throws -> WaybackConfiguration { try Self.load(configPath) }

    static func load(_ path: String) throws -> WaybackConfiguration {
        let c = try ConfigLoader.load(path: path, environment: ProcessInfo.processInfo.environment)
        for w in c.warnings { FileHandle.standardError.write(Data("wayback: warning: \(w)\n".utf8)) }
        return c
    }
}

func FileSystem_absolute(_ p: String) -> String {
    p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
}

/// What one command owns while it runs: its configuration, logger, events (logged as they happen)
/// and HTTP clients (shut down when the command ends, whether it returns or throws). The daemon
/// makes one of these per job in the same way.
struct CommandRun: Sendable {
    let config: WaybackConfiguration
    let logger: Logger
    let events: EventLog
    let http: HTTPClientPool

    /// The job's repositories as one (made anew per run: a repository dropped in one job is
    /// written again in the next).
    func repository() throws -> Repository { try config.repository(logger: logger, http: http, events: events) }

    func repositoryList(only: Set<String>? = nil) throws -> [Repository] {
        try config.repositoryList(logger: logger, http: http, only: only)
    }

    /// Everything `status` shows (`StatusOverview.gather` over the configured repositories).
    func statusOverview(_ set: Repository? = nil, timeout: Double? = nil) async throws -> StatusOverview {
        let repository = try set ?? repository()
        let members = zip(repository.members, config.repositories).map {
            StatusOverview.Member(repository: $0, type: $1.type.rawValue, location: $1.path, walPush: $1.walPush.rawValue)
        }
        return try await StatusOverview.gather(Catalog(repository: repository, cluster: config.cluster.name), members: members,
                                               queue: WALQueue(path: config.archive.spoolPath), timeout: timeout)
    }

    /// The writer of `backup_logs` (writes nothing with `catalog.enabled: false`).
    func backupLog() -> BackupLog {
        BackupLog(settings: config.catalog,
                  repositories: config.repositories.map { RepositoryAddress(name: $0.name, isS3: $0.type == .s3, base: $0.path) },
                  cluster: config.cluster.name, events: events, logger: logger)
    }

    static func with<T>(_ configPath: String, _ operation: WaybackEvent.Operation,
                        _ body: (CommandRun) async throws -> T) async throws -> T {
        let config = try GlobalOptions.load(configPath)
        let logger = Context.logger(config.logLevel.rawValue)
        let events = EventLog.logging(operation, cluster: config.cluster.name, to: logger)
        return try await HTTPClientPool.with { http in
            try await body(CommandRun(config: config, logger: logger, events: events, http: http))
        }
    }
}

enum Context {
    /// A logger writing to standard error at the configured level.
    static func logger(_ level: String, label: String = "wayback") -> Logger {
        var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = Logger.Level(rawValue: level) ?? .info
        return logger
    }

    /// The absolute path of this executable (for archive_command and restore_command lines).
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// How PostgreSQL calls wayback with this configuration file.
    static func waybackCommand(configPath: String) -> String {
        "\(quoteIfNeeded(executablePath)) --config \(quoteIfNeeded(configPath))"
    }

    static func quoteIfNeeded(_ s: String) -> String {
        s.contains(where: { $0 == " " || $0 == "\"" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\\\"") + "\"" : s
    }

    /// Progress on a terminal: one rewritten line; otherwise a log line now and then.
    static func progressHandler(logger: Logger) -> ProgressHandler {
        let tty = isatty(STDERR_FILENO) == 1
        let lastLog = Mutex(0.0)
        return { snap in
            if tty {
                FileHandle.standardError.write(Data("\r\(snap.line)\u{1B}[K".utf8))
                if snap.fraction >= 1 { FileHandle.standardError.write(Data("\n".utf8)) }
            } else {
                // Not a terminal: a log line every 10 seconds (and at the end) is enough.
                let due = lastLog.withLock { last -> Bool in
                    guard snap.elapsedSeconds - last >= 10 || snap.fraction >= 1 else { return false }
                    last = snap.elapsedSeconds
                    return true
                }
                if due { logger.info("\(snap.line)") }
            }
        }
    }

    /// Throws `.replica` when a write to one of several repositories failed during the command
    /// (the other copies are complete and valid).
    static func requireEveryRepository(_ repository: Repository, what: String) throws {
        guard let r = repository.driver as? ReplicatedStorage, !r.failures.isEmpty else { return }
        let failed = r.failures.map { "'\($0.repository)' (\($0.error.message))" }.joined(separator: ", ")
        let good = r.replicas.map(\.name).filter { n in !r.failures.contains { $0.repository == n } }.map { "'\($0)'" }.joined(separator: ", ")
        throw WaybackError(.replica, "\(what) is complete in \(good) but failed in \(failed); the complete copies are valid. When the repository works again, run 'wayback repo sync'")
    }

    static func printJSON<T: Encodable>(_ value: T) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        enc.dateEncodingStrategy = .custom { d, e in var c = e.singleValueContainer(); try c.encode(Format.timestamp(d)) }
        print(String(decoding: try enc.encode(value), as: UTF8.self))
    }
}
