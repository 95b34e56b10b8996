import WaybackCore

/// Everything the S3 driver needs, as plain values (read from the configuration at the edge).
public struct S3Settings: Sendable {
    public enum Encryption: Sendable, Equatable {
        /// SSE-S3: `x-amz-server-side-encryption: AES256`.
        case s3
        /// SSE-KMS with an optional key id (the bucket's default KMS key when nil).
        case kms(keyID: String?)
    }

    /// `scheme://host[:port]` without a path, e.g. `https://s3.eu-central-1.amazonaws.com`.
    public var endpoint: String
    public var bucket: String
    public var region: String
    /// Prepended to every key; empty or ending in `/`.
    public var prefix: String
    /// `https://host/bucket/key` instead of `https://bucket.host/key`.
    public var pathStyle: Bool
    public var credentials: S3Credentials
    /// A PEM file of CA certificates to trust instead of the system's.
    public var caFile: String?
    public var encryption: Encryption?
    /// `x-amz-storage-class` for new objects (STANDARD_IA, GLACIER_IR, ...); nil: the bucket default.
    public var storageClass: String?
    /// Objects larger than this go up in parts of this size (at least 5 MiB).
    public var partSize: Int
    /// Parts of one object uploaded at once.
    public var uploadConcurrency: Int
    /// Seconds one request may take (and the longest silence while reading a body).
    public var requestTimeout: Double
    /// Seconds one operation may take with all its retries.
    public var deadline: Double
    /// Attempts per request (the first included) before giving up.
    public var maxAttempts: Int

    public init(endpoint: String? = nil, bucket: String, region: String, prefix: String = "", pathStyle: Bool = false,
                credentials: S3Credentials, caFile: String? = nil, encryption: Encryption? = nil, storageClass: String? = nil,
                partSize: Int = 16 << 20, uploadConcurrency: Int = 4, requestTimeout: Double = 120, deadline: Double = 900,
                maxAttempts: Int = 10) {
        self.endpoint = endpoint ?? "https://s3.\(region).amazonaws.com"
        while self.endpoint.hasSuffix("/") { self.endpoint.removeLast() }
        self.bucket = bucket
        self.region = region
        var p = prefix
        while p.hasPrefix("/") { p.removeFirst() }
        if !p.isEmpty && !p.hasSuffix("/") { p += "/" }
        self.prefix = p
        self.pathStyle = pathStyle
        self.credentials = credentials
        self.caFile = caFile
        self.encryption = encryption
        self.storageClass = storageClass
        self.partSize = max(5 << 20, partSize)
        self.uploadConcurrency = max(1, uploadConcurrency)
        self.requestTimeout = requestTimeout
        self.deadline = deadline
        self.maxAttempts = max(1, maxAttempts)
    }

    /// The scheme, host and port of the endpoint.
    var endpointParts: (scheme: String, host: String, port: Int?) {
        var rest = endpoint[...]
        var scheme = "https"
        if let r = rest.range(of: "://") { scheme = String(rest[..<r.lowerBound]).lowercased(); rest = rest[r.upperBound...] }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]"), let port = Int(rest[rest.index(after: colon)...]) {
            return (scheme, String(rest[..<colon]), port)
        }
        return (scheme, String(rest), nil)
    }

    /// The `Host` header and the URL path for `key` (nil: the bucket itself), encoded for SigV4.
    func address(key: String?) -> (host: String, path: String, baseURL: String) {
        let (scheme, host, port) = endpointParts
        let defaultPort = scheme == "https" ? 443 : 80
        let hostPort = port.map { $0 == defaultPort ? host : "\(host):\($0)" } ?? host
        let encodedKey = key.map { S3URI.encode(prefix + $0, keepSlash: true) }
        if pathStyle {
            let path = "/" + S3URI.encode(bucket, keepSlash: false) + (encodedKey.map { "/" + $0 } ?? "")
            return (hostPort, path, "\(scheme)://\(hostPort)")
        }
        let vhost = "\(bucket).\(hostPort)"
        return (vhost, "/" + (encodedKey ?? ""), "\(scheme)://\(vhost)")
    }

    /// What messages call the repository (never credentials).
    public var description: String { "s3://\(bucket)/\(prefix) at \(endpoint)" }
}
