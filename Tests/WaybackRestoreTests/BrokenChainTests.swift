import Foundation
import Logging
import Testing
import WaybackCatalog
import WaybackCore
import WaybackStorage
import WaybackTesting
@testable import WaybackRestore

/// A repository whose every backup has a broken chain (a diff or incr whose full is gone).
@Suite struct BrokenChainTests {
    static func repository() async throws -> Catalog {
        let catalog = Catalog(repository: Repository(name: "mem", driver: MemoryStorage()), cluster: "c")
        try await catalog.writeBinding(ClusterBinding(cluster: "c", systemIdentifier: 42, pgMajorVersion: 15, pgVersionNumber: 150004,
                                                      walSegmentSize: 16 << 20, blockSize: 8192, dataChecksums: true, created: Date()))
        let orphan = BackupManifest(
            id: BackupID("20261101-010000I")!, type: .incr, reference: BackupID("20261101-000000F"), cluster: "c", systemIdentifier: "42",
            pgVersionNumber: 150004, walSegmentSize: 16 << 20, dataChecksums: true, startTime: Date(), stopTime: Date(),
            startLSN: LSN(0x2FFFF00), stopLSN: LSN(0x3000000), timeline: 1, startWAL: "", stopWAL: "", backupLabel: "",
            tablespaceMap: "", tablespaces: [], compression: CompressionSettings(), objects: [], directories: [], files: [],
            wal: [], copySeconds: 0)
        try await catalog.writeManifest(orphan)
        return catalog
    }

    @Test func thePlanIsAClearErrorAndStatusAgreesThatNothingIsRecoverable() async throws {
        let catalog = try await Self.repository()
        for target in [RecoveryTarget.latest, .backupEnd] {
            let request = RecoveryRequest(target: target, exclusive: false, action: nil, timeline: .current, backupID: nil)
            do {
                _ = try await RecoveryPlanner.plan(request, catalog: catalog, parallelism: 1, logger: Logger(label: "test"))
                Issue.record("planned a restore of a broken chain")
            } catch let e as WaybackError {
                #expect(e.code == .corrupt && e.message.contains("chain lacks a backup it builds on"), "\(e.message)")
            }
        }
        let status = try await StatusOverview.gather(
            catalog, members: [.init(repository: catalog.repository, type: "local", location: "/mem", walPush: "sync")],
            queue: WALQueue(path: "/nonexistent"))
        #expect(status.report.backups.count == 1)
        #expect(status.windows.isEmpty, "status shows a window the plan refuses")
    }
}
