import Crypto
import Foundation
import WaybackCore

/// Access keys for S3. `description` never shows the secret (nor the session token).
public struct S3Credentials: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?
    /// Where the keys came from, for messages ("the configuration", "AWS_ACCESS_KEY_ID", "profile x of FILE").
    public var source: String

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil, source: String) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.source = source
    }

    public var description: String { "access key \(accessKeyID) from \(source)" }
    public var debugDescription: String { description }
    /// `dump` and the description of a value holding the credentials show no secret either.
    public var customMirror: Mirror { Mirror(self, children: ["credentials": description], displayStyle: .struct) }

    /// Parses an AWS shared credentials file (INI: `[profile]`, `key = value`) and returns the
    /// keys of `profile`; nil when the profile is not in the text.
    public static func parseSharedFile(_ text: String, profile: String, source: String) -> S3Credentials? {
        var section: String?
        var values = [String: String]()
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                var name = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                if name.hasPrefix("profile ") { name = String(name.dropFirst(8)).trimmingCharacters(in: .whitespaces) }
                section = name
                continue
            }
            guard section == profile, let eq = line.firstIndex(of: "=") else { continue }
            let k = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let v = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            values[k] = v
        }
        guard let id = values["aws_access_key_id"], let secret = values["aws_secret_access_key"] else { return nil }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: values["aws_session_token"], source: source)
    }
}

/// AWS Signature Version 4, header-signed (the `Authorization` header), for service `s3`.
///
/// Pure: the caller passes the time, the canonical (already encoded) path and query, the headers
/// to sign and the payload hash. See AWS's "Signature Version 4 signing process".
public struct SigV4Signer: Sendable {
    public var credentials: S3Credentials
    public var region: String
    public var service: String

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The hex SHA-256 of an empty payload.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// `YYYYMMDD'T'HHMMSS'Z'` of `date`.
    public static func amzDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var tm = tm()
        gmtime_r(&t, &tm)
        func p(_ v: Int32, _ w: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s }
        return p(tm.tm_year + 1900, 4) + p(tm.tm_mon + 1, 2) + p(tm.tm_mday, 2) + "T" + p(tm.tm_hour, 2) + p(tm.tm_min, 2) + p(tm.tm_sec, 2) + "Z"
    }

    /// Adds `x-amz-date`, `x-amz-content-sha256` (and `x-amz-security-token`) to `headers` and
    /// returns the `Authorization` value. `headers` must contain `host`; every header given is signed.
    /// `path` is the URI-encoded path; `query` the unencoded name/value pairs.
    public func sign(method: String, path: String, query: [(String, String)], headers: inout [(String, String)],
                     payloadHash: String, date: Date) -> String {
        let stamp = Self.amzDate(date)
        let day = String(stamp.prefix(8))
        headers.append(("x-amz-date", stamp))
        headers.append(("x-amz-content-sha256", payloadHash))
        if let token = credentials.sessionToken { headers.append(("x-amz-security-token", token)) }

        let canonicalQuery = S3URI.canonicalQuery(query)
        var byName = [String: [String]]()
        for (k, v) in headers {
            let value = v.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            byName[k.lowercased(), default: []].append(value)
        }
        let names = byName.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(byName[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let canonicalRequest = [method, path, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", stamp, scope, SHA256Hasher.hex(Array(canonicalRequest.utf8))].joined(separator: "\n")

        func hmac(_ key: [UInt8], _ text: String) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: SymmetricKey(data: key)))
        }
        let kDate = hmac(Array("AWS4\(credentials.secretAccessKey)".utf8), day)
        let kSigning = hmac(hmac(hmac(kDate, region), service), "aws4_request")
        let signature = hexString(hmac(kSigning, stringToSign))
        return "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope),SignedHeaders=\(signedHeaders),Signature=\(signature)"
    }
}

/// URI encoding as SigV4 defines it: every byte except `A-Z a-z 0-9 - _ . ~` as `%XX` (upper-case
/// hex); `/` kept in paths.
public enum S3URI {
    /// `name=value` pairs, encoded, sorted by name then value, joined by `&` (the canonical query
    /// string, which is also sent as the URL's query so the two never differ).
    public static func canonicalQuery(_ query: [(String, String)]) -> String {
        var pairs = [(String, String)]()
        for (k, v) in query { pairs.append((encode(k, keepSlash: false), encode(v, keepSlash: false))) }
        pairs.sort { (a: (String, String), b: (String, String)) -> Bool in a.0 == b.0 ? a.1 < b.1 : a.0 < b.0 }
        var parts = [String]()
        for (k, v) in pairs { parts.append(k + "=" + v) }
        return parts.joined(separator: "&")
    }

    public static func encode(_ s: String, keepSlash: Bool) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out = [UInt8]()
        out.reserveCapacity(s.utf8.count)
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.append(b)
            case UInt8(ascii: "/") where keepSlash:
                out.append(b)
            default:
                out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 15)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
