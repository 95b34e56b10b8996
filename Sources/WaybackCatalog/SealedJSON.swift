import Foundation
import WaybackCore

/// Metadata files (cluster binding, backup manifests) are "sealed JSON": a first line with the kind,
/// the format version, the size and the SHA-256 of the body, then the JSON body.
///
/// ```
/// {"wayback":"backup-manifest","format":1,"size":1234,"sha256":"..."}
/// { ...body... }
/// ```
/// A reader rejects a file whose body does not match, whose kind is not the one expected, or whose
/// format is newer than it understands.
public enum SealedJSON {
    public static let currentFormat = 1

    struct Header: Codable { var wayback: String; var format: Int; var size: Int; var sha256: String }

    public static func encode<T: Encodable>(_ value: T, kind: String) throws -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        enc.dateEncodingStrategy = .custom { d, e in var c = e.singleValueContainer(); try c.encode(Format.timestamp(d)) }
        let body = [UInt8](try enc.encode(value))
        let header = Header(wayback: kind, format: currentFormat, size: body.count, sha256: SHA256Hasher.hex(body))
        let hEnc = JSONEncoder()
        hEnc.outputFormatting = [.sortedKeys]
        return [UInt8](try hEnc.encode(header)) + [0x0A] + body + [0x0A]
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], kind: String, name: String) throws -> T {
        guard let nl = bytes.firstIndex(of: 0x0A),
              let header = try? JSONDecoder().decode(Header.self, from: Data(bytes[..<nl])) else {
            throw WaybackError(.corrupt, "\(name) is not a Wayback metadata file (no header line); restore it from its .copy.json twin or another repository")
        }
        guard header.wayback == kind else {
            throw WaybackError(.corrupt, "\(name) is a '\(header.wayback)' file, expected '\(kind)'")
        }
        guard header.format <= currentFormat else {
            throw WaybackError(.repository, "\(name) has format \(header.format), newer than this wayback understands (\(currentFormat)); upgrade wayback")
        }
        let bodyEnd = bytes.last == 0x0A ? bytes.count - 1 : bytes.count
        let body = Array(bytes[(nl + 1)..<max(nl + 1, bodyEnd)])
        guard body.count == header.size, SHA256Hasher.hex(body) == header.sha256 else {
            throw WaybackError(.corrupt, "\(name) fails its checksum (damaged or truncated); restore it from its .copy.json twin or another repository")
        }
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .custom { d in
            let c = try d.singleValueContainer()
            let s = try c.decode(String.self)
            guard let date = Format.parseTimestamp(s) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "bad timestamp \(s)")
            }
            return date
        }
        do {
            if let hand = T.self as? any SealedJSONBody.Type { return try hand.decodeBody(body, decoder: dec) as! T }
            return try dec.decode(T.self, from: Data(body))
        } catch {
            throw WaybackError(.corrupt, "\(name) has a valid checksum but cannot be decoded", cause: .decoding("\(error)"))
        }
    }
}
