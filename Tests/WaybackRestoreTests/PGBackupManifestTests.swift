import Testing
import WaybackCore
@testable import WaybackRestore

@Suite struct PGBackupManifestTests {
    @Test func checksumCoversEverythingBeforeTheLastLine() throws {
        let bytes = PGBackupManifest.render(files: [.init(path: "base/1/2", size: 3, mtime: 0, sha256: String(repeating: "0", count: 64)),
                                                    .init(path: "PG_VERSION", size: 3, mtime: 0, sha256: String(repeating: "1", count: 64))],
                                            timeline: 2, startLSN: LSN(0x2000028), endLSN: LSN(0x2000100))
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{ \"Path\": \"PG_VERSION\""))
        #expect(text.contains("{ \"Timeline\": 2, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }"))
        let lastLine = text.range(of: "\"Manifest-Checksum\"")!
        let body = Array(text[..<lastLine.lowerBound].utf8)
        #expect(text.hasSuffix("\"Manifest-Checksum\": \"\(SHA256Hasher.hex(body))\"}\n"))
    }
}
