import Foundation
import WaybackCore
import WaybackPostgres

/// What makes a logical dump count: written last (its copy first), after every object it lists.
/// Objects are framed like a backup's packs (compressed, encrypted by the repository's driver).
public struct DumpManifest: Codable, Sendable {
    public static let kind = "dump-manifest"
    public static let formatVersion = 1

    public struct Object: Codable, Sendable, Equatable {
        /// Relative to the dump's folder: `db/<database>.dump`, `globals.sql`.
        public var name: String
        /// Stored bytes (frames) and their SHA-256.
        public var size: Int64
        public var sha256: String
        /// The plain bytes `pg_dump` wrote, and their SHA-256.
        public var plainSize: Int64
        public var plainSHA256: String
        public init(name: String, size: Int64, sha256: String, plainSize: Int64, plainSHA256: String) {
            self.name = name; self.size = size; self.sha256 = sha256; self.plainSize = plainSize; self.plainSHA256 = plainSHA256
        }
    }
    public struct Database: Codable, Sendable {
        public var name: String
        /// `pg_dump -Fc` of the database, in the snapshot `rowCounts.snapshot` describes; in the
        /// directory format, its table of contents (`db/<database>/toc.dat`).
        public var object: Object
        /// The directory format's other files (`db/<database>/<n>.dat`, `blobs.toc`); nil for the
        /// custom format.
        public var files: [Object]?
        /// Every object of the database's dump (the platform's aside).
        public var dumpObjects: [Object] { [object] + (files ?? []) }
        public var plainBytes: Int64 { dumpObjects.reduce(0) { $0 + $1.plainSize } }
        public var storedBytes: Int64 { dumpObjects.reduce(0) { $0 + $1.size } }
        /// The exact rows of every table in the dump's snapshot.
        public var rowCounts: RowCounts.Database
        /// The Supabase preset's `auth` and `storage` schemas, dumped on their own in the same
        /// snapshot (`db/<database>.platform.dump`; nil: no preset, or no such schemas).
        public var platform: Object?
        /// The content digest of every counted table in the same snapshot (`dump.table_digests`;
        /// nil: not taken). See `RowCounts.digestsHere`.
        public var tableDigests: [String: String]?
        public init(name: String, object: Object, rowCounts: RowCounts.Database, platform: Object? = nil) {
            self.name = name; self.object = object; self.rowCounts = rowCounts; self.platform = platform
        }
    }

    public var formatVersion = DumpManifest.formatVersion
    public var id: DumpID
    public var cluster: String
    public var startTime: Date
    public var stopTime: Date
    public var serverVersionNumber: Int
    /// `pg_dump --version`.
    public var pgDumpVersion: String
    public var format: String
    public var compression: CompressionSettings
    public var databases: [Database]
    /// `pg_dumpall --roles-only --no-role-passwords` (nil: not permitted on this server).
    public var globals: Object?
    /// Why the globals are missing, when they are.
    public var note: String?
    /// `supabase` when the dump was taken with `dump.supabase: true`.
    public var preset: String?

    public init(id: DumpID, cluster: String, startTime: Date, stopTime: Date, serverVersionNumber: Int, pgDumpVersion: String, format: String,
                compression: CompressionSettings, databases: [Database], globals: Object?, note: String?) {
        self.id = id; self.cluster = cluster; self.startTime = startTime; self.stopTime = stopTime; self.serverVersionNumber = serverVersionNumber
        self.pgDumpVersion = pgDumpVersion; self.format = format; self.compression = compression; self.databases = databases
        self.globals = globals; self.note = note
    }

    public var objects: [Object] { databases.flatMap { $0.dumpObjects + ($0.platform.map { [$0] } ?? []) } + (globals.map { [$0] } ?? []) }
    public var repositoryBytes: Int64 { objects.reduce(0) { $0 + $1.size } }
    public var plainBytes: Int64 { objects.reduce(0) { $0 + $1.plainSize } }
    public static func objectName(database: String) -> String { "db/\(database).dump" }
    public static func platformObjectName(database: String) -> String { "db/\(database).platform.dump" }
    public static func directoryPrefix(database: String) -> String { "db/\(database)/" }
    public var isSupabase: Bool { preset == "supabase" }

    /// The dump's MD5 and SHA-256 (the `backup_logs` checksums): digests of its content listing,
    /// one line `O <name> <plain size> <plain SHA-256>` per object, sorted by name.
    public var digests: BackupManifest.Digests {
        let listing = objects.sorted { $0.name < $1.name }.map { "O \($0.name) \($0.plainSize) \($0.plainSHA256)\n" }.joined()
        var md5 = MD5Hasher(); md5.update(Array(listing.utf8))
        return .init(md5: md5.finalizeHex(), sha256: SHA256Hasher.hex(Array(listing.utf8)))
    }
}

extension Catalog {
    /// The complete dumps of this cluster (those with a manifest; a copy alone is what an
    /// interrupted write or expiry leaves), oldest first.
    public func dumpIDs() async throws -> [DumpID] {
        var ids = Set<DumpID>()
        for o in try await driver.list(prefix: layout.dumpsPrefix) {
            if case .dump(let id, "manifest.json")? = layout.parse(o.key) { ids.insert(id) }
        }
        return ids.sorted()
    }

    /// A dump's manifest (its copy when the first is damaged or missing).
    public func dumpManifest(_ id: DumpID) async throws -> DumpManifest {
        var firstError: (any Error)?
        for key in [layout.dumpManifestKey(id), layout.dumpManifestCopyKey(id)] {
            do {
                return try SealedJSON.decode(DumpManifest.self, from: try await driver.readAll(key, limit: 64 << 20), kind: DumpManifest.kind, name: key)
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        if let e = firstError as? WaybackError, e.code == .notFound {
            throw WaybackError(.notFound, "dump \(id) is not in \(repository.description); 'wayback status' lists the dumps")
        }
        throw firstError ?? WaybackError(.internal, "no manifest key")
    }

    public func writeDumpManifest(_ m: DumpManifest) async throws {
        let bytes = try SealedJSON.encode(m, kind: DumpManifest.kind)
        try await driver.writeAll(layout.dumpManifestCopyKey(m.id), bytes)
        try await driver.writeAll(layout.dumpManifestKey(m.id), bytes)
    }
}
