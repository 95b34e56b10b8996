import Foundation

/// A random number generator that repeats from its seed (SplitMix64), for tests that draw random
/// cases: the seed is printed, and `TEST_WAYBACK_SEED=N` replays the same draw.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public let seed: UInt64
    private var state: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        state = seed
    }

    /// The seed from `TEST_WAYBACK_SEED`, else a new random one; says which on stdout.
    public static func fromEnvironment(label: String) -> SeededGenerator {
        let given = ProcessInfo.processInfo.environment["TEST_WAYBACK_SEED"].flatMap { UInt64($0) }
        let seed = given ?? UInt64.random(in: 1...UInt64.max)
        print("\(label): random seed \(seed) (TEST_WAYBACK_SEED=\(seed) repeats this run)")
        return SeededGenerator(seed: seed)
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
