import Foundation
import WaybackCatalog
import WaybackConfig
import WaybackCore
import WaybackMonitor
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
// wayback-bench monitor BACKUPS PORT: what the daemon's listener costs with BACKUPS backups:
// one refresh's rendering (checks, metrics, status JSON and page; printed), then the listener on
// 127.0.0.1:PORT serving it until killed (bench/monitor.sh times the requests with curl).
if args.first == "monitor" {
    let n = args.dropFirst().first.flatMap { Int($0) } ?? 10_000
    let port = args.dropFirst(2).first.flatMap { Int($0) } ?? 9187
    let now = Date()
    var facts = HealthFacts(cluster: "main", gatheredAt: now)
    facts.backups = (0..<n).map { i in
        let stop = now.addingTimeInterval(-Double(n - i) * 3600)
        return HealthFacts.Backup(id: BackupID(startTime: stop, type: i % 24 == 0 ? .full : .incr).rawValue, type: i % 24 == 0 ? "full" : "incr",
                                  start: stop.addingTimeInterval(-300), stop: stop, repositoryBytes: 1 << 30)
    }
    let ids = facts.backups.map(\.id)
    facts.repositories = [.init(name: "local", reachable: true, error: nil, walPush: "sync", storedBytes: 1 << 40, queued: nil, queueError: nil, backups: ids),
                          .init(name: "offsite", reachable: true, error: nil, walPush: "async", storedBytes: 1 << 40, queued: 3, queueError: nil, backups: ids)]
    var window = RecoveryWindow(timeline: 1)
    window.earliest = facts.backups.first?.stop
    window.latest = now.addingTimeInterval(-30)
    facts.windows = [window]
    facts.archiver = .init(archivedCount: 100_000, failedCount: 0, lastArchivedWAL: "000000010000010000000000", lastArchivedTime: now.addingTimeInterval(-30),
                           lastFailedWAL: nil, lastFailedTime: nil)
    facts.lastVerified = now.addingTimeInterval(-3600)
    facts.lastDrill = .init(id: "drill-1", backup: ids.last ?? "", repository: "local", at: now.addingTimeInterval(-86400), passed: true,
                            recoverySeconds: 41, rtoSeconds: 900, failedChecks: [])
    facts.lastPassedDrill = facts.lastDrill
    var snapshot: MonitorState.Snapshot?
    let rendering = seconds {
        let report = HealthCheck.evaluate(facts, thresholds: HealthThresholds(), now: now)
        let doc = StatusDocument(health: report, facts: facts, jobsRunning: ["full": false, "incr": true])
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        snapshot = .init(metrics: Array(MetricsText.render(facts, report: report, extras: MetricsExtras(jobsRunning: ["full": false, "incr": true])).utf8),
                         json: Array((try? e.encode(doc)) ?? Data()), html: Array(StatusPage.render(doc, now: now).utf8), at: now)
    }
    let state = MonitorState()
    state.publish(snapshot!)
    print(String(format: "%d backups: one rendering %.1f ms (metrics %d bytes, status.json %d bytes, page %d bytes)", n, rendering * 1000,
                 snapshot!.metrics.count, snapshot!.json.count, snapshot!.html.count))
    let server = MonitorServer(host: "127.0.0.1", port: port, token: nil, state: state)
    let bound = try await server.start()
    print("serving on 127.0.0.1:\(bound)")
    fflush(nil)
    while true { try await Task.sleep(for: .seconds(3600)) }
}
guard args.first == "expiry" else {
    FileHandle.standardError.write(Data("usage: wayback-bench expiry [BACKUPS] [SEGMENTS] | config FILE | monitor [BACKUPS] [PORT]\n".utf8))
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
