import Foundation
import Synchronization

/// Blocking work (`waitpid`, `poll`, `fsync` queues, a child's whole run) done on a thread of its
/// own, never on one of Swift's cooperative threads: those are as many as the cores, and a daemon
/// running jobs and serving HTTP would starve if one of them sat in a system call.
public enum Blocking {
    /// Runs `body` on a new thread and resumes the caller with its result when it returns. The
    /// thread ends with `body`.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            Thread.detachNewThread { c.resume(with: Result { try body() }) }
        }
    }
}

/// Work that must answer in time even when what it waits on hangs (a repository that accepts a
/// connection and never answers): `run` returns the work's result, or throws `.timeout` after
/// `seconds`. The work is then cancelled and left to end on its own; a hung request ends with its
/// client's own timeout, and a one-shot command's process ends with it anyway.
public enum Deadline {
    public static func run<T: Sendable>(_ seconds: Double, what: String,
                                        _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            let race = Race(c)
            race.start(work: Task { race.finish(await Result(awaiting: body)) },
                       timer: Task {
                           try? await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
                           if !Task.isCancelled { race.finish(.failure(WaybackError(.timeout, "\(what) did not answer within \(Format.seconds(seconds))"))) }
                       })
        }
    }

    /// The first of the work and the timer resumes the caller; the other is cancelled.
    final class Race<T: Sendable>: Sendable {
        let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, tasks: [Task<Void, Never>])>((nil, []))
        init(_ c: CheckedContinuation<T, any Error>) { state.withLock { $0.continuation = c } }

        func start(work: Task<Void, Never>, timer: Task<Void, Never>) {
            let finished = state.withLock { s -> Bool in
                s.tasks = [work, timer]
                return s.continuation == nil
            }
            if finished { work.cancel(); timer.cancel() }
        }

        func finish(_ r: Result<T, any Error>) {
            let (c, tasks) = state.withLock { s in
                defer { s.continuation = nil }
                return (s.continuation, s.tasks)
            }
            guard let c else { return }
            c.resume(with: r)
            for t in tasks { t.cancel() }
        }
    }
}

extension Result where Failure == any Error {
    /// The result of async work, as `Result(catching:)` is of synchronous work.
    public init(awaiting body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
