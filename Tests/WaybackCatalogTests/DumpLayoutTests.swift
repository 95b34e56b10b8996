import Foundation
import Testing
import WaybackCatalog
import WaybackCore

/// Dumps beside backups: their ids and keys never mix with a physical backup's.
@Suite("dumps in the repository layout")
struct DumpLayoutTests {
    @Test("a dump id ends in L, is made from the start time, and is no backup id; a backup id is no dump id")
    func ids() throws {
        let id = DumpID(startTime: Date(timeIntervalSince1970: 1_800_000_000))
        #expect(id.rawValue == "20270115-080000L")
        #expect(DumpID("20270115-080000L") == id)
        #expect(id.startTime == Date(timeIntervalSince1970: 1_800_000_000))
        #expect(BackupID("20270115-080000L") == nil && DumpID("20270115-080000F") == nil && DumpID("20270115-08000L") == nil)
        let json = try JSONEncoder().encode([id])
        #expect(String(decoding: json, as: UTF8.self) == "[\"20270115-080000L\"]")
        #expect(try JSONDecoder().decode([DumpID].self, from: json) == [id])
        #expect((try? JSONDecoder().decode([DumpID].self, from: Data("[\"20270115-080000F\"]".utf8))) == nil)
    }

    @Test("dump keys parse as dump objects, never as backup objects; a backup folder's key never parses as a dump")
    func keys() throws {
        let layout = RepositoryLayout(cluster: "main")
        let id = try #require(DumpID("20270115-080000L"))
        #expect(layout.parse(layout.dumpManifestKey(id)) == .dump(id, "manifest.json"))
        #expect(layout.parse(layout.dumpObjectKey(id, "db/shop.dump")) == .dump(id, "db/shop.dump"))
        #expect(layout.parse(layout.dumpObjectKey(id, "db/shop.dump"))?.backupID == nil)
        #expect(layout.parse("main/backups/20270115-080000L/manifest.json") == nil)
        #expect(layout.parse("main/dumps/20270115-080000F/manifest.json") == nil)
        #expect(layout.parse("main/dumps/20270115-080000L/") == nil)
    }
}
