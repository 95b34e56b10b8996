import Crypto
import CryptoExtras
import Foundation
import Synchronization
import WaybackCore

/// Where the key of an encrypted repository comes from. Read at the edge (configuration); never
/// written anywhere.
public enum EncryptionKeySource: Sendable {
    /// 32 bytes of key material from a file.
    case keyFile(path: String, key: [UInt8])
    /// A passphrase (from an environment variable), stretched with scrypt.
    case passphrase(String, variable: String)

    var what: String {
        switch self { case .keyFile(let path, _): "the key in \(path)"; case .passphrase(_, let v): "the passphrase in \(v)" }
    }
}

/// Printed in any way, a key source names where the key comes from, never the key.
extension EncryptionKeySource: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { what }
    public var debugDescription: String { what }
    public var customMirror: Mirror { Mirror(self, children: ["source": what], displayStyle: .enum) }
}

/// Client-side encryption of every object of one repository (AES-256-GCM), as a layer over its
/// driver: the layers above read and write plain bytes and never know.
///
/// An object is a 24-byte header (`WBE1`, version 1, 3 reserved bytes, the chunk size as 32-bit
/// little endian, a random 12-byte nonce base), then the plain content in chunks of `chunkSize`
/// bytes (the last one shorter, possibly empty), each sealed with AES-256-GCM and followed by its
/// 16-byte tag. Chunk `i` uses the nonce base with its last 8 bytes XOR `i` (big endian), and
/// authenticates the object key, `i` and whether it is the last chunk: a chunk moved to another
/// place or object, a truncated object, or a flipped bit all fail authentication. Ranged reads
/// decrypt only the chunks they touch.
///
/// The repository's settings are in `wayback-encryption.json` at its root, in plain text: the
/// key source kind, scrypt parameters and salts, and a key check value (an HMAC under a key derived
/// from the master key), so a wrong key is told apart from damage. The key itself is never stored.
/// Nothing in the repository reveals plaintext hashes: manifests and WAL headers are encrypted
/// like everything else.
public final class EncryptedStorage: StorageDriver, @unchecked Sendable {
    public static let settingsKey = "wayback-encryption.json"
    static let magic: [UInt8] = Array("WBE1".utf8)
    static let headerLength = 24
    static let tagLength = 16

    let inner: any StorageDriver
    let source: EncryptionKeySource
    let repositoryName: String
    private let keys = KeyCache()
    /// Stored size and header of objects read by range (packs are read a file at a time): one
    /// HEAD and one small GET per object and process instead of per read.
    private let headers = Mutex<[String: (stored: Int64, header: [UInt8])]>([:])

    public init(inner: any StorageDriver, source: EncryptionKeySource, repositoryName: String) {
        self.inner = inner; self.source = source; self.repositoryName = repositoryName
    }

    public var description: String { inner.description + ", encrypted" }
    public var capabilities: StorageCapabilities { inner.capabilities.subtracting(.posix) }

    // MARK: settings and keys

    struct Settings: Codable {
        var wayback = "repository-encryption"
        var format = 1
        var cipher = "aes-256-gcm"
        var chunkSize: Int
        /// `file` or `passphrase`.
        var key: String
        var scrypt: ScryptParameters?
        /// HKDF salt (hex).
        var salt: String
        /// HMAC-SHA256 of "wayback key check" under the check key (hex).
        var keyCheck: String
    }

    struct ScryptParameters: Codable {
        var salt: String
        var n: Int
        var r: Int
        var p: Int
    }

    struct Keys: Sendable {
        var data: SymmetricKey
        var chunkSize: Int
    }

    /// The keys once derived (concurrent first callers share one derivation). A failed
    /// derivation is not kept: a repository that was unreachable, or a key file fixed since, is
    /// tried again by the next caller, so a daemon's later jobs are not stuck on an old failure.
    actor KeyCache {
        private var task: Task<Keys, any Error>?
        private var generation = 0

        func get(_ make: @escaping @Sendable () async throws -> Keys) async throws -> Keys {
            if let task { return try await task.value }
            let t = Task { try await make() }
            task = t
            generation += 1
            let mine = generation
            do {
                return try await t.value
            } catch {
                if generation == mine { task = nil }
                throw error
            }
        }

        var isCached: Bool { task != nil }
    }

    /// Whether the keys are held (tests: a failed load must not be).
    var keysCached: Bool { get async { await keys.isCached } }

    static func derive(_ source: EncryptionKeySource, settings: Settings) throws -> (data: SymmetricKey, check: String) {
        let master: SymmetricKey
        switch source {
        case .keyFile(_, let key):
            guard settings.key == "file" else {
                throw WaybackError(.config, "the repository was encrypted with a passphrase, but its configuration gives a key file; set encryption.passphrase_env instead")
            }
            master = SymmetricKey(data: key)
        case .passphrase(let text, _):
            guard settings.key == "passphrase", let s = settings.scrypt, let salt = bytesFromHex(s.salt) else {
                throw WaybackError(.config, "the repository was encrypted with a key file, but its configuration gives a passphrase; set encryption.key_file instead")
            }
            master = try KDF.Scrypt.deriveKey(from: Array(text.utf8), salt: salt, outputByteCount: 32, rounds: s.n, blockSize: s.r, parallelism: s.p)
        }
        let salt = bytesFromHex(settings.salt) ?? []
        let data = HKDF<SHA256>.deriveKey(inputKeyMaterial: master, salt: salt, info: Array("wayback data key".utf8), outputByteCount: 32)
        let checkKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: master, salt: salt, info: Array("wayback key check".utf8), outputByteCount: 32)
        let mac = HMAC<SHA256>.authenticationCode(for: Array("wayback key check".utf8), using: checkKey)
        return (data, hexString(Array(mac)))
    }

    /// The keys, from the repository's settings and the configured source; throws `.repository`
    /// when the repository is not encrypted and `.access` when the key is not its key.
    func loadKeys() async throws -> Keys {
        try await keys.get { [inner, source, repositoryName] in
            let bytes: [UInt8]
            do {
                bytes = try await inner.readAll(Self.settingsKey, limit: 1 << 16)
            } catch let e as WaybackError where e.code == .notFound {
                throw WaybackError(.repository, "repository '\(repositoryName)' is configured with encryption but is not encrypted (no \(Self.settingsKey)); encryption is chosen when a repository is created: run 'wayback init' on an empty one, or remove encryption from its configuration")
            }
            let settings: Settings
            do { settings = try JSONDecoder().decode(Settings.self, from: Data(bytes)) } catch {
                throw WaybackError(.corrupt, "\(Self.settingsKey) of repository '\(repositoryName)' is damaged: \(error)")
            }
            guard settings.wayback == "repository-encryption", settings.cipher == "aes-256-gcm" else {
                throw WaybackError(.repository, "repository '\(repositoryName)' uses encryption '\(settings.cipher)', unknown to this wayback; upgrade wayback")
            }
            guard settings.format <= 1 else {
                throw WaybackError(.repository, "\(Self.settingsKey) of repository '\(repositoryName)' has format \(settings.format), newer than this wayback; upgrade wayback")
            }
            guard (4096...(16 << 20)).contains(settings.chunkSize) else {
                throw WaybackError(.corrupt, "\(Self.settingsKey) of repository '\(repositoryName)' is damaged: chunk size \(settings.chunkSize)")
            }
            let (data, check) = try Self.derive(source, settings: settings)
            guard check == settings.keyCheck else {
                throw WaybackError(.access, "\(source.what) is not the key of repository '\(repositoryName)' (its key check does not match); use the key the repository was created with")
            }
            return Keys(data: data, chunkSize: settings.chunkSize)
        }
    }

    /// Makes the repository encrypted when it is created (`wayback init`): writes the settings
    /// if there are none and the repository is empty; checks the key when they exist. Refuses a
    /// repository that already holds unencrypted objects.
    public func initialize() async throws {
        if try await inner.info(Self.settingsKey) == nil {
            let existing = try await inner.list(prefix: "")
            if !existing.isEmpty {
                throw WaybackError(.repository, "repository '\(repositoryName)' already holds unencrypted data (\(existing.count) objects); encryption is chosen when a repository is created: use a new, empty location for the encrypted repository")
            }
            var settings = Settings(chunkSize: 64 << 10, key: "file", scrypt: nil, salt: hexString(Self.random(32)), keyCheck: "")
            if case .passphrase = source {
                settings.key = "passphrase"
                settings.scrypt = ScryptParameters(salt: hexString(Self.random(32)), n: 1 << 15, r: 8, p: 1)
            }
            settings.keyCheck = try Self.derive(source, settings: settings).check
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .prettyPrinted]
            try await inner.writeAll(Self.settingsKey, Array(try enc.encode(settings)) + [0x0A], options: WriteOptions(ifAbsent: true))
        }
        _ = try await loadKeys()
    }

    /// Refuses to use an encrypted repository through a configuration without encryption.
    public static func requirePlain(_ driver: any StorageDriver, name: String) async throws {
        if try await driver.info(settingsKey) != nil {
            throw WaybackError(.repository, "repository '\(name)' is encrypted, but its configuration has no encryption; add its encryption.key_file or encryption.passphrase_env")
        }
    }

    static func random(_ n: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    // MARK: object format

    static func nonce(_ base: [UInt8], _ index: UInt64) throws -> AES.GCM.Nonce {
        var n = base
        for k in 0..<8 { n[4 + k] ^= UInt8(truncatingIfNeeded: index >> (8 * (7 - k))) }
        return try AES.GCM.Nonce(data: n)
    }

    static func aad(_ key: String, _ index: UInt64, final: Bool) -> [UInt8] {
        var a = Array("wayback-chunk\u{0}".utf8) + Array(key.utf8) + [0]
        for k in 0..<8 { a.append(UInt8(truncatingIfNeeded: index >> (8 * k))) }
        a.append(final ? 1 : 0)
        return a
    }

    static func plainSize(stored: Int64, chunkSize: Int) -> Int64? {
        let body = stored - Int64(headerLength)
        let unit = Int64(chunkSize + tagLength)
        guard body >= Int64(tagLength) else { return nil }
        let full = body / unit, rest = body % unit
        if rest == 0 { return full * Int64(chunkSize) }
        guard rest >= Int64(tagLength) else { return nil }
        return full * Int64(chunkSize) + rest - Int64(tagLength)
    }

    func damaged(_ key: String, _ why: String) -> WaybackError { Self.damaged(key, why, in: description) }

    static func damaged(_ key: String, _ why: String, in repository: String) -> WaybackError {
        WaybackError(.corrupt, "object \(key) in \(repository) fails decryption (\(why)): it was damaged or tampered with; restore from another repository that has it, or another backup")
    }

    // MARK: StorageDriver

    public func info(_ key: String) async throws -> ObjectInfo? {
        let k = try await loadKeys()
        guard key != Self.settingsKey, let i = try await inner.info(key) else { return nil }
        guard let size = Self.plainSize(stored: i.size, chunkSize: k.chunkSize) else { throw damaged(key, "it is \(i.size) bytes long") }
        return ObjectInfo(key: key, size: size)
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        let k = try await loadKeys()
        return try await inner.list(prefix: prefix).compactMap { o in
            guard o.key != Self.settingsKey else { return nil }
            return ObjectInfo(key: o.key, size: Self.plainSize(stored: o.size, chunkSize: k.chunkSize) ?? 0)
        }
    }

    public func withReader<R>(_ key: String, range: Range<Int64>?, _ body: (any ObjectReader) async throws -> R) async throws -> R {
        guard key != Self.settingsKey else { throw WaybackError(.notFound, "object \(key) is not in \(description)") }
        let k = try await loadKeys()
        let unit = Int64(k.chunkSize + Self.tagLength)
        guard let range, !range.isEmpty else {
            if let range, range.isEmpty { return try await body(DecryptingReader.empty()) }
            // The whole object, streamed: the last chunk is the one the object ends with.
            return try await inner.withReader(key, range: nil) { r in
                try await body(DecryptingReader(inner: r, key: key, keys: k, firstChunk: 0, lastChunk: nil, skip: 0, limit: nil, owner: self))
            }
        }
        let (storedSize, header) = try await storedHeader(key)
        guard let size = Self.plainSize(stored: storedSize, chunkSize: k.chunkSize) else { throw damaged(key, "it is \(storedSize) bytes long") }
        guard range.lowerBound >= 0, range.upperBound <= size else {
            throw WaybackError(.corrupt, "object \(key) in \(description) has \(size) bytes, fewer than the \(range.upperBound) expected")
        }
        let first = range.lowerBound / Int64(k.chunkSize), last = (range.upperBound - 1) / Int64(k.chunkSize)
        let lastOfObject = size == 0 ? 0 : (size - 1) / Int64(k.chunkSize)
        let start = Int64(Self.headerLength) + first * unit
        let end = min(storedSize, Int64(Self.headerLength) + (last + 1) * unit)
        return try await inner.withReader(key, range: start..<end) { r in
            let reader = DecryptingReader(inner: r, key: key, keys: k, firstChunk: UInt64(first), lastChunk: UInt64(lastOfObject),
                                          skip: Int(range.lowerBound - first * Int64(k.chunkSize)), limit: range.count, owner: self)
            try reader.setHeader(header)
            return try await body(reader)
        }
    }

    func storedHeader(_ key: String) async throws -> (Int64, [UInt8]) {
        if let hit = headers.withLock({ $0[key] }) { return hit }
        guard let stored = try await inner.info(key) else { throw WaybackError(.notFound, "object \(key) is not in \(description)") }
        guard stored.size >= Int64(Self.headerLength) else { throw damaged(key, "it is \(stored.size) bytes long") }
        let header = try await inner.readRange(key, 0..<Int64(Self.headerLength))
        headers.withLock { h in
            if h.count >= 4096 { h.removeAll() }
            h[key] = (stored.size, header)
        }
        return (stored.size, header)
    }

    public func withWriter<R>(_ key: String, options: WriteOptions, _ body: (any ObjectWriter) async throws -> R) async throws -> R {
        guard key != Self.settingsKey else { throw WaybackError(.usage, "\(key) is reserved in an encrypted repository") }
        _ = headers.withLock { $0.removeValue(forKey: key) }
        let k = try await loadKeys()
        return try await inner.withWriter(key, options: options) { w in
            let writer = try await EncryptingWriter(inner: w, key: key, keys: k)
            let result = try await body(writer)
            try await writer.finish()
            return result
        }
    }

    public func remove(_ key: String) async throws {
        guard key != Self.settingsKey else { return }
        _ = headers.withLock { $0.removeValue(forKey: key) }
        try await inner.remove(key)
    }

    public func remove(keys list: [String]) async throws {
        headers.withLock { h in for k in list { h.removeValue(forKey: k) } }
        try await inner.remove(keys: list.filter { $0 != Self.settingsKey })
    }

    public func removeLeftovers(olderThan date: Date, prefix: String) async throws -> Int {
        try await inner.removeLeftovers(olderThan: date, prefix: prefix)
    }
}

/// Seals plain bytes into chunks as they come; the chunk in hand is sealed only once more data
/// arrives (or at `finish`, as the last one).
final class EncryptingWriter: ObjectWriter {
    let inner: any ObjectWriter
    let key: String
    let keys: EncryptedStorage.Keys
    let nonceBase: [UInt8]
    var pending: [UInt8] = []
    var index: UInt64 = 0
    private(set) var bytesWritten: Int64 = 0

    init(inner: any ObjectWriter, key: String, keys: EncryptedStorage.Keys) async throws {
        self.inner = inner; self.key = key; self.keys = keys
        nonceBase = EncryptedStorage.random(12)
        pending.reserveCapacity(keys.chunkSize)
        var header = EncryptedStorage.magic + [1, 0, 0, 0]
        for k in 0..<4 { header.append(UInt8(truncatingIfNeeded: keys.chunkSize >> (8 * k))) }
        try await inner.write(header + nonceBase)
    }

    func write(_ bytes: [UInt8]) async throws {
        var offset = 0
        while offset < bytes.count {
            if pending.count == keys.chunkSize { try await seal(final: false) }
            let n = min(keys.chunkSize - pending.count, bytes.count - offset)
            pending.append(contentsOf: bytes[offset..<(offset + n)])
            offset += n
        }
        bytesWritten += Int64(bytes.count)
    }

    func finish() async throws { try await seal(final: true) }

    private func seal(final: Bool) async throws {
        let box = try AES.GCM.seal(pending, using: keys.data, nonce: EncryptedStorage.nonce(nonceBase, index),
                                   authenticating: EncryptedStorage.aad(key, index, final: final))
        try await inner.write(Array(box.ciphertext) + Array(box.tag))
        pending.removeAll(keepingCapacity: true)
        index += 1
    }
}

/// Opens chunks as they are read; hands out the plain bytes of the requested range.
final class DecryptingReader: ObjectReader {
    static func empty() -> DecryptingReader { DecryptingReader() }
    let inner: (any ObjectReader)?
    let key: String
    let keys: EncryptedStorage.Keys?
    var index: UInt64
    /// The object's last chunk when known (ranged reads); nil: the one the stream ends with.
    let lastChunk: UInt64?
    var skip: Int
    var remaining: Int?
    var nonceBase: [UInt8]?
    var buffer: [UInt8] = []
    var out: [UInt8] = []
    var outPosition = 0
    var done = false
    weak var owner: EncryptedStorage?

    private init() {
        inner = nil; key = ""; keys = nil; index = 0; lastChunk = nil; skip = 0; remaining = 0; done = true
    }

    init(inner: any ObjectReader, key: String, keys: EncryptedStorage.Keys, firstChunk: UInt64, lastChunk: UInt64?, skip: Int, limit: Int?,
         owner: EncryptedStorage) {
        self.inner = inner; self.key = key; self.keys = keys; index = firstChunk; self.lastChunk = lastChunk
        self.skip = skip; remaining = limit; self.owner = owner
    }

    func setHeader(_ h: [UInt8]) throws {
        guard h.count == EncryptedStorage.headerLength, Array(h[0..<4]) == EncryptedStorage.magic, h[4] == 1 else {
            throw damage("no encryption header")
        }
        let chunk = (0..<4).reduce(0) { $0 | Int(h[8 + $1]) << (8 * $1) }
        guard chunk == keys?.chunkSize else { throw damage("chunk size \(chunk)") }
        nonceBase = Array(h[12..<24])
    }

    func damage(_ why: String) -> WaybackError {
        EncryptedStorage.damaged(key, why, in: owner?.description ?? "the repository")
    }

    /// Fills `buffer` to at least `n` bytes unless the stream ends first.
    private func fill(_ n: Int) async throws {
        guard let inner else { return }
        while buffer.count < n {
            let chunk = try await inner.read(maxLength: max(n - buffer.count, 1 << 16))
            if chunk.isEmpty { return }
            buffer += chunk
        }
    }

    private func openNext() async throws -> Bool {
        guard let keys else { return false }
        if nonceBase == nil {
            try await fill(EncryptedStorage.headerLength)
            try setHeader(Array(buffer.prefix(EncryptedStorage.headerLength)))
            buffer.removeFirst(EncryptedStorage.headerLength)
        }
        let unit = keys.chunkSize + EncryptedStorage.tagLength
        // One byte more than a chunk tells whether another chunk follows.
        try await fill(unit + 1)
        if buffer.isEmpty { return false }
        let n = min(unit, buffer.count)
        guard n >= EncryptedStorage.tagLength else { throw damage("a chunk is cut short") }
        let final = lastChunk.map { index == $0 } ?? (buffer.count <= unit)
        let sealed = Array(buffer[0..<n])
        buffer.removeFirst(n)
        do {
            let box = try AES.GCM.SealedBox(nonce: EncryptedStorage.nonce(nonceBase!, index),
                                            ciphertext: sealed[0..<(n - EncryptedStorage.tagLength)],
                                            tag: sealed[(n - EncryptedStorage.tagLength)...])
            out = Array(try AES.GCM.open(box, using: keys.data, authenticating: EncryptedStorage.aad(key, index, final: final)))
        } catch {
            throw damage("chunk \(index) does not authenticate")
        }
        if !final && out.count != keys.chunkSize { throw damage("chunk \(index) is short") }
        outPosition = min(skip, out.count)
        skip -= outPosition
        index += 1
        if final { done = true }
        return true
    }

    func read(maxLength: Int) async throws -> [UInt8] {
        while true {
            if let r = remaining, r == 0 { return [] }
            if outPosition < out.count {
                var n = min(maxLength, out.count - outPosition)
                if let r = remaining { n = min(n, r) }
                let slice = Array(out[outPosition..<(outPosition + n)])
                outPosition += n
                if remaining != nil { remaining! -= n }
                return slice
            }
            if done {
                if let r = remaining, r > 0 { throw damage("it ends early") }
                if lastChunk == nil, !buffer.isEmpty { throw damage("bytes after the last chunk") }
                return []
            }
            if !(try await openNext()) {
                // The stream ended without a final chunk: truncated.
                throw damage("it is truncated")
            }
        }
    }
}
