import Foundation
import Synchronization
import WaybackCatalog
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// `pg_dump --format=directory --jobs N` of one database, streamed file by file: pg_dump writes
/// into a private spool folder, and each data file it closes (inotify `IN_CLOSE_WRITE`) is
/// framed into the repositories and removed at once, while the workers dump the next tables. The
/// spool holds only the tables in flight (and any a slow repository has not taken yet); the
/// table of contents (`toc.dat`, `blobs.toc`) is stored after pg_dump ends, with anything still
/// there. The folder is removed in every case.
enum DirectoryDump {
    static func run(_ arguments: [String], jobs: Int, spoolDirectory: String, database: String, id: DumpID, catalog: Catalog,
                    compression: CompressionSettings, environment: [String: String]) async throws -> [DumpManifest.Object] {
        try FileSystem.makeDirectories(spoolDirectory, mode: 0o700)
        var template = Array((spoolDirectory + "/wayback-dump-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw WaybackError.system(.io, "cannot make a private folder in \(spoolDirectory) for pg_dump's directory format (dump.spool_dir)", call: "mkdtemp", errno: errno)
        }
        let spool = String(cString: made)
        defer { try? FileSystem.removeTree(spool) }
        let out = spool + "/out"
        try FileSystem.makeDirectories(out, mode: 0o700)
        let watcher = try CloseWatcher(out)
        defer { watcher.close() }

        let done = Mutex<Result<Void, any Error>?>(nil)
        let dump = Task {
            let r = await Result(awaiting: {
                _ = try await Command.stream(arguments + ["--format=directory", "--jobs=\(max(2, jobs))", "--file=\(out)"], environment: environment) { _ in }
            })
            done.withLock { $0 = r }
        }
        var objects = [DumpManifest.Object]()
        let prefix = "db/\(database)/"
        do {
            while true {
                let finished = done.withLock { $0 }
                for name in try await watcher.closed(waitMilliseconds: finished == nil ? 200 : 0) where name.hasSuffix(".dat") && name != "toc.dat" {
                    // Each data file is written once and closed: stored whole, then removed.
                    guard try FileSystem.status(out + "/" + name) != nil else { continue }
                    objects.append(try await storeFile(out + "/" + name, as: prefix + name, id: id, catalog: catalog, compression: compression))
                    try FileSystem.remove(out + "/" + name)
                }
                if let finished { try finished.get(); break }
            }
            // What is left: the table of contents, and any file whose event was not seen.
            for name in try FileSystem.list(out).sorted() {
                objects.append(try await storeFile(out + "/" + name, as: prefix + name, id: id, catalog: catalog, compression: compression))
            }
        } catch {
            dump.cancel()
            _ = await dump.value
            throw error
        }
        guard objects.contains(where: { $0.name == prefix + "toc.dat" }) else {
            throw WaybackError(.postgres, "pg_dump wrote no toc.dat for database '\(database)'; the dump is not complete")
        }
        return objects
    }

    /// One file framed and stored, with the SHA-256 of its plain bytes.
    static func storeFile(_ path: String, as name: String, id: DumpID, catalog: Catalog, compression: CompressionSettings) async throws -> DumpManifest.Object {
        let file = try PosixFile.openForReading(path)
        defer { try? file.close() }
        var buffer = [UInt8](repeating: 0, count: FrameFormat.rawChunk)
        return try await LogicalDump.storeObject(id: id, name: name, catalog: catalog, compression: compression) { emit in
            while true {
                let n = try buffer.withUnsafeMutableBytes { try file.readFully(into: $0) }
                if n > 0 { try await emit(Array(buffer[0..<n])) }
                if n < buffer.count { break }
            }
        }
    }
}

/// The names of files closed after writing in one folder (inotify), read without blocking a
/// cooperative thread.
final class CloseWatcher: Sendable {
    let fd: Int32

    init(_ path: String) throws {
        fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw WaybackError.system(.io, "cannot watch \(path)", call: "inotify_init1", errno: errno) }
        guard inotify_add_watch(fd, path, UInt32(IN_CLOSE_WRITE)) >= 0 else {
            let e = errno
            Glibc.close(fd)
            throw WaybackError.system(.io, "cannot watch \(path)", call: "inotify_add_watch", errno: e)
        }
    }

    /// The files closed since the last call, waiting up to `waitMilliseconds` for the first.
    func closed(waitMilliseconds: Int32) async throws -> [String] {
        let fd = self.fd
        return try await Blocking.run {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, waitMilliseconds) > 0 else { return [] }
            var names = [String]()
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n <= 0 {
                    if n < 0 && errno != EAGAIN && errno != EINTR { throw WaybackError.system(.io, "cannot read the folder's events", call: "read", errno: errno) }
                    return names
                }
                var offset = 0
                while offset + MemoryLayout<inotify_event>.size <= n {
                    let (len, name) = buffer.withUnsafeBytes { raw -> (Int, String) in
                        let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                        let start = offset + MemoryLayout<inotify_event>.size
                        let bytes = raw[start..<(start + Int(event.len))].prefix { $0 != 0 }
                        return (Int(event.len), String(decoding: bytes, as: UTF8.self))
                    }
                    if !name.isEmpty { names.append(name) }
                    offset += MemoryLayout<inotify_event>.size + len
                }
            }
        }
    }

    func close() { Glibc.close(fd) }
}
