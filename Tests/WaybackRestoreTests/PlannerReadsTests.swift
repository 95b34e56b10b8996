import Foundation
import Logging
import Testing
import WaybackCatalog
import WaybackCore
import WaybackStorage
import WaybackTesting
@testable import WaybackRestore

/// The planner decides from the status index's summaries and reads the manifests of the chosen
/// chain alone.
@Suite struct PlannerReadsTests {
    static func manifest(_ id: String, type: BackupType, reference: String?, start: UInt64) -> BackupManifest {
        BackupManifest(
            id: BackupID(id)!, type: type, reference: reference.flatMap { BackupID($0) }, cluster: "c", systemIdentifier: "42",
            pgVersionNumber: 150004, walSegmentSize: 16 << 20, dataChecksums: true, startTime: Date(), stopTime: Date(),
            startLSN: LSN(start), stopLSN: LSN(start + 0x100), timeline: 1, startWAL: "", stopWAL: "", backupLabel: "",
            tablespaceMap: "", tablespaces: [], compression: CompressionSettings(), objects: [], directories: [], files: [],
            wal: [], copySeconds: 0)
    }

    @Test func aRestoreReadsOnlyItsChainsManifestsAndAnUnreadableOneOutsideItDoesNotStopIt() async throws {
        let storage = MemoryStorage()
        let catalog = Catalog(repository: Repository(name: "mem", driver: storage), cluster: "c")
        try await catalog.writeBinding(ClusterBinding(cluster: "c", systemIdentifier: 42, pgMajorVersion: 15, pgVersionNumber: 150004,
                                                      walSegmentSize: 16 << 20, blockSize: 8192, dataChecksums: true, created: Date()))
        let full = Self.manifest("20261101-000000F", type: .full, reference: nil, start: 0x2000028)
        let incr = Self.manifest("20261101-010000I", type: .incr, reference: full.id.rawValue, start: 0x4000028)
        for m in [full, incr] { try await catalog.writeManifest(m) }
        try await StatusIndex.refresh(catalog)
        // Both copies of the incr's manifest damaged (same sizes, so the index still names it).
        for key in [catalog.layout.manifestKey(incr.id), catalog.layout.manifestCopyKey(incr.id)] {
            let size = try await storage.readAll(key).count
            try await storage.writeAll(key, [UInt8](repeating: 0x7B, count: size))
        }
        func plan(_ id: BackupID) async throws -> RecoveryPlanner.Result {
            try await RecoveryPlanner.plan(RecoveryRequest(target: .backupEnd, exclusive: false, action: nil, timeline: .current, backupID: id),
                                           catalog: catalog, parallelism: 1, logger: Logger(label: "test"))
        }
        let ofFull = try await plan(full.id)
        #expect(ofFull.chain.map(\.id) == [full.id] && ofFull.manifest.id == full.id)
        // The incr's own restore reads its manifest, and names what is wrong with it.
        do {
            _ = try await plan(incr.id)
            Issue.record("planned a restore from a damaged manifest")
        } catch let e as WaybackError {
            #expect(e.code == .corrupt && e.message.contains("\(incr.id)/manifest"), "\(e.message)")
        }
    }
}
