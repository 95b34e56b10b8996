import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import WaybackCore
import WaybackStorage

/// A repository in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph ...), under a key prefix.
///
/// - Objects are written with one signed PUT when they fit in `partSize` (plus a quarter), otherwise
///   as a multipart upload whose parts go up `uploadConcurrency` at a time; an object exists only
///   once CompleteMultipartUpload succeeds, and a failed write aborts its upload. Every request
///   carries the SHA-256 of its payload in the signature (`x-amz-content-sha256`), so the server
///   rejects a body damaged on the way.
/// - `ifAbsent` is `If-None-Match: *` (atomic on AWS S3 and stores that support it), after a HEAD
///   check that also covers stores that ignore the header.
/// - Reads are ranged GETs; a connection lost mid-body resumes from the byte where it stopped,
///   with `If-Match` on the ETag so a replaced object is never spliced.
public struct S3Storage: StorageDriver {
    public let settings: S3Settings
    let transport: S3Transport

    /// A driver whose requests go through `clients`, which its owner (the command or the daemon)
    /// shuts down when it ends.
    public init(settings: S3Settings, clients: HTTPClientPool, logger: Logger = Logger(label: "wayback.s3")) throws {
        self.settings = settings
        self.transport = try S3Transport(settings: settings, clients: clients, logger: logger)
    }

    public var description: String { settings.description }
    public var capabilities: StorageCapabilities { [.atomicCreate] }

    func check(_ key: String) throws {
        guard !key.isEmpty, !key.hasPrefix("/"), !key.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else {
            throw WaybackError(.internal, "invalid storage key '\(key)'")
        }
    }

    /// Headers every new object gets: encryption and storage class.
    var objectHeaders: [(String, String)] {
        var h = [(String, String)]()
        switch settings.encryption {
        case .s3: h.append(("x-amz-server-side-encryption", "AES256"))
        case .kms(let id):
            h.append(("x-amz-server-side-encryption", "aws:kms"))
            if let id { h.append(("x-amz-server-side-encryption-aws-kms-key-id", id)) }
        case nil: break
        }
        if let c = settings.storageClass { h.append(("x-amz-storage-class", c)) }
        return h
    }

    // MARK: info, list

    public func info(_ key: String) async throws -> ObjectInfo? {
        try check(key)
        do {
            let r = try await transport.send(S3Request(method: .HEAD, key: key, what: "look up \(key)"), limit: 0)
            return ObjectInfo(key: key, size: Int64(r.headers.first(name: "content-length") ?? "") ?? 0)
        } catch let e as WaybackError where e.code == .notFound {
            return nil
        }
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        var out = [ObjectInfo]()
        var token: String?
        repeat {
            var query = [("list-type", "2"), ("prefix", settings.prefix + prefix), ("max-keys", "1000")]
            if let token { query.append(("continuation-token", token)) }
            let r = try await transport.send(S3Request(method: .GET, key: nil, query: query, what: "list \(prefix)"))
            let text = r.text
            for item in XMLText.elements("Contents", in: text) {
                guard let key = XMLText.value("Key", in: item), key.hasPrefix(settings.prefix) else { continue }
                out.append(ObjectInfo(key: String(key.dropFirst(settings.prefix.count)), size: Int64(XMLText.value("Size", in: item) ?? "") ?? 0))
            }
            token = XMLText.value("IsTruncated", in: text) == "true" ? XMLText.value("NextContinuationToken", in: text) : nil
        } while token != nil
        return out.sorted { $0.key < $1.key }
    }

    // MARK: read

    public func withReader<R>(_ key: String, range: Range<Int64>?, _ body: (any ObjectReader) async throws -> R) async throws -> R {
        try check(key)
        if let range, range.isEmpty {
            guard let info = try await info(key) else { throw WaybackError(.notFound, "object \(key) is not in \(description)") }
            guard range.upperBound <= info.size else { throw shortObject(key, size: info.size, wanted: range.upperBound) }
            return try await body(S3Reader(storage: self, key: key, offset: range.lowerBound, end: range.lowerBound, etag: nil))
        }
        let reader = S3Reader(storage: self, key: key, offset: range?.lowerBound ?? 0, end: range?.upperBound ?? -1, etag: nil)
        do {
            try await reader.open()
        } catch let e as WaybackError where e.code == .notFound {
            throw WaybackError(.notFound, "object \(key) is not in \(description)")
        }
        return try await body(reader)
    }

    func shortObject(_ key: String, size: Int64, wanted: Int64) -> WaybackError {
        WaybackError(.corrupt, "object \(key) in \(description) has \(size) bytes, fewer than the \(wanted) expected")
    }

    // MARK: write

    public func withWriter<R>(_ key: String, options: WriteOptions, _ body: (any ObjectWriter) async throws -> R) async throws -> R {
        try check(key)
        if options.ifAbsent, try await info(key) != nil {
            throw WaybackError(.conflict, "object \(key) already exists in \(description)")
        }
        let upload = UploadState()
        let width = settings.uploadConcurrency
        return try await withThrowingTaskGroup(of: Void.self) { group in
            let (parts, queue) = AsyncStream.makeStream(of: Part.self)
            let slots = Slots(width)
            for _ in 0..<width {
                group.addTask {
                    for await part in parts {
                        if upload.failure == nil, let id = upload.id {
                            do {
                                let etag = try await uploadPart(key, uploadID: id, part: part)
                                upload.record(part.number, etag)
                            } catch {
                                upload.fail(error)
                            }
                        }
                        await slots.release()
                    }
                }
            }
            let writer = S3Writer(partSize: settings.partSize) { number, bytes in
                if let f = upload.failure { throw f }
                if upload.id == nil { upload.id = try await createUpload(key) }
                await slots.acquire()
                queue.yield(Part(number: number, bytes: bytes))
            }
            do {
                let result = try await body(writer)
                if writer.partsQueued == 0 {
                    queue.finish()
                    try await group.waitForAll()
                    try await putObject(key, writer.takePending(), ifAbsent: options.ifAbsent)
                } else {
                    try await writer.queueRest()
                    queue.finish()
                    try await group.waitForAll()
                    if let f = upload.failure { throw f }
                    try await completeUpload(key, uploadID: upload.id!, etags: upload.etags(count: writer.partsQueued), ifAbsent: options.ifAbsent,
                                             size: writer.bytesWritten)
                }
                return result
            } catch {
                queue.finish()
                group.cancelAll()
                try? await group.waitForAll()
                if let id = upload.id { try? await abortUpload(key, uploadID: id) }
                throw error
            }
        }
    }

    func putObject(_ key: String, _ bytes: [UInt8], ifAbsent: Bool) async throws {
        var headers = objectHeaders
        if ifAbsent { headers.append(("if-none-match", "*")) }
        do {
            _ = try await transport.send(S3Request(method: .PUT, key: key, headers: headers, body: bytes, what: "write \(key)"))
        } catch let e as WaybackError where e.code == .conflict {
            throw WaybackError(.conflict, "object \(key) already exists in \(description)")
        }
    }

    func createUpload(_ key: String) async throws -> String {
        let r = try await transport.send(S3Request(method: .POST, key: key, query: [("uploads", "")], headers: objectHeaders, what: "start the upload of \(key)"))
        guard let id = XMLText.value("UploadId", in: r.text), !id.isEmpty else {
            throw WaybackError(.io, "\(description) did not return an upload id for \(key); check that the endpoint is an S3-compatible store with multipart uploads")
        }
        return id
    }

    func uploadPart(_ key: String, uploadID: String, part: Part) async throws -> String {
        let r = try await transport.send(S3Request(method: .PUT, key: key, query: [("partNumber", String(part.number)), ("uploadId", uploadID)],
                                                   body: part.bytes, what: "upload part \(part.number) of \(key)"))
        guard let etag = r.headers.first(name: "etag") else { throw WaybackError(.io, "\(description) returned no ETag for part \(part.number) of \(key); check that the endpoint is an S3-compatible store with multipart uploads") }
        return etag
    }

    func completeUpload(_ key: String, uploadID: String, etags: [String], ifAbsent: Bool, size: Int64) async throws {
        var xml = "<CompleteMultipartUpload>"
        for (i, etag) in etags.enumerated() { xml += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(XMLText.escape(etag))</ETag></Part>" }
        xml += "</CompleteMultipartUpload>"
        var headers = [(String, String)]()
        if ifAbsent { headers.append(("if-none-match", "*")) }
        do {
            _ = try await transport.send(S3Request(method: .POST, key: key, query: [("uploadId", uploadID)], headers: headers,
                                                   body: Array(xml.utf8), what: "complete the upload of \(key)"))
        } catch let e as WaybackError where e.code == .conflict {
            throw WaybackError(.conflict, "object \(key) already exists in \(description)")
        } catch let e as WaybackError where e.code == .notFound {
            // NoSuchUpload: a retry after a completion whose answer was lost. The object is there
            // with the size written, or the upload really failed.
            if let info = try await info(key), info.size == size { return }
            throw WaybackError(.io, "the upload of \(key) to \(description) vanished before it completed (\(e.message)); run the command again")
        }
    }

    func abortUpload(_ key: String, uploadID: String) async throws {
        _ = try await transport.send(S3Request(method: .DELETE, key: key, query: [("uploadId", uploadID)], what: "abort the upload of \(key)"),
                                     accept: [200, 204, 404])
    }

    // MARK: remove

    public func remove(_ key: String) async throws {
        try check(key)
        _ = try await transport.send(S3Request(method: .DELETE, key: key, what: "remove \(key)"), accept: [200, 204, 404])
    }

    /// DeleteObjects, 1000 keys per request.
    public func remove(keys: [String]) async throws {
        for k in keys { try check(k) }
        var start = 0
        while start < keys.count {
            let batch = keys[start..<min(keys.count, start + 1000)]
            var xml = "<Delete><Quiet>true</Quiet>"
            for k in batch { xml += "<Object><Key>\(XMLText.escape(settings.prefix + k))</Key></Object>" }
            xml += "</Delete>"
            let body = Array(xml.utf8)
            let md5 = Data(MD5Digest.of(body)).base64EncodedString()
            let r = try await transport.send(S3Request(method: .POST, key: nil, query: [("delete", "")], headers: [("content-md5", md5)],
                                                       body: body, what: "remove \(batch.count) objects"))
            let errors = XMLText.elements("Error", in: r.text)
            if let first = errors.first {
                throw WaybackError(.io, "\(description) did not remove \(errors.count) of \(batch.count) objects, e.g. \(XMLText.value("Key", in: first) ?? "?"): \(XMLText.value("Code", in: first) ?? "?"); check the s3:DeleteObject permission and run the command again")
            }
            start += batch.count
        }
    }

    /// Aborts multipart uploads under the prefix started before `date` (left by a crash: they are
    /// invisible but billed). Returns how many it aborted.
    public func removeLeftovers(olderThan date: Date, prefix: String) async throws -> Int {
        var aborted = 0
        var keyMarker: String?, idMarker: String?
        repeat {
            var query = [("uploads", ""), ("prefix", settings.prefix + prefix)]
            if let keyMarker { query.append(("key-marker", keyMarker)) }
            if let idMarker { query.append(("upload-id-marker", idMarker)) }
            let r = try await transport.send(S3Request(method: .GET, key: nil, query: query, what: "list unfinished uploads"))
            let text = r.text
            for u in XMLText.elements("Upload", in: text) {
                guard let key = XMLText.value("Key", in: u), let id = XMLText.value("UploadId", in: u), key.hasPrefix(settings.prefix),
                      let started = XMLText.value("Initiated", in: u).flatMap(Self.parseTime), started < date else { continue }
                try await abortUpload(String(key.dropFirst(settings.prefix.count)), uploadID: id)
                aborted += 1
            }
            if XMLText.value("IsTruncated", in: text) == "true" {
                keyMarker = XMLText.value("NextKeyMarker", in: text)
                idMarker = XMLText.value("NextUploadIdMarker", in: text)
            } else {
                keyMarker = nil
            }
        } while keyMarker != nil
        return aborted
    }

    /// `2026-11-29T06:00:00.000Z`.
    static func parseTime(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withInternetDateTime]
        return f.date(from: s)
    }
}

enum MD5Digest {
    static func of(_ bytes: [UInt8]) -> [UInt8] {
        var h = MD5Hasher()
        h.update(bytes)
        return bytesFromHex(h.finalizeHex()) ?? []
    }
}

struct Part: Sendable {
    var number: Int
    var bytes: [UInt8]
}

/// The shared state of one multipart upload: its id, the parts' ETags, the first failure.
final class UploadState: Sendable {
    private struct State { var id: String?; var etags: [Int: String] = [:]; var failure: (any Error)? }
    private let state = Mutex(State())
    var id: String? {
        get { state.withLock { $0.id } }
        set { state.withLock { $0.id = newValue } }
    }
    var failure: (any Error)? { state.withLock { $0.failure } }
    func record(_ n: Int, _ etag: String) { state.withLock { $0.etags[n] = etag } }
    func fail(_ e: any Error) { state.withLock { if $0.failure == nil { $0.failure = e } } }
    func etags(count: Int) throws -> [String] {
        try state.withLock { s in
            try (1...count).map { n in
                guard let e = s.etags[n] else { throw WaybackError(.internal, "part \(n) of an upload has no ETag") }
                return e
            }
        }
    }
}

/// A counting semaphore for async code: bounds the parts in memory per upload.
actor Slots {
    private var free: Int
    private var waiters = [CheckedContinuation<Void, Never>]()
    init(_ n: Int) { free = n }
    func acquire() async {
        if free > 0 { free -= 1; return }
        await withCheckedContinuation { waiters.append($0) }
    }
    func release() {
        if waiters.isEmpty { free += 1 } else { waiters.removeFirst().resume() }
    }
}

/// Collects what the body writes into parts of `partSize` bytes; the first object part waits for
/// a quarter more than a part before it starts a multipart upload, so an object slightly over the
/// part size (a 16 MiB WAL segment with its header) still goes up in one PUT.
final class S3Writer: ObjectWriter {
    let partSize: Int
    let queuePart: (Int, [UInt8]) async throws -> Void
    private var pending = [UInt8]()
    private(set) var bytesWritten: Int64 = 0
    private(set) var partsQueued = 0

    init(partSize: Int, queuePart: @escaping (Int, [UInt8]) async throws -> Void) {
        self.partSize = partSize
        self.queuePart = queuePart
    }

    func write(_ bytes: [UInt8]) async throws {
        pending += bytes
        bytesWritten += Int64(bytes.count)
        while pending.count >= partSize + partSize / 4 {
            let part = Array(pending[0..<partSize])
            pending.removeFirst(partSize)
            partsQueued += 1
            try await queuePart(partsQueued, part)
        }
    }

    /// The last part (multipart uploads only).
    func queueRest() async throws {
        partsQueued += 1
        let rest = pending
        pending = []
        try await queuePart(partsQueued, rest)
    }

    func takePending() -> [UInt8] { let p = pending; pending = []; return p }
}

/// Reads an object (or a range) through one GET; when the connection drops mid-body it resumes
/// with a ranged GET from the next byte (`If-Match` the ETag), within the transport's retry budget.
final class S3Reader: ObjectReader {
    let storage: S3Storage
    let key: String
    private(set) var offset: Int64
    /// Exclusive end; -1 until the first response tells the size.
    private(set) var end: Int64
    private var etag: String?
    private var iterator: HTTPClientResponse.Body.AsyncIterator?
    private var buffer = ByteBuffer()
    private var resumes = 0
    private let wantedEnd: Int64?

    init(storage: S3Storage, key: String, offset: Int64, end: Int64, etag: String?) {
        self.storage = storage
        self.key = key
        self.offset = offset
        self.end = end
        self.wantedEnd = end >= 0 ? end : nil
        self.etag = etag
    }

    /// Sends the GET for [offset, end) (or the whole object) and checks what the server will send.
    func open() async throws {
        var headers = [(String, String)]()
        let ranged = offset > 0 || end >= 0
        if ranged { headers.append(("range", "bytes=\(offset)-\(end >= 0 ? String(end - 1) : "")")) }
        if let etag { headers.append(("if-match", etag)) }
        let s = storage
        let request = S3Request(method: .GET, key: key, headers: headers, what: "read \(key)")
        let answer: (HTTPClientResponse.Body.AsyncIterator, Int64, String?, Int64?)
        do {
            answer = try await s.transport.stream(request, accept: [200, 206]) { response -> (HTTPClientResponse.Body.AsyncIterator, Int64, String?, Int64?) in
            let length = Int64(response.headers.first(name: "content-length") ?? "") ?? -1
            var total: Int64?
            if let cr = response.headers.first(name: "content-range"), let slash = cr.lastIndex(of: "/") { total = Int64(cr[cr.index(after: slash)...]) }
            return (response.body.makeAsyncIterator(), length, response.headers.first(name: "etag"), total)
            }
        } catch let e as WaybackError where e.code == .conflict {
            throw WaybackError(.corrupt, "\(key) in \(storage.description) was replaced while it was read; read it again")
        }
        let (it, length, tag, total) = answer
        iterator = it
        etag = etag ?? tag
        if end < 0 {
            guard length >= 0 else { throw WaybackError(.io, "\(storage.description) sent \(key) without a length; check that the endpoint is an S3-compatible store") }
            end = offset + length
        } else if length >= 0, offset + length < end {
            throw storage.shortObject(key, size: total ?? (offset + length), wanted: wantedEnd ?? end)
        }
    }

    func read(maxLength: Int) async throws -> [UInt8] {
        guard offset < end, maxLength > 0 else { return [] }
        while buffer.readableBytes == 0 {
            do {
                if iterator == nil { try await open() }
                if let next = try await iterator!.next() {
                    buffer = next
                } else {
                    iterator = nil
                    throw WaybackError(.io, "the body of \(key) ended at byte \(offset) of \(end)")
                }
            } catch let e as WaybackError where e.code != .io {
                throw e
            } catch {
                iterator = nil
                resumes += 1
                if resumes > storage.settings.maxAttempts || Task.isCancelled {
                    throw WaybackError(.io, "cannot read \(key) from \(storage.description): the connection failed \(resumes) times (\(S3Transport.describe(error))); check the endpoint and the network")
                }
                try await Task.sleep(nanoseconds: UInt64(S3Transport.backoff(after: resumes) * 1e9))
            }
        }
        let n = Int(min(Int64(min(maxLength, buffer.readableBytes)), end - offset))
        let bytes = buffer.readBytes(length: n) ?? []
        offset += Int64(n)
        return bytes
    }
}
