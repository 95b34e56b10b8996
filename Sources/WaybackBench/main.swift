import Foundation
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackRetention
import WaybackStorage

// wayback-bench expiry [BACKUPS] [SEGMENTS]: plans the expiry of a synthetic repository (an
// hourly backup, a full every 24, and SEGMENTS archived WAL files) as `expire` does after its
// listings: parse every key of the listings, plan with the default policy, choose the WAL to
// remove and batch the deletes. Prints the seconds of each step (bench/expiry.sh records them).

func seconds(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

let args = CommandLine.arguments.dropFirst()
// wayback-bench config FILE: the cost of reading a configuration (every command, wal-push too,
// reads it once): the first read (time zones and the like loaded) and the mean of 200 more.
if args.first == "config", let file = args.dropFirst().first {
    let env = ProcessInfo.processInfo.environment
    let first = seconds { _ = try? ConfigLoader.load(path: file, environment: env) }
    let more = seconds { for _ in 0..<200 { _ = try? ConfigLoader.load(path: file, environment: env) } }
    print(String(format: "read %@: first %.2f ms, then %.3f ms each", file, first * 1000, more * 1000 / 200))
    exit(0)
}
guard args.first == "expiry" else {
    FileHandle.standardError.write(Data("usage: wayback-bench expiry [BACKUPS] [SEGMENTS] | config FILE\n".utf8))
    exit(2)
}
let backupCount = args.dropFirst().first.flatMap { Int($0) } ?? 20_000
let segmentCount = args.dropFirst(2).first.flatMap { Int($0) } ?? 1_000_000
let segmentSize: UInt64 = 16 << 20
let layout = RepositoryLayout(cluster: "main")
let now = Date(timeIntervalSince1970: 1_800_000_000)

// The synthetic repository: backups one hour apart ending now; WAL spread over them.
var summaries = [BackupSummary]()
var keys = [ObjectInfo]()
var previous: BackupID?
let segmentsPerBackup = max(1, segmentCount / max(1, backupCount))
for i in 0..<backupCount {
    let start = now.addingTimeInterval(Double(i - backupCount) * 3600)
    let full = i % 24 == 0
    let type: BackupType = full ? .full : .incr
    let lsn = UInt64(i * segmentsPerBackup) * segmentSize + 0x28
    let m = BackupManifest(
        id: BackupID(startTime: start, type: type), type: type, reference: full ? nil : previous, cluster: "main", systemIdentifier: "1",
        pgVersionNumber: 150004, walSegmentSize: segmentSize, dataChecksums: true, startTime: start, stopTime: start.addingTimeInterval(600),
        startLSN: LSN(lsn), stopLSN: LSN(lsn + 0x1000), timeline: 1, startWAL: "", stopWAL: "", backupLabel: "", tablespaceMap: "",
        tablespaces: [], compression: CompressionSettings(), objects: [.init(name: "pack/00-0000.pack", size: 1 << 20, sha256: "")],
        directories: [], files: [], wal: [], copySeconds: 1)
    summaries.append(BackupSummary(m))
    keys.append(ObjectInfo(key: layout.manifestKey(m.id), size: 4096))
    keys.append(ObjectInfo(key: layout.objectKey(m.id, "pack/00-0000.pack"), size: 1 << 20))
    previous = m.id
}
var walKeys = [ObjectInfo]()
walKeys.reserveCapacity(segmentCount)
for s in 0..<segmentCount {
    walKeys.append(ObjectInfo(key: layout.walKey(WALFileName(timeline: 1, segmentNumber: UInt64(s + 1), segmentSize: segmentSize)), size: 1 << 22))
}

var listed = [BackupID: Int64]()
var names = [WALFileName]()
let parse = seconds {
    listed = StatusIndex.manifestSizes(keys, layout: layout)
    names = walKeys.compactMap { o in
        if case .wal(let n)? = layout.parse(o.key) { return n }
        return nil
    }
}
var plan: RetentionPlan?
let planning = seconds { plan = RetentionPlanner.plan(summaries, policy: .default, now: now) }
var removed = [WALFileName]()
var requests = 0
let wal = seconds {
    removed = RetentionPlanner.walToRemove(names, cutoff: plan?.walCutoff, segmentSize: segmentSize)
    requests = (removed.count + 999) / 1000 + ((plan?.expired.count ?? 0) * 2 + 999) / 1000
}
print("""
    backups \(backupCount) (listed \(listed.count)), WAL segments \(segmentCount)
    parse listings   \(String(format: "%.3f", parse)) s
    plan             \(String(format: "%.3f", planning)) s (\(plan?.expired.count ?? 0) backups expire, \(plan?.kept.count ?? 0) kept)
    WAL to remove    \(String(format: "%.3f", wal)) s (\(removed.count) files, \(requests) delete requests of up to 1,000 keys on S3)
    planning total   \(String(format: "%.3f", planning + wal)) s (with parsing the listings \(String(format: "%.3f", parse + planning + wal)) s)
    """)
