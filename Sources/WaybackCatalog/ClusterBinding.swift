import Foundation
import WaybackCore

/// `cluster.json`: binds a cluster folder of a repository to one PostgreSQL cluster (system
/// identifier and major version). Every command that writes checks it.
public struct ClusterBinding: Codable, Sendable, Equatable {
    public static let kind = "cluster-binding"

    public var cluster: String
    /// The system identifier as a decimal string (it does not fit a JSON number exactly).
    public var systemIdentifier: String
    public var pgMajorVersion: Int
    public var pgVersionNumber: Int
    public var walSegmentSize: UInt64
    public var blockSize: Int
    public var dataChecksums: Bool
    public var created: Date
    /// `logical` for a cluster protected by dumps alone (no data directory, no WAL; the system
    /// identifier is 0 when the server does not show it); nil for a physical one.
    public var type: String?

    public static let logicalType = "logical"
    public var isLogical: Bool { type == Self.logicalType }

    public init(cluster: String, systemIdentifier: UInt64, pgMajorVersion: Int, pgVersionNumber: Int,
                walSegmentSize: UInt64, blockSize: Int, dataChecksums: Bool, created: Date) {
        self.cluster = cluster
        self.systemIdentifier = String(systemIdentifier)
        self.pgMajorVersion = pgMajorVersion
        self.pgVersionNumber = pgVersionNumber
        self.walSegmentSize = walSegmentSize
        self.blockSize = blockSize
        self.dataChecksums = dataChecksums
        self.created = created
    }

    public var systemID: UInt64 { UInt64(systemIdentifier) ?? 0 }
}
