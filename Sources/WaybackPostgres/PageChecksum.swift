import WaybackCore

/// PostgreSQL's data page checksum (`pg_checksum_page`, storage/checksum_impl.h): an FNV-1a
/// variant over the 8 KiB page in 32 parallel lanes, with `pd_checksum` taken as zero, mixed with
/// the block number and folded to 16 bits (modulo 65535, plus one).
public enum PageChecksum {
    public static let pageSize = 8192
    /// Blocks per 1 GiB relation segment file (RELSEG_SIZE with 8 KiB pages).
    public static let blocksPerSegment: UInt32 = 131_072

    static let prime: UInt32 = 16_777_619
    static let baseOffsets: [UInt32] = [
        0x5B1F_36E9, 0xB852_5960, 0x02AB_50AA, 0x1DE6_6D2A, 0x79FF_467A, 0x9BB9_F8A3, 0x217E_7CD2, 0x83E1_3D2C,
        0xF8D4_474F, 0xE39E_B970, 0x42C6_AE16, 0x9932_16FA, 0x7B09_3B5D, 0x98DA_FF3C, 0xF718_902A, 0x0B1C_9CDB,
        0xE58F_764B, 0x1876_36BC, 0x5D7B_3BB1, 0xE73D_E7DE, 0x92BE_C979, 0xCCA6_C0B2, 0x304A_0979, 0x85AA_43D4,
        0x7831_25BB, 0x6CA8_EAA2, 0xE407_EAC6, 0x4B5C_FC3E, 0x9FBF_8C76, 0x15CA_20BE, 0xF2CA_9FD3, 0x959B_D756]

    /// The checksum PostgreSQL would store in `pd_checksum` for `page` (8 KiB) at `block`.
    ///
    /// Written as plain loops over 32 lanes in a small buffer: LLVM vectorizes them (about
    /// 15 GB/s on this machine's cores); Swift's generic `SIMD32` type was scalarized (100 MB/s).
    public static func compute(_ page: UnsafeRawBufferPointer, block: UInt32) -> UInt16 {
        precondition(page.count == pageSize)
        guard Int(bitPattern: page.baseAddress) % 4 == 0 else {
            let copy = [UInt8](page)
            return copy.withUnsafeBytes { compute($0, block: block) }
        }
        return withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 32) { sums in
            for j in 0..<32 { sums[j] = baseOffsets[j] }
            let words = page.baseAddress!.assumingMemoryBound(to: UInt32.self)
            for i in 0..<(pageSize / 128) {
                let row = words + i * 32
                for j in 0..<32 {
                    var value = row[j]
                    if i == 0 && j == 2 { value &= 0xFFFF_0000 }  // pd_checksum (bytes 8-9) counts as zero
                    let t = sums[j] ^ value
                    sums[j] = (t &* prime) ^ (t &>> 17)
                }
            }
            var result: UInt32 = 0
            for j in 0..<32 {
                var s = sums[j]
                for _ in 0..<2 { s = (s &* prime) ^ (s &>> 17) }  // two rounds of zeroes
                result ^= s
            }
            result ^= block
            return UInt16(truncatingIfNeeded: result % 65535 + 1)
        }
    }

    /// The page LSN (`pd_lsn`).
    public static func lsn(_ page: UnsafeRawBufferPointer) -> LSN {
        let hi = UInt64(page.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let lo = UInt64(page.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        return LSN(hi << 32 | lo)
    }

    /// True when the page verifies as PostgreSQL's `PageIsVerified` would: a new page (pd_upper 0)
    /// must be all zeroes; any other page must carry the right checksum.
    public static func verifies(_ page: UnsafeRawBufferPointer, block: UInt32) -> Bool {
        let upper = page.loadUnaligned(fromByteOffset: 14, as: UInt16.self)
        if upper == 0 {
            // A new page: all zeroes (compared a word at a time).
            let words = page.count / 8
            for w in 0..<words where page.loadUnaligned(fromByteOffset: w * 8, as: UInt64.self) != 0 { return false }
            return true
        }
        return page.loadUnaligned(fromByteOffset: 8, as: UInt16.self) == compute(page, block: block)
    }

    /// A relation file of the data directory: the relation's file node, its fork and the segment
    /// number (`base/5/16384_fsm.2` -> 16384, "fsm", 2); nil for every other file.
    public struct RelationFile: Sendable, Equatable {
        public var fileNode: UInt32
        public var fork: String
        public var segment: UInt32
        public init(fileNode: UInt32, fork: String, segment: UInt32) { self.fileNode = fileNode; self.fork = fork; self.segment = segment }
        public var firstBlock: UInt32 { segment &* PageChecksum.blocksPerSegment }
    }

    public static func relationFile(_ path: String) -> RelationFile? {
        let parts = path.split(separator: "/")
        let inRelationDirectory: Bool
        switch parts.first {
        case "base": inRelationDirectory = parts.count == 3
        case "global": inRelationDirectory = parts.count == 2
        case "pg_tblspc": inRelationDirectory = parts.count == 5
        default: inRelationDirectory = false
        }
        guard inRelationDirectory, let name = parts.last else { return nil }
        var base = name[...], segment: UInt32 = 0
        if let dot = name.firstIndex(of: ".") {
            guard let s = UInt32(name[name.index(after: dot)...]) else { return nil }
            segment = s
            base = name[..<dot]
        }
        var fork = "main"
        if let underscore = base.firstIndex(of: "_") {
            fork = String(base[base.index(after: underscore)...])
            guard ["fsm", "vm", "init"].contains(fork) else { return nil }
            base = base[..<underscore]
        }
        guard !base.isEmpty, base.allSatisfy(\.isNumber), let node = UInt32(base) else { return nil }
        return RelationFile(fileNode: node, fork: fork, segment: segment)
    }
}
