import Foundation
import Testing
import WaybackCatalog
import WaybackCore

/// The disk-space decisions: thresholds, one entry per file system, quotas, forecasts, the
/// expected size of a backup, and "unknown" (never "ok") for what could not be looked at.
@Suite struct DiskWatchTests {
    @Test func levelsEntriesAndQuotas() {
        let t = DiskWatch.Thresholds(warnPercent: 80, criticalPercent: 90)
        #expect(t.level(79.9) == .ok && t.level(80) == .warning && t.level(90) == .critical)
        // Two paths on one file system are one entry with both labels; a missing path is unknown.
        let entries = DiskWatch.check([.init(label: "a", path: "/"), .init(label: "b", path: "/"), .init(label: "gone", path: "/nonexistent/x"),
                                       .init(label: "s3", usedBytes: 85, quotaBytes: 100), .init(label: "s3 unread", usedBytes: nil, quotaBytes: 100)],
                                      thresholds: t)
        #expect(entries.count == 4)
        #expect(entries[0].labels == ["a", "b"] && entries[0].usedPercent != nil)
        #expect(entries[1].level == .unknown && entries[1].error?.contains("/nonexistent/x") == true && entries[1].text.contains("UNKNOWN"))
        #expect(entries[2].level == .warning && entries[2].availableBytes == 15 && entries[2].text.hasPrefix("WARNING: s3"))
        #expect(entries[3].level == .unknown)
        #expect(DiskWatch.Level.unknown > .ok && DiskWatch.Level.critical > .warning)
    }

    @Test func forecastsFromSamplesAndFromBackups() throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let samples = (0..<24).map { (time: start.addingTimeInterval(Double($0) * 3600), usedBytes: Int64(1_000_000 + $0 * 1000)) }
        let growth = try #require(DiskWatch.growthPerDay(samples))
        #expect(abs(growth - 24_000) < 1)
        #expect(DiskWatch.forecast(availableBytes: 240_000, growthPerDay: growth).map { abs($0 - 10) < 0.01 } == true)
        #expect(DiskWatch.growthPerDay(Array(samples.prefix(1))) == nil)
        #expect(DiskWatch.forecast(availableBytes: 1, growthPerDay: -5) == nil)
        let backups = (0..<3).map { i in
            BackupSummary(StatusOverviewTests.manifest(i, objects: [.init(name: "pack/00-0000.pack", size: Int64(700 * (i + 1)), sha256: "")]))
        }
        let now = backups.last!.stopTime
        #expect(DiskWatch.growthPerDay(backups: backups, now: now) == Double(700 + 1400 + 2100) / 7)
        #expect(DiskWatch.expectedSize(type: .full, backups: backups, firstFullBytes: 1) == 2100)
        #expect(DiskWatch.expectedSize(type: .incr, backups: backups, firstFullBytes: 1) == 0)
        #expect(DiskWatch.expectedSize(type: .full, backups: [], firstFullBytes: 99) == 99)
    }
}
