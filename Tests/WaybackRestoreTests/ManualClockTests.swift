import Foundation
import Testing
import WaybackCore
import WaybackTesting

/// The clock the pure decisions (restore records now; schedules and retention next) are driven by in tests.
@Suite struct ManualClockTests {
    @Test func movesOnlyWhenMovedAndMayJumpBack() {
        let clock = ManualClock(Date(timeIntervalSince1970: 1_000))
        #expect(clock.now == Date(timeIntervalSince1970: 1_000))
        clock.advance(by: 3600)
        #expect(clock.now == Date(timeIntervalSince1970: 4_600))
        clock.advance(by: -7200)
        #expect(clock.now == Date(timeIntervalSince1970: -2_600))
        clock.set(Date(timeIntervalSince1970: 42))
        let injected: any WaybackClock = clock
        #expect(injected.now == Date(timeIntervalSince1970: 42))
    }
}

@Suite struct SeededGeneratorTests {
    @Test func theSameSeedDrawsTheSameCases() {
        var a = SeededGenerator(seed: 42), b = SeededGenerator(seed: 42), c = SeededGenerator(seed: 43)
        let first = (0..<20).map { _ in Int.random(in: 0..<1000, using: &a) }
        #expect(first == (0..<20).map { _ in Int.random(in: 0..<1000, using: &b) })
        #expect(first != (0..<20).map { _ in Int.random(in: 0..<1000, using: &c) })
    }
}
