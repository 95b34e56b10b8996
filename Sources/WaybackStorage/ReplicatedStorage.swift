import Foundation
import Synchronization
import WaybackCore

/// Several repositories seen as one (3-2-1): writes go to every replica, reads come from the first
/// replica (in priority order) that has the object intact.
///
/// One `ReplicatedStorage` serves one job (a command, or one job of the daemon): build a new one
/// for the next, so that a repository that failed once is written again when it works.
///
/// - Writes: every byte the caller writes goes to each live replica once (read and compressed once
///   upstream). A replica whose write fails is dropped for the rest of this driver's life (one
///   job): it gets no further objects, so a backup can never look complete there, and the
///   failure is kept in `failures` for the command to report (exit `.replica`) and published as a
///   `repositoryDropped` event. The write fails only
///   when every replica has failed, or when the body itself throws (then no replica keeps anything).
///   `.conflict` from `ifAbsent` is the caller's business and is rethrown.
/// - Reads: `withReader` tries the replicas in order. When the object is missing, or the read (or
///   the body's own verification) fails with `.corrupt` or `.io`, it logs a warning and calls the
///   body again with the next replica's reader: bodies must start over when called again. It
///   throws `.notFound` only when every replica said the object is not there; otherwise the
///   reason of the first replica that could not be read.
/// - `list` is the union of the replicas' listings (a replica that cannot be listed is skipped
///   with a warning); `info` is the first replica's that has the object.
public struct ReplicatedStorage: StorageDriver {
    public let replicas: [Repository]
    /// Where the warnings of this job go (a repository dropped, a read that fell back).
    public let events: EventLog
    let state: FailureLog

    public init(_ replicas: [Repository], events: EventLog) {
        precondition(!replicas.isEmpty)
        self.replicas = replicas
        self.events = events
        self.state = FailureLog()
    }

    public var description: String { replicas.map(\.description).joined(separator: " + ") }
    public var capabilities: StorageCapabilities {
        replicas.map(\.driver.capabilities).reduce(StorageCapabilities(rawValue: ~0)) { $0.intersection($1) }.subtracting(.posix)
    }

    /// Replicas that failed a write or remove, with the first error of each, in priority order.
    public var failures: [(repository: String, error: WaybackError)] {
        let f = state.failures
        return replicas.compactMap { r in f[r.name].map { (r.name, $0) } }
    }

    var live: [Repository] {
        let failed = state.failures
        return replicas.filter { failed[$0.name] == nil }
    }

    /// Replicas to read from, and how many of them come first as working: those that failed a
    /// write or could not be reached in this run go last, so an unreachable repository costs its
    /// retry budget once per command, not once per object.
    var readOrder: (order: [Repository], working: Int) {
        let failed = state.failures
        let unreachable = state.unreachable
        let good = replicas.filter { failed[$0.name] == nil && !unreachable.contains($0.name) }
        return (good + replicas.filter { failed[$0.name] != nil || unreachable.contains($0.name) }, good.count)
    }

    func noteReadFailure(_ r: Repository, _ error: any Error) {
        if let w = error as? WaybackError, w.code == .io || w.code == .access { state.markUnreachable(r.name) }
    }

    func fail(_ r: Repository, _ error: any Error) {
        let e = WaybackError.wrap(error, as: .io, "writing to \(r.description) failed")
        if state.record(r.name, e) {
            events.emit(.error, .repositoryDropped, "\(r.description) failed and gets nothing more in this run: \(e.message)", repository: r.name)
        }
    }

    static func shouldFallBack(_ e: any Error) -> WaybackError? {
        guard let w = e as? WaybackError, [.notFound, .corrupt, .io, .access, .repository].contains(w.code) else { return nil }
        return w
    }

    // MARK: reads

    /// The first replica's answer that has the object; nil when every replica that answered
    /// lacks it; the first error when none answered.
    public func info(_ key: String) async throws -> ObjectInfo? {
        var firstError: (any Error)?
        var answered = false
        let (order, working) = readOrder
        for (i, r) in order.enumerated() {
            // Replicas that failed in this run are asked only when no working one answered.
            if answered && i >= working { break }
            do {
                if let i = try await r.driver.info(key) { return i }
                answered = true
            } catch {
                noteReadFailure(r, error)
                firstError = firstError ?? error
                events.emit(.warning, .repositoryUnreachable, "cannot look up \(key) in \(r.description): \(error)", repository: r.name)
            }
        }
        if !answered, let firstError { throw firstError }
        return nil
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        var byKey = [String: ObjectInfo]()
        var listed = 0
        var firstError: (any Error)?
        let (order, working) = readOrder
        for (i, r) in order.enumerated() {
            if listed > 0 && i >= working { break }
            do {
                for o in try await r.driver.list(prefix: prefix) where byKey[o.key] == nil { byKey[o.key] = o }
                listed += 1
            } catch {
                noteReadFailure(r, error)
                firstError = firstError ?? error
                events.emit(.warning, .repositoryUnreachable, "cannot list \(r.description), using the other repositories: \(error)", repository: r.name)
            }
        }
        if listed == 0, let firstError { throw firstError }
        return byKey.values.sorted { $0.key < $1.key }
    }

    public func withReader<R>(_ key: String, range: Range<Int64>?, _ body: (any ObjectReader) async throws -> R) async throws -> R {
        var firstError: WaybackError?, realError: WaybackError?
        var missingIn = [Repository]()
        let order = readOrder.order
        for (i, r) in order.enumerated() {
            do {
                let result = try await r.driver.withReader(key, range: range, body)
                // A missing object is worth a warning only when another repository has it (the
                // end of recovery asks every repository for a segment that does not exist yet).
                for m in missingIn {
                    events.emit(.warning, .repositoryFallback, "\(key) is missing in \(m.description); reading it from \(r.description)", repository: m.name)
                }
                return result
            } catch {
                guard let w = Self.shouldFallBack(error) else { throw error }
                noteReadFailure(r, w)
                firstError = firstError ?? w
                if w.code != .notFound { realError = realError ?? w }
                if w.code == .notFound {
                    missingIn.append(r)
                } else if i + 1 < order.count {
                    events.emit(.warning, .repositoryFallback, "\(key) cannot be read from \(r.description) (\(w.message)); reading it from \(order[i + 1].description)",
                                repository: r.name)
                }
            }
        }
        // "Not there" only when every repository said so: a repository that could not be read
        // (unreachable, credentials refused, damaged) may have it, and its reason is the error.
        if let real = realError { throw real }
        if let firstError, firstError.code == .notFound {
            throw WaybackError(.notFound, "object \(key) is in none of the repositories (\(replicas.map(\.name).joined(separator: ", ")))")
        }
        throw firstError!
    }

    // MARK: writes

    public func withWriter<R>(_ key: String, options: WriteOptions, _ body: (any ObjectWriter) async throws -> R) async throws -> R {
        let targets = live
        guard !targets.isEmpty else { throw allFailed() }
        let tee = TeeWriter(targets)
        var result: R?
        func nest(_ i: Int) async throws {
            if i == targets.count {
                do { result = try await body(tee) } catch { throw BodyFailed(error: error) }
                return
            }
            do {
                try await targets[i].driver.withWriter(key, options: options) { w in
                    tee.writers[i] = w
                    try await nest(i + 1)
                    if let e = tee.errors[i] { throw e }  // this replica failed a write: do not commit it
                }
            } catch let e as BodyFailed {
                throw e
            } catch let e as WaybackError where e.code == .conflict {
                throw BodyFailed(error: e)
            } catch {
                fail(targets[i], tee.errors[i] ?? error)
            }
        }
        do {
            try await nest(0)
        } catch let e as BodyFailed {
            throw e.error
        }
        guard let result, live.count > 0 else { throw allFailed() }
        return result
    }

    public func remove(_ key: String) async throws {
        try await eachLive { try await $0.driver.remove(key) }
    }

    public func remove(keys: [String]) async throws {
        try await eachLive { try await $0.driver.remove(keys: keys) }
    }

    public func removeLeftovers(olderThan date: Date, prefix: String) async throws -> Int {
        var n = 0
        try await eachLive { n += try await $0.driver.removeLeftovers(olderThan: date, prefix: prefix) }
        return n
    }

    func eachLive(_ op: (Repository) async throws -> Void) async throws {
        for r in live {
            do { try await op(r) } catch { fail(r, error) }
        }
        if live.isEmpty { throw allFailed() }
    }

    func allFailed() -> WaybackError {
        let f = failures
        let detail = f.map { "\($0.repository): \($0.error.message)" }.joined(separator: "; ")
        return WaybackError(f.first?.error.code ?? .io, "every repository failed: \(detail)")
    }
}

private struct BodyFailed: Error { var error: any Error }

/// Failures per replica name, shared by every copy of one `ReplicatedStorage`.
final class FailureLog: Sendable {
    private let map = Mutex([String: WaybackError]())
    private let unreachableNames = Mutex(Set<String>())
    var failures: [String: WaybackError] { map.withLock { $0 } }
    var unreachable: Set<String> { unreachableNames.withLock { $0 } }
    func markUnreachable(_ name: String) { _ = unreachableNames.withLock { $0.insert(name) } }
    /// Records the first failure of `name`; true when it is new.
    func record(_ name: String, _ e: WaybackError) -> Bool {
        map.withLock { m in
            if m[name] != nil { return false }
            m[name] = e
            return true
        }
    }
}

/// Hands each write to every replica's writer; a writer that fails is skipped from then on.
final class TeeWriter: ObjectWriter {
    var writers: [(any ObjectWriter)?]
    var errors: [(any Error)?]
    private(set) var bytesWritten: Int64 = 0

    init(_ targets: [Repository]) {
        writers = Array(repeating: nil, count: targets.count)
        errors = Array(repeating: nil, count: targets.count)
    }

    func write(_ bytes: [UInt8]) async throws {
        for i in writers.indices where errors[i] == nil {
            do { try await writers[i]!.write(bytes) } catch { errors[i] = error }
        }
        if let first = errors.first, errors.allSatisfy({ $0 != nil }) { throw first! }
        bytesWritten += Int64(bytes.count)
    }
}
