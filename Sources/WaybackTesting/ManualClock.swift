import Foundation
import Synchronization
import WaybackCore

/// A clock that moves only when a test moves it: the schedule, retention and other pure
/// decisions are driven by it instead of waiting for wall-clock time.
public final class ManualClock: WaybackClock {
    private let current: Mutex<Date>

    /// Starts at `start` (default 2027-01-15 12:00:00 UTC).
    public init(_ start: Date = Date(timeIntervalSince1970: 1_800_014_400)) { current = Mutex(start) }

    public var now: Date { current.withLock { $0 } }

    /// Moves the clock forward (or, with a negative value, back, as a system clock may jump).
    public func advance(by seconds: TimeInterval) { current.withLock { $0 += seconds } }

    public func set(_ date: Date) { current.withLock { $0 = date } }
}
