import Foundation

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
