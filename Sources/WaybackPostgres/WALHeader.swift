import WaybackCore

/// The long page header at the start of every WAL segment (PostgreSQL's XLogLongPageHeaderData).
public struct WALSegmentHeader: Sendable, Equatable {
    public var magic: UInt16
    public var timeline: UInt32
    public var pageAddress: UInt64
    public var systemIdentifier: UInt64
    public var segmentSize: UInt32
    public var blockSize: UInt32

    /// Size of the header that `parse` needs.
    public static let length = 40
    static let longHeaderFlag: UInt16 = 0x0002

    /// Parses the first bytes of a segment; nil when they are not a long WAL page header.
    public static func parse(_ b: UnsafeRawBufferPointer) -> WALSegmentHeader? {
        guard b.count >= length else { return nil }
        func u16(_ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * $1) } }
        let info = u16(2)
        guard info & longHeaderFlag != 0 else { return nil }
        let h = WALSegmentHeader(magic: u16(0), timeline: u32(4), pageAddress: u64(8), systemIdentifier: u64(24),
                                 segmentSize: u32(32), blockSize: u32(36))
        guard h.segmentSize >= 1 << 20, h.segmentSize.nonzeroBitCount == 1, h.blockSize >= 1024 else { return nil }
        return h
    }
}

/// The fields of a `backup_label` file that Wayback uses.
public struct BackupLabel: Sendable, Equatable {
    public var startLSN: LSN
    public var startSegment: String
    public var checkpointLSN: LSN
    public var timeline: UInt32
    public var label: String

    public static func parse(_ text: String) throws -> BackupLabel {
        var start: LSN?, segment: String?, checkpoint: LSN?, tli: UInt32?, label = ""
        for line in text.split(separator: "\n") {
            if line.hasPrefix("START WAL LOCATION: ") {
                // START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
                let rest = line.dropFirst("START WAL LOCATION: ".count)
                let parts = rest.split(separator: " ")
                start = parts.first.flatMap { LSN($0) }
                if let f = rest.range(of: "(file ") { segment = String(rest[f.upperBound...].prefix(24)) }
            } else if line.hasPrefix("CHECKPOINT LOCATION: ") {
                checkpoint = LSN(line.dropFirst("CHECKPOINT LOCATION: ".count))
            } else if line.hasPrefix("START TIMELINE: ") {
                tli = UInt32(line.dropFirst("START TIMELINE: ".count))
            } else if line.hasPrefix("LABEL: ") {
                label = String(line.dropFirst("LABEL: ".count))
            }
        }
        guard let start, let segment, let checkpoint, let tli else {
            throw WaybackError(.postgres, "PostgreSQL returned a backup_label that Wayback cannot read", cause: .decoding("no \([start == nil || segment == nil ? "START WAL LOCATION" : nil, checkpoint == nil ? "CHECKPOINT LOCATION" : nil, tli == nil ? "START TIMELINE" : nil].compactMap { $0 }.joined(separator: ", ")) line in \(text.utf8.count) bytes"))
        }
        return BackupLabel(startLSN: start, startSegment: segment, checkpointLSN: checkpoint, timeline: tli, label: label)
    }
}
