import Foundation
import WaybackCore

/// A sealed JSON body that is decoded partly by hand (see `SealedJSON.decode`).
protocol SealedJSONBody: Decodable {
    static func decodeBody(_ body: [UInt8], decoder: JSONDecoder) throws -> Self
}

extension BackupManifest: SealedJSONBody {
    /// The file list (nearly all of a manifest) is read by `JSONReader`, the rest by `decoder`,
    /// from the body with `"files"` emptied. `JSONDecoder` spent 10-14 ms per 1,000 files, and a
    /// restore through a day's chain of incrs reads 24 manifests before it writes a byte. Anything
    /// the reader does not expect sends the whole body to `decoder`, which decides.
    static func decodeBody(_ body: [UInt8], decoder: JSONDecoder) throws -> BackupManifest {
        if let (files, range) = try? body.withUnsafeBytes({ try Self.readFiles($0) }) {
            var rest = [UInt8]()
            rest.reserveCapacity(body.count - range.count + 2)
            rest += body[..<range.lowerBound]
            rest += [UInt8(ascii: "["), UInt8(ascii: "]")]
            rest += body[range.upperBound...]
            var m = try decoder.decode(BackupManifest.self, from: Data(rest))
            m.files = files
            return m
        }
        return try decoder.decode(BackupManifest.self, from: Data(body))
    }

    /// The top-level `"files"` member: its entries and where its value lies in `body`.
    static func readFiles(_ body: UnsafeRawBufferPointer) throws -> ([File], Range<Int>) {
        var r = JSONReader(body)
        var found: ([File], Range<Int>)?
        try r.readObject { r, key in
            guard key == "files" else { return try r.skipValue() }
            guard found == nil else { throw JSONReader.Unexpected(offset: r.offset) }
            r.skipSpace()
            let start = r.offset
            var files = [File]()
            try r.readArray { files.append(try readFile(&$0)) }
            found = (files, start..<r.offset)
        }
        guard r.peek() == nil, let found else { throw JSONReader.Unexpected(offset: r.offset) }
        return found
    }

    /// One entry, as `File.init(from:)` decodes it: unknown keys are ignored, a missing one throws.
    static func readFile(_ r: inout JSONReader) throws -> File {
        var path: String?, size: Int64?, mode: UInt32?, mtime: Int64?, sha256: String?, chunks: [Chunk]?
        var base: BackupID?, blocks: [BlockRun]?
        try r.readObject { r, key in
            switch key {
            case "path": path = try r.readString()
            case "size": size = try r.readInt64()
            case "mode": mode = try r.readInteger(UInt32.self)
            case "mtime": mtime = try r.readInt64()
            case "sha256": sha256 = try r.readString()
            case "chunks":
                var list = [Chunk]()
                try r.readArray { list.append(try readChunk(&$0)) }
                chunks = list
            case "base":
                if r.readNull() { base = nil; return }
                guard let id = BackupID(try r.readString()) else { throw JSONReader.Unexpected(offset: r.offset) }
                base = id
            case "blocks":
                if r.readNull() { blocks = nil; return }
                var runs = [BlockRun]()
                try r.readArray { r in
                    var pair = [UInt32]()
                    try r.readArray { pair.append(try $0.readInteger(UInt32.self)) }
                    guard pair.count == 2 else { throw JSONReader.Unexpected(offset: r.offset) }
                    runs.append(BlockRun(start: pair[0], count: pair[1]))
                }
                blocks = runs
            default: try r.skipValue()
            }
        }
        guard let path, let size, let mode, let mtime, let sha256, let chunks else { throw JSONReader.Unexpected(offset: r.offset) }
        return File(path: path, size: size, mode: mode, mtime: mtime, sha256: sha256, chunks: chunks, base: base, blocks: blocks)
    }

    static func readChunk(_ r: inout JSONReader) throws -> Chunk {
        var object: Int?, offset: Int64?, length: Int?, raw: Int?
        try r.readObject { r, key in
            switch key {
            case "o": object = try r.readInteger(Int.self)
            case "f": offset = try r.readInt64()
            case "l": length = try r.readInteger(Int.self)
            case "r": raw = try r.readInteger(Int.self)
            default: try r.skipValue()
            }
        }
        guard let object, let offset, let length, let raw else { throw JSONReader.Unexpected(offset: r.offset) }
        return Chunk(object: object, offset: offset, length: length, raw: raw)
    }
}
