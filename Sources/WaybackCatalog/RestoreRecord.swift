import Foundation
import WaybackCore

/// What one restore measured, kept in the repository (`<cluster>/restores/`) so that later restore
/// plans can estimate their duration from this repository's real speed, and drills can report
/// recovery times. Written after a restore; losing one costs only an estimate.
public struct RestoreRecord: Codable, Sendable, Equatable {
    public static let kind = "restore-record"

    public var time: Date
    public var backup: BackupID
    public var target: String
    public var bytes: Int64
    public var files: Int
    /// Seconds to write, verify and sync the files.
    public var filesSeconds: Double
    /// With `--start`: WAL replayed and how long replay took, and the time to the first connection.
    public var walBytes: Int64?
    public var replaySeconds: Double?
    public var readySeconds: Double?

    public init(time: Date, backup: BackupID, target: String, bytes: Int64, files: Int, filesSeconds: Double,
                walBytes: Int64? = nil, replaySeconds: Double? = nil, readySeconds: Double? = nil) {
        self.time = time; self.backup = backup; self.target = target; self.bytes = bytes; self.files = files
        self.filesSeconds = filesSeconds; self.walBytes = walBytes; self.replaySeconds = replaySeconds; self.readySeconds = readySeconds
    }
}

extension Catalog {
    /// Restore records, oldest first (at most the newest `limit`).
    public func restoreRecords(limit: Int = 20) async throws -> [RestoreRecord] {
        let keys = try await repository.driver.list(prefix: layout.restoresPrefix).map(\.key).sorted().suffix(limit)
        var out = [RestoreRecord]()
        for key in keys {
            if let r = try? await readSealed(RestoreRecord.self, kind: RestoreRecord.kind, keys: [key], limit: 1 << 20) { out.append(r) }
        }
        return out
    }

    public func writeRestoreRecord(_ r: RestoreRecord) async throws {
        let bytes = try SealedJSON.encode(r, kind: RestoreRecord.kind)
        try await repository.driver.writeAll(layout.restoreRecordKey(r.time), bytes)
    }
}
