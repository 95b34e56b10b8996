import ArgumentParser
import Foundation
import WaybackArchive
import WaybackConfig
import WaybackCore

@main
struct Main {
    /// Synchronous on purpose: a `wal-push` whose segment the daemon stored ahead is answered here,
    /// before the concurrency runtime starts its threads (which costs more than the whole check).
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if case .push(let path, let config)? = CLI.ArchiveCall(arguments),
           PushAhead.takeBeforeConfiguration(walPath: path, configPath: GlobalOptions.configPath(config),
                                             environment: ProcessInfo.processInfo.environment) {
            exit(0)
        }
        Task { await CLI.run(arguments) }  // exits with the command's status
        dispatchMain()
    }
}

struct Wayback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wayback",
        abstract: "PostgreSQL backup and point-in-time recovery.",
        usage: "wayback [--config <path>] <subcommand> [<options>]",
        discussion: """
            --config <path>: the configuration file, for every command, before or after its name \
            (also WAYBACK_CONFIG; default \(ConfigLoader.defaultPath)). Exit statuses are listed in docs/exit-codes.md.

            Examples:
              # check the cluster and bind the repositories (once, and after adding one)
              wayback init
              # a backup now, and what there is
              wayback backup --type incr
              wayback status
              # the plan of a restore to a point in time (writes nothing)
              wayback restore --to-time '2026-12-06 09:59:00' --dry-run
              # every option of one command (also: man wayback-restore)
              wayback help restore
            """,
        version: WaybackVersion.string,
        subcommands: [InitCommand.self, WalPushCommand.self, WalFetchCommand.self, WalPrefetchCommand.self, WalDrainCommand.self,
                      BackupCommand.self, RestoreCommand.self, StatusCommand.self, RepoCommand.self, CatalogCommand.self,
                      ExpireCommand.self, PinCommand.self, UnpinCommand.self, VerifyCommand.self, DrillCommand.self, ReportCommand.self, CheckCommand.self, NotifyCommand.self, DumpCommand.self, RestoreDumpCommand.self, DaemonCommand.self, ScheduleCommand.self, DemoCommand.self])

    /// The names a first argument may have.
    static var commandNames: Set<String> {
        Set(configuration.subcommands.map { $0._commandName } + ["help"])
    }

    /// Commands that are groups of subcommands (`repo sync`, `catalog sync`).
    static var commandGroups: Set<String> {
        Set(configuration.subcommands.filter { !$0.configuration.subcommands.isEmpty }.map { $0._commandName })
    }
}

enum WaybackVersion {
    static let string = "0.1.0"
}

enum CLI {
    /// `--config PATH` is global: accepted before the subcommand too (`wayback --config F wal-push %p`),
    /// by moving it behind the subcommand name, where the option group parses it.
    static func hoistGlobalOptions(_ args: [String]) -> [String] {
        var leading = [String]()
        var i = 0
        while i < args.count {
            if args[i] == "--config", i + 1 < args.count {
                leading += [args[i], args[i + 1]]; i += 2
            } else if args[i].hasPrefix("--config=") {
                leading.append(args[i]); i += 1
            } else {
                break
            }
        }
        guard !leading.isEmpty, i < args.count, !args[i].hasPrefix("-") else { return args }
        // Command groups (`repo sync`, `catalog sync`): behind the whole command path.
        let path = Wayback.commandGroups.contains(args[i]) && i + 1 < args.count && !args[i + 1].hasPrefix("-") ? 2 : 1
        return Array(args[i..<(i + path)]) + leading + Array(args[(i + path)...])
    }

    /// The two commands PostgreSQL starts once per WAL file, in their plain forms
    /// (`[--config F] wal-push PATH`, `[--config F] wal-fetch NAME DEST`). They skip the argument
    /// parser, whose start-up (reflection over every command) costs milliseconds per call; any other
    /// spelling (`--help`, extra options) goes through the parser as usual.
    enum ArchiveCall: Equatable {
        case push(path: String, config: String?)
        case fetch(name: String, destination: String, config: String?)

        init?(_ args: [String]) {
            var config: String?
            var rest = [String]()
            var i = 0
            while i < args.count {
                let a = args[i]
                if a == "--config", i + 1 < args.count, config == nil {
                    config = args[i + 1]; i += 2
                } else if a.hasPrefix("--config="), config == nil {
                    config = String(a.dropFirst("--config=".count)); i += 1
                } else if a.hasPrefix("-") {
                    return nil
                } else {
                    rest.append(a); i += 1
                }
            }
            switch rest.first {
            case "wal-push" where rest.count == 2: self = .push(path: rest[1], config: config)
            case "wal-fetch" where rest.count == 3: self = .fetch(name: rest[1], destination: rest[2], config: config)
            default: return nil
            }
        }

        func run() async throws {
            switch self {
            case .push(let path, let config):
                try await WalPushCommand.push(path: path, configPath: GlobalOptions.configPath(config))
            case .fetch(let name, let destination, let config):
                try await WalFetchCommand.fetch(name: name, destination: destination, configPath: GlobalOptions.configPath(config))
            }
        }
    }

    /// Parses, runs, and maps every error to its documented exit status.
    static func run(_ arguments: [String]) async {
        var command: (any ParsableCommand)?
        let archiveCall = ArchiveCall(arguments)
        if archiveCall == nil, let name = firstCommand(arguments), !Wayback.commandNames.contains(name) {
            FileHandle.standardError.write(Data("wayback: error: '\(name)' is not a wayback command; 'wayback --help' lists them\n".utf8))
            exit(WaybackError.Code.usage.rawValue)
        }
        if archiveCall == nil {
            do {
                command = try Wayback.parseAsRoot(hoistGlobalOptions(arguments))
            } catch {
                exitForParserError(error)
            }
        }
        do {
            if let archiveCall {
                try await archiveCall.run()
            } else if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command?.run()
            }
            exit(0)
        } catch let e as WaybackError {
            // PostgreSQL asks restore_command for files that may not exist (the next segment at
            // the end of the archive, history files of timelines not yet made): a plain notice.
            if case .fetch = archiveCall, e.code == .notFound {
                FileHandle.standardError.write(Data("wayback wal-fetch: \(e.message) (exit 1 tells PostgreSQL so)\n".utf8))
            } else {
                FileHandle.standardError.write(Data("wayback: error: \(e.message)\n".utf8))
            }
            exit(e.exitStatus)
        } catch let e as ExitCode {
            exit(e.rawValue)
        } catch let e as ValidationError {
            FileHandle.standardError.write(Data("wayback: error: \(e.message)\n".utf8))
            exit(WaybackError.Code.usage.rawValue)
        } catch {
            // Help and version requests, and parser errors raised while running.
            exitForParserError(error)
        }
    }

    /// The first argument that is not `--config PATH`: the command name (nil when there is none,
    /// or when an option comes first).
    static func firstCommand(_ args: [String]) -> String? {
        var i = 0
        while i < args.count {
            if args[i] == "--config" { i += 2; continue }
            if args[i].hasPrefix("--config=") { i += 1; continue }
            return args[i].hasPrefix("-") ? nil : args[i]
        }
        return nil
    }

    /// Help and version go to standard output with status 0; every other parser error is a
    /// usage error (status 2), told as every error is (`wayback: error: ...`), then the usage.
    static func exitForParserError(_ error: any Error) -> Never {
        let message = Wayback.fullMessage(for: error)
        if Wayback.exitCode(for: error) == .success {
            print(message)
            exit(0)
        }
        let text = message.hasPrefix("Error: ") ? "wayback: error: " + message.dropFirst("Error: ".count) : message
        FileHandle.standardError.write(Data((text + "\n").utf8))
        exit(WaybackError.Code.usage.rawValue)
    }
}
