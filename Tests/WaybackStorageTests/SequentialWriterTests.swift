import Foundation
import Testing
import WaybackCore
@testable import WaybackStorage
import WaybackTesting

/// `SequentialWriter` on this machine's real file system (ext4 under /var/tmp, which takes
/// `O_DIRECT`): the bytes and the SHA-256 it reports are those appended, in every mode.
@Suite("Sequential writer: direct writes, background stages, rewind")
struct SequentialWriterTests {
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    static func directory() throws -> String {
        let dir = "/var/tmp/wayback-writer-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileSystem.makeDirectories(dir, mode: 0o700)
        return dir
    }

    /// `data` appended in pieces, copied in or (`inPlace`) written straight into the buffer.
    static func append(_ data: [UInt8], to w: SequentialWriter, pieces: Int, inPlace: Bool = false) throws {
        try data.withUnsafeBytes { all in
            var i = 0
            while i < all.count {
                let piece = UnsafeRawBufferPointer(rebasing: all[i..<min(i + pieces, all.count)])
                if inPlace {
                    try w.append(count: piece.count) { $0.baseAddress!.copyMemory(from: piece.baseAddress!, byteCount: piece.count) }
                } else {
                    try w.append(piece)
                }
                i += pieces
            }
        }
    }

    @Test("the file and the digest are the bytes appended, direct or not, in the background or not, copied in or filled in place, whatever the pieces and the tail",
          arguments: [(true, true), (true, false), (false, true), (false, false)])
    func writesWhatIsAppended(direct: Bool, background: Bool) throws {
        let dir = try Self.directory()
        defer { try? FileSystem.removeTree(dir) }
        // Several buffers, an unaligned tail, and pieces that straddle the buffers' ends.
        let data = Self.bytes(5 * SequentialWriter.bufferBytes + 12_345, seed: 7)
        for (pieces, inPlace) in [(8192, false), (65_537, false), (3 << 20, false), (1 << 20, true), (300_000, true), (3 << 20, true)] {
            let path = dir + "/f\(pieces)-\(inPlace)"
            let w = try SequentialWriter(creating: path, mode: 0o600, direct: direct, background: background)
            #expect(w.openedDirect == direct, "ext4 takes O_DIRECT")
            try Self.append(data, to: w, pieces: pieces, inPlace: inPlace)
            let (size, sha) = try w.finish()
            #expect(size == Int64(data.count))
            #expect(sha == SHA256Hasher.hex(data))
            #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))) == data, "pieces of \(pieces), in place: \(inPlace)")
            #expect((try FileSystem.status(path)?.mode ?? 0) & 0o777 == 0o600)
        }
        let empty = try SequentialWriter(creating: dir + "/empty", mode: 0o600, direct: direct, background: background)
        #expect(try empty.finish() == (0, SHA256Hasher.hex([])))
    }

    @Test("a file system that refuses O_DIRECT at open (ramfs, which creates the file first) is written through the page cache: same bytes, same digest")
    func refusedDirect() throws {
        guard getuid() == 0 else {
            // Mounting needs root; CI runs the tests as root.
            if TestEnvironment.isCI { Issue.record("mounting a ramfs needs root, and CI runs the tests as root") }
            return
        }
        let dir = try Self.directory()
        defer { try? FileSystem.removeTree(dir) }
        try #require(mount("ramfs", dir, "ramfs", 0, nil) == 0, "mount ramfs: \(String(cString: strerror(errno)))")
        defer { umount(dir) }
        let data = Self.bytes(3 * SequentialWriter.bufferBytes + 100, seed: 9)
        let w = try SequentialWriter(creating: dir + "/f", mode: 0o600, direct: true, background: true)
        #expect(!w.openedDirect, "ramfs refuses O_DIRECT")
        try Self.append(data, to: w, pieces: 65_536, inPlace: true)
        let (size, sha) = try w.finish()
        #expect(size == Int64(data.count) && sha == SHA256Hasher.hex(data))
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/f"))) == data)
    }

    @Test("a rewind, within the buffer or to an unaligned offset already written, starts the file and its digest over from there")
    func rewind() throws {
        let dir = try Self.directory()
        defer { try? FileSystem.removeTree(dir) }
        let a = Self.bytes(3 * SequentialWriter.bufferBytes + 5000, seed: 1), garbage = Self.bytes(2 * SequentialWriter.bufferBytes, seed: 2)
        let b = Self.bytes(SequentialWriter.bufferBytes + 777, seed: 3)
        for (name, cut) in [("within", a.count), ("written", 1_234_567)] {
            let w = try SequentialWriter(creating: dir + "/" + name, mode: 0o600, direct: true, background: true)
            try Self.append(Array(a[..<cut]), to: w, pieces: 100_000)
            let mark = w.position
            try Self.append(name == "within" ? Array(garbage[..<1000]) : garbage, to: w, pieces: 100_000)
            try w.rewind(to: mark)
            try Self.append(b, to: w, pieces: 100_000)
            let expected = Array(a[..<cut]) + b
            let (size, sha) = try w.finish()
            #expect(size == Int64(expected.count), "\(name)")
            #expect(sha == SHA256Hasher.hex(expected), "\(name)")
            #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))) == expected, "\(name)")
        }
    }

    @Test("a writer dropped without finish stops its threads before the file is closed; the file is not the data")
    func abandoned() throws {
        let dir = try Self.directory()
        defer { try? FileSystem.removeTree(dir) }
        do {
            let w = try SequentialWriter(creating: dir + "/dropped", mode: 0o600, direct: true, background: true)
            try Self.append(Self.bytes(4 * SequentialWriter.bufferBytes, seed: 4), to: w, pieces: 1 << 20)
        }
        // Every buffer handed on was written; the last one was never handed on.
        let size = try FileSystem.status(dir + "/dropped")?.size ?? -1
        #expect(size < 4 * Int64(SequentialWriter.bufferBytes) && size >= 0)
    }
}
