import WaybackCore

/// A page as replay leaves it after restoring a record's full-page image.
///
/// PostgreSQL takes a record's image of a page after the record's change (`XLogInsert` copies the
/// buffer the change was just made in), and replay of a record whose image it applies
/// (`BKPIMAGE_APPLY`) copies the image and does nothing else to the page (`BLK_RESTORED`);
/// `wal_consistency_checking` rests on the same fact (the page after replay must equal the
/// image). So when the last record of a range that names a page carries such an image, replay
/// from the range's start leaves the page as this: the image, its hole (the free space between
/// `pd_lower` and `pd_upper`, left out of the WAL) zero-filled, `pd_lsn` the record's end, and,
/// with data checksums, `pd_checksum` computed as PostgreSQL computes it when it writes the page.
/// Hint bits set after the record are not in it, as after any crash recovery.
public struct WALPageImage: Sendable, Equatable {
    /// How a range's map keeps images: an index page's (`filtered`) with LZ4 after `PageDelta` (a
    /// B-tree leaf of pgbench in about 320 bytes: a fifth more than zstd level 1 takes, four times
    /// faster), others with zstd level 1 (a heap page in half the bytes LZ4 takes).
    static func compression(filtered: Bool) -> CompressionSettings {
        filtered ? CompressionSettings(algorithm: .lz4, level: 1) : CompressionSettings(algorithm: .zstd, level: 1)
    }

    /// A compressor for each kind of image, made when first needed (one task's, as `Compressor`).
    final class Compressors {
        lazy var plain = Compressor(WALPageImage.compression(filtered: false))
        lazy var filtered = Compressor(WALPageImage.compression(filtered: true))
    }
    static let pageHeader = 24

    /// The image without its hole: plain (a slice of the record it came in, not copied), or
    /// compressed as `compression` says (`compressed`), after `PageDelta` for an index page
    /// (`filtered`: a B-tree leaf of pgbench in about 320 bytes instead of 2.4 KB).
    public private(set) var bytes: ArraySlice<UInt8>
    public private(set) var compressed = false
    public private(set) var filtered = false
    public let holeOffset: Int
    public let holeLength: Int
    /// The end of the record (aligned as PostgreSQL's `EndRecPtr`): the page's LSN after replay.
    public let lsn: LSN

    /// Nil for what is not a whole page's image or is a new page's (`pd_upper` 0: replay leaves
    /// such a page without an LSN).
    init?(_ image: ArraySlice<UInt8>, holeOffset: Int, lsn: LSN) {
        let size = PageChecksum.pageSize, hole = size - image.count
        guard hole >= 0, hole == 0 || (holeOffset >= Self.pageHeader && holeOffset + hole <= size),
              image.count >= Self.pageHeader else { return nil }
        let start = image.startIndex
        guard UInt16(image[start + 14]) | UInt16(image[start + 15]) << 8 != 0 else { return nil }
        bytes = image
        self.holeOffset = hole == 0 ? 0 : holeOffset
        holeLength = hole
        self.lsn = lsn
    }

    /// The same image, compressed; an index page's (a 16-byte special space, as `PageDelta.suits`
    /// tells a frame's pages) through `PageDelta` first.
    func compressed(with compressors: Compressors) throws -> WALPageImage {
        guard !compressed else { return self }
        var out = self
        let start = bytes.startIndex
        let special = Int(bytes[start + 16]) | Int(bytes[start + 17]) << 8
        out.filtered = special == PageChecksum.pageSize - 16
        out.bytes = try bytes.withUnsafeBytes { plain in
            guard out.filtered else { return try compressors.plain.compress(plain) { ArraySlice($0) } }
            var delta = [UInt8].scratch(count: plain.count)
            return try delta.withUnsafeMutableBytes { d in
                PageDelta.encode(plain, into: d)
                return try compressors.filtered.compress(UnsafeRawBufferPointer(d)) { ArraySlice($0) }
            }
        }
        out.compressed = true
        return out
    }

    /// Writes the page replay would leave into `page` (one page): `block` is its number in the
    /// relation fork (what the checksum covers); `checksums`: the cluster has data checksums.
    public func write(into page: UnsafeMutableRawBufferPointer, block: UInt32, checksums: Bool, decompressor: Decompressor) throws {
        let size = PageChecksum.pageSize
        precondition(page.count == size)
        let plain = size - holeLength
        func place(_ image: UnsafeRawBufferPointer) {
            page.baseAddress!.copyMemory(from: image.baseAddress!, byteCount: holeOffset)
            (page.baseAddress! + holeOffset).initializeMemory(as: UInt8.self, repeating: 0, count: holeLength)
            (page.baseAddress! + holeOffset + holeLength).copyMemory(from: image.baseAddress! + holeOffset, byteCount: plain - holeOffset)
        }
        try bytes.withUnsafeBytes { stored in
            if compressed {
                try decompressor.decompress(stored, algorithm: Self.compression(filtered: filtered).algorithm, rawLength: plain) { raw in
                    guard filtered else { return place(raw) }
                    // Unfiltered into the page's first bytes, then the part after the hole moved to
                    // its place (the regions overlap: copyMemory moves).
                    PageDelta.decode(raw, into: UnsafeMutableRawBufferPointer(rebasing: page[0..<plain]))
                    (page.baseAddress! + holeOffset + holeLength).copyMemory(from: page.baseAddress! + holeOffset, byteCount: plain - holeOffset)
                    (page.baseAddress! + holeOffset).initializeMemory(as: UInt8.self, repeating: 0, count: holeLength)
                }
            } else {
                guard stored.count == plain else { throw WaybackError(.corrupt, "a page image has \(stored.count) bytes, expected \(plain)") }
                place(stored)
            }
        }
        page.storeBytes(of: UInt32(truncatingIfNeeded: lsn.value >> 32), toByteOffset: 0, as: UInt32.self)
        page.storeBytes(of: UInt32(truncatingIfNeeded: lsn.value), toByteOffset: 4, as: UInt32.self)
        if checksums {
            page.storeBytes(of: PageChecksum.compute(UnsafeRawBufferPointer(page), block: block), toByteOffset: 8, as: UInt16.self)
        }
    }
}
