import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Synchronization
import WaybackCore
import WaybackS3

/// One sink of `notifications.sinks`: where its notifications go and which events it wants.
/// Secrets (a Slack URL, a webhook's signing secret, an SMTP password) are named by file or
/// environment variable and read when sending, never kept here or logged.
public struct SinkSettings: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case slack, webhook, email }
    public var name: String
    public var kind: Kind
    public var events: Set<AlertEvent>
    /// webhook: its URL (not a secret; a URL holding a token belongs in url_file).
    public var url: String?
    /// slack, webhook: the URL from a file or an environment variable.
    public var urlFile: String?
    public var urlEnv: String?
    /// webhook: the HMAC-SHA256 signing secret's file.
    public var secretFile: String?
    /// email: the server and the message's addresses (the password from a file or variable).
    public var smtp: SMTPSettings?
    public var passwordFile: String?
    public var passwordEnv: String?
    public init(name: String, kind: Kind, events: Set<AlertEvent>) { self.name = name; self.kind = kind; self.events = events }

    public func wants(_ e: AlertEvent) -> Bool { e == .test || events.contains(e) }
}

/// Delivers notifications without ever holding up whoever posts them: `post` queues and returns;
/// `run` (owned by the daemon) sends each to every sink that wants it, with retries and backoff;
/// a sink that starts failing is logged once, and once when it works again.
public final class Notifier: Sendable {
    let sinks: [SinkSettings]
    let http: HTTPClientPool
    let logger: Logger
    let environment: [String: String]
    let retryDelays: [Double]
    let queue = Mutex<(items: [Alert], dropped: Int)>(([], 0))
    let failing = Mutex<Set<String>>([])
    let inFlight = Mutex<Int>(0)
    public static let queueLimit = 1000

    public init(sinks: [SinkSettings], http: HTTPClientPool, logger: Logger, environment: [String: String] = ProcessInfo.processInfo.environment,
                retryDelays: [Double] = [2, 10, 60, 300]) {
        self.sinks = sinks; self.http = http; self.logger = logger; self.environment = environment; self.retryDelays = retryDelays
    }

    /// Queues `alerts` (the oldest are dropped past `queueLimit`, and that is logged).
    public func post(_ alerts: [Alert]) {
        guard !alerts.isEmpty, !sinks.isEmpty else { return }
        let dropped = queue.withLock { q -> Int in
            q.items += alerts
            let over = max(0, q.items.count - Self.queueLimit)
            q.items.removeFirst(over)
            return over
        }
        if dropped > 0 { logger.warning("the notification queue is full: \(dropped) older notification(s) dropped") }
    }

    /// Sends what is queued until cancelled (the daemon's graceful shutdown); at most `width`
    /// deliveries at a time, each retried on its own.
    public func run(width: Int = 4) async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let batch = queue.withLock { q in defer { q.items = [] }; return q.items }
                for alert in batch {
                    for sink in sinks where sink.wants(alert.event) {
                        while inFlight.withLock({ $0 }) >= width && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(50)) }
                        inFlight.withLock { $0 += 1 }
                        group.addTask {
                            await self.deliver(alert, to: sink)
                            self.inFlight.withLock { $0 -= 1 }
                        }
                    }
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
            group.cancelAll()
        }
    }

    /// Whether nothing is queued or being delivered (tests, `notify`).
    public var idle: Bool { queue.withLock { $0.items.isEmpty } && inFlight.withLock { $0 } == 0 }

    /// One alert to one sink, retried after each of `retryDelays`.
    func deliver(_ alert: Alert, to sink: SinkSettings) async {
        var attempt = 0
        while true {
            do {
                try await send(alert, to: sink)
                if failing.withLock({ $0.remove(sink.name) }) != nil {
                    logger.notice("notifications to sink '\(sink.name)' work again")
                }
                return
            } catch {
                let reason = (error as? WaybackError)?.message ?? String(describing: error)
                if Task.isCancelled {
                    logger.notice("a \(alert.event.rawValue) notification to sink '\(sink.name)' was not delivered: the daemon is stopping")
                    return
                }
                if failing.withLock({ $0.insert(sink.name).inserted }) {
                    logger.warning("notifications to sink '\(sink.name)' (\(sink.kind.rawValue)) are failing: \(reason); they are retried")
                }
                guard attempt < retryDelays.count, !Task.isCancelled else {
                    logger.error("a \(alert.event.rawValue) notification to sink '\(sink.name)' was given up after \(attempt + 1) attempt(s): \(reason)")
                    return
                }
                try? await Task.sleep(for: .milliseconds(Int64(retryDelays[attempt] * 1000)))
                attempt += 1
            }
        }
    }

    /// Sends one alert now (`wayback notify --test` and each delivery attempt).
    public func send(_ alert: Alert, to sink: SinkSettings) async throws {
        switch sink.kind {
        case .slack:
            try await post(try url(sink), body: SlackMessage.payload(alert), headers: [:], sink: sink)
        case .webhook:
            let body = WebhookMessage.body(alert)
            var headers = [String: String]()
            if let file = sink.secretFile {
                let secret = try Self.secret(file: file, sink: sink.name, what: "secret_file")
                headers[WebhookMessage.signatureHeader] = WebhookMessage.signature(body, secret: Array(secret.utf8))
            }
            try await post(try url(sink), body: body, headers: headers, sink: sink)
        case .email:
            guard var smtp = sink.smtp else { throw WaybackError(.config, "sink '\(sink.name)' has no SMTP settings") }
            if let f = sink.passwordFile { smtp.password = try Self.secret(file: f, sink: sink.name, what: "password_file") }
            else if let e = sink.passwordEnv {
                guard let v = environment[e], !v.isEmpty else { throw WaybackError(.config, "sink '\(sink.name)': the environment variable \(e) (password_env) is not set") }
                smtp.password = v
            }
            try await SMTPClient.send(EmailMessage.render(alert, from: smtp.from, to: smtp.to, now: alert.time), settings: smtp)
        }
    }

    func url(_ sink: SinkSettings) throws -> String {
        if let u = sink.url { return u }
        if let f = sink.urlFile { return try Self.secret(file: f, sink: sink.name, what: "url_file") }
        if let e = sink.urlEnv {
            guard let v = environment[e], !v.isEmpty else { throw WaybackError(.config, "sink '\(sink.name)': the environment variable \(e) (url_env) is not set") }
            return v
        }
        throw WaybackError(.config, "sink '\(sink.name)' has no URL: set url_file or url_env")
    }

    static func secret(file: String, sink: String, what: String) throws -> String {
        try SecretFile.read(file, what: "sink '\(sink)': \(what)")
    }

    /// Where a URL points, without its path or query (which may hold a token): for errors.
    static func origin(_ url: String) -> String {
        guard let c = URLComponents(string: url), let host = c.host else { return "the sink's URL" }
        return "\(c.scheme ?? "http")://\(host)\(c.port.map { ":\($0)" } ?? "")"
    }

    func post(_ url: String, body: [UInt8], headers: [String: String], sink: SinkSettings) async throws {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "user-agent", value: "wayback")
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let response: HTTPClientResponse
        do {
            response = try await http.client(caFile: nil).execute(request, timeout: .seconds(15))
        } catch {
            throw WaybackError(.connection, "sink '\(sink.name)': \(Self.origin(url)) cannot be reached (\(String(describing: error).prefix(200)))")
        }
        guard (200..<300).contains(Int(response.status.code)) else {
            let text = String(buffer: (try? await response.body.collect(upTo: 4096)) ?? ByteBuffer())
            throw WaybackError(.connection, "sink '\(sink.name)': \(Self.origin(url)) answered \(response.status.code) \(text.prefix(200))")
        }
        _ = try? await response.body.collect(upTo: 1 << 16)
    }
}

/// A secret kept in a file (a Slack URL, a signing secret, an SMTP password, the listener's
/// token): a regular file, not a symbolic link, readable by its owner alone, and not empty.
public enum SecretFile {
    public static func read(_ path: String, what: String) throws -> String {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            throw WaybackError(.config, "\(what) \(path) cannot be read (\(String(cString: strerror(errno)))); it must be a file readable by the daemon's user")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw WaybackError(.config, "\(what) \(path) is not a regular file (a symbolic link or a directory); point it at the file itself")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw WaybackError(.config, "\(what) \(path) can be read by others (mode \(String(st.st_mode & 0o777, radix: 8))); run 'chmod 600 \(path)'")
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw WaybackError(.config, "\(what) \(path) cannot be read as text; it must be readable by the daemon's user")
        }
        let v = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !v.isEmpty else { throw WaybackError(.config, "\(what) \(path) is empty; put the secret in it") }
        return v
    }
}
