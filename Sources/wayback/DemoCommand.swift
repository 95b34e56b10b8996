import ArgumentParser
import Foundation
import WaybackCore
import WaybackDemo

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Back up a throwaway local cluster and restore it, end to end.",
        discussion: """
            Creates a cluster and a repository in a work directory, loads data, takes a full backup, writes more, restores to the latest point, starts the copy and compares the data. Cleans up unless --keep.

            Examples:
              wayback demo
              wayback demo --keep --workdir /var/tmp/demo    # then docs/training.md
            """)
    @Flag(help: "Leave the work directory, clusters stopped, for inspection.") var keep = false
    @Option(help: "Work directory (default: a new one under /var/tmp).") var workdir: String?
    @Option(help: "pgbench scale of the sample data.") var scale: Int = 5

    func run() async throws {
        let ok = try await Demo.run(.init(workdir: workdir, keep: keep, scale: scale, executable: Context.executablePath,
                                           logger: Context.logger("warning"),
                                           pgBinDirectory: ProcessInfo.processInfo.environment["WAYBACK_PG_BIN"]))
        if !ok { throw ExitCode(1) }
    }
}
