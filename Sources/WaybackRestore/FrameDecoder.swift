import Foundation
#if canImport(Glibc)
import Glibc
#endif
import WaybackCatalog
import WaybackCore

/// Decodes the frames of a page-level rebuild in the order they are submitted, up to `ahead`
/// frames before the merge takes them. `threaded`: on a thread this decoder owns, so a large
/// file's decompression runs beside its merge and its hashing (`SequentialWriter`), instead of
/// on the merge's thread; otherwise `take` decodes the next frame itself. One caller.
///
/// Decoded frames live in memory the decoder maps itself and reuses from frame to frame, and
/// unmaps in `close`: a chain's merge holds a frame of every version at once, and the same
/// megabytes passed between threads through `malloc` stayed with the allocator's per-thread
/// arenas (a day's chain restore peaked 30-40 MB higher).
final class FrameDecoder: @unchecked Sendable {
    /// Frames submitted and not yet taken, at most.
    static let ahead = 2

    struct Job: Sendable {
        /// The stored bytes holding the frame (a batch of frames), and where its payload lies.
        let bytes: [UInt8]
        let payload: Range<Int>
        let header: FrameFormat.Header
        let name: String
    }

    /// A frame's plain bytes (its first `rawLength`), valid until `recycle` or `close`.
    typealias Plain = UnsafeMutableRawBufferPointer

    private let condition = NSCondition()
    /// Jobs and the memory each is to be decoded into.
    private var jobs = [(job: Job, buffer: Plain)]()
    private var decoded = [Result<Plain, any Error>]()
    /// Memory of frames merged, for the next frames; and all the memory mapped.
    private var spare = [Plain]()
    private var mapped = [Plain]()
    /// Frames submitted and not taken (queued, being decoded, or decoded).
    private var outstanding = 0
    private var closed = false
    private var running = false
    private let decompressor = Decompressor()

    init(threaded: Bool) {
        guard threaded else { return }
        running = true
        let t = Thread { [self] in run() }
        t.name = "wayback-decode"
        t.start()
    }

    deinit { close() }

    func submit(_ job: Job) throws {
        condition.lock()
        defer { condition.unlock() }
        let need = max(job.header.rawLength, 1)
        let buffer: Plain
        if let i = spare.lastIndex(where: { $0.count >= need }) {
            buffer = spare.remove(at: i)
        } else {
            let size = (max(need, FrameFormat.rawChunk) + 4095) / 4096 * 4096
            guard let memory = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), memory != MAP_FAILED else {
                throw WaybackError(.io, "cannot map \(size) bytes to decode \(job.name): the machine is out of memory; free some, or lower parallelism")
            }
            buffer = Plain(start: memory, count: size)
            mapped.append(buffer)
        }
        jobs.append((job, buffer))
        outstanding += 1
        condition.broadcast()
    }

    /// The oldest frame submitted and not taken.
    func take() throws -> UnsafeRawBufferPointer {
        condition.lock()
        defer { condition.unlock() }
        guard outstanding > 0 else { throw WaybackError(.internal, "a frame was taken before it was submitted") }
        outstanding -= 1
        if !running {
            let next = jobs.removeFirst()
            try decode(next.job, into: next.buffer)
            return UnsafeRawBufferPointer(next.buffer)
        }
        while decoded.isEmpty { condition.wait() }
        return UnsafeRawBufferPointer(try decoded.removeFirst().get())
    }

    /// Hands back the memory of a frame merged.
    func recycle(_ plain: UnsafeRawBufferPointer) {
        condition.lock()
        if let i = mapped.firstIndex(where: { UnsafeRawPointer($0.baseAddress) == plain.baseAddress }) { spare.append(mapped[i]) }
        condition.unlock()
    }

    /// Stops the thread after the frame in hand, waits for it to end, and unmaps every frame:
    /// nothing taken from this decoder is read after.
    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        while running { condition.wait() }
        for m in mapped { munmap(m.baseAddress, m.count) }
        mapped = []; spare = []; jobs = []; decoded = []; outstanding = 0
        condition.unlock()
    }

    private func decode(_ job: Job, into buffer: Plain) throws {
        try job.bytes.withUnsafeBytes { all in
            try FrameFormat.decodePayload(UnsafeRawBufferPointer(rebasing: all[job.payload]), header: job.header, decompressor: decompressor,
                                          object: job.name, into: buffer)
        }
    }

    private func run() {
        condition.lock()
        while true {
            while jobs.isEmpty && !closed { condition.wait() }
            if closed { break }
            let next = jobs.removeFirst()
            condition.unlock()
            let result = Result { try decode(next.job, into: next.buffer); return next.buffer }
            condition.lock()
            decoded.append(result)
            condition.broadcast()
        }
        running = false
        condition.broadcast()
        condition.unlock()
    }
}
