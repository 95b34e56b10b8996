import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization
import WaybackCore

/// The HTTP clients of one owner (a command, or the daemon): one client per trust configuration,
/// made when first needed, whose connections are pooled and reused by every S3 repository that
/// shares it. The owner shuts them down when it ends (`shutdown`, or `with`); a client is never a
/// process-wide global, so a daemon that reloads its configuration or ends does not leave
/// connections and event-loop work behind. Later HTTP users (alert sinks) take the same pool.
public final class HTTPClientPool: Sendable {
    private let state = Mutex<(clients: [String: HTTPClient], closed: Bool)>(([:], false))

    public init() {}

    /// Runs `body` with a new pool and shuts the pool down after it, whether it returns or throws.
    public static func with<T>(_ body: (HTTPClientPool) async throws -> T) async throws -> T {
        let pool = HTTPClientPool()
        do {
            let result = try await body(pool)
            await pool.shutdown()
            return result
        } catch {
            await pool.shutdown()
            throw error
        }
    }

    /// The client for `caFile` (nil: the system's trust roots); `.internal` after `shutdown`.
    public func client(caFile: String?) throws -> HTTPClient {
        try state.withLock { s in
            guard !s.closed else { throw WaybackError(.internal, "an HTTP client was asked for after its owner shut the pool down") }
            let id = caFile ?? ""
            if let c = s.clients[id] { return c }
            var tls = TLSConfiguration.makeClientConfiguration()
            if let caFile {
                guard FileManager.default.isReadableFile(atPath: caFile) else {
                    throw WaybackError(.config, "CA file \(caFile) cannot be read; check ca_file of the S3 repository")
                }
                tls.trustRoots = .file(caFile)
            }
            var config = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow,
                                                  timeout: .init(connect: .seconds(10), read: .seconds(60)))
            config.decompression = .disabled
            config.httpVersion = .http1Only
            let c = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
            s.clients[id] = c
            return c
        }
    }

    /// How many clients are open (tests: zero after `shutdown`).
    public var openClients: Int { state.withLock { $0.closed ? 0 : $0.clients.count } }

    /// Closes every client (their pooled connections); requests still running fail. Idempotent.
    public func shutdown() async {
        let clients = state.withLock { s -> [HTTPClient] in
            s.closed = true
            defer { s.clients = [:] }
            return Array(s.clients.values)
        }
        for c in clients { try? await c.shutdown() }
    }
}

/// One S3 request before signing. Query values are unencoded.
struct S3Request: Sendable {
    var method: HTTPMethod
    var key: String?
    var query: [(String, String)] = []
    var headers: [(String, String)] = []
    var body: [UInt8]? = nil
    /// What the request does, for messages ("read key", "upload part 3 of key").
    var what: String
}

struct S3Response: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// An S3 error answer: its code and message (from the XML body when there is one).
struct S3Failure: Error {
    var status: Int
    var code: String
    var message: String

    init(status: Int, body: [UInt8]) {
        self.status = status
        let text = String(decoding: body.prefix(8192), as: UTF8.self)
        code = XMLText.value("Code", in: text) ?? "HTTP\(status)"
        message = XMLText.value("Message", in: text) ?? ""
    }

    var retryable: Bool {
        status >= 500 || status == 429 || ["SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "RequestTimeTooSkewed"].contains(code)
    }
}

/// Signs and sends requests, with retries (exponential backoff, full jitter) on 5xx, 429, SlowDown
/// and connection errors, a timeout per attempt and a deadline per request.
struct S3Transport: Sendable {
    let settings: S3Settings
    let signer: SigV4Signer
    let client: HTTPClient
    let logger: Logger

    init(settings: S3Settings, clients: HTTPClientPool, logger: Logger) throws {
        self.settings = settings
        self.signer = SigV4Signer(credentials: settings.credentials, region: settings.region)
        self.client = try clients.client(caFile: settings.caFile)
        self.logger = logger
    }

    func prepare(_ r: S3Request, extraHeaders: [(String, String)] = []) -> HTTPClientRequest {
        let (host, path, base) = settings.address(key: r.key)
        var headers = [("host", host)] + r.headers + extraHeaders
        let payloadHash = r.body.map { SHA256Hasher.hex($0) } ?? SigV4Signer.emptyPayloadHash
        let auth = signer.sign(method: r.method.rawValue, path: path, query: r.query, headers: &headers, payloadHash: payloadHash, date: Date())
        let query = S3URI.canonicalQuery(r.query)
        var req = HTTPClientRequest(url: base + path + (query.isEmpty ? "" : "?" + query))
        req.method = r.method
        for (k, v) in headers { req.headers.add(name: k, value: v) }
        req.headers.add(name: "authorization", value: auth)
        if let body = r.body {
            req.headers.add(name: "content-length", value: String(body.count))
            req.body = HTTPClientRequest.Body.bytes(body)
        } else if r.method == .PUT || r.method == .POST {
            req.headers.add(name: "content-length", value: "0")
        }
        return req
    }

    /// The wait before attempt `n + 1` (n >= 1): full jitter over 0.1 s * 2^(n-1), at most 10 s.
    static func backoff(after attempt: Int) -> Double {
        Double.random(in: 0...min(10, 0.1 * pow(2, Double(attempt - 1))))
    }

    /// Sends `r` until it gets an answer that is not retryable; returns the response with its body
    /// collected (up to `limit` bytes). `accept` lists the statuses that are success; any other
    /// status throws the mapped `WaybackError`.
    func send(_ r: S3Request, accept: Set<Int> = [200], limit: Int = 64 << 20, extraHeaders: [(String, String)] = []) async throws -> S3Response {
        try await attempt(r) { response in
            let body = try await response.body.collect(upTo: limit)
            let bytes = Array(body.readableBytesView)
            let status = Int(response.status.code)
            if accept.contains(status) {
                // CompleteMultipartUpload and DeleteObjects can answer 200 with an error inside.
                let head = String(decoding: bytes.prefix(512), as: UTF8.self)
                if r.method == .POST, head.contains("<Error>"), !head.contains("<DeleteResult") {
                    throw S3Failure(status: 500, body: bytes)
                }
                return S3Response(status: status, headers: response.headers, body: bytes)
            }
            throw S3Failure(status: status, body: bytes)
        }
    }

    /// Sends `r` and hands the live response (body not yet read) to `body` when its status is in
    /// `accept`; errors and retries as `send`.
    func stream<T>(_ r: S3Request, accept: Set<Int>, _ handle: (HTTPClientResponse) async throws -> T) async throws -> T {
        try await attempt(r) { response in
            let status = Int(response.status.code)
            guard accept.contains(status) else {
                let body = try await response.body.collect(upTo: 1 << 20)
                throw S3Failure(status: status, body: Array(body.readableBytesView))
            }
            return try await handle(response)
        }
    }

    private func attempt<T>(_ r: S3Request, _ handle: (HTTPClientResponse) async throws -> T) async throws -> T {
        let started = monotonicSeconds()
        var n = 0
        while true {
            n += 1
            var failure: String
            do {
                let response = try await client.execute(prepare(r), timeout: .milliseconds(Int64(settings.requestTimeout * 1000)))
                return try await handle(response)
            } catch let f as S3Failure {
                if !f.retryable { throw map(f, r) }
                failure = "\(f.status) \(f.code)"
                if n >= settings.maxAttempts || monotonicSeconds() - started > settings.deadline { throw map(f, r) }
            } catch let e as WaybackError {
                throw e
            } catch {
                if Task.isCancelled { throw CancellationError() }
                failure = Self.describe(error)
                if error is NIOSSLError || failure.contains("handshake") || failure.contains("certificate") {
                    // Retrying does not make a certificate trusted.
                    throw WaybackError(.io, "TLS with \(settings.endpoint) failed (\(failure)); if the server's certificate comes from a private CA, set ca_file of the repository")
                }
                // Nobody listening is not a hiccup: three tries, not the whole budget.
                let refused = failure.contains("Connection refused") || failure.contains("No route to host") || failure.contains("Network is unreachable")
                if n >= (refused ? min(3, settings.maxAttempts) : settings.maxAttempts) || monotonicSeconds() - started > settings.deadline {
                    throw WaybackError(.io, "cannot \(r.what) in \(settings.description) after \(n) attempts: \(failure); check the endpoint and the network")
                }
            }
            let wait = min(Self.backoff(after: n), max(0, settings.deadline - (monotonicSeconds() - started)))
            logger.debug("S3 request failed, retrying", metadata: ["what": "\(r.what)", "failure": "\(failure)", "attempt": "\(n)", "wait": "\(wait)"])
            try await Task.sleep(nanoseconds: UInt64(wait * 1e9))
        }
    }

    static func describe(_ error: any Error) -> String {
        let s = String(describing: error)
        return s.count > 200 ? String(s.prefix(200)) : s
    }

    /// The WaybackError for a final (non-retryable or exhausted) S3 failure.
    func map(_ f: S3Failure, _ r: S3Request) -> WaybackError {
        let detail = f.message.isEmpty ? f.code : "\(f.code): \(f.message)"
        switch (f.status, f.code) {
        case (_, "InvalidAccessKeyId"), (_, "SignatureDoesNotMatch"), (_, "InvalidToken"), (_, "ExpiredToken"), (_, "InvalidClientTokenId"):
            return WaybackError(.access, "\(settings.description) refused the credentials (\(f.code)) to \(r.what); check the secret key of \(settings.credentials)")
        case (403, _):
            return WaybackError(.access, "\(settings.description) denied access to \(r.what) (\(detail)); check the bucket policy and the permissions of \(settings.credentials) (docs/s3.md lists them)")
        case (_, "NoSuchBucket"):
            return WaybackError(.repository, "bucket '\(settings.bucket)' does not exist at \(settings.endpoint); create it, or fix bucket/endpoint/region in the configuration")
        case (404, _):
            return WaybackError(.notFound, "\(r.what): not in \(settings.description)")
        case (412, _):
            return WaybackError(.conflict, "\(r.what): the object already exists in \(settings.description)")
        case (416, _):
            return WaybackError(.corrupt, "\(r.what): the object in \(settings.description) is shorter than expected")
        case (301, _), (_, "PermanentRedirect"), (_, "AuthorizationHeaderMalformed"):
            return WaybackError(.config, "\(settings.description) answered \(detail); check the region and endpoint of the repository")
        default:
            return WaybackError(.io, "cannot \(r.what) in \(settings.description): HTTP \(f.status) \(detail); check the repository's settings against docs/s3.md and run the command again")
        }
    }
}
