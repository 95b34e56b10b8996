import Foundation
import WaybackCore

/// A backup kept whatever the retention policy says, for ever or until a time:
/// `<cluster>/pins/<backup id>.json` (sealed JSON), written to every repository and copied by
/// `repo sync` like the backups themselves. A logical dump's pin is a `DumpPin`, beside them.
public struct Pin: Codable, Sendable, Equatable {
    public static let kind = "backup-pin"

    public var backup: BackupID
    /// Nil: pinned until `unpin`.
    public var until: Date?
    public var pinnedAt: Date

    public init(backup: BackupID, until: Date?, pinnedAt: Date) { self.backup = backup; self.until = until; self.pinnedAt = pinnedAt }
}

/// A logical dump kept whatever the retention policy says: `<cluster>/pins/<dump id>.json`.
public struct DumpPin: Codable, Sendable, Equatable {
    public static let kind = "dump-pin"

    public var dump: DumpID
    /// Nil: pinned until `unpin`.
    public var until: Date?
    public var pinnedAt: Date

    public init(dump: DumpID, until: Date?, pinnedAt: Date) { self.dump = dump; self.until = until; self.pinnedAt = pinnedAt }
}

extension Catalog {
    /// Every pin of this repository, by backup. A pin that cannot be read counts as a pin for ever
    /// (never expire a backup someone may have pinned).
    public func pins() async throws -> [BackupID: Date?] {
        try await readPins(Pin.self, kind: Pin.kind, { if case .pin(let id) = $0 { id } else { nil } }, until: \.until)
    }

    /// Every pin of a logical dump, by dump; one that cannot be read counts as a pin for ever.
    public func dumpPins() async throws -> [DumpID: Date?] {
        try await readPins(DumpPin.self, kind: DumpPin.kind, { if case .dumpPin(let id) = $0 { id } else { nil } }, until: \.until)
    }

    /// Pins `id` (which must be a complete backup here); replaces an earlier pin of it.
    public func pin(_ id: BackupID, until: Date?, now: Date) async throws {
        _ = try await manifest(id)
        try await driver.writeAll(layout.pinKey(id), try SealedJSON.encode(Pin(backup: id, until: until, pinnedAt: now), kind: Pin.kind))
    }

    /// Pins dump `id` (which must be a complete dump here); replaces an earlier pin of it.
    public func pin(_ id: DumpID, until: Date?, now: Date) async throws {
        _ = try await dumpManifest(id)
        try await driver.writeAll(layout.pinKey(id), try SealedJSON.encode(DumpPin(dump: id, until: until, pinnedAt: now), kind: DumpPin.kind))
    }

    /// Removes the pin of `id`; `.notFound` when there is none.
    public func unpin(_ id: BackupID) async throws { try await removePin(layout.pinKey(id), what: "backup \(id)") }

    /// Removes the pin of dump `id`; `.notFound` when there is none.
    public func unpin(_ id: DumpID) async throws { try await removePin(layout.pinKey(id), what: "dump \(id)") }

    private func readPins<ID: Hashable, P: Decodable>(_ type: P.Type, kind: String, _ id: (RepositoryLayout.Key) -> ID?,
                                                      until: (P) -> Date?) async throws -> [ID: Date?] {
        var out = [ID: Date?]()
        for obj in try await driver.list(prefix: layout.pinsPrefix) {
            guard let key = layout.parse(obj.key), let id = id(key) else { continue }
            let pin = try? await readSealed(P.self, kind: kind, keys: [obj.key], limit: 1 << 20)
            out[id] = pin.flatMap(until)
        }
        return out
    }

    private func removePin(_ key: String, what: String) async throws {
        guard try await driver.info(key) != nil else {
            throw WaybackError(.notFound, "\(what) is not pinned in \(repository.description); 'wayback status' shows the pins")
        }
        try await driver.remove(key)
    }
}
