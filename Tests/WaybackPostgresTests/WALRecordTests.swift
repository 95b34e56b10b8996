import Testing
import WaybackCore
@testable import WaybackPostgres

/// Writes WAL the way PostgreSQL lays it out: 8 KiB pages with short headers, a long header at the
/// start of each segment, 8-byte aligned records chained by xl_prev, records split across pages
/// and segments with XLP_FIRST_IS_CONTRECORD and xlp_rem_len.
struct SyntheticWAL {
    static let page = 8192
    let segmentSize: Int
    var bytes: [UInt8]
    var pos = 40
    var prev: UInt64 = 0
    let firstSegment: UInt64

    init(segments: Int, segmentSize: Int = 1 << 20, firstSegment: UInt64 = 4) {
        self.segmentSize = segmentSize
        self.firstSegment = firstSegment
        bytes = [UInt8](repeating: 0, count: segments * segmentSize)
        writePageHeader(at: 0, remaining: 0)
    }

    var base: UInt64 { firstSegment * UInt64(segmentSize) }

    mutating func put(_ v: UInt64, at o: Int, size: Int) { for i in 0..<size { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }

    mutating func writePageHeader(at o: Int, remaining: Int) {
        let long = o % segmentSize == 0
        put(0xD110, at: o, size: 2)
        put(UInt64((long ? 2 : 0) | (remaining > 0 ? 1 : 0)), at: o + 2, size: 2)
        put(1, at: o + 4, size: 4)
        put(base + UInt64(o), at: o + 8, size: 8)
        put(UInt64(remaining), at: o + 16, size: 4)
        if long {
            put(7_777_777, at: o + 24, size: 8)
            put(UInt64(segmentSize), at: o + 32, size: 4)
            put(UInt64(Self.page), at: o + 36, size: 4)
        }
    }

    /// Appends a record; returns its LSN.
    @discardableResult
    mutating func record(rmid: UInt8, info: UInt8, xid: UInt32, main: [UInt8], brokenPrev: Bool = false) -> LSN {
        pos = (pos + 7) & ~7
        if pos % Self.page == 0 { writePageHeader(at: pos, remaining: 0); pos += pos % segmentSize == 0 ? 40 : 24 }
        var r = [UInt8](repeating: 0, count: 24)
        let mainHeader: [UInt8] = main.count <= 255 ? [255, UInt8(main.count)]
            : [254] + (0..<4).map { UInt8(truncatingIfNeeded: main.count >> (8 * $0)) }
        let total = 24 + mainHeader.count + main.count
        for i in 0..<4 { r[i] = UInt8(truncatingIfNeeded: total >> (8 * i)) }
        for i in 0..<4 { r[4 + i] = UInt8(truncatingIfNeeded: xid >> (8 * UInt32(i))) }
        let p = brokenPrev ? prev &+ 8 : prev
        for i in 0..<8 { r[8 + i] = UInt8(truncatingIfNeeded: p >> (8 * UInt64(i))) }
        r[16] = info; r[17] = rmid
        r += mainHeader + main
        let start = base + UInt64(pos)
        var done = 0
        while done < r.count {
            if pos % Self.page == 0 {
                writePageHeader(at: pos, remaining: r.count - done)
                pos += pos % segmentSize == 0 ? 40 : 24
            }
            let n = min(r.count - done, Self.page - pos % Self.page)
            bytes.replaceSubrange(pos..<(pos + n), with: r[done..<(done + n)])
            pos += n; done += n
        }
        prev = start
        return LSN(start)
    }

    static func le64(_ v: Int64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    mutating func commit(xid: UInt32, time: Int64) -> LSN { record(rmid: 1, info: 0x00, xid: xid, main: Self.le64(time)) }
    mutating func abort(xid: UInt32, time: Int64) -> LSN { record(rmid: 1, info: 0x20, xid: xid, main: Self.le64(time)) }
    mutating func restorePoint(_ name: String, time: Int64) -> LSN {
        var n = Array(name.utf8); n += [UInt8](repeating: 0, count: 64 - n.count)
        return record(rmid: 0, info: 0x70, xid: 0, main: Self.le64(time) + n)
    }
    mutating func filler(_ size: Int) -> LSN { record(rmid: 10, info: 0, xid: 9, main: [UInt8](repeating: 0xAB, count: size)) }

    func segment(_ i: Int) -> ArraySlice<UInt8> { bytes[(i * segmentSize)..<((i + 1) * segmentSize)] }
}

@Suite struct WALRecordScannerTests {
    @Test func eventsAcrossPagesAndTheEndOfWAL() throws {
        var w = SyntheticWAL(segments: 1)
        let c = w.commit(xid: 100, time: 1_000)
        let big = w.filler(20_000)  // spans three pages
        let rp = w.restorePoint("before_migration", time: 2_000)
        let a = w.abort(xid: 101, time: 3_000)
        var scanner = WALRecordScanner(segmentSize: 1 << 20)
        let scan = try Array(w.segment(0)).withUnsafeBytes { try scanner.scan($0, segmentNumber: 4) }
        #expect(scan.records == 4)
        #expect(scan.events == [
            WALEvent(kind: .commit, lsn: c, endLSN: LSN(c.value + 34), xid: 100, timestamp: 1_000),
            WALEvent(kind: .restorePoint("before_migration"), lsn: rp, endLSN: scan.events[1].endLSN, xid: 0, timestamp: 2_000),
            WALEvent(kind: .abort, lsn: a, endLSN: scan.events[2].endLSN, xid: 101, timestamp: 3_000),
        ])
        #expect(scan.firstRecord == c && scan.lastRecord == a)
        #expect(big > c && rp > big)
        #expect(scan.endOfWAL)
    }

    @Test func aRecordContinuedIntoTheNextSegment() throws {
        var w = SyntheticWAL(segments: 2)
        _ = w.commit(xid: 5, time: 10)
        // Fill almost to the end of the first segment, then a commit that straddles it.
        while w.pos < (1 << 20) - 3 * 8192 { _ = w.filler(8000) }
        let straddling = w.record(rmid: 1, info: 0, xid: 77, main: SyntheticWAL.le64(99) + [UInt8](repeating: 0, count: 3 * 8192))
        let after = w.commit(xid: 78, time: 100)
        var scanner = WALRecordScanner(segmentSize: 1 << 20)
        let first = try Array(w.segment(0)).withUnsafeBytes { try scanner.scan($0, segmentNumber: 4) }
        #expect(first.events.map(\.xid) == [5])
        #expect(first.endOfRecords == nil && !first.endOfWAL)
        let second = try Array(w.segment(1)).withUnsafeBytes { try scanner.scan($0, segmentNumber: 5) }
        #expect(second.events.map(\.xid) == [77, 78])
        #expect(second.events[0].lsn == straddling && second.events[1].lsn == after)
        // Scanned alone, the second segment skips the continuation and starts at the next record.
        var fresh = WALRecordScanner(segmentSize: 1 << 20)
        let alone = try Array(w.segment(1)).withUnsafeBytes { try fresh.scan($0, segmentNumber: 5) }
        #expect(alone.events.map(\.xid) == [78])
    }

    @Test func aBrokenChainEndsTheWAL() throws {
        var w = SyntheticWAL(segments: 1)
        _ = w.commit(xid: 1, time: 1)
        _ = w.commit(xid: 2, time: 2)
        _ = w.record(rmid: 1, info: 0, xid: 3, main: SyntheticWAL.le64(3), brokenPrev: true)  // stale data of a recycled segment
        var scanner = WALRecordScanner(segmentSize: 1 << 20)
        let scan = try Array(w.segment(0)).withUnsafeBytes { try scanner.scan($0, segmentNumber: 4) }
        #expect(scan.events.map(\.xid) == [1, 2])
        #expect(scan.endOfWAL)
        #expect(throws: WaybackError.self) {
            var s = WALRecordScanner(segmentSize: 1 << 20)
            _ = try Array(w.segment(0)).withUnsafeBytes { try s.scan($0, segmentNumber: 9) }  // wrong page address
        }
    }
}

@Suite struct TimelineHistoryTests {
    @Test func parseAndPath() throws {
        let h = try TimelineHistory.parse("1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n", timeline: 3)
        #expect(h.parents.map(\.timeline) == [1, 2])
        #expect(h.path.map(\.timeline) == [1, 2, 3])
        #expect(h.timeline(at: LSN(0x3000157)) == 1 && h.timeline(at: LSN(0x3000158)) == 2 && h.timeline(at: LSN(0x6000000)) == 3)
        #expect(h.switchPoint(leaving: 1) == LSN(0x3000158) && h.switchPoint(leaving: 3) == nil)
        // The segment holding a switch point is read from the new timeline.
        let seg = UInt64(16 << 20)
        #expect(h.timeline(forSegment: 2, segmentSize: seg) == 1)
        #expect(h.timeline(forSegment: 3, segmentSize: seg) == 2)
        #expect(h.timeline(forSegment: 5, segmentSize: seg) == 3)
        #expect(throws: WaybackError.self) { try TimelineHistory.parse("1\tnot-an-lsn\n", timeline: 2) }
        #expect(throws: WaybackError.self) { try TimelineHistory.parse("2\t0/5000000\n1\t0/3000000\n", timeline: 3) }
    }
}

/// The headers of one record, walked as DecodeXLogRecord walks them.
@Suite struct WALRecordLayoutTests {
    static func record(_ body: [UInt8]) -> [UInt8] {
        var r = [UInt8](repeating: 0, count: 24)
        let total = UInt32(24 + body.count)
        for i in 0..<4 { r[i] = UInt8(truncatingIfNeeded: total >> (8 * i)) }
        return r + body
    }
    static func le(_ v: UInt32, _ n: Int = 4) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    @Test func aFullPageImageWithoutMainDataAndTwoBlocksOfOneRelation() throws {
        // Block 0: an image of 16 bytes with a hole (not compressed), relation 1663/5/16404, block 669;
        // block 1: the same relation (BKPBLOCK_SAME_REL), block 670, 3 bytes of data. No main data:
        // after the headers come the image and the data, which must not be read as headers.
        let image = [UInt8](repeating: 0, count: 16), data: [UInt8] = [9, 9, 9]
        let body = [0, 0x10] + Self.le(0, 2) + Self.le(16, 2) + Self.le(40, 2) + [0x03] + Self.le(1663) + Self.le(5) + Self.le(16404) + Self.le(669)
            + [1, 0xA0] + Self.le(3, 2) + Self.le(670) + image + data
        let layout = try WALRecordLayout.parse(Self.record(body), magic: 0xD110).get()
        #expect(layout.blocks.map(\.block) == [669, 670] && layout.blocks.allSatisfy { $0.fork == RelationFork(tablespace: 1663, database: 5, relation: 16404, fork: 0) })
        #expect(layout.main.isEmpty)
        // PostgreSQL 14's flags: 0x02 means compressed there, so a hole length follows.
        let compressed14 = [0, 0x10] + Self.le(0, 2) + Self.le(16, 2) + Self.le(40, 2) + [0x03] + Self.le(8, 2) + Self.le(1663) + Self.le(5) + Self.le(7) + Self.le(1) + image
        #expect(try WALRecordLayout.parse(Self.record(compressed14), magic: 0xD10D).get().blocks.map(\.fork.relation) == [7])
        // Main data after a block: its range is the record's last bytes.
        let withMain = [0, 0x20] + Self.le(2, 2) + Self.le(1663) + Self.le(5) + Self.le(42) + Self.le(3) + [255, 4] + [7, 7] + [1, 2, 3, 4]
        let r = Self.record(withMain)
        let l = try WALRecordLayout.parse(r, magic: 0xD110).get()
        #expect(l.blocks.map(\.block) == [3] && Array(r[l.main]) == [1, 2, 3, 4])
        // A SAME_REL block with no relation before it, and a cut header: refused.
        #expect(throws: WaybackError.self) { try WALRecordLayout.parse(Self.record([0, 0x80] + Self.le(0, 2) + Self.le(1) + [0, 0, 0, 0]), magic: 0xD110).get() }
        #expect(throws: WaybackError.self) { try WALRecordLayout.parse(Self.record([0, 0x00, 0]), magic: 0xD110).get() }
    }

    /// A page as PostgreSQL lays one out: header (pd_lower 200, pd_upper 7000), line pointers and
    /// tuples in the used parts, stale bytes in the hole.
    static func page(seed: UInt8) -> [UInt8] {
        var p = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
        p.replaceSubrange(12..<16, with: le(200, 2) + le(7000, 2))
        return p
    }

    /// A record whose block 0 carries `image` (flags `info`, hole at `hole`) and block 1 only
    /// data, and main data.
    static func imageRecord(_ image: [UInt8], hole: Int, info: UInt8, block: UInt32 = 669) -> [UInt8] {
        record([0, 0x10] + le(0, 2) + le(UInt32(image.count), 2) + le(UInt32(hole), 2) + [info] + le(1663) + le(5) + le(16404) + le(block)
               + [1, 0xA0] + le(3, 2) + le(block + 1) + [255, 2] + image + [9, 9, 9] + [7, 7])
    }

    @Test func fullPageImagesAreFoundAndRebuiltAsReplayLeavesThem() throws {
        let original = Self.page(seed: 3)
        let image = Array(original[0..<200] + original[7000...])
        let r = Self.imageRecord(image, hole: 200, info: 0x03)  // 15: BKPIMAGE_HAS_HOLE | BKPIMAGE_APPLY
        let layout = try WALRecordLayout.parse(r, magic: 0xD110, images: true).get()
        let ref = try #require(layout.images.first ?? nil)
        #expect(Array(r[ref.range]) == image && ref.holeOffset == 200 && ref.applied && !ref.compressed)
        #expect(layout.images.count == 2 && layout.images[1] == nil && Array(r[layout.main]) == [7, 7])
        // 13-14 flags: 0x04 is APPLY there, 0x02 compressed.
        let old = try WALRecordLayout.parse(Self.imageRecord(image, hole: 200, info: 0x05), magic: 0xD10D, images: true).get()
        #expect(old.images[0]?.applied == true && old.images[0]?.compressed == false)
        #expect(try WALRecordLayout.parse(Self.imageRecord(image, hole: 200, info: 0x01), magic: 0xD110, images: true).get().images[0]?.applied == false)

        // The map keeps the image of a page whose last record carries one, with the record's end
        // (8-aligned) as its LSN; a later record without an image drops it.
        let fork = RelationFork(tablespace: 1663, database: 5, relation: 16404, fork: 0)
        var map = WALBlockMap(from: LSN(0x1000), imageBudget: 1 << 20)
        map.add(record: r, lsn: LSN(0x2000), pageMagic: 0xD110, end: LSN(0x2000 + UInt64(r.count)))
        let kept = try #require(map.images[fork]?[669])
        #expect(kept.lsn == LSN((0x2000 + UInt64(r.count) + 7) & ~7) && kept.holeLength == 8192 - 200 - 1192)
        #expect(map.images[fork]?[670] == nil && map.blocks[fork] == [669, 670])
        var next = WALBlockMap(from: LSN(0x1000), imageBudget: 1 << 20)
        next.add(record: Self.record([0, 0x20] + Self.le(2, 2) + Self.le(1663) + Self.le(5) + Self.le(16404) + Self.le(669) + [7, 7]),
                 lsn: LSN(0x9000), pageMagic: 0xD110, end: LSN(0x9040))
        #expect(next.images[fork]?[669] == nil)
        // Merged: compressed and kept within the budget; a later part naming the block wins.
        var range = WALBlockMap(from: LSN(0x1000), imageBudget: 1 << 20)
        range.append(map)
        let stored = try #require(range.images[fork]?[669])
        #expect(stored.compressed && stored.bytes.count < image.count && range.imageBytes == stored.bytes.count)
        #expect(range.toRead(range.blocks) == [fork: [670]])
        var tight = WALBlockMap(from: LSN(0x1000), imageBudget: 16)
        tight.append(map)
        #expect(tight.images.isEmpty && tight.toRead(tight.blocks) == [fork: [669, 670]])
        range.append(next)
        #expect(range.images.isEmpty && range.imageBytes == 0)

        // Rebuilt: the used parts as they were, the hole zero, pd_lsn the record's end, and the
        // checksum PostgreSQL would write for block 669.
        var page = [UInt8](repeating: 0xEE, count: 8192)
        try page.withUnsafeMutableBytes { try stored.write(into: $0, block: 669, checksums: true, decompressor: Decompressor()) }
        #expect(Array(page[24..<200]) == Array(original[24..<200]) && Array(page[7000...]) == Array(original[7000...]))
        #expect(page[200..<7000].allSatisfy { $0 == 0 } && Array(page[10..<24]) == Array(original[10..<24]))
        page.withUnsafeBytes { p in
            #expect(PageChecksum.lsn(p) == kept.lsn)
            #expect(PageChecksum.verifies(p, block: 669) && !PageChecksum.verifies(p, block: 670))
        }
        // An index page's image (a 16-byte special space) is kept through `PageDelta` (then LZ4),
        // far smaller, and rebuilt the same.
        var leaf = Self.page(seed: 5)
        leaf.replaceSubrange(16..<18, with: Self.le(8176, 2))
        for item in stride(from: 7000, to: 8176, by: 16) {
            leaf.replaceSubrange(item..<(item + 16), with: Self.le(UInt32(item / 16)) + Self.le(0x10) + Self.le(UInt32(item)) + Self.le(0))
        }
        let leafImage = Array(leaf[0..<200] + leaf[7000...])
        var leafPart = WALBlockMap(from: LSN(0x1000), imageBudget: 1 << 20), leafRange = leafPart
        leafPart.add(record: Self.imageRecord(leafImage, hole: 200, info: 0x03), lsn: LSN(0x2000), pageMagic: 0xD110, end: LSN(0x3000))
        leafRange.append(leafPart)
        let leafStored = try #require(leafRange.images[fork]?[669])
        #expect(leafStored.filtered && !stored.filtered && leafStored.bytes.count < leafImage.count / 4)
        var rebuilt = [UInt8](repeating: 0xEE, count: 8192), expected = leaf
        try rebuilt.withUnsafeMutableBytes { try leafStored.write(into: $0, block: 669, checksums: false, decompressor: Decompressor()) }
        expected.replaceSubrange(200..<7000, with: repeatElement(0, count: 6800))
        expected.replaceSubrange(0..<8, with: Self.le(0) + Self.le(0x3000))
        #expect(rebuilt == expected)

        // Not taken: a new page's image (pd_upper 0) and what is not a page.
        var new = image
        new[14] = 0; new[15] = 0
        #expect(WALPageImage(new[...], holeOffset: 200, lsn: LSN(1)) == nil)
        #expect(WALPageImage(image[0..<100], holeOffset: 20, lsn: LSN(1)) == nil)
    }
}
