import Foundation
#if canImport(Glibc)
import Glibc
#endif
import WaybackCore

/// Writes a new file front to back and computes its SHA-256, for a restore.
///
/// With `direct`, whole aligned blocks are written with `O_DIRECT`: a restore's gigabytes go
/// from page-aligned buffers to the disk without being copied into the page cache (which a
/// restore only fills with pages nobody reads, evicting the ones that are), and without the kernel
/// allocating a page-cache page for every 4 KiB written. On a virtual machine that hands freed
/// memory back to its host, that allocation was most of a buffered restore's system time
/// (docs/benchmarks.md, "Direct writes"). The tail of the file, and everything where the file
/// system refuses `O_DIRECT` (at open or at a write), goes through the page cache, every 8 MiB
/// handed to write-back.
///
/// With `background`, a filled buffer (1 MiB) is handed to two threads that this writer owns:
/// one hashes it, one writes it; the caller fills the next one meanwhile. `depth` buffers bound
/// the memory. Without it, both happen on the caller's thread. Not thread-safe: one caller.
public final class SequentialWriter {
    public static let alignment = 4096
    public static let bufferBytes = 1 << 20
    static let writebackStep: Int64 = 8 << 20

    public let path: String
    private let file: PosixFile
    private let state: State
    private var threads: [Thread] = []
    /// The buffer being filled, how much of it is, and the file offset of its first byte.
    private var current: Int
    private var filled = 0
    private var base: Int64 = 0

    /// The file was opened with `O_DIRECT` (the file system took it).
    public let openedDirect: Bool

    /// Where the next byte goes.
    public var position: Int64 { base + Int64(filled) }

    /// Creates `path` (it must not exist) with `mode`.
    public init(creating path: String, mode: mode_t, direct: Bool, background: Bool, depth: Int = 3) throws {
        self.path = path
        let opened = direct ? try PosixFile.createDirect(path, mode: mode) : nil
        file = try opened ?? PosixFile.create(path, mode: mode, readable: true)
        openedDirect = opened != nil
        state = State(path: path, fd: file.fd, direct: opened != nil, buffers: background ? max(depth, 2) : 1)
        guard !state.buffers.isEmpty else {
            try? file.close()
            throw WaybackError(.io, "cannot allocate the write buffers for \(path): the machine is out of memory; free some, or lower parallelism")
        }
        current = state.free.removeLast()
        if background {
            for stage in [Stage.hash, .write] {
                let t = Thread { [state] in state.run(stage) }
                t.name = "wayback-\(stage)"
                threads.append(t)
                t.start()
            }
        }
    }

    /// A writer dropped without `finish` (an error): its threads write nothing more and are
    /// gone before the file is closed.
    deinit { state.abandon() }

    /// Appends `bytes`.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            if filled == Self.bufferBytes { try submit() }
            let n = min(bytes.count - done, Self.bufferBytes - filled)
            (state.buffers[current].baseAddress! + filled).copyMemory(from: bytes.baseAddress! + done, byteCount: n)
            filled += n
            done += n
        }
    }

    /// Appends `count` bytes that `fill` writes straight into the buffer (a frame decompressed
    /// where it is to be written); `fill` writes all `count` or throws, and then nothing is added.
    public func append(count: Int, _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        guard count <= Self.bufferBytes else {
            var bytes = [UInt8].scratch(count: count)
            try bytes.withUnsafeMutableBytes { try fill($0) }
            return try bytes.withUnsafeBytes { try append($0) }
        }
        // A buffer handed on before it is full stays direct while its length is whole blocks.
        if Self.bufferBytes - filled < count { try submit() }
        try fill(UnsafeMutableRawBufferPointer(rebasing: state.buffers[current][filled..<(filled + count)]))
        filled += count
    }

    /// Overwrites bytes already appended, at file offset `offset`, while they are still in the
    /// buffer being filled: after an `append(count:)` of at most `bufferBytes`, its whole span is,
    /// until the next append.
    public func patch(at offset: Int64, _ bytes: UnsafeRawBufferPointer) throws {
        guard offset >= base, offset + Int64(bytes.count) <= position else {
            throw WaybackError(.internal, "cannot patch \(path) at \(offset): bytes \(base)..<\(position) are the ones still held")
        }
        (state.buffers[current].baseAddress! + Int(offset - base)).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }

    /// Continues the file at `offset` (at most `position`): what follows it is written again.
    /// Going back past what was already handed on re-reads the file up to `offset` for the digest
    /// and writes the rest of the file through the page cache (a rare path: a repository that
    /// failed in the middle of a read, retried from another one).
    public func rewind(to offset: Int64) throws {
        precondition(offset <= position)
        if offset >= base { filled = Int(offset - base); return }
        try state.drain()
        try state.stopDirect()
        try file.truncate(offset)
        var hasher = SHA256Hasher()
        var done: Int64 = 0
        let scratch = state.buffers[current]
        while done < offset {
            let n = try file.pread(into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<Int(min(Int64(scratch.count), offset - done))]), offset: done)
            guard n > 0 else { throw WaybackError(.io, "cannot read \(path) back: it ends at \(done) bytes, before \(offset)") }
            hasher.update(UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
            done += Int64(n)
        }
        state.hasher = hasher
        base = offset
        filled = 0
    }

    /// Writes what is buffered and closes the file; returns its size and SHA-256.
    public func finish() throws -> (size: Int64, sha256: String) {
        if filled > 0 { try submit() }
        try state.drain()
        state.stop()
        try file.close()
        return (base, state.hasher.finalizeHex())
    }

    /// Hands the current buffer on (hashed and written, here or by the threads) and takes a free one.
    private func submit() throws {
        let job = Job(buffer: current, offset: base, count: filled)
        current = try state.submit(job, inline: threads.isEmpty)
        base += Int64(filled)
        filled = 0
    }

    enum Stage: String { case hash, write }

    struct Job {
        var buffer: Int
        var offset: Int64
        var count: Int
    }

    /// The buffers, the two stages' queues and what they produced; guarded by `condition` except
    /// `hasher` (the hash stage's own, read by the caller after `drain`) and `direct` (the write
    /// stage's, likewise).
    final class State: @unchecked Sendable {
        let path: String
        let fd: Int32
        var direct: Bool
        let buffers: [UnsafeMutableRawBufferPointer]
        let condition = NSCondition()
        var free: [Int]
        var queues: [Stage: [Job]] = [.hash: [], .write: []]
        /// How many stages still hold each buffer.
        var holders: [Int]
        var error: WaybackError?
        var stopping = false
        var abandoned = false
        var hasher = SHA256Hasher()

        init(path: String, fd: Int32, direct: Bool, buffers count: Int) {
            self.path = path; self.fd = fd; self.direct = direct
            var buffers = [UnsafeMutableRawBufferPointer]()
            for _ in 0..<count {
                var memory: UnsafeMutableRawPointer?
                guard posix_memalign(&memory, SequentialWriter.alignment, SequentialWriter.bufferBytes) == 0, let memory else { break }
                buffers.append(UnsafeMutableRawBufferPointer(start: memory, count: SequentialWriter.bufferBytes))
            }
            if buffers.count != count { buffers.forEach { Glibc.free($0.baseAddress) }; buffers = [] }
            self.buffers = buffers
            free = Array(buffers.indices)
            holders = Array(repeating: 0, count: buffers.count)
        }

        // The threads hold the state until they end, so no buffer is freed under them.
        deinit { buffers.forEach { Glibc.free($0.baseAddress) } }

        /// Queues `job` for both stages (or runs them now, `inline`); returns a free buffer.
        func submit(_ job: Job, inline: Bool) throws -> Int {
            if inline {
                if error == nil { perform(.hash, job); perform(.write, job) }
                if let error { throw error }
                return job.buffer
            }
            condition.lock()
            defer { condition.unlock() }
            holders[job.buffer] = 2
            queues[.hash]!.append(job)
            queues[.write]!.append(job)
            condition.broadcast()
            while free.isEmpty && error == nil { condition.wait() }
            if let error { throw error }
            return free.removeLast()
        }

        /// Waits until every queued buffer is hashed and written.
        func drain() throws {
            condition.lock()
            defer { condition.unlock() }
            while holders.contains(where: { $0 > 0 }) { condition.wait() }
            if let error { throw error }
        }

        func stop() {
            condition.lock()
            stopping = true
            condition.broadcast()
            condition.unlock()
        }

        /// Stops every stage after the job in hand, and waits for it.
        func abandon() {
            condition.lock()
            abandoned = true
            stopping = true
            condition.broadcast()
            while holders.contains(where: { $0 > 0 }) { condition.wait() }
            condition.unlock()
        }

        func run(_ stage: Stage) {
            while true {
                condition.lock()
                while queues[stage]!.isEmpty && !stopping { condition.wait() }
                guard !queues[stage]!.isEmpty else { condition.unlock(); return }
                let job = queues[stage]!.removeFirst()
                let failed = error != nil || abandoned
                condition.unlock()
                if !failed { perform(stage, job) }
                condition.lock()
                holders[job.buffer] -= 1
                if holders[job.buffer] == 0 { free.append(job.buffer) }
                condition.broadcast()
                condition.unlock()
            }
        }

        func perform(_ stage: Stage, _ job: Job) {
            let span = UnsafeRawBufferPointer(rebasing: buffers[job.buffer][0..<job.count])
            switch stage {
            case .hash:
                hasher.update(span)
            case .write:
                do { try write(span, at: job.offset) } catch let e {
                    condition.lock()
                    if error == nil { error = WaybackError.wrap(e, as: .io, "cannot write \(path)") }
                    condition.unlock()
                }
            }
        }

        private func write(_ span: UnsafeRawBufferPointer, at offset: Int64) throws {
            // Only whole blocks at aligned offsets go direct: the tail of the file does not.
            if direct, span.count % SequentialWriter.alignment != 0 || offset % Int64(SequentialWriter.alignment) != 0 { try stopDirect() }
            var done = 0
            while done < span.count {
                let n = Glibc.pwrite(fd, span.baseAddress! + done, span.count - done, off_t(offset) + off_t(done))
                if n >= 0 { done += n; continue }
                if errno == EINTR { continue }
                // Accepted at open, refused at the write: write through the cache.
                if errno == EINVAL, direct { try stopDirect(); continue }
                throw PosixError.make(errno, "write", path)
            }
            let end = offset + Int64(span.count)
            if !direct, end / SequentialWriter.writebackStep > offset / SequentialWriter.writebackStep {
                // Hand each 8 MiB to the disk as it is written, so the final syncfs does not
                // start the whole write-back at the end.
                let step = SequentialWriter.writebackStep
                PosixFile.startWriteback(fd: fd, offset: end / step * step - step, length: step)
            }
        }

        func stopDirect() throws {
            guard direct else { return }
            let flags = fcntl(fd, F_GETFL)
            guard flags >= 0, fcntl(fd, F_SETFL, flags & ~SequentialWriter.oDirect) == 0 else { throw PosixError.make(errno, "fcntl", path) }
            direct = false
        }
    }

    /// Linux's O_DIRECT, which Glibc's module map hides behind _GNU_SOURCE.
    #if arch(x86_64) || arch(i386)
    static let oDirect: Int32 = 0o40000
    #else
    static let oDirect: Int32 = 0o200000
    #endif
}
