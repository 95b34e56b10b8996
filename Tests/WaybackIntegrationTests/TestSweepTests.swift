import Foundation
import Testing

import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// The test suite's own hygiene: a run killed by a timeout leaves its throwaway clusters running;
/// the next run stops and removes them.
@Suite("stale test directories", .enabled(if: TestEnvironment.runIntegration))
struct TestSweepTests {
    @Test("sweepStale stops the cluster of a test process that is gone and removes its directory; a live process's directory and others are kept")
    func sweepsWhatKilledRunsLeft() throws {
        let parent = try TestEnvironment.makeTemporaryDirectory("sweep")
        defer { try? FileSystem.removeTree(parent) }
        // A process number that is gone: a child that has ended and been reaped.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        let gone = child.processIdentifier
        let stale = parent + "/wayback-test-p\(gone)-abc123", live = parent + "/wayback-test-p\(getpid())-def456"
        let unrelated = parent + "/wayback-notes"
        for dir in [stale, live, unrelated] {
            try FileSystem.makeDirectories(dir)
            try TestEnvironment.giveToTestUser(dir, mode: 0o755)
        }
        let cluster = LocalCluster(binDirectory: TestEnvironment.pgBin, dataDirectory: stale + "/restored/pgdata", socketDirectory: stale,
                                   port: 15399, osUser: TestEnvironment.osUser)
        try FileSystem.makeDirectories(stale + "/restored")
        try TestEnvironment.giveToTestUser(stale + "/restored", mode: 0o755)
        try cluster.initdb(checksums: false)
        try cluster.start()
        defer { try? cluster.stop(mode: "immediate") }
        let postmaster = try #require(DataDirectory.runningPostmasterPID(cluster.dataDirectory))

        #expect(TestEnvironment.sweepStale(in: parent) == [stale])
        #expect(!Self.running(postmaster), "the stale cluster's postmaster \(postmaster) still runs")
        #expect(try FileSystem.status(stale) == nil)
        #expect(try FileSystem.status(live) != nil && FileSystem.status(unrelated) != nil)
    }

    /// Whether process `pid` runs (an ended one that nothing has reaped yet, a zombie, does not).
    static func running(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(close, offsetBy: 2)] != "Z"
    }
}
