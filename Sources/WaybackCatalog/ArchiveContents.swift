import Foundation
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// What the WAL archive of one cluster holds, from object names and history files: the facts
/// recovery planning and `status` reason about.
public struct ArchiveContents: Sendable {
    public var segmentSize: UInt64
    /// Segment numbers per timeline.
    public var segments: [UInt32: Set<UInt64>]
    /// Parsed history files per timeline (timeline 1 has none).
    public var histories: [UInt32: TimelineHistory]
    /// History files that are present but could not be read, with the reason.
    public var damagedHistories: [UInt32: String]

    public init(segmentSize: UInt64, segments: [UInt32: Set<UInt64>], histories: [UInt32: TimelineHistory],
                damagedHistories: [UInt32: String] = [:]) {
        self.segmentSize = segmentSize; self.segments = segments; self.histories = histories
        self.damagedHistories = damagedHistories
    }

    /// Every timeline the archive knows of (from segments and history files).
    public var timelines: [UInt32] { Set(segments.keys).union(histories.keys).sorted() }

    public func has(_ tli: UInt32, _ segment: UInt64) -> Bool { segments[tli]?.contains(segment) == true }

    /// The history of `tli`; timeline 1, and any timeline without a history file, has no parents
    /// (nil for a timeline above 1 whose history file is missing: its ancestry is unknown).
    public func history(of tli: UInt32) -> TimelineHistory? {
        if let h = histories[tli] { return h }
        return tli == 1 ? TimelineHistory(timeline: 1, parents: []) : nil
    }
}

/// A WAL segment on the way to a target timeline: which timeline's file PostgreSQL reads for it.
public struct SegmentOnPath: Sendable, Hashable {
    public var timeline: UInt32
    public var number: UInt64
    public init(timeline: UInt32, number: UInt64) { self.timeline = timeline; self.number = number }
    public func name(segmentSize: UInt64) -> WALFileName {
        WALFileName(timeline: timeline, segmentNumber: number, segmentSize: segmentSize)
    }
}

extension TimelineHistory {
    /// Segments `first...last` along this history.
    public func segments(_ first: UInt64, _ last: UInt64, segmentSize: UInt64) -> [SegmentOnPath] {
        guard first <= last else { return [] }
        return (first...last).map { SegmentOnPath(timeline: timeline(forSegment: $0, segmentSize: segmentSize), number: $0) }
    }
}

extension Catalog {
    /// Lists the archive and reads its history files.
    /// `listed`: the archive's listing when the caller already has it (one listing per gathering).
    public func archiveContents(segmentSize: UInt64, listed: [WALFileName]? = nil) async throws -> ArchiveContents {
        var segments = [UInt32: Set<UInt64>]()
        var histories = [UInt32: TimelineHistory]()
        var damaged = [UInt32: String]()
        let names: [WALFileName]
        if let listed { names = listed } else { names = try await archivedWAL() }
        for name in names {
            switch name.kind {
            case .segment:
                segments[name.timeline, default: []].insert(name.segmentNumber(segmentSize: segmentSize))
            case .history:
                do {
                    let text = try await readWALText(name)
                    histories[name.timeline] = try TimelineHistory.parse(text, timeline: name.timeline)
                } catch let e as WaybackError {
                    damaged[name.timeline] = e.message
                }
            default:
                continue
            }
        }
        return ArchiveContents(segmentSize: segmentSize, segments: segments, histories: histories, damagedHistories: damaged)
    }

    /// The content of a small archived file (history file) as text, checksum verified.
    public func readWALText(_ name: WALFileName) async throws -> String {
        var bytes = [UInt8]()
        try await WALObject.read(repository.driver, key: walKey(name), name: name.description) { plain, offset in
            bytes.removeSubrange(Int(offset)...)
            bytes.append(contentsOf: plain)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads one archived segment whole (a WAL segment is a bounded unit: 16 MiB by default),
    /// verifying its checksum. Throws `.notFound` when missing, `.corrupt` when damaged.
    public func readSegment(_ name: WALFileName, size: UInt64) async throws -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Int(size))
        try await WALObject.read(repository.driver, key: walKey(name), name: name.description) { plain, offset in
            out.removeSubrange(Int(offset)...)
            out.append(contentsOf: plain)
        }
        guard out.count == Int(size) else {
            throw WaybackError(.corrupt, "archived WAL file \(name) has \(out.count) bytes, expected \(size)")
        }
        return out
    }

    /// Reads `segments` in order and feeds each to `visit`, with `WALRecordScanner` state carried
    /// across consecutive segments, or the error that reading it gave (`.notFound`, `.corrupt`).
    /// Up to `parallelism` segments are fetched and decompressed ahead while the current one is
    /// scanned. `visit` returns false to stop.
    public func scanSegments(_ segments: [SegmentOnPath], segmentSize: UInt64, parallelism: Int,
                             visit: (SegmentOnPath, Result<WALSegmentScan, WaybackError>) throws -> Bool) async throws {
        guard !segments.isEmpty else { return }
        var scanner = WALRecordScanner(segmentSize: segmentSize)
        let width = max(1, parallelism)
        try await withThrowingTaskGroup(of: SegmentRead.self) { group in
            // Segments are read ahead in a window of `width`; results arrive in any order and are
            // scanned in order.
            var next = 0
            var ready = [Int: Result<[UInt8], WaybackError>]()
            var current = 0
            while current < segments.count {
                while next < segments.count && next < current + width {
                    let i = next, name = segments[i].name(segmentSize: segmentSize)
                    next += 1
                    group.addTask {
                        do {
                            return SegmentRead(index: i, result: .success(try await self.readSegment(name, size: segmentSize)))
                        } catch let e as WaybackError {
                            return SegmentRead(index: i, result: .failure(e))
                        }
                    }
                }
                while ready[current] == nil {
                    guard let item = try await group.next() else {
                        throw WaybackError(.internal, "the WAL reader lost segment \(segments[current].name(segmentSize: segmentSize))")
                    }
                    ready[item.index] = item.result
                }
                let read = ready.removeValue(forKey: current)!
                let result: Result<WALSegmentScan, WaybackError>
                switch read {
                case .success(let bytes):
                    do {
                        result = .success(try bytes.withUnsafeBytes { try scanner.scan($0, segmentNumber: segments[current].number) })
                    } catch let e as WaybackError {
                        result = .failure(WaybackError(e.code, "archived WAL file \(segments[current].name(segmentSize: segmentSize)): \(e.message)"))
                    }
                case .failure(let e):
                    result = .failure(e)
                }
                if try !visit(segments[current], result) {
                    group.cancelAll()
                    return
                }
                current += 1
            }
        }
    }
}

/// One segment read ahead by `scanSegments`.
struct SegmentRead: Sendable {
    var index: Int
    var result: Result<[UInt8], WaybackError>
}
