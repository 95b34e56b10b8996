import Foundation

/// The source of "now" for decision logic; tests inject a manual clock.
public protocol WaybackClock: Sendable {
    var now: Date { get }
}

public struct SystemClock: WaybackClock {
    public init() {}
    public var now: Date { Date() }
}

/// Monotonic seconds for measuring durations.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
