import Foundation
import Testing
@testable import WaybackCore

@Suite struct LSNTests {
    @Test func parseAndPrint() throws {
        let l = try #require(LSN("16/B374D848"))
        #expect(l.value == 0x16_B374_D848)
        #expect(l.description == "16/B374D848")
        #expect(LSN("0/0")?.value == 0)
        for bad in ["", "1", "1/", "/1", "G/1", "1/2/3", "123456789/0"] { #expect(LSN(bad) == nil, "\(bad)") }
    }

    @Test func segmentArithmetic() throws {
        let l = try #require(LSN("1/FF000028"))
        #expect(l.segmentNumber() == 0x1FF)
        #expect(WALFileName(timeline: 3, segmentNumber: l.segmentNumber()).description == "0000000300000001000000FF")
        #expect(LSN("0/2000000")! < LSN("0/2000001")!)
    }
}

@Suite struct WALFileNameTests {
    @Test func kinds() throws {
        let s = try #require(WALFileName("000000010000000A000000FF"))
        #expect(s.kind == .segment && s.timeline == 1 && s.log == 10 && s.seg == 255)
        #expect(s.next().description == "000000010000000B00000000")
        #expect(WALFileName("00000002.history")?.kind == .history)
        #expect(WALFileName("000000010000000000000003.partial")?.kind == .partial)
        let b = try #require(WALFileName("000000010000000000000002.00000028.backup"))
        #expect(b.kind == .backupHistory && b.description == "000000010000000000000002.00000028.backup")
        for bad in ["", "00000001", "0000000100000000000000GG", "000000010000000000000001x", "pg_wal/000000010000000000000001",
                    "000000010000000a000000ff", "RECOVERYXLOG"] {
            #expect(WALFileName(bad) == nil, "\(bad)")
        }
    }

    @Test func roundTripSegmentNumbers() {
        for n: UInt64 in [0, 1, 255, 256, 0xFFFF_FFFF] {
            let name = WALFileName(timeline: 7, segmentNumber: n)
            #expect(WALFileName(name.description)?.segmentNumber() == n)
        }
    }
}

@Suite struct BackupIDTests {
    @Test func fromDate() throws {
        let d = try #require(Format.parseTimestamp("2026-11-29T00:41:07Z"))
        let id = BackupID(startTime: d, type: .full)
        #expect(id.rawValue == "20261129-004107F")
        #expect(BackupID(id.rawValue) == id)
        #expect(BackupID("20261129-004107X") == nil)
        #expect(BackupID("2026112-004107F") == nil)
        #expect(BackupID(startTime: d, type: .incr) > id)
    }
}

@Suite struct CompressionTests {
    @Test(arguments: [CompressionAlgorithm.zstd, .none])
    func roundTrip(_ alg: CompressionAlgorithm) throws {
        var input = [UInt8](repeating: 0, count: 300_000)
        for i in input.indices { input[i] = UInt8(truncatingIfNeeded: i % 251 == 0 ? i >> 3 : 7) }
        let c = Compressor(CompressionSettings(algorithm: alg, level: 1))
        let packed = try input.withUnsafeBytes { try c.compress($0) { Array($0) } }
        if alg == .zstd { #expect(packed.count < input.count / 10) }
        let d = Decompressor()
        let back = try packed.withUnsafeBytes { try d.decompress($0, algorithm: alg, rawLength: input.count) { Array($0) } }
        #expect(back == input)
    }

    @Test func corruptFrameIsDetected() throws {
        let input = [UInt8](repeating: 65, count: 100_000)
        let c = Compressor(CompressionSettings(algorithm: .zstd, level: 1))
        var packed = try input.withUnsafeBytes { try c.compress($0) { Array($0) } }
        packed[packed.count / 2] ^= 0xFF
        packed.removeLast(3)
        let d = Decompressor()
        #expect(throws: WaybackError.self) {
            _ = try packed.withUnsafeBytes { try d.decompress($0, algorithm: .zstd, rawLength: input.count) { Array($0) } }
        }
    }

    @Test func digests() {
        #expect(SHA256Hasher.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        var m = MD5Hasher(); m.update(Array("abc".utf8))
        #expect(m.finalizeHex() == "900150983cd24fb0d6963f7d28e17f72")
        #expect(bytesFromHex("00ff10") == [0, 255, 16])
        #expect(bytesFromHex("0g") == nil)
    }

    /// Every code and its number is a row of docs/exit-codes.md, and every row a code: the
    /// numbers are a public contract, so a renumbered, added or removed code fails here.
    @Test func exitCodesAreTheDocumentedOnes() throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/exit-codes.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        var documented = [String: Int32]()
        for line in text.split(separator: "\n") where line.hasPrefix("| ") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 2, let n = Int32(cells[0]), n != 0 else { continue }
            #expect(documented[cells[1]] == nil, "\(cells[1]) is documented twice")
            documented[cells[1]] = n
        }
        let codes = Dictionary(uniqueKeysWithValues: WaybackError.Code.allCases.map { ("\($0)", $0.rawValue) })
        #expect(Set(codes.values).count == codes.count, "two codes share a number")
        #expect(documented == codes, "docs/exit-codes.md: \(documented.sorted { $0.value < $1.value }), code: \(codes.sorted { $0.value < $1.value })")
    }
}

@Suite struct TimestampTests {
    @Test func roundTripAndOffsets() throws {
        let d = try #require(Format.parseTimestamp("2026-11-29T00:41:07.250Z"))
        #expect(d.timeIntervalSince1970 == 1_795_912_867.25)
        #expect(Format.timestamp(d) == "2026-11-29T00:41:07.250Z")
        #expect(Format.parseTimestamp("2026-11-29T01:41:07+01:00")?.timeIntervalSince1970 == 1_795_912_867)
        #expect(Format.parseTimestamp("2026-11-28T23:41:07-01:00")?.timeIntervalSince1970 == 1_795_912_867)
        for bad in ["", "2026-11-29", "2026-13-29T00:00:00Z", "2026-11-29T00:00:00", "2026-11-29T00:00:00Zx", "2026-11-29T00:00:00.Z"] {
            #expect(Format.parseTimestamp(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct TargetTimeTests {
    let instant: Int64 = 1_795_912_867_250_000  // 2026-11-29 00:41:07.25 UTC

    @Test func rfc3339AndPostgresLiterals() {
        for text in ["2026-11-29T00:41:07.25Z", "2026-11-29 00:41:07.250000+00", "2026-11-29 00:41:07.25", "2026-11-29 01:41:07.25+01",
                     "2026-11-29 01:41:07.25 +01:00", "2026-11-29 06:11:07.25+0530", "2026-11-28 23:41:07.25-01", "2026-11-29 00:41:07.25 UTC"] {
            #expect(Format.parseInstant(text) == instant, "\(text)")
        }
        #expect(Format.parseInstant("2026-11-29") == 1_795_910_400_000_000)
        #expect(Format.parseInstant("2026-11-29 00:41") == 1_795_912_860_000_000)
        #expect(Format.parseInstant("2026-11-29 00:41:07.1234565") == 1_795_912_867_123_457)  // rounded to microseconds
        for bad in ["", "yesterday", "2026-11-29T25:00:00", "2026-11-29 00:41:07 CET", "2026-11-29 00:41:07+2", "2026-11-29 00:41:07."] {
            #expect(Format.parseInstant(bad) == nil, "\(bad)")
        }
        #expect(Format.parseInstant("2026-11-29 00:41:07", zoneRequired: true) == nil)
    }

    @Test func postgresLiteralIsUTCWithMicroseconds() {
        #expect(Format.postgresTimestamp(micros: instant) == "2026-11-29 00:41:07.250000+00")
        #expect(Format.parseInstant(Format.postgresTimestamp(micros: instant + 1)) == instant + 1)
        #expect(Format.postgresTimestamp(micros: -1) == "1969-12-31 23:59:59.999999+00")
    }
}

@Suite struct PostgresVersionFormatTests {
    @Test func postgresVersionsAsPeopleWriteThem() {
        #expect(Format.postgresVersion(150018) == "15.18")
        #expect(Format.postgresVersion(170000) == "17.0")
        #expect(Format.postgresVersion(90624) == "9.6.24")
    }
}

