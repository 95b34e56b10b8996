import Foundation
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// The blocks the WAL changed between two positions of one timeline (an incremental backup's
/// reference start and its own start): each segment read from `pg_wal` when it is there and is
/// the right one (the newest is not archived yet when a backup starts), else from the archive,
/// and folded into a `WALBlockMap`. What cannot be read is one of the map's fallbacks, never an
/// error: a backup then scans what the map cannot stand for.
public enum WALChanges {
    public static func collect(from start: LSN, to end: LSN, timeline: UInt32, segmentSize: UInt64, catalog: Catalog,
                               pgWal: String?) async -> WALBlockMap {
        var scanner = WALRecordScanner(segmentSize: segmentSize)
        scanner.blockMap = WALBlockMap(from: start)
        guard start <= end else { return scanner.blockMap! }
        for n in start.segmentNumber(segmentSize: segmentSize)...end.segmentNumber(segmentSize: segmentSize) {
            let name = WALFileName(timeline: timeline, segmentNumber: n, segmentSize: segmentSize)
            guard let bytes = await segment(name, segmentSize: segmentSize, catalog: catalog, pgWal: pgWal) else {
                scanner.blockMap?.fallBack("WAL segment \(name) is neither in pg_wal nor in the archive")
                continue
            }
            do {
                _ = try bytes.withUnsafeBytes { try scanner.scan($0, segmentNumber: n) }
            } catch {
                scanner.blockMap?.fallBack("WAL segment \(name) cannot be read (\((error as? WaybackError)?.message ?? String(describing: error)))")
            }
        }
        return scanner.blockMap!
    }

    /// The plain bytes of one segment, or nil when neither place has it whole.
    static func segment(_ name: WALFileName, segmentSize: UInt64, catalog: Catalog, pgWal: String?) async -> [UInt8]? {
        if let pgWal, let data = FileManager.default.contents(atPath: pgWal + "/" + name.description), data.count == Int(segmentSize) {
            return [UInt8](data)
        }
        var bytes = [UInt8](repeating: 0, count: Int(segmentSize))
        do {
            let header = try await WALObject.read(catalog.repository.driver, key: catalog.layout.walKey(name), name: name.description) { plain, offset in
                guard offset + Int64(plain.count) <= Int64(bytes.count) else { throw WaybackError(.corrupt, "archived WAL file \(name) is longer than a segment") }
                bytes.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + plain.count)]).copyMemory(from: plain) }
            }
            return header.size == Int64(segmentSize) ? bytes : nil
        } catch {
            return nil
        }
    }
}
