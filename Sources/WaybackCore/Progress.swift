import Synchronization

/// A snapshot of a long copy (backup or restore), for progress lines.
public struct ProgressSnapshot: Sendable {
    public var phase: String
    public var doneBytes: Int64
    public var totalBytes: Int64
    public var elapsedSeconds: Double

    public var fraction: Double { totalBytes > 0 ? min(1, Double(doneBytes) / Double(totalBytes)) : 1 }
    public var bytesPerSecond: Double { elapsedSeconds > 0 ? Double(doneBytes) / elapsedSeconds : 0 }
    public var etaSeconds: Double? {
        let rate = bytesPerSecond
        return rate > 0 ? Double(totalBytes - doneBytes) / rate : nil
    }

    public var line: String {
        let pct = String(Int(fraction * 100))
        let mbs = Int(bytesPerSecond / 1_000_000)
        let eta = etaSeconds.map { " ETA \(Format.seconds($0))" } ?? ""
        return "\(phase): \(pct)% of \(Format.bytes(totalBytes)), \(mbs) MB/s\(eta)"
    }
}

/// Receives progress snapshots (the command line prints them; tests ignore them).
public typealias ProgressHandler = @Sendable (ProgressSnapshot) -> Void

/// A thread-safe byte counter shared by the workers of one copy.
public final class ByteCounter: Sendable {
    private let value = Atomic<Int64>(0)
    private let bytesPerSecond: Double?
    private let start = monotonicSeconds()
    /// - Parameter bytesPerSecond: the average rate `consume` holds the callers to (nil: no limit).
    public init(bytesPerSecond: Int64? = nil) { self.bytesPerSecond = bytesPerSecond.map(Double.init) }
    public func add(_ n: Int64) { value.add(n, ordering: .relaxed) }
    public var current: Int64 { value.load(ordering: .relaxed) }

    /// Counts `n` bytes and, with a rate limit, waits until they are within it. Throws
    /// `CancellationError` once the task is cancelled (a daemon's shutdown): a copy stops at its
    /// next read instead of finishing unthrottled.
    public func consume(_ n: Int64) async throws {
        try Task.checkCancellation()
        let total = value.add(n, ordering: .relaxed).newValue
        guard let rate = bytesPerSecond else { return }
        let ahead = Double(total) / rate - (monotonicSeconds() - start)
        if ahead > 0.001 { try await Task.sleep(nanoseconds: UInt64(ahead * 1e9)) }
    }
}

/// Calls `handler` about once per `interval` seconds while `body` runs.
public func withProgress<R: Sendable>(phase: String, total: Int64, counter: ByteCounter, interval: Double,
                                      handler: ProgressHandler?, _ body: () async throws -> R) async throws -> R {
    guard let handler else { return try await body() }
    let start = monotonicSeconds()
    let ticker = Task {
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
            if Task.isCancelled { break }
            handler(ProgressSnapshot(phase: phase, doneBytes: counter.current, totalBytes: total, elapsedSeconds: monotonicSeconds() - start))
        }
    }
    defer { ticker.cancel() }
    let r = try await body()
    handler(ProgressSnapshot(phase: phase, doneBytes: counter.current, totalBytes: total, elapsedSeconds: monotonicSeconds() - start))
    return r
}

/// Hands out 0, 1, 2, ... to concurrent workers (each index once), up to `limit`.
public final class WorkCursor: Sendable {
    private let value = Atomic<Int>(0)
    public let limit: Int
    public init(limit: Int) { self.limit = limit }
    public func next() -> Int? {
        let v = value.wrappingAdd(1, ordering: .relaxed).oldValue
        return v < limit ? v : nil
    }
}
