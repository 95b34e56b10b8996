import ArgumentParser
import Foundation
import WaybackCore
import WaybackMonitor
import WaybackS3

struct NotifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notify",
        abstract: "Send a test notification to each sink of notifications: (docs/monitoring.md).",
        discussion: """
            Sends one 'test' message to every sink (or to --sink NAME) at once, without retries, and says \
            for each whether it was delivered; exit 0 when all were, else the status of the first failure \
            (4: the sink could not be reached or refused the message, 14: SMTP refused the login, 3: a \
            sink's configuration or secret file). The daemon sends the real notifications.

            Examples:
              wayback notify --test                  # every sink of notifications:
              wayback notify --test --sink ops-mail
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Send a test message (the only thing this command does today).") var test = false
    @Option(help: ArgumentHelp("Only this sink.", valueName: "name")) var sink: String?

    func run() async throws {
        guard test else { throw WaybackError(.usage, "say what to send: 'wayback notify --test' sends a test message to each sink") }
        let config = try GlobalOptions.load(global.configPath)
        var sinks = config.notifications.sinks
        if let sink {
            sinks = sinks.filter { $0.name == sink }
            guard !sinks.isEmpty else {
                throw WaybackError(.usage, "--sink '\(sink)' is not in notifications.sinks; it has \(config.notifications.sinks.map { "'\($0.name)'" }.joined(separator: ", "))")
            }
        }
        guard !sinks.isEmpty else { throw WaybackError(.config, "\(config.path) has no notifications.sinks; add one (docs/monitoring.md)") }
        let logger = Context.logger(config.logLevel.rawValue)
        let alert = Alert(event: .test, cluster: config.cluster.name, time: Date(), severity: "info",
                          message: "a test notification from wayback on \(ProcessInfo.processInfo.hostName): this sink works",
                          details: [.init("sent by", "wayback notify --test")])
        var firstFailure: WaybackError?
        try await HTTPClientPool.with { http in
            let notifier = Notifier(sinks: sinks, http: http, logger: logger)
            for s in sinks {
                do {
                    try await notifier.send(alert, to: s)
                    print("sink '\(s.name)' (\(s.kind.rawValue)): sent")
                } catch {
                    let e = error as? WaybackError ?? WaybackError(.connection, String(describing: error))
                    print("sink '\(s.name)' (\(s.kind.rawValue)): FAILED: \(e.message)")
                    if firstFailure == nil { firstFailure = e }
                }
            }
        }
        if let firstFailure { throw WaybackError(firstFailure.code, "the test notification failed: \(firstFailure.message)") }
    }
}
