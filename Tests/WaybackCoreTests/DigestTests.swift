import Testing
import WaybackCore

@Suite("SHA-256 on a background thread")
struct DigestTests {
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    @Test("same digest as SHA256Hasher, whatever the pieces; the queue bound does not lose or reorder bytes")
    func matchesPlainHasher() {
        let data = Self.bytes(3_000_000, seed: 7)
        let expected = SHA256Hasher.hex(data)
        for piece in [1, 4096, 65_537, 1 << 20] {
            let h = BackgroundHasher(depth: 2)
            data.withUnsafeBytes { all in
                var i = 0
                while i < all.count {
                    h.update(UnsafeRawBufferPointer(rebasing: all[i..<min(i + piece, all.count)]))
                    i += piece
                }
            }
            #expect(h.finalizeHex() == expected, "pieces of \(piece)")
            #expect(h.finalizeHex() == expected, "a second finalizeHex gives the same")
        }
        #expect(BackgroundHasher().finalizeHex() == SHA256Hasher.hex([]))
    }

    @Test("restore(mark) starts the input over from the mark, as a retried read does")
    func snapshotAndRestore() {
        let a = Self.bytes(100_000, seed: 1), garbage = Self.bytes(50_000, seed: 2), b = Self.bytes(70_000, seed: 3)
        let h = BackgroundHasher()
        a.withUnsafeBytes { h.update($0) }
        let mark = h.snapshot()
        garbage.withUnsafeBytes { h.update($0) }
        h.restore(mark)
        b.withUnsafeBytes { h.update($0) }
        #expect(h.finalizeHex() == SHA256Hasher.hex(a + b))
        #expect(h.finalizeHex() != SHA256Hasher.hex(a + garbage + b))
    }
}
