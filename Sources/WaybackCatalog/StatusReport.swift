import Foundation
import WaybackCore
import WaybackStorage

/// What `wayback status` shows for one repository: backups and the WAL archive per timeline.
public struct StatusReport: Codable, Sendable {
    public struct Backup: Codable, Sendable {
        public var id: String
        public var type: String
        public var reference: String?
        public var startTime: Date
        public var stopTime: Date
        public var startLSN: String
        public var stopLSN: String
        public var timeline: UInt32
        public var databaseBytes: Int64
        public var repositoryBytes: Int64
        public var files: Int
        public var compressionRatio: Double
        public var sha256: String
        public var md5: String
    }

    public var repository: String
    public var cluster: String
    public var systemIdentifier: String
    public var pgVersion: Int
    public var backups: [Backup]
    public var archive: [TimelineRange]

    public static func gather(_ catalog: Catalog) async throws -> StatusReport {
        let binding = try await catalog.requireBinding()
        let manifests = try await catalog.manifests()
        let wal = try await catalog.archivedWAL()
        return StatusReport(
            repository: catalog.repository.name, cluster: catalog.layout.cluster, systemIdentifier: binding.systemIdentifier,
            pgVersion: binding.pgVersionNumber,
            backups: manifests.map { m in
                Backup(id: m.id.rawValue, type: m.type.rawValue, reference: m.reference?.rawValue, startTime: m.startTime,
                       stopTime: m.stopTime, startLSN: m.startLSN.description, stopLSN: m.stopLSN.description, timeline: m.timeline,
                       databaseBytes: m.sizes.database, repositoryBytes: m.sizes.repository, files: m.sizes.files,
                       compressionRatio: (m.compressionRatio * 100).rounded() / 100, sha256: m.digests.sha256, md5: m.digests.md5)
            },
            archive: TimelineRange.summarize(wal, segmentSize: binding.walSegmentSize))
    }
}
