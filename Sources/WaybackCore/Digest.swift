import Crypto
import Foundation

/// Lower-case hex of bytes.
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(64)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Bytes of a lower-case or upper-case hex string; nil when malformed.
public func bytesFromHex(_ text: String) -> [UInt8]? {
    let utf8 = Array(text.utf8)
    guard utf8.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c - 48
        case 97...102: c - 87
        case 65...70: c - 55
        default: nil
        }
    }
    var out = [UInt8]()
    out.reserveCapacity(utf8.count / 2)
    var i = 0
    while i < utf8.count {
        guard let h = nibble(utf8[i]), let l = nibble(utf8[i + 1]) else { return nil }
        out.append(h << 4 | l)
        i += 2
    }
    return out
}

/// Incremental SHA-256 returning lower-case hex.
public struct SHA256Hasher: Sendable {
    private var inner = SHA256()
    public init() {}
    public mutating func update(_ bytes: UnsafeRawBufferPointer) { inner.update(bufferPointer: bytes) }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { inner.update(bufferPointer: $0) } }
    public func finalizeHex() -> String { hexString(inner.finalize()) }

    public static func hex(_ bytes: [UInt8]) -> String {
        var h = SHA256Hasher(); h.update(bytes); return h.finalizeHex()
    }
}

/// SHA-256 computed on a thread of its own, so that a worker decompressing and writing a large
/// file does not also spend its core on hashing it (the hash is a serial chain: it cannot be split
/// between workers). `update` copies the bytes into a bounded queue (`depth` buffers; it waits
/// while the queue is full); `snapshot` and `restore` let a caller start a part of the input over,
/// as copies of a `SHA256Hasher` do. `finalizeHex` ends the thread; it may be called again.
public final class BackgroundHasher: @unchecked Sendable {
    private enum Item { case data([UInt8]), snapshot(Int), restore(Int), finish }
    private let condition = NSCondition()
    private let depth: Int
    // Guarded by `condition`.
    private var queue: [Item] = []
    private var queuedBuffers = 0
    private var spare: [[UInt8]] = []
    private var nextMark = 0
    private var finishing = false
    private var result: String?

    public init(depth: Int = 4) {
        self.depth = depth
        Thread.detachNewThread { [self] in run() }
    }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        condition.lock()
        while queuedBuffers >= depth { condition.wait() }
        var buffer = spare.popLast() ?? []
        queuedBuffers += 1
        condition.unlock()
        buffer.removeAll(keepingCapacity: true)
        buffer.append(contentsOf: bytes)
        enqueue(.data(buffer))
    }

    /// Marks the current point of the input; `restore(mark)` returns the hash to it.
    public func snapshot() -> Int {
        condition.lock()
        let mark = nextMark
        nextMark += 1
        condition.unlock()
        enqueue(.snapshot(mark))
        return mark
    }

    public func restore(_ mark: Int) { enqueue(.restore(mark)) }

    public func finalizeHex() -> String {
        condition.lock()
        defer { condition.unlock() }
        if !finishing {
            finishing = true
            queue.append(.finish)
            condition.broadcast()
        }
        while result == nil { condition.wait() }
        return result!
    }

    private func enqueue(_ item: Item) {
        condition.lock()
        queue.append(item)
        condition.broadcast()
        condition.unlock()
    }

    private func run() {
        var hasher = SHA256Hasher()
        var marks = [Int: SHA256Hasher]()
        while true {
            condition.lock()
            while queue.isEmpty { condition.wait() }
            let item = queue.removeFirst()
            condition.unlock()
            switch item {
            case .data(let bytes):
                hasher.update(bytes)
                condition.lock()
                queuedBuffers -= 1
                spare.append(bytes)
                condition.broadcast()
                condition.unlock()
            case .snapshot(let mark):
                marks[mark] = hasher
            case .restore(let mark):
                if let saved = marks[mark] { hasher = saved }
            case .finish:
                condition.lock()
                result = hasher.finalizeHex()
                condition.broadcast()
                condition.unlock()
                return
            }
        }
    }
}

/// Incremental MD5 (used only for the backup's MD5 digest, which tools expect next to SHA-256).
public struct MD5Hasher: Sendable {
    private var inner = Insecure.MD5()
    public init() {}
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { inner.update(bufferPointer: $0) } }
    public func finalizeHex() -> String { hexString(inner.finalize()) }
}
