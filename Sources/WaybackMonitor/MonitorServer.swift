import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import WaybackCore

/// The daemon's HTTP listener (`monitor.listen`): `GET /metrics`, `GET /` (the status page) and
/// `GET /status.json`, answered from `MonitorState`'s cached renderings, never from a repository
/// listing per request. An optional bearer token (`monitor.token_file`) guards every path.
public final class MonitorServer: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var contentType: String
        public var body: [UInt8]
        public init(status: Int, contentType: String, body: [UInt8]) { self.status = status; self.contentType = contentType; self.body = body }
        public static func text(_ status: Int, _ s: String) -> Response { Response(status: status, contentType: "text/plain; charset=utf-8", body: Array(s.utf8)) }
    }

    let host: String
    let port: Int
    let token: String?
    let state: MonitorState
    let channel = Mutex<(any Channel)?>(nil)

    public init(host: String, port: Int, token: String?, state: MonitorState) {
        self.host = host; self.port = port; self.token = token; self.state = state
    }

    /// Binds the listener; returns the port bound (the one asked for, or the kernel's for 0).
    public func start() async throws -> Int {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(Handler(server: self))
                }
            }
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
        let bound: any Channel
        do {
            bound = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw WaybackError(.config, "monitor.listen \(host):\(port) cannot be bound (\(error)); choose a free port or set monitor.listen: null")
        }
        channel.withLock { $0 = bound }
        return bound.localAddress?.port ?? port
    }

    /// Closes the listener (connections being answered finish).
    public func stop() async {
        let c = channel.withLock { c in defer { c = nil }; return c }
        try? await c?.close()
    }

    /// The answer to one request (pure apart from the cached state it reads).
    public func respond(method: HTTPMethod, uri: String, authorization: String?) -> Response {
        if let token {
            let given = authorization.flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil } ?? ""
            guard Self.constantTimeEqual(given, token) else { return .text(401, "a bearer token is required (monitor.token_file)\n") }
        }
        guard method == .GET || method == .HEAD else { return .text(405, "only GET\n") }
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        let snapshot = state.current
        switch path {
        case "/metrics":
            guard let s = snapshot else { return .text(503, "the first gathering is not done yet\n") }
            return Response(status: 200, contentType: MetricsText.contentType, body: s.metrics)
        case "/status.json":
            guard let s = snapshot else { return .text(503, "the first gathering is not done yet\n") }
            return Response(status: 200, contentType: "application/json", body: s.json)
        case "/":
            guard let s = snapshot else { return .text(503, "the first gathering is not done yet; reload in a minute\n") }
            return Response(status: 200, contentType: "text/html; charset=utf-8", body: s.html)
        default:
            return .text(404, "not found: /metrics, /status.json and / are served here\n")
        }
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) { diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0) }
        return diff == 0
    }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let server: MonitorServer
        var head: HTTPRequestHead?
        init(server: MonitorServer) { self.server = server }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h
            case .body: break
            case .end:
                guard let h = head else { return }
                head = nil
                let r = server.respond(method: h.method, uri: h.uri, authorization: h.headers.first(name: "authorization"))
                var headers = HTTPHeaders()
                headers.add(name: "content-type", value: r.contentType)
                headers.add(name: "content-length", value: String(r.body.count))
                headers.add(name: "cache-control", value: "no-store")
                if r.status == 401 { headers.add(name: "www-authenticate", value: "Bearer") }
                let keepAlive = h.isKeepAlive
                if !keepAlive { headers.add(name: "connection", value: "close") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: HTTPResponseStatus(statusCode: r.status), headers: headers))),
                              promise: nil)
                if h.method != .HEAD {
                    context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: r.body)))), promise: nil)
                }
                let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
                if !keepAlive { done.whenComplete { [context] _ in context.close(promise: nil) } }
            }
        }
    }
}

/// What the listener serves: the renderings of the last gathering, replaced whole.
public final class MonitorState: Sendable {
    public struct Snapshot: Sendable {
        public var metrics: [UInt8]
        public var json: [UInt8]
        public var html: [UInt8]
        public var at: Date
        public init(metrics: [UInt8], json: [UInt8], html: [UInt8], at: Date) { self.metrics = metrics; self.json = json; self.html = html; self.at = at }
    }
    let snapshot = Mutex<Snapshot?>(nil)
    public init() {}
    public var current: Snapshot? { snapshot.withLock { $0 } }
    public func publish(_ s: Snapshot) { snapshot.withLock { $0 = s } }
}
