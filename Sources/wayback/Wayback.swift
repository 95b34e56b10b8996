import ArgumentParser
import Foundation
import WaybackCore

@main
struct Main {
    static func main() async {
        await CLI.run(Array(CommandLine.arguments.dropFirst()))
    }
}

struct Wayback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wayback",
        abstract: "PostgreSQL backup and point-in-time recovery.",
        discussion: "Exit statuses are listed in docs/exit-codes.md.",
        version: WaybackVersion.string,
        subcommands: [InitCommand.self, WalPushCommand.self, WalFetchCommand.self, BackupCommand.self,
                      RestoreCommand.self, StatusCommand.self, DemoCommand.self])
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
        return [args[i]] + leading + Array(args[(i + 1)...])
    }

    /// Parses, runs, and maps every error to its documented exit status.
    static func run(_ arguments: [String]) async {
        var command: any ParsableCommand
        do {
            command = try Wayback.parseAsRoot(hoistGlobalOptions(arguments))
        } catch {
            exitForParserError(error)
        }
        do {
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
            exit(0)
        } catch let e as WaybackError {
            FileHandle.standardError.write(Data("wayback: error: \(e.message)\n".utf8))
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

    /// Help and version go to standard output with status 0; every other parser error is a
    /// usage error (status 2).
    static func exitForParserError(_ error: any Error) -> Never {
        let message = Wayback.fullMessage(for: error)
        if Wayback.exitCode(for: error) == .success {
            print(message)
            exit(0)
        }
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(WaybackError.Code.usage.rawValue)
    }
}
