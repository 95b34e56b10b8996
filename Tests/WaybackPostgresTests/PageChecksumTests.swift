import Testing
import WaybackCore
import WaybackPostgres

@Suite struct PageChecksumTests {
    @Test func relationFilesAreRecognised() {
        #expect(PageChecksum.relationFile("base/5/16384") == .init(fileNode: 16384, fork: "main", segment: 0))
        #expect(PageChecksum.relationFile("base/5/16384_fsm.2") == .init(fileNode: 16384, fork: "fsm", segment: 2))
        #expect(PageChecksum.relationFile("global/1262_vm") == .init(fileNode: 1262, fork: "vm", segment: 0))
        #expect(PageChecksum.relationFile("pg_tblspc/16400/PG_15_202209061/5/16401.1")?.firstBlock == 131_072)
        for other in ["base/5/PG_VERSION", "global/pg_control", "global/pg_filenode.map", "base/5/pg_internal.init",
                      "base/5/t3_16384", "base/5/16384_xyz", "pg_wal/000000010000000000000001", "base/16384"] {
            #expect(PageChecksum.relationFile(other) == nil, "\(other)")
        }
    }

    @Test func aPageVerifiesOnlyWithItsChecksumAndBlock() {
        var page = [UInt8](repeating: 0, count: PageChecksum.pageSize)
        #expect(page.withUnsafeBytes { PageChecksum.verifies($0, block: 7) }, "a new, all-zero page is valid")
        // A page with a header (pd_upper != 0) and some content.
        page[14] = 0x00; page[15] = 0x20            // pd_upper = 8192
        for i in 24..<PageChecksum.pageSize where i % 7 == 0 { page[i] = UInt8(truncatingIfNeeded: i) }
        let sum = page.withUnsafeBytes { PageChecksum.compute($0, block: 7) }
        page[8] = UInt8(sum & 0xFF); page[9] = UInt8(sum >> 8)
        #expect(page.withUnsafeBytes { PageChecksum.verifies($0, block: 7) })
        #expect(!page.withUnsafeBytes { PageChecksum.verifies($0, block: 8) }, "the block number is part of the checksum")
        page[4000] ^= 0x01
        #expect(!page.withUnsafeBytes { PageChecksum.verifies($0, block: 7) })
        page[4000] ^= 0x01
        page[100] = 1
        var zeroHeader = [UInt8](repeating: 0, count: PageChecksum.pageSize)
        zeroHeader[100] = 1
        #expect(!zeroHeader.withUnsafeBytes { PageChecksum.verifies($0, block: 0) }, "a new page must be all zeroes")
    }
}
