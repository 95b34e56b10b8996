import Foundation
import WaybackCore
import WaybackStorage

/// What `verify` remembers per object, in the repository it verified: when it last read the
/// object whole, what it found, and what the object was then (size, recorded SHA-256), so that a
/// changed object counts as new. One sealed file per group of objects: a backup's folder
/// (`<cluster>/verify/backups/<id>.json`) or a WAL directory (`<cluster>/verify/wal/<dir>.json`,
/// at most 256 segments), so that no run holds the records of a whole archive at once.
public struct VerifyRecord: Codable, Sendable, Equatable {
    public var size: Int64
    /// The SHA-256 the object is recorded with (a manifest's entry, a WAL object's header).
    public var sha256: String?
    public var verifiedAt: Date
    public var sound: Bool

    public init(size: Int64, sha256: String?, verifiedAt: Date, sound: Bool) {
        self.size = size; self.sha256 = sha256; self.verifiedAt = verifiedAt; self.sound = sound
    }
}

public struct VerifyRecordFile: Codable, Sendable, Equatable {
    public static let kind = "verify-records"
    /// Object key (relative to the cluster's folder) → its record.
    public var records: [String: VerifyRecord]
    public init(records: [String: VerifyRecord] = [:]) { self.records = records }
}

/// The record files of one repository.
public struct VerifyRecordStore: Sendable {
    public let driver: any StorageDriver
    public let cluster: String

    public init(driver: any StorageDriver, cluster: String) { self.driver = driver; self.cluster = cluster }

    public func key(_ group: String) -> String { "\(cluster)/verify/\(group).json" }
    public var prefix: String { "\(cluster)/verify/" }

    /// The records of `group`; empty when there are none, or when the file is damaged (then every
    /// object of the group is read again, which is the safe side).
    public func load(_ group: String) async -> VerifyRecordFile {
        guard let bytes = try? await driver.readAll(key(group), limit: 64 << 20),
              let file = try? SealedJSON.decode(VerifyRecordFile.self, from: bytes, kind: VerifyRecordFile.kind, name: key(group)) else {
            return VerifyRecordFile()
        }
        return file
    }

    public func save(_ group: String, _ file: VerifyRecordFile) async throws {
        try await driver.writeAll(key(group), try SealedJSON.encode(file, kind: VerifyRecordFile.kind))
    }

    /// Removes the record files of groups that no longer exist (expired backups, removed WAL).
    public func removeStale(keeping groups: Set<String>) async throws {
        for o in try await driver.list(prefix: prefix) where o.key.hasSuffix(".json") {
            let group = String(o.key.dropFirst(prefix.count).dropLast(".json".count))
            if !groups.contains(group) { try await driver.remove(o.key) }
        }
    }

    /// The group whose file holds the record of object `key`: its backup's or dump's folder, or its
    /// WAL directory (nil: no object `verify` reads).
    public static func group(of key: String, layout: RepositoryLayout) -> String? {
        switch layout.parse(key) {
        case .backup(let id, _)?: "backups/\(id)"
        case .dump(let id, _)?: "dumps/\(id)"
        case .wal(let name)?: "wal/" + (name.kind == .history ? "history" : String(name.description.prefix(16)))
        default: nil
        }
    }

    /// Records `objects` as sound at `at`: `repo sync` replaced them with copies it checked on the
    /// way against the digest their manifest (or WAL header) records, so a damage `verify` found
    /// there is over. Size and digest as `verify` records them (a WAL object's digest: nil).
    public func markSound(_ objects: [(key: String, size: Int64, sha256: String?)], layout: RepositoryLayout, at: Date) async throws {
        var byGroup = [String: [(key: String, size: Int64, sha256: String?)]]()
        for o in objects { if let g = Self.group(of: o.key, layout: layout) { byGroup[g, default: []].append(o) } }
        for (group, list) in byGroup {
            var file = await load(group)
            for o in list { file.records[o.key] = VerifyRecord(size: o.size, sha256: o.sha256, verifiedAt: at, sound: true) }
            try await save(group, file)
        }
    }

    /// Every object whose last read found it damaged (key → its record), from every record file.
    /// A record file that cannot be read names nothing (the next `verify` reads its objects again).
    public func damaged() async throws -> [String: VerifyRecord] {
        var out = [String: VerifyRecord]()
        for o in try await driver.list(prefix: prefix) where o.key.hasSuffix(".json") {
            let group = String(o.key.dropFirst(prefix.count).dropLast(".json".count))
            for (k, r) in await load(group).records where !r.sound { out[k] = r }
        }
        return out
    }
}
