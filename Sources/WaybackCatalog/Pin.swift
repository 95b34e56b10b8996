import Foundation
import WaybackCore

/// A backup kept whatever the retention policy says, for ever or until a time:
/// `<cluster>/pins/<backup id>.json` (sealed JSON), written to every repository and copied by
/// `repo sync` like the backups themselves.
public struct Pin: Codable, Sendable, Equatable {
    public static let kind = "backup-pin"

    public var backup: BackupID
    /// Nil: pinned until `unpin`.
    public var until: Date?
    public var pinnedAt: Date

    public init(backup: BackupID, until: Date?, pinnedAt: Date) { self.backup = backup; self.until = until; self.pinnedAt = pinnedAt }
}

extension Catalog {
    /// Every pin of this repository, by backup. A pin that cannot be read counts as a pin for ever
    /// (never expire a backup someone may have pinned).
    public func pins() async throws -> [BackupID: Date?] {
        var out = [BackupID: Date?]()
        for obj in try await driver.list(prefix: layout.pinsPrefix) {
            guard case .pin(let id)? = layout.parse(obj.key) else { continue }
            let pin = try? await readSealed(Pin.self, kind: Pin.kind, keys: [obj.key], limit: 1 << 20)
            out[id] = pin?.until
        }
        return out
    }

    /// Pins `id` (which must be a complete backup here); replaces an earlier pin of it.
    public func pin(_ id: BackupID, until: Date?, now: Date) async throws {
        _ = try await manifest(id)
        try await driver.writeAll(layout.pinKey(id), try SealedJSON.encode(Pin(backup: id, until: until, pinnedAt: now), kind: Pin.kind))
    }

    /// Removes the pin of `id`; `.notFound` when there is none.
    public func unpin(_ id: BackupID) async throws {
        guard try await driver.info(layout.pinKey(id)) != nil else {
            throw WaybackError(.notFound, "backup \(id) is not pinned in \(repository.description); 'wayback status' shows the pins")
        }
        try await driver.remove(layout.pinKey(id))
    }
}
