import Foundation
import Synchronization
import Testing
@testable import WaybackCore

@Suite struct EventLogTests {
    struct FixedClock: WaybackClock { var now: Date }

    @Test func eventsAreValuesHandedToTheSinkAsTheyHappenAndKept() throws {
        let seen = Mutex<[WaybackEvent]>([])
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        let log = EventLog(operation: .backup, cluster: "main", clock: FixedClock(now: t)) { e in seen.withLock { $0.append(e) } }
        log.emit(.warning, .walQueueBehind, "queue half full", repository: "offsite")
        log.emit(.error, .damagedPages, "2 pages fail their checksum", backup: "20261206-020000F")
        #expect(seen.withLock { $0 } == log.events, "the sink saw every event, in order, as it was emitted")
        let e = try #require(log.events.first)
        #expect(e.operation == .backup && e.cluster == "main" && e.repository == "offsite" && e.time == t && e.kind == .walQueueBehind)
        #expect(log.worst == .error)
        // Stable names: the JSON a notification or a metric is built from.
        let json = String(decoding: try JSONEncoder().encode(log.events[1]), as: UTF8.self)
        #expect(json.contains("\"kind\":\"damaged-pages\"") && json.contains("\"severity\":\"error\"") && json.contains("\"operation\":\"backup\""))
    }

    @Test func aLogKeepsAtMostItsLimitAndCountsTheRest() {
        let log = EventLog(operation: .daemon, cluster: nil, limit: 3)
        for i in 0..<10 { log.emit(.info, .jobOutcome, "job \(i)") }
        #expect(log.events.map(\.message) == ["job 0", "job 1", "job 2"])
        #expect(log.dropped == 7)
    }

    @Test func severitiesAreOrdered() {
        #expect(WaybackEvent.Severity.info < .warning && WaybackEvent.Severity.warning < .error && WaybackEvent.Severity.error < .critical)
        #expect(EventLog.collecting(.status).worst == nil)
    }
}

@Suite struct ErrorCauseTests {
    @Test func causesAreStructuredAndDescribed() {
        let e = WaybackError.system(.io, "cannot open the lock file", call: "open", errno: ENOENT)
        #expect(e.cause == .system(call: "open", errno: ENOENT))
        #expect(e.description.hasPrefix("cannot open the lock file (open: No such file or directory"))
        let q = WaybackError(.postgres, "PostgreSQL rejected a query", cause: .query("pg_backup_start"))
        #expect(q.description == "PostgreSQL rejected a query (query pg_backup_start)")
        struct Other: Error, CustomStringConvertible { var description: String { "disk on fire" } }
        let w = WaybackError.wrap(Other(), as: .io, "writing failed")
        #expect(w.code == .io && w.cause == .underlying("disk on fire"))
        #expect(WaybackError.wrap(q, "ignored").cause == .query("pg_backup_start"), "a WaybackError is kept as it is")
    }
}

@Suite struct BlockingTests {
    /// More blocking bodies than there are cooperative threads, each waiting for a signal that only
    /// an async task can send: if the bodies held cooperative threads, that task could never run
    /// and each wait would time out.
    @Test func blockingWorkNeverHoldsACooperativeThread() async throws {
        let n = ProcessInfo.processInfo.activeProcessorCount * 2 + 2
        let go = DispatchSemaphore(value: 0)
        final class Count: Sendable { let value = Mutex(0) }
        let timedOut = Count()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<n {
                group.addTask {
                    try await Blocking.run {
                        // Long: other suites' synchronous process runs may hold the cooperative
                        // threads for a while; a deadlock still fails the test.
                        if go.wait(timeout: .now() + 300) == .timedOut { timedOut.value.withLock { $0 += 1 } }
                    }
                }
            }
            group.addTask {
                try await Task.sleep(nanoseconds: 100_000_000)
                for _ in 0..<n { go.signal() }
            }
            try await group.waitForAll()
        }
        #expect(timedOut.value.withLock { $0 } == 0)
    }

    @Test func errorsComeBackToTheCaller() async {
        struct Boom: Error {}
        await #expect(throws: Boom.self) { try await Blocking.run { throw Boom() } }
    }
}
