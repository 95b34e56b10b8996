import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import WaybackCore

/// A small SMTP client (RFC 5321): plain, STARTTLS or implicit TLS, AUTH PLAIN or LOGIN, one
/// message to several recipients. No library for it is in the package mirror.
public struct SMTPSettings: Sendable, Equatable {
    public enum Security: String, Sendable, CaseIterable { case none, starttls, tls }
    public var host: String
    public var port: Int
    public var security: Security
    public var username: String?
    /// Resolved when sending (from `password_file` or `password_env`), never kept in a log.
    public var password: String?
    public var from: String
    public var to: [String]
    /// Trust this CA for the server's certificate (nil: the system's roots).
    public var caFile: String?
    public var timeoutSeconds: Double = 30
    public init(host: String, port: Int, security: Security, username: String?, password: String?, from: String, to: [String], caFile: String?) {
        self.host = host; self.port = port; self.security = security; self.username = username; self.password = password
        self.from = from; self.to = to; self.caFile = caFile
    }
}

public enum SMTPClient {
    /// Sends `message` (headers and body, CRLF line ends, as `EmailMessage.render` makes it).
    public static func send(_ message: String, settings s: SMTPSettings) async throws {
        let conn = try await Connection.open(s)
        do {
            try await conn.expect([220], "the greeting")
            var ehlo = try await conn.command("EHLO wayback", [250])
            if s.security == .starttls {
                guard ehlo.lines.contains(where: { $0.uppercased().hasPrefix("STARTTLS") }) else {
                    throw WaybackError(.connection, "the SMTP server \(s.host):\(s.port) does not offer STARTTLS; set tls: tls for implicit TLS, or tls: none on a trusted network")
                }
                _ = try await conn.command("STARTTLS", [220])
                try await conn.startTLS(s)
                ehlo = try await conn.command("EHLO wayback", [250])
            }
            if let user = s.username {
                guard let password = s.password else {
                    throw WaybackError(.config, "the email sink has a username but no password (password_file or password_env)")
                }
                let auth = ehlo.lines.first { $0.uppercased().hasPrefix("AUTH") }?.uppercased() ?? ""
                if auth.contains("PLAIN") || !auth.contains("LOGIN") {
                    let token = Data(([0] + Array(user.utf8) + [0] + Array(password.utf8))).base64EncodedString()
                    _ = try await conn.command("AUTH PLAIN " + token, [235], redacted: "AUTH PLAIN")
                } else {
                    _ = try await conn.command("AUTH LOGIN", [334])
                    _ = try await conn.command(Data(user.utf8).base64EncodedString(), [334], redacted: "the user name")
                    _ = try await conn.command(Data(password.utf8).base64EncodedString(), [235], redacted: "the password")
                }
            }
            _ = try await conn.command("MAIL FROM:<\(s.from)>", [250])
            for r in s.to { _ = try await conn.command("RCPT TO:<\(r)>", [250, 251]) }
            _ = try await conn.command("DATA", [354])
            // Dot-stuffing: a line that starts with '.' gets another.
            let body = message.components(separatedBy: "\r\n").map { $0.hasPrefix(".") ? "." + $0 : $0 }.joined(separator: "\r\n")
            _ = try await conn.command(body + "\r\n.", [250], redacted: "the message")
            _ = try? await conn.command("QUIT", [221])
            await conn.close()
        } catch {
            await conn.close()
            throw error
        }
    }

    struct Response { var code: Int; var lines: [String] }

    final class Connection: @unchecked Sendable {
        let channel: any Channel
        let collector: Collector
        let settings: SMTPSettings

        init(channel: any Channel, collector: Collector, settings: SMTPSettings) {
            self.channel = channel; self.collector = collector; self.settings = settings
        }

        static func tlsContext(_ s: SMTPSettings) throws -> NIOSSLContext {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let ca = s.caFile {
                guard FileManager.default.isReadableFile(atPath: ca) else {
                    throw WaybackError(.config, "the email sink's ca_file \(ca) cannot be read")
                }
                tls.trustRoots = .file(ca)
            }
            return try NIOSSLContext(configuration: tls)
        }

        static func open(_ s: SMTPSettings) async throws -> Connection {
            let collector = Collector()
            let implicit = s.security == .tls ? try tlsContext(s) : nil
            let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(Int64(max(1, s.timeoutSeconds))))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let implicit {
                            try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: implicit, serverHostname: Self.sni(s.host)))
                        }
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder()))
                        try channel.pipeline.syncOperations.addHandler(collector)
                    }
                }
            do {
                let channel = try await bootstrap.connect(host: s.host, port: s.port).get()
                return Connection(channel: channel, collector: collector, settings: s)
            } catch {
                throw WaybackError(.connection, "cannot connect to the SMTP server \(s.host):\(s.port): \(error); check host and port of the email sink")
            }
        }

        /// A host name for SNI (none for an IP address).
        static func sni(_ host: String) -> String? { host.contains(where: { $0.isLetter }) && !host.contains(":") ? host : nil }

        func startTLS(_ s: SMTPSettings) async throws {
            let context = try Self.tlsContext(s)
            let handler = try NIOSSLClientHandler(context: context, serverHostname: Self.sni(s.host))
            try await channel.pipeline.addHandler(handler, position: .first).get()
        }

        func expect(_ codes: Set<Int>, _ what: String) async throws {
            let r = try await read(what)
            guard codes.contains(r.code) else { throw failure(r, what) }
        }

        func command(_ line: String, _ codes: Set<Int>, redacted: String? = nil) async throws -> Response {
            let what = redacted ?? line.split(separator: " ").prefix(2).joined(separator: " ")
            try await channel.writeAndFlush(channel.allocator.buffer(string: line + "\r\n")).get()
            let r = try await read(what)
            guard codes.contains(r.code) else { throw failure(r, what) }
            return r
        }

        func failure(_ r: Response, _ what: String) -> WaybackError {
            let text = r.lines.joined(separator: " ").prefix(300)
            let code: WaybackError.Code = r.code == 535 || r.code == 530 ? .access : .connection
            return WaybackError(code, "the SMTP server \(settings.host):\(settings.port) refused \(what): \(r.code) \(text)")
        }

        func read(_ what: String) async throws -> Response {
            try await Deadline.run(settings.timeoutSeconds, what: "the SMTP server \(settings.host):\(settings.port) (waiting for its answer to \(what))") {
                try await self.collector.next()
            }
        }

        func close() async { try? await channel.close().get() }
    }

    /// Splits the stream into lines (CRLF or LF).
    struct LineDecoder: ByteToMessageDecoder {
        typealias InboundOut = String
        mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
            guard let i = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return .needMoreData }
            let length = i - buffer.readerIndex + 1
            var line = buffer.readString(length: length) ?? ""
            while line.hasSuffix("\n") || line.hasSuffix("\r") { line.removeLast() }
            context.fireChannelRead(wrapInboundOut(line))
            return .continue
        }
    }

    /// Gathers reply lines into responses (`250-...` continues, `250 ...` ends one) for `next`.
    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = String
        private let lock = NSLock()
        private var lines = [String]()
        private var ready = [Result<Response, any Error>]()
        private var waiting: CheckedContinuation<Response, any Error>?

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let line = unwrapInboundIn(data)
            lines.append(String(line.dropFirst(4)))
            guard line.count >= 3, let code = Int(line.prefix(3)) else { deliver(.failure(WaybackError(.connection, "the SMTP server sent '\(line.prefix(80))', not a reply"))); return }
            if line.count == 3 || line[line.index(line.startIndex, offsetBy: 3)] == " " {
                let r = Response(code: code, lines: lines)
                lines = []
                deliver(.success(r))
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            deliver(.failure(WaybackError(.connection, "the SMTP server closed the connection")))
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            deliver(.failure(WaybackError(.connection, "SMTP connection error: \(error)")))
            context.close(promise: nil)
        }

        private func deliver(_ r: Result<Response, any Error>) {
            lock.lock()
            if let w = waiting {
                waiting = nil
                lock.unlock()
                w.resume(with: r)
            } else {
                ready.append(r)
                lock.unlock()
            }
        }

        func next() async throws -> Response {
            try await withCheckedThrowingContinuation { c in
                lock.lock()
                if !ready.isEmpty {
                    let r = ready.removeFirst()
                    lock.unlock()
                    c.resume(with: r)
                } else {
                    waiting = c
                    lock.unlock()
                }
            }
        }
    }
}

/// An alert as an email (RFC 5322, MIME): the plain text, and the HTML report as an
/// alternative when there is one; base64 bodies, so that no line is too long.
public enum EmailMessage {
    public static func render(_ a: Alert, from: String, to: [String], now: Date) -> String {
        var h = [String]()
        h.append("From: \(from)")
        h.append("To: \(to.joined(separator: ", "))")
        h.append("Subject: \(header(a.title))")
        h.append("Date: \(rfc2822(now))")
        h.append("Message-ID: <\(UUID().uuidString.lowercased())@wayback>")
        h.append("MIME-Version: 1.0")
        h.append("X-Wayback-Event: \(a.event.rawValue)")
        func part(_ type: String, _ text: String) -> [String] {
            ["Content-Type: \(type); charset=utf-8", "Content-Transfer-Encoding: base64", ""] + wrap(Data(text.utf8).base64EncodedString())
        }
        var body = [String]()
        if let html = a.html {
            let boundary = "wayback-" + UUID().uuidString.lowercased()
            h.append("Content-Type: multipart/alternative; boundary=\"\(boundary)\"")
            body = ["--\(boundary)"] + part("text/plain", a.text) + ["--\(boundary)"] + part("text/html", html) + ["--\(boundary)--"]
        } else {
            let p = part("text/plain", a.text)
            h += p.prefix(2)
            body = Array(p.dropFirst(3))
        }
        return (h + [""] + body).joined(separator: "\r\n")
    }

    static func wrap(_ s: String) -> [String] {
        stride(from: 0, to: s.count, by: 76).map { i in
            let start = s.index(s.startIndex, offsetBy: i)
            return String(s[start..<(s.index(start, offsetBy: 76, limitedBy: s.endIndex) ?? s.endIndex)])
        }
    }

    /// A header value: ASCII as is, else RFC 2047 base64.
    static func header(_ s: String) -> String {
        s.allSatisfy { $0.isASCII } ? s : "=?utf-8?B?\(Data(s.utf8).base64EncodedString())?="
    }

    static func rfc2822(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        return f.string(from: d)
    }
}
