import Foundation
import Testing
import WaybackCore
@testable import WaybackCatalog

/// A manifest's file list is read by hand (`JSONReader`); what it reads must be what
/// `JSONDecoder` reads, and what it does not expect must go to `JSONDecoder`.
@Suite struct ManifestDecodingTests {
    static func manifest(files: [BackupManifest.File]) -> BackupManifest {
        BackupManifest(
            id: BackupID("20261101-010000I")!, type: .incr, reference: BackupID("20261101-000000F"), cluster: "c\"q", systemIdentifier: "42",
            pgVersionNumber: 150004, walSegmentSize: 16 << 20, dataChecksums: true, startTime: Date(timeIntervalSince1970: 1_800_000_000),
            stopTime: Date(timeIntervalSince1970: 1_800_000_060), startLSN: LSN(0x2FFFF00), stopLSN: LSN(0x3000000), timeline: 1,
            startWAL: "000000010000000000000002", stopWAL: "000000010000000000000003", backupLabel: "START WAL LOCATION: 0/2FFFF00\n",
            tablespaceMap: "", tablespaces: [], compression: CompressionSettings(),
            objects: [.init(name: "pack/0", size: 10, sha256: "ab")], directories: [.init(path: "base", mode: 0o700)], files: files,
            wal: [], copySeconds: 1.5)
    }

    static let files: [BackupManifest.File] = [
        .init(path: "PG_VERSION", size: 3, mode: 0o600, mtime: 1_800_000_000, sha256: "aa", chunks: [.init(object: 0, offset: 0, length: 30, raw: 3)]),
        .init(path: "base/5/16384", size: 1 << 30, mode: 0o600, mtime: -5, sha256: "",
              chunks: [.init(object: 0, offset: 30, length: 900, raw: 1 << 20), .init(object: 1, offset: 9_000_000_000, length: 7, raw: 8192)],
              base: BackupID("20261101-000000F"), blocks: [.init(start: 0, count: 128), .init(start: UInt32.max - 1, count: 1)]),
        .init(path: "base/5/16385", size: 8192, mode: 0o644, mtime: 0, sha256: "bb", chunks: [], base: BackupID("20261101-000000F")),
        // Names a file system allows: quotes, backslashes, control characters, other scripts.
        .init(path: "pg_tblspc/16400/quote\"back\\slash\ttab\u{1}ctl", size: 0, mode: 0o600, mtime: 1, sha256: "cc", chunks: []),
        .init(path: "pg_tblspc/16400/donnée-データ-😀", size: 0, mode: 0o600, mtime: 1, sha256: "dd", chunks: [], blocks: []),
    ]

    /// The body of a sealed manifest.
    static func body(_ m: BackupManifest) throws -> [UInt8] {
        let sealed = try SealedJSON.encode(m, kind: BackupManifest.kind)
        let nl = sealed.firstIndex(of: 0x0A)!
        return Array(sealed[(nl + 1)..<(sealed.count - 1)])
    }

    static func reference(_ body: [UInt8]) throws -> BackupManifest {
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .custom { d in Format.parseTimestamp(try d.singleValueContainer().decode(String.self))! }
        return try dec.decode(BackupManifest.self, from: Data(body))
    }

    static func sealed(_ body: [UInt8]) -> [UInt8] {
        let header = "{\"format\":1,\"sha256\":\"\(SHA256Hasher.hex(body))\",\"size\":\(body.count),\"wayback\":\"backup-manifest\"}\n"
        return Array(header.utf8) + body + [0x0A]
    }

    @Test func theHandReadFilesAreJSONDecodersAndTheRestIsKept() throws {
        let m = Self.manifest(files: Self.files)
        let body = try Self.body(m)
        let (files, range) = try body.withUnsafeBytes { try BackupManifest.readFiles($0) }
        #expect(files == Self.files)
        #expect(body[range.lowerBound] == UInt8(ascii: "[") && body[range.upperBound - 1] == UInt8(ascii: "]"))
        let decoded = try SealedJSON.decode(BackupManifest.self, from: Self.sealed(body), kind: BackupManifest.kind, name: "m")
        #expect(decoded.files == Self.files)
        // Every other member as JSONDecoder reads it: the re-encoded manifests are the same bytes.
        #expect(try Self.body(decoded) == body)
        #expect(try Self.body(Self.reference(body)) == body)
    }

    @Test func escapesTheEncoderDoesNotWriteAreReadToo() throws {
        // `\/`, `\u00e9`, a surrogate pair, and white space where JSON allows it.
        let text = #"{ "files" : [ { "path" : "a\/b\u00e9\ud83d\ude00", "size" : 1 , "mode":384,"mtime":0,"sha256":"","chunks":[ ],"base":null,"blocks":null,"extra":{"x":[1,2.5e3,true,false,null]} } ] }"#
        let (files, _) = try Array(text.utf8).withUnsafeBytes { try BackupManifest.readFiles($0) }
        #expect(files == [.init(path: "a/bé😀", size: 1, mode: 0o600, mtime: 0, sha256: "", chunks: [])])
    }

    @Test func whatTheReaderDoesNotExpectGoesToJSONDecoder() throws {
        let body = try Self.body(Self.manifest(files: Self.files))
        var text = String(decoding: body, as: UTF8.self)
        // A block run of three numbers: JSONDecoder (File.init(from:)) reads the first two.
        let run = text.range(of: "\"blocks\" : [\n        [\n          0,\n          128\n        ]")!
        text.replaceSubrange(run, with: "\"blocks\" : [[0, 128, 7]")
        let odd = Array(text.utf8)
        #expect(throws: JSONReader.Unexpected.self) { try odd.withUnsafeBytes { try BackupManifest.readFiles($0) } }
        let decoded = try SealedJSON.decode(BackupManifest.self, from: Self.sealed(odd), kind: BackupManifest.kind, name: "m")
        #expect(decoded.files == (try Self.reference(odd)).files)
        #expect(decoded.files[1].blocks?.first == .init(start: 0, count: 128))
        // A body neither can read is a clear error.
        let broken = Array(text.replacingOccurrences(of: "\"path\" : \"PG_VERSION\"", with: "\"path\" : 5").utf8)
        do {
            _ = try SealedJSON.decode(BackupManifest.self, from: Self.sealed(broken), kind: BackupManifest.kind, name: "m")
            Issue.record("a file whose path is a number was decoded")
        } catch let e as WaybackError {
            #expect(e.code == .corrupt && e.message.contains("cannot be decoded"), "\(e.message)")
        }
    }

    @Test(arguments: [
        #""\ud83d""#,        // a lone high surrogate
        #""a\qb""#,          // an unknown escape
        "\"a\u{1}b\"",       // a raw control character
        #""abc"#,            // no closing quote
        "9223372036854775808", // past Int64
        "1.5", "1e3", "-", "007",
    ])
    func theReaderRefusesWhatJSONOrItsIntegersDoNotAllow(_ text: String) {
        let bytes = Array(text.utf8)
        #expect(throws: JSONReader.Unexpected.self) {
            try bytes.withUnsafeBytes { raw in
                var r = JSONReader(raw)
                if text.hasPrefix("\"") { _ = try r.readString() } else { _ = try r.readInt64() }
            }
        }
    }

    @Test func nestingDeeperThanJSONDecoderAllowsIsRefusedNotACrash() {
        let deep = Array(("{\"files\":[],\"x\":" + String(repeating: "[", count: 100_000)).utf8)
        #expect(throws: JSONReader.Unexpected.self) { try deep.withUnsafeBytes { try BackupManifest.readFiles($0) } }
    }

    @Test func integersAtTheLimits() throws {
        for (text, value) in [("-9223372036854775808", Int64.min), ("9223372036854775807", Int64.max), ("0", 0), ("-1", -1)] {
            let v = try Array(text.utf8).withUnsafeBytes { raw in var r = JSONReader(raw); return try r.readInt64() }
            #expect(v == value)
        }
        #expect(throws: JSONReader.Unexpected.self) {
            try Array("4294967296".utf8).withUnsafeBytes { raw in var r = JSONReader(raw); _ = try r.readInteger(UInt32.self) }
        }
    }
}
